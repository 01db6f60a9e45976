"""What the pipeline service's tests share: a registered pipeline's spec, runs and steps
written as a runner would write them."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import insert, update

from plinth.pipelines.types import PipelineSpec
from plinth.store.engine import Store
from plinth.store.schema import pipeline_runs, pipeline_steps
from plinth.store.sql import now_ms


def spec(name: str = "churn-retrain", **changes: Any) -> PipelineSpec:
    given: dict[str, Any] = {
        "name": name,
        "entrypoint": "pipelines.churn:pipeline",
        "description": "retrain churn",
        "steps": ["get_data", "train", "register"],
        "params": {"since": "2026-01-01"},
        "retries": 2,
    }
    return PipelineSpec(**{**given, **changes})


def finish(
    store: Store, pipeline_run: int, status: str, steps: dict[str, str], **fields: Any
) -> None:
    """The run as a runner leaves it: ``status``, each step with its status (in order)."""
    at = now_ms()
    with store.write() as conn:
        conn.execute(
            update(pipeline_runs)
            .where(pipeline_runs.c.id == pipeline_run)
            .values(status=status, started_at=at - 5000, **fields)
        )
        for position, (name, step_status) in enumerate(steps.items()):
            started = None if step_status in ("pending", "skipped") else at - 4000 + position
            conn.execute(
                insert(pipeline_steps).values(
                    pipeline_run=pipeline_run,
                    name=name,
                    position=position,
                    status=step_status,
                    started_at=started,
                    finished_at=None
                    if started is None or step_status == "running"
                    else started + 1500,
                    inputs=json.dumps({}),
                    error="Traceback...\nValueError: boom" if step_status == "failed" else None,
                )
            )
