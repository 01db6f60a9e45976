"""Hand a Plinth pipeline over to an orchestrator a team already runs.

The orchestrator decides *when*; Plinth still runs the steps and records the run (steps,
outputs, logs, the tracking run) exactly as a run started by hand would be: the hand-over
is one call of ``runner.run_pipeline``. For Dagster, ``dagster_job`` builds the job; Airflow
and Prefect call ``run_handed_over`` from a task (see docs/pipelines.md).

Dagster is imported inside the functions only: ``import plinth`` must stay cheap, and
Dagster is an optional dependency.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from plinth.errors import PlinthError

if TYPE_CHECKING:
    import dagster

    from plinth.client import Client
    from plinth.pipelines.pipeline import Pipeline
    from plinth.pipelines.types import PipelineRun


class PipelineRunFailed(PlinthError):
    """A handed-over Plinth run did not succeed (``run.error``: which step, and why).
    Raised in the orchestrator's task only, never sent over HTTP."""

    error_code = "PIPELINE_RUN_FAILED"

    def __init__(self, run: PipelineRun) -> None:
        super().__init__(
            f"Plinth pipeline run {run.id} of {run.pipeline!r} {run.status}: {run.error}"
        )
        self.run = run


@dataclass(frozen=True)
class HandedOver:
    """The Plinth run an orchestrator's task started: enough to find it again
    (``plinth pipelines show PIPELINE_RUN``; the tracking run ``run_id``)."""

    pipeline: str
    pipeline_run: int
    run_id: str | None
    status: str
    error: str | None = None

    def metadata(self) -> dict[str, str | int]:
        found: dict[str, str | int] = {
            "plinth_pipeline": self.pipeline,
            "plinth_pipeline_run": self.pipeline_run,
            "plinth_status": self.status,
        }
        if self.run_id:
            found["plinth_run_id"] = self.run_id
        return found


def run_handed_over(
    pipeline: Pipeline | str,
    params: Mapping[str, Any] | None = None,
    *,
    client: Client | Callable[[], Client] | None = None,
    trigger: str = "manual",
    tags: Mapping[str, str] | None = None,
    raise_on_failure: bool = True,
) -> HandedOver:
    """Run ``pipeline`` in this process, recorded in Plinth, and say which run it was.

    The call for any orchestrator's task (an Airflow ``PythonOperator``, a Prefect
    ``@task``): ``tags`` go on the tracking run (e.g. the orchestrator's run id).
    A failed run raises ``PipelineRunFailed`` (so the task fails) unless
    ``raise_on_failure=False``; the failure is recorded in Plinth either way.
    """
    from plinth.pipelines.entrypoints import load_pipeline
    from plinth.pipelines.runner import run_pipeline

    plinth_client = _client(client)
    loaded = load_pipeline(pipeline) if isinstance(pipeline, str) else pipeline
    run = run_pipeline(plinth_client, loaded, dict(params or {}), trigger=trigger)
    if tags and run.run_id:
        plinth_client.tracking.set_tags(run.run_id, dict(tags))
    if raise_on_failure and run.status != "succeeded":
        raise PipelineRunFailed(run)
    return HandedOver(run.pipeline, run.id, run.run_id, run.status, run.error)


def dagster_job(
    pipeline: Pipeline | str,
    *,
    name: str | None = None,
    params: Mapping[str, Any] | None = None,
    client: Client | Callable[[], Client] | None = None,
    trigger: str = "manual",
    description: str | None = None,
    tags: Mapping[str, str] | None = None,
) -> dagster.JobDefinition:
    """A Dagster job of one op that runs ``pipeline`` through Plinth's runner.

    Put it in a ``dagster.Definitions`` like any job (schedule it with Dagster's own
    schedules and sensors). The op's config ``params`` (a dict) goes over ``params`` given
    here, which go over the pipeline's own. Each Dagster run makes one Plinth pipeline run
    (trigger ``trigger``; the tracking run tagged ``dagster.run_id``); its id, status and
    tracking run are the op's output value and output metadata. A failed Plinth run fails
    the op with ``dagster.Failure`` (metadata: the same, plus the error); Dagster's own
    retries then make new Plinth runs. Job name: ``name``, else the pipeline's name (or
    the entrypoint's attribute) with characters Dagster refuses turned into ``_``.
    """
    import dagster as dg

    job_name = name or _dagster_name(pipeline)
    defaults = dict(params or {})

    def run_plinth_pipeline(context: dg.OpExecutionContext) -> dg.Output[dict[str, Any]]:
        run_params = {**defaults, **context.op_config["params"]}
        context.log.info(f"running Plinth pipeline {_label(pipeline)} with params {run_params}")
        done = run_handed_over(
            pipeline,
            run_params,
            client=client,
            trigger=trigger,
            tags={**(tags or {}), "dagster.run_id": context.run_id},
            raise_on_failure=False,
        )
        metadata: dict[str, Any] = dict(done.metadata())
        if done.status != "succeeded":
            raise dg.Failure(
                description=(
                    f"Plinth pipeline run {done.pipeline_run} of {done.pipeline!r} "
                    f"{done.status}: {done.error}"
                ),
                metadata={**metadata, "plinth_error": done.error or ""},
            )
        context.log.info(f"Plinth pipeline run {done.pipeline_run} {done.status}")
        return dg.Output(
            {"pipeline_run": done.pipeline_run, "run_id": done.run_id, "status": done.status},
            metadata=metadata,
        )

    # annotations are strings here (``from __future__``) naming ``dg``, which Dagster would
    # look up in this module's globals, where dagster is deliberately not imported
    run_plinth_pipeline.__annotations__ = {
        "context": dg.OpExecutionContext,
        "return": dg.Output[dict[str, Any]],
    }
    plinth_op = dg.op(
        name="run_plinth_pipeline",
        description=f"Runs the Plinth pipeline {_label(pipeline)} and records it in Plinth.",
        config_schema={
            "params": dg.Field(dg.Permissive(), is_required=False, default_value={})  # type: ignore[no-untyped-call]
        },
        out=dg.Out(dict[str, Any]),
    )(run_plinth_pipeline)

    @dg.job(name=job_name, description=description, tags=dict(tags or {}))
    def plinth_job() -> None:
        plinth_op()

    return plinth_job


def _client(client: Client | Callable[[], Client] | None) -> Client:
    from plinth.client import Client, default_client

    if client is None:
        return default_client()
    return client if isinstance(client, Client) else client()


def _label(pipeline: Pipeline | str) -> str:
    return pipeline if isinstance(pipeline, str) else repr(pipeline.name)


def _dagster_name(pipeline: Pipeline | str) -> str:
    raw = pipeline.rsplit(":", 1)[-1] if isinstance(pipeline, str) else pipeline.name
    return re.sub(r"[^A-Za-z0-9_]", "_", raw)
