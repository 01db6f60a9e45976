"""What a step gets as its ``context`` parameter."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from plinth.client import Client
    from plinth.tracking.run import ActiveRun


@dataclass
class StepContext:
    """The run a step is part of.

    ``run``: the pipeline run's tracking run (log params, metrics and models into it).
    ``root_run``: the first attempt's pipeline run id, the same across retries (see
    ``key``). ``trigger``: what started the run: ``kind`` (manual, cron, alert, ...),
    ``schedule_id``, ``trigger_key``, ``scheduled_for`` (ms), ``alert_id``.
    ``log``: a logger whose records go into the step's log."""

    client: Client
    run: ActiveRun
    pipeline: str
    pipeline_run: int
    root_run: int
    step: str
    params: dict[str, Any]
    attempt: int = 1
    trigger: dict[str, Any] = field(default_factory=dict)
    log: logging.Logger = field(default_factory=lambda: logging.getLogger("plinth.pipeline"))

    def key(self, what: str = "") -> str:
        """An idempotence key for a side effect of this step (a registration, a promotion,
        a delivery): the same in every retry of the run, so the effect happens once."""
        base = f"pipeline-run:{self.root_run}:{self.step}"
        return f"{base}:{what}" if what else base
