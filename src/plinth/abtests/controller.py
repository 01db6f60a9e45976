"""The A/B controller: one pass over the running experiments, doing what their design
schedules and their results call for.

Per running experiment, from its results (``compute_results``) at the time it is looked at
(``now`` if given, else the clock read for that experiment; a recorded action's time is
read under the experiment's lock):

1. a canary with a guardrail established broken in its challenger
   (``decisions.breached_guardrails``) is rolled back: the challenger's share goes to 0 and
   the experiment stops, the evidence being the recorded reason (action ``rollback``);
2. any experiment is stopped when ``decisions.stop_reasons`` says so: the planned sample
   reached or a guardrail broken (action ``stop``, as ``check_abtest`` would). A broken
   guardrail stops it even when no planned sample can be computed (a note says why);
3. a canary below its last step takes the next step above the challenger's share (action
   ``canary-step``): at once to the first step, each later one when ``every_seconds`` have
   passed since the last step (or the start, the resume, or an update of its schedule).
   **A manual change of a running canary's shares holds it**: an operator who sets the
   challenger back (or forward) is obeyed, and no step is taken until the experiment is
   paused and resumed or its ``canary`` schedule is updated; the steps then go on from the
   share the challenger has. Rollback and the automatic stop still apply while it is held;
4. a bandit is re-allocated when ``every_seconds`` have passed since its last
   re-allocation, start, resume or manual change of its shares or schedule (action
   ``reallocate``): Thompson sampling (``bandit.reallocate``) over the arms' primary KPI so
   far, the probabilities and units recorded with the new shares.

Each action is a version of the experiment's history, recorded by "controller". It is
taken by compare-and-set on the version the decision was made from
(``AbTestService.apply_control``): when two controllers decide the same step at once, one
takes it and the other finds the experiment moved on. ``plinth server`` runs passes in the
background while it holds the controller's lease (``ControllerLoop``), so among replicas
one controls at a time; the lease is checked (and renewed) before each experiment and again
right before each action, so a replica that lost it acts no more. Lease times are the
replicas' own clocks: they must agree to well within the lease's length (3 passes, at
least a minute). ``plinth ab tick`` runs one pass. Before reading a running experiment's
results, the controller compacts its exposure and event logs once they hold many files.
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from plinth.abtests.bandit import Mean, Rate, reallocate
from plinth.abtests.buckets import BUCKETS, shares_to_counts
from plinth.abtests.compaction import compact_logs
from plinth.abtests.decisions import breached_guardrails, stop_reasons
from plinth.abtests.design import MAX_EVERY_SECONDS
from plinth.abtests.results import Results
from plinth.abtests.types import (
    Bandit,
    Canary,
    ControllerAction,
    Experiment,
    KpiKind,
    Mode,
    Status,
)
from plinth.auth.context import SYSTEM, acting_as
from plinth.errors import Conflict, PlinthError
from plinth.store import lease

if TYPE_CHECKING:
    from plinth.abtests.service import AbTestService, ScheduleMark

log = logging.getLogger(__name__)

#: the principal the controller acts as: the platform's own, under its own name
CONTROLLER = replace(SYSTEM, name="controller")
LEASE = "abtest-controller"
# Shares are compared within rounding: a step "above" the current share is above by more.
_TOLERANCE = 1e-9


def run_once(
    service: AbTestService,
    now: datetime | None = None,
    keep_going: Callable[[], bool] | None = None,
) -> list[ControllerAction]:
    """One pass over every running experiment at ``now`` (default: the clock, read per
    experiment), acting as the controller. A failure on one experiment (one that cannot
    even be read included) is its ``error`` action; the others are still controlled.
    ``keep_going`` is asked before each experiment and right before each action (a lease
    still held, no stop asked for): False ends the pass there."""
    turn = _Pass(service, now, keep_going or (lambda: True))
    done: list[ControllerAction] = []
    with acting_as(CONTROLLER):
        for name in service.running_names():
            if not turn.keep_going():
                break
            did = _control(turn, name)
            done.append(did)
            if did.action == _ENDED:
                break
    return [did for did in done if did.action != _ENDED]


def reallocate_now(service: AbTestService, name: str, reason: str) -> ControllerAction:
    """A bandit's re-allocation now, by the caller (``reallocate_abtest``)."""
    exp = service.get_abtest(name)
    if exp.mode is not Mode.BANDIT or exp.status is not Status.RUNNING:
        raise Conflict(
            f"cannot reallocate A/B experiment {name!r}: only a running bandit experiment "
            f"is re-allocated (it is a {exp.status} {exp.mode} experiment)"
        )
    turn = _Pass(service, None, lambda: True)
    done = _reallocate(turn, exp, service.abtest_results(name), reason.strip())
    if done.action != "reallocate":
        raise Conflict(f"cannot reallocate A/B experiment {name!r} now: {done.reason}")
    return done


# an action no one sees: the pass ended (lease lost, stop asked) before it acted
_ENDED = "ended"


@dataclass(frozen=True)
class _Pass:
    service: AbTestService
    now: datetime | None
    keep_going: Callable[[], bool]

    def at(self) -> datetime:
        return self.now or datetime.now(UTC)


