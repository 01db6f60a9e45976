"""A Plinth pipeline run from Dagster (``execute_in_process``) on the embedded store: the
Dagster run's outcome follows the Plinth run's, and the Plinth run is recorded as usual."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from plinth.client import Client
from plinth.pipelines.handover import PipelineRunFailed, dagster_job, run_handed_over
from plinth.pipelines.pipeline import Pipeline
from plinth.pipelines.records import get_run
from plinth.pipelines.runner import load_output
from plinth.pipelines.step import step
from tests.backends import local_client

dg = pytest.importorskip("dagster")


@step
def numbers(context: Any, n: int = 3) -> list[int]:
    return list(range(n))


@step
def total(context: Any, numbers: list[int]) -> int:
    if sum(numbers) > 100:
        raise ValueError(f"too many numbers: {sum(numbers)}")
    return sum(numbers)


PIPELINE = Pipeline("dagster-handover", [numbers, total], params={"n": 3})
OP = "run_plinth_pipeline"


@pytest.fixture
def plinth_client(tmp_path: Path) -> Iterator[Client]:
    client = local_client(f"sqlite:///{tmp_path / 'plinth.db'}", str(tmp_path / "artifacts"))
    yield client
    client.close()


def _with_params(**params: Any) -> dict[str, Any]:
    return {"ops": {OP: {"config": {"params": params}}}}


def _output_metadata(result: Any) -> dict[str, Any]:
    [event] = [e for e in result.all_events if e.event_type_value == "STEP_OUTPUT"]
    return {k: v.value for k, v in event.event_specific_data.metadata.items()}


def test_a_dagster_run_runs_and_records_the_plinth_pipeline(plinth_client: Client) -> None:
    job = dagster_job(PIPELINE, client=plinth_client)
    assert job.name == "dagster_handover"
    assert dg.Definitions(jobs=[job]).get_job_def("dagster_handover") is not None

    result = job.execute_in_process(run_config=_with_params(n=5))

    assert result.success
    out = result.output_for_node(OP)
    run = get_run(plinth_client.tracking.store, out["pipeline_run"])
    assert (run.pipeline, run.status, run.trigger) == ("dagster-handover", "succeeded", "manual")
    assert out == {"pipeline_run": run.id, "run_id": run.run_id, "status": "succeeded"}
    assert [(s.name, s.status) for s in run.steps] == [
        ("numbers", "succeeded"),
        ("total", "succeeded"),
    ]
    assert load_output(plinth_client, run.id, "total") == 10  # 0+1+2+3+4: the op's params
    assert _output_metadata(result) == {
        "plinth_pipeline": "dagster-handover",
        "plinth_pipeline_run": run.id,
        "plinth_status": "succeeded",
        "plinth_run_id": run.run_id,
    }
    assert run.run_id is not None
    assert plinth_client.get_run(run.run_id).tags["dagster.run_id"] == result.run_id


def test_a_failed_plinth_run_fails_the_dagster_op(plinth_client: Client) -> None:
    job = dagster_job(PIPELINE, client=plinth_client)

    result = job.execute_in_process(run_config=_with_params(n=20), raise_on_error=False)

    assert not result.success
    failure = result.failure_data_for_node(OP).user_failure_data
    pipeline_run = failure.metadata["plinth_pipeline_run"].value
    run = get_run(plinth_client.tracking.store, pipeline_run)
    assert run.status == "failed"
    assert "step total failed" in (run.error or "")
    assert f"Plinth pipeline run {run.id} of 'dagster-handover' failed" in failure.description
    assert failure.metadata["plinth_error"].value == run.error
    steps = {s.name: s for s in run.steps}
    assert steps["numbers"].status == "succeeded"
    assert steps["total"].status == "failed"
    assert "Traceback" in (steps["total"].error or "")
    assert "too many numbers: 190" in (steps["total"].error or "")


def test_a_job_from_an_entrypoint_loads_the_pipeline_when_it_runs(plinth_client: Client) -> None:
    job = dagster_job(
        "tests.pipelines.test_handover:PIPELINE", client=lambda: plinth_client, params={"n": 4}
    )
    assert job.name == "PIPELINE"

    result = job.execute_in_process()

    assert result.success
    assert load_output(plinth_client, result.output_for_node(OP)["pipeline_run"], "total") == 6


def test_run_handed_over_raises_for_a_failed_run_unless_told_not_to(
    plinth_client: Client,
) -> None:
    with pytest.raises(PipelineRunFailed, match="step total failed") as caught:
        run_handed_over(PIPELINE, {"n": 20}, client=plinth_client)
    assert get_run(plinth_client.tracking.store, caught.value.run.id).status == "failed"

    done = run_handed_over(PIPELINE, {"n": 20}, client=plinth_client, raise_on_failure=False)
    assert (done.status, done.pipeline_run) == ("failed", caught.value.run.id + 1)
    assert "step total failed" in (done.error or "")
