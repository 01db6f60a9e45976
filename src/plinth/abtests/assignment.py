"""Which arm serves a unit: the one rule the router and the embedded mode share.

A unit outside the experiment goes to control and is not exposed: when the experiment is
not running (paused, draft, stopped), when its layer's bucket of the unit is not one the
experiment owns, or when its own bucket is no arm's (traffic below 100 %). Otherwise the
unit gets the arm its bucket belongs to (``buckets.py``).
"""

from __future__ import annotations

from plinth.abtests.buckets import bucket
from plinth.abtests.types import Experiment, Status


def assign_arm(exp: Experiment, unit: str) -> tuple[str, bool]:
    """The arm that serves ``unit`` and whether the unit is in the experiment (exposed)."""
    control = exp.control.name
    if exp.status is not Status.RUNNING:
        return control, False
    if exp.layer is not None:
        if exp.layer_salt is None:
            return control, False
        at = bucket(exp.layer_salt, unit)
        if not any(start <= at < end for start, end in exp.layer_ranges):
            return control, False
    arm = exp.allocation.arm_for(bucket(exp.salt, unit))
    return (control, False) if arm is None else (arm, True)