def _control(turn: _Pass, name: str) -> ControllerAction:
    service = turn.service
    try:
        exp = service.get_abtest(name)
        if exp.status is not Status.RUNNING:  # paused or stopped since the names were read
            return ControllerAction(name, "wait", f"it is {exp.status} now")
        at = turn.at()
        _compact(service, name)
        results = service.abtest_results(exp.name)
        if exp.mode is Mode.CANARY:
            broken = rollback_reasons(exp, results)
            if broken:
                return _rollback(turn, exp, broken)
        reasons, _, _ = stop_reasons(exp, results)
        if reasons:
            reason = "auto-stop: " + "; ".join(reasons)
            return _apply(turn, exp, "stop", reason, stop=True)
        if exp.mode is Mode.CANARY:
            return _canary_step(turn, exp, at)
        if exp.mode is Mode.BANDIT:
            every = (exp.bandit or Bandit()).every_seconds
            mark = service.last_schedule_mark(name, _BANDIT_MARKS, ("shares", "bandit"))
            due = _due(mark, every, at)
            if due is not None:
                said = f"next re-allocation at {due:%Y-%m-%d %H:%M:%S} UTC"
                return ControllerAction(exp.name, "wait", said)
            return _reallocate(turn, exp, results, "")
        return ControllerAction(exp.name, "wait", "no stop reason yet")
    except PlinthError as exc:
        log.warning("A/B controller: experiment %r: error: %s", name, exc.message)
        return ControllerAction(name, "error", exc.message)
    except Exception as exc:  # one experiment's failure must not stop the others' control
        log.exception("A/B controller: experiment %r", name)
        return ControllerAction(name, "error", f"{type(exc).__name__}: {exc}")


def _compact(service: AbTestService, name: str) -> None:
    """The experiment's logs compacted once they hold many small files (``compaction.py``);
    a failure is logged and costs only the compaction."""
    if service.root_uri is None:
        return
    try:
        compact_logs(service.root_uri, name, service.store)
    except Exception as exc:  # the logs stay as they were: readable, only slower
        log.warning("A/B controller: experiment %r: could not compact its logs: %s", name, exc)


_CANARY_MARKS = ("canary-step", "start", "resume")
_BANDIT_MARKS = ("reallocate", "start", "resume")


def rollback_reasons(exp: Experiment, results: Results) -> list[str]:
    """The guardrails established broken in a canary's challenger (a router-measured one
    may be broken in control too: that is no reason to blame the challenger, and the
    automatic stop sees it)."""
    challenger = next(arm.name for arm in exp.arms if not arm.control)
    theirs = {
        metric: {arm: check for arm, check in arms.items() if arm == challenger}
        for metric, arms in results.guardrails.items()
    }
    return breached_guardrails(replace(results, guardrails=theirs))


def _rollback(turn: _Pass, exp: Experiment, broken: list[str]) -> ControllerAction:
    shares = {arm.name: 1.0 if arm.control else 0.0 for arm in exp.arms}
    reason = "rollback: " + "; ".join(broken)
    return _apply(turn, exp, "rollback", reason, shares=shares, stop=True)


def _canary_step(turn: _Pass, exp: Experiment, at: datetime) -> ControllerAction:
    canary = exp.canary or Canary()
    challenger = next(arm for arm in exp.arms if not arm.control)
    mark = turn.service.last_schedule_mark(exp.name, _CANARY_MARKS, ("shares", "canary"))
    if mark is not None and mark.action == "update" and "canary" not in mark.changes:
        said = (
            f"held: {mark.changed_by} set the shares by hand at version {mark.version} "
            f"({mark.changes['shares']}); pause and resume the experiment, or update its "
            "canary schedule, for the steps to go on"
        )
        return ControllerAction(exp.name, "wait", said)
    ahead = [step for step in canary.steps if step > challenger.share + _TOLERANCE]
    if not ahead:
        said = f"canary complete: {challenger.name} at {challenger.share:g}, its last step"
        return ControllerAction(exp.name, "wait", said)
    step = ahead[0]
    number = canary.steps.index(step) + 1
    if number > 1:  # the first step is taken at once
        due = _due(mark, canary.every_seconds, at)
        if due is not None:
            said = f"next step ({challenger.name} {step:g}) at {due:%Y-%m-%d %H:%M:%S} UTC"
            return ControllerAction(exp.name, "wait", said)
    shares = {challenger.name: step, exp.control.name: round(1 - step, 12)}
    reason = (
        f"canary step {number} of {len(canary.steps)}: {challenger.name} "
        f"{challenger.share:g} -> {step:g}; no guardrail broken"
    )
    noted = {"step": f"{number} of {len(canary.steps)}"}
    return _apply(turn, exp, "canary-step", reason, shares=shares, noted=noted)


def _reallocate(turn: _Pass, exp: Experiment, results: Results, reason: str) -> ControllerAction:
    floor = (exp.bandit or Bandit()).floor
    stats = _arm_stats(exp, results)
    if isinstance(stats, str):
        return ControllerAction(exp.name, "wait", f"no re-allocation yet: {stats}")
    found = reallocate(stats, floor=floor, seed=_seed(exp))
    shares = on_buckets(found.shares, floor)
    why = f"Thompson sampling on {exp.primary.name}: {found.reason}"
    noted = {
        "probability_best": _listed({a: f"{p:.4f}" for a, p in found.probability_best.items()}),
        "units": _listed({a: f"{results.units_by_arm.get(a, 0):,}" for a in exp.shares}),
        "draws": f"{found.draws:,}",
    }
    full = f"{reason} ({why})" if reason else why
    return _apply(turn, exp, "reallocate", full, shares=shares, noted=noted)


def _arm_stats(exp: Experiment, results: Results) -> dict[str, Rate] | dict[str, Mean] | str:
    """Each arm's primary KPI for the posterior, or why it cannot be had yet."""
    missing = [arm for arm in exp.shares if arm not in results.summaries]
    if missing:
        return f"arm {', '.join(missing)} has fewer than 2 units with results yet"
    if exp.primary.kind is KpiKind.PROPORTION:
        return {
            arm: Rate(round(s.estimate * s.units), s.units)
            for arm, s in results.summaries.items()
            if arm in exp.shares
        }
    # a mean, or a ratio of sums: its estimate and the spread that gives its standard error
    return {
        arm: Mean(s.estimate, s.variance * s.units, s.units)
        for arm, s in results.summaries.items()
        if arm in exp.shares
    }


def on_buckets(shares: Mapping[str, float], floor: float) -> dict[str, float]:
    """``shares`` rounded to whole buckets (0.0001) adding up to exactly 1, none under
    ``floor`` rounded up to a bucket: what the allocation holds, shown as it holds it."""
    counts = shares_to_counts(dict(shares))
    least = min(math.ceil(floor * BUCKETS - 1e-6), BUCKETS // len(counts))
    for arm in counts:
        while counts[arm] < least:
            richest = max(counts, key=lambda a: counts[a])
            counts[richest] -= 1
            counts[arm] += 1
    return {arm: n / BUCKETS for arm, n in counts.items()}


def _seed(exp: Experiment) -> int:
    # The draws follow from the experiment's salt and version: a re-allocation in the
    # history can be reproduced.
    digest = hashlib.sha1(f"{exp.salt}:{exp.version}".encode()).digest()
    return int.from_bytes(digest[:8], "big")


def _due(mark: ScheduleMark | None, every: float, at: datetime) -> datetime | None:
    """None when ``every`` seconds have passed since ``mark`` (or there is none); else
    when they will have."""
    if mark is None:
        return None
    # a period stored before periods were bounded cannot overflow the calendar
    due = mark.changed_at + timedelta(seconds=min(every, MAX_EVERY_SECONDS))
    return None if at >= due else due


def _apply(
    turn: _Pass,
    exp: Experiment,
    action: str,
    reason: str,
    shares: dict[str, float] | None = None,
    stop: bool = False,
    noted: dict[str, str] | None = None,
) -> ControllerAction:
    if not turn.keep_going():  # the lease lost (or a stop asked for) while deciding
        return ControllerAction(exp.name, _ENDED, f"not {action}: the pass ended")
    done = turn.service.apply_control(
        exp.name, action, exp.version, turn.now, reason, shares=shares, stop=stop, noted=noted
    )
    if done is None:
        said = f"not {action}: the experiment moved on since version {exp.version} was read"
        return ControllerAction(exp.name, "wait", said)
    return ControllerAction(exp.name, action, reason, done.changes, done.version)


def _listed(values: Mapping[str, str]) -> str:
    return ", ".join(f"{k} {v}" for k, v in values.items())


# -- in the background of ``plinth server`` --------------------------------------------------


class ControllerLoop(lease.LeasedLoop):
    """Passes every ``seconds`` in a daemon thread while holding the controller's lease
    (``LeasedLoop``): a replica without it waits its turn, and a pass asks for the lease
    (renewing it) before each experiment and each action, so one whose lease was taken
    over (a stalled replica), or that was asked to stop, acts no more. ``done`` is the last
    pass's actions; ``state()`` what the loop last did (the server's ``/health`` shows
    it)."""

    def __init__(self, service: AbTestService, seconds: float) -> None:
        # a pass that dies with its replica frees the lease after this long (a pass longer
        # than that may overlap the next holder's: each action's compare-and-set still
        # takes every step once)
        super().__init__(
            service.store, LEASE, seconds=seconds, lease_seconds=max(3 * seconds, 60.0), logger=log
        )
        self.service = service
        self.done: list[ControllerAction] = []

    def state(self) -> dict[str, object]:
        """Also the last pass's errors (``experiment: message``)."""
        errors = [f"{d.experiment}: {d.reason}" for d in self.done if d.action == "error"]
        return {**super().state(), "errors": errors}

    def work(self) -> None:
        done = run_once(self.service, keep_going=self.still_held)
        self.done = done
        for did in done:
            if did.action not in ("wait", "error"):  # errors were logged as warnings
                log.info("A/B controller: %s %s: %s", did.experiment, did.action, did.reason)
