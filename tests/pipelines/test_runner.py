"""Running a pipeline in process: data passed and stored, failures, logs, caching,
resuming, retries, heartbeats, all recorded."""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pytest
from sqlalchemy import delete, select, update

from plinth.auth.context import acting_as
from plinth.auth.service import AuthService
from plinth.auth.types import Principal, Role
from plinth.client import Client
from plinth.errors import Conflict, InvalidArgument, NotFound, PermissionDenied
from plinth.pipelines import records, runner
from plinth.pipelines.context import StepContext
from plinth.pipelines.entrypoints import load_pipeline
from plinth.pipelines.pipeline import Pipeline, PipelineFailed
from plinth.pipelines.runner import execute, load_output, run_pipeline
from plinth.pipelines.step import step
from plinth.pipelines.types import PipelineRun, PipelineSpec
from plinth.store.engine import open_store
from plinth.store.schema import grants, pipeline_runs
from tests.backends import empty_tables, local_client

calls: Counter[str] = Counter()
failing: set[str] = set()  # steps made to fail


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.integration)])
def client(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Client]:
    uri = f"sqlite:///{tmp_path / 'plinth.db'}"
    if request.param == "postgres":
        uri = request.getfixturevalue("postgres_uri")
        empty_tables(open_store(uri))
    calls.clear()
    failing.clear()
    yield local_client(uri, str(tmp_path / "artifacts"))


class Box:
    """Not JSON: pickled between steps."""

    def __init__(self, n: int) -> None:
        self.n = n


@step
def get_data(context: StepContext, rows: int = 3) -> pa.Table:
    calls["get_data"] += 1
    print(f"reading {rows} rows")
    context.log.info("read from the source")
    logging.getLogger("some.library").warning("a library speaks")
    return pa.table({"x": list(range(rows))})


@step(cache=True)
def transform(get_data: pa.Table) -> pd.DataFrame:
    calls["transform"] += 1
    if "transform" in failing:
        raise ValueError("transform broke")
    frame: pd.DataFrame = get_data.to_pandas()
    frame["y"] = frame["x"] * 2
    return frame


@step
def train(context: StepContext, transform: pd.DataFrame, scale: float = 1.0) -> Box:
    calls["train"] += 1
    if "train" in failing:
        raise RuntimeError(f"cannot train on {len(transform)} rows")
    return Box(int(transform["y"].sum() * scale))


@step
def report(train: Box, get_data: pa.Table) -> dict[str, Any]:
    calls["report"] += 1
    if "report" in failing:
        raise KeyError("no report")
    return {"total": train.n, "rows": get_data.num_rows}


def churn() -> Pipeline:
    return Pipeline("churn", [get_data, transform, train, report], params={"rows": 3})


PIPELINE = churn()


def steps_of(run: PipelineRun) -> dict[str, tuple[str, int | None]]:
    return {s.name: (s.status, s.reused_from) for s in run.steps}


def test_outputs_pass_between_steps_and_are_stored(client: Client) -> None:
    run = PIPELINE.run(client=client)
    assert run.status == "succeeded" and run.error is None
    assert steps_of(run) == {name: ("succeeded", None) for name in PIPELINE.step_names}
    kinds = {s.name: s.output["kind"] for s in run.steps if s.output}
    assert kinds == {
        "get_data": "arrow",
        "transform": "pandas",
        "train": "pickle",
        "report": "json",
    }
    assert load_output(client, run.id, "report") == {"total": 6, "rows": 3}
    assert load_output(client, run.id, "get_data").column("x").to_pylist() == [0, 1, 2]
    assert list(load_output(client, run.id, "transform")["y"]) == [0, 2, 4]
    assert load_output(client, run.id, "train", trust_pickle=True).n == 6
    # each input's digest is the output it came from
    by_name = {s.name: s for s in run.steps}
    assert by_name["report"].inputs["get_data"] == {
        "source": "step", "sha256": by_name["get_data"].output["sha256"]  # type: ignore[index]
    }  # fmt: skip
    assert by_name["get_data"].inputs["rows"]["source"] == "param"
    assert by_name["train"].inputs["scale"]["source"] == "default"
    assert all(s.duration_seconds is not None and s.code_version for s in run.steps)


def test_each_pipeline_run_is_a_tracking_run(client: Client) -> None:
    run = PIPELINE.run(params={"scale": 2.0}, client=client)
    assert run.run_id is not None
    tracked = client.get_run(run.run_id)
    assert tracked.status.value == "FINISHED"
    assert client.get_experiment("churn").id == tracked.experiment_id
    assert tracked.tags["plinth.pipeline"] == "churn"
    assert tracked.tags["plinth.pipeline_run"] == str(run.id)
    assert tracked.params["pipeline"] == {"rows": 3, "scale": 2.0}
    assert set(tracked.metrics) == {f"step.{name}.seconds" for name in PIPELINE.step_names}
    assert load_output(client, run.id, "report") == {"total": 12, "rows": 3}
    artifacts = {e.path for e in client.list_artifacts(run.run_id, "pipeline/train")}
    assert artifacts == {"pipeline/train/log.txt", "pipeline/train/output.pkl"}


@step
def measure(context: StepContext) -> int:
    context.run.log_metric("measure/auc", 0.75)
    return 1


@step
def read_back(context: StepContext, measure: int) -> dict[str, float]:
    stored = context.client.get_run(context.run.id).metrics
    return {key: found.last for key, found in stored.items()}


def test_what_a_step_logged_is_stored_before_the_next_step_runs(client: Client) -> None:
    client.settings.flush_interval = 3_600.0  # the buffer alone would write it an hour later
    run = Pipeline("metrics", [measure, read_back]).run(client=client)
    seen = load_output(client, run.id, "read_back")
    assert seen["measure/auc"] == 0.75
    assert "step.measure.seconds" in seen


def test_a_pipelines_own_experiment_is_used(client: Client) -> None:
    pipeline = Pipeline("churn", [get_data], experiment="retraining")
    run = pipeline.run(client=client)
    assert client.get_run(run.run_id or "").experiment_id == client.get_experiment("retraining").id


def test_a_failing_step_fails_the_run_and_skips_the_rest(client: Client) -> None:
    failing.add("train")
    run = PIPELINE.run(client=client, raise_on_failure=False)
    assert run.status == "failed"
    assert run.error == "step train failed: RuntimeError: cannot train on 3 rows"
    assert steps_of(run) == {
        "get_data": ("succeeded", None),
        "transform": ("succeeded", None),
        "train": ("failed", None),
        "report": ("skipped", None),
    }
    failed = run.steps[2]
    assert failed.error is not None
    assert "Traceback" in failed.error and 'raise RuntimeError(f"cannot train' in failed.error
    assert failed.output is None and failed.finished_at is not None
    assert calls["report"] == 0
    log = client.read_artifact(run.run_id or "", failed.log_path or "").decode()
    assert "RuntimeError: cannot train on 3 rows" in log
    assert client.get_run(run.run_id or "").status.value == "FAILED"
    assert records.get_run(client.tracking.store, run.id).finished_at is not None


def test_run_raises_with_the_failed_run(client: Client) -> None:
    failing.add("transform")
    with pytest.raises(PipelineFailed, match="step transform failed") as caught:
        PIPELINE.run(client=client)
    assert caught.value.run.status == "failed"
    assert [s.status for s in caught.value.run.steps] == [
        "succeeded",
        "failed",
        "skipped",
        "skipped",
    ]


def test_an_exit_or_an_unstorable_output_fails_the_step(client: Client) -> None:
    @step
    def leaves() -> None:
        raise SystemExit(3)

    @step
    def generator() -> Any:
        return (i for i in range(3))

    assert "SystemExit: 3" in (
        Pipeline("a", [leaves]).run(client=client, raise_on_failure=False).error or ""
    )
    run = Pipeline("b", [generator]).run(client=client, raise_on_failure=False)
    assert run.steps[0].status == "failed"
    assert "generator" in (run.steps[0].error or "")


def test_logs_are_captured_and_still_shown(
    client: Client, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    run = Pipeline("churn", [get_data], params={"rows": 5}).run(client=client)
    log_path = run.steps[0].log_path
    assert log_path == "pipeline/get_data/log.txt"
    log = client.read_artifact(run.run_id or "", log_path).decode()
    assert "reading 5 rows" in log
    assert "INFO plinth.pipeline.churn.get_data: read from the source" in log
    assert "WARNING some.library: a library speaks" in log
    assert "reading 5 rows" in capsys.readouterr().out
    # the process's own logging still gets the records
    assert "a library speaks" in caplog.messages


def test_without_logging_configured_records_are_shown_on_stderr(
    client: Client, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(logging.getLogger(), "handlers", [])
    Pipeline("churn", [get_data]).run(client=client)
    assert "INFO plinth.pipeline.churn.get_data: read from the source" in capsys.readouterr().err
    assert logging.getLogger().handlers == []  # and removed again


def test_a_cached_step_is_reused_while_code_and_inputs_stay(client: Client) -> None:
    first = PIPELINE.run(client=client)
    again = PIPELINE.run(client=client)
    assert steps_of(again)["transform"] == ("cached", first.id)
    assert calls["transform"] == 1 and calls["train"] == 2
    cached = again.steps[1]
    assert cached.output == first.steps[1].output and cached.cache_key == first.steps[1].cache_key
    assert load_output(client, again.id, "report") == {"total": 6, "rows": 3}
    note = client.read_artifact(again.run_id or "", cached.log_path or "").decode()
    assert note.startswith(f"not run: output cached from pipeline run {first.id}")

    changed_input = PIPELINE.run(params={"rows": 4}, client=client)
    assert steps_of(changed_input)["transform"] == ("succeeded", None)
    assert calls["transform"] == 2

    @step(name="transform", cache=True)
    def transform_v2(get_data: pa.Table) -> pd.DataFrame:
        frame: pd.DataFrame = get_data.to_pandas()
        frame["y"] = frame["x"] * 3
        return frame

    new_code = Pipeline("churn", [get_data, transform_v2, train, report], params={"rows": 3})
    changed_code = new_code.run(client=client)
    assert steps_of(changed_code)["transform"] == ("succeeded", None)
    assert changed_code.steps[1].cache_key != first.steps[1].cache_key
    assert load_output(client, changed_code.id, "report") == {"total": 9, "rows": 3}
    # and the same pipeline again hits the entry the new code wrote
    assert steps_of(new_code.run(client=client))["transform"] == ("cached", changed_code.id)


def test_another_pipelines_cache_is_not_used(client: Client) -> None:
    PIPELINE.run(client=client)
    other = Pipeline("other", [get_data, transform], params={"rows": 3}).run(client=client)
    assert steps_of(other)["transform"] == ("succeeded", None)


def test_a_rerun_from_a_step_reuses_the_earlier_outputs(client: Client) -> None:
    failing.add("train")
    first = PIPELINE.run(params={"rows": 4}, client=client, raise_on_failure=False)
    failing.clear()
    calls.clear()
    rerun = run_pipeline(client, PIPELINE, resume_from=first.id, from_step="train")
    assert rerun.status == "succeeded"
    assert (rerun.trigger, rerun.resumed_from, rerun.from_step) == ("rerun", first.id, "train")
    assert rerun.params == {"rows": 4}  # the resumed run's
    assert steps_of(rerun) == {
        "get_data": ("reused", first.id),
        "transform": ("reused", first.id),
        "train": ("succeeded", None),
        "report": ("succeeded", None),
    }
    assert dict(calls) == {"train": 1, "report": 1}
    assert load_output(client, rerun.id, "report") == {"total": 12, "rows": 4}
    note = client.read_artifact(rerun.run_id or "", rerun.steps[0].log_path or "").decode()
    assert note == f"not run: output reused from pipeline run {first.id}\n"
    assert load_output(client, rerun.id, "transform")["y"].tolist() == [0, 2, 4, 6]
    # a rerun of the rerun takes outputs that were themselves reused
    calls.clear()
    third = run_pipeline(client, PIPELINE, resume_from=rerun.id, from_step="report")
    assert steps_of(third)["train"] == ("reused", rerun.id)
    assert dict(calls) == {"report": 1}
    assert load_output(client, third.id, "report") == {"total": 12, "rows": 4}


def test_a_rerun_needs_the_earlier_steps_done(client: Client) -> None:
    failing.add("transform")
    first = PIPELINE.run(client=client, raise_on_failure=False)
    run = run_pipeline(client, PIPELINE, resume_from=first.id, from_step="report")
    assert run.status == "failed"
    assert "its step 'transform' is failed" in (run.error or "")
    assert run.run_id is None and calls["report"] == 0


def test_a_bad_rerun_is_refused(client: Client) -> None:
    first = PIPELINE.run(client=client)
    with pytest.raises(InvalidArgument, match="no step 'fit'; its steps are get_data, transform"):
        run_pipeline(client, PIPELINE, resume_from=first.id, from_step="fit")
    with pytest.raises(InvalidArgument, match="needs resume_from"):
        run_pipeline(client, PIPELINE, from_step="train")
    with pytest.raises(NotFound, match="pipeline run 999"):
        run_pipeline(client, PIPELINE, resume_from=999, from_step="train")
    with pytest.raises(InvalidArgument, match="a run of 'churn', not of 'other'"):
        run_pipeline(client, Pipeline("other", [get_data]), resume_from=first.id)


def test_a_retry_resumes_where_the_previous_attempt_stopped(client: Client) -> None:
    failing.add("train")
    first = PIPELINE.run(client=client, raise_on_failure=False)
    failing.clear()
    calls.clear()
    store = client.tracking.store
    with store.write() as conn:
        retry = records.insert_run(conn, pipeline="churn", trigger="retry", created_by=first.created_by,
                                   params=first.params, attempt=2, max_attempts=3, retry_of=first.id)  # fmt: skip
    assert retry is not None
    seen: list[tuple[int, int, str]] = []

    @step
    def keyed(context: StepContext, train: Box) -> None:
        seen.append((context.root_run, context.attempt, context.key("promote")))

    done = execute(client, Pipeline("churn", [*PIPELINE.steps, keyed], params={"rows": 3}), retry)
    assert done.status == "succeeded" and done.worker == runner.default_worker()
    assert steps_of(done)["transform"] == ("reused", first.id)
    assert steps_of(done)["train"] == ("succeeded", None)
    assert dict(calls) == {"train": 1, "report": 1}
    assert seen == [(first.id, 2, f"pipeline-run:{first.id}:keyed:promote")]


def test_a_retry_of_a_rerun_goes_on_from_the_attempt_before(client: Client) -> None:
    first = PIPELINE.run(client=client)
    failing.add("report")
    rerun = run_pipeline(client, PIPELINE, resume_from=first.id, from_step="train")
    assert (rerun.status, steps_of(rerun)["train"]) == ("failed", ("succeeded", None))
    failing.clear()
    calls.clear()
    store = client.tracking.store
    with store.write() as conn:  # as a scheduler retries it: the row's own resume copied
        retry = records.insert_run(conn, pipeline="churn", trigger="retry", created_by=first.created_by,
                                   attempt=2, retry_of=rerun.id, resumed_from=first.id,
                                   from_step="train")  # fmt: skip
    assert retry is not None
    done = execute(client, PIPELINE, retry)
    assert steps_of(done) == {
        "get_data": ("reused", rerun.id),
        "transform": ("reused", rerun.id),
        "train": ("reused", rerun.id),
        "report": ("succeeded", None),
    }
    assert dict(calls) == {"report": 1}


def test_a_retry_after_an_attempt_that_did_nothing_follows_its_row(client: Client) -> None:
    first = PIPELINE.run(client=client)
    store = client.tracking.store
    with store.write() as conn:
        attempt = records.insert_run(conn, pipeline="churn", trigger="rerun", created_by=first.created_by,
                                     resumed_from=first.id, from_step="report")  # fmt: skip
        assert attempt is not None
        retry = records.insert_run(conn, pipeline="churn", trigger="retry", created_by=first.created_by,
                                   attempt=2, retry_of=attempt, resumed_from=first.id,
                                   from_step="report")  # fmt: skip
    assert retry is not None
    records.claim(store, attempt, "killed:1")  # its worker died before any step
    records.finish(store, attempt, "failed", "worker killed")
    calls.clear()
    done = execute(client, PIPELINE, retry)
    assert steps_of(done)["train"] == ("reused", first.id)
    assert dict(calls) == {"report": 1}


def test_the_context_describes_the_run(client: Client) -> None:
    seen: list[StepContext] = []

    @step
    def look(context: StepContext) -> None:
        seen.append(context)
        context.run.log_metric("auc", 0.9)

    run = Pipeline("p", [look], params={"a": 1}).run(params={"b": 2}, client=client)
    (context,) = seen
    assert (context.pipeline, context.pipeline_run, context.root_run) == ("p", run.id, run.id)
    assert (context.step, context.params, context.attempt) == ("look", {"a": 1, "b": 2}, 1)
    assert context.trigger["kind"] == "manual" and context.trigger["alert_id"] is None
    assert context.key() == f"pipeline-run:{run.id}:look"
    assert context.run.id == run.run_id
    assert "auc" in client.get_run(run.run_id or "").metrics


def test_a_cancelled_run_stops_before_the_next_step(client: Client) -> None:
    store = client.tracking.store

    @step
    def first(context: StepContext) -> int:
        with store.write() as conn:  # what cancelling it does
            conn.execute(
                update(pipeline_runs)
                .where(pipeline_runs.c.id == context.pipeline_run)
                .values(status="cancelled")
            )
        return 1

    @step
    def second(first: int) -> int:
        calls["second"] += 1
        return first

    run = Pipeline("p", [first, second]).run(client=client, raise_on_failure=False)
    assert run.status == "cancelled"
    assert calls["second"] == 0
    assert [s.status for s in run.steps] == ["running", "pending"]  # nothing marked done
    assert client.get_run(run.run_id or "").status.value == "KILLED"


def test_the_heartbeat_thread_beats_while_a_step_runs(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(runner, "HEARTBEAT_SECONDS", 0.05)
    store = client.tracking.store
    beats: list[int] = []

    def heartbeat_at(run: int) -> int:
        with store.read() as conn:
            return int(conn.execute(
                select(pipeline_runs.c.heartbeat_at).where(pipeline_runs.c.id == run)
            ).scalar_one())  # fmt: skip

    @step
    def wait_for_a_beat(context: StepContext) -> None:
        start = heartbeat_at(context.pipeline_run)
        deadline = time.monotonic() + 20
        while heartbeat_at(context.pipeline_run) == start and time.monotonic() < deadline:
            time.sleep(0.02)
        beats.extend([start, heartbeat_at(context.pipeline_run)])

    assert Pipeline("p", [wait_for_a_beat]).run(client=client).status == "succeeded"
    assert beats[1] > beats[0]


def test_a_run_is_executed_by_one_worker(client: Client) -> None:
    store = client.tracking.store
    with store.write() as conn:
        queued = records.insert_run(conn, pipeline="churn", trigger="manual", created_by="ann")
    assert queued is not None
    assert records.claim(store, queued, "elsewhere:1")
    with pytest.raises(Conflict, match="is running by elsewhere:1"):
        execute(client, PIPELINE, queued)
    with pytest.raises(InvalidArgument, match="a run of 'churn', not of 'other'"):
        execute(client, Pipeline("other", [get_data]), queued)
    # the worker that claimed it runs it
    assert execute(client, PIPELINE, queued, worker="elsewhere:1").status == "succeeded"
    with pytest.raises(Conflict, match="is succeeded"):
        execute(client, PIPELINE, queued, worker="elsewhere:1")


def test_load_output_of_an_unknown_step_or_a_failed_one(client: Client) -> None:
    failing.add("train")
    run = PIPELINE.run(client=client, raise_on_failure=False)
    with pytest.raises(NotFound, match="no step 'nope'"):
        load_output(client, run.id, "nope")
    with pytest.raises(InvalidArgument, match=r"step 'train' of pipeline run \d+ is failed"):
        load_output(client, run.id, "train")


def test_a_pipeline_is_loaded_from_a_module_or_a_file(tmp_path: Path) -> None:
    assert load_pipeline("tests.pipelines.test_runner:PIPELINE").name == "churn"
    helper = tmp_path / "helper.py"
    helper.write_text("ROWS = 2\n")
    file = tmp_path / "flow.py"
    file.write_text(
        "import plinth\nfrom helper import ROWS\n\n@plinth.step\ndef one():\n    return ROWS\n\n"
        "flow = plinth.Pipeline('flow', [one])\n"
    )
    assert load_pipeline(f"{file}:flow").step_names == ["one"]


@pytest.mark.parametrize(
    ("entrypoint", "match"),
    [
        ("no_colon", "must be 'package.module:attr'"),
        ("tests.pipelines.nope:x", "No module named"),
        ("tests.pipelines.test_runner:missing", "has no 'missing'"),
        ("tests.pipelines.test_runner:churn", "is a function, not a plinth.Pipeline"),
        ("/no/such/file.py:x", "there is no file"),
    ],
)
def test_a_bad_entrypoint_is_refused(entrypoint: str, match: str) -> None:
    with pytest.raises(InvalidArgument, match=match):
        load_pipeline(entrypoint)


def test_runs_go_through_the_store_not_a_server(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(client, "remote", True)
    with pytest.raises(InvalidArgument, match="store_uri"):
        run_pipeline(client, PIPELINE)


def test_an_interrupt_ends_the_run_failed_and_is_raised(client: Client) -> None:
    @step
    def interrupted() -> None:
        raise KeyboardInterrupt

    pipeline = Pipeline("p", [interrupted, get_data])
    with pytest.raises(KeyboardInterrupt):
        pipeline.run(client=client)
    assert calls["get_data"] == 0
    with client.tracking.store.read() as conn:
        last = conn.execute(select(pipeline_runs.c.id)).scalar_one()
    run = records.get_run(client.tracking.store, last)
    assert run.status == "failed"
    assert run.error == "the runner failed: KeyboardInterrupt: "
    assert [s.status for s in run.steps] == ["failed", "skipped"]
    assert "KeyboardInterrupt" in (run.steps[0].error or "")
    log = client.read_artifact(run.run_id or "", run.steps[0].log_path or "").decode()
    assert "raise KeyboardInterrupt" in log
    assert client.get_run(run.run_id or "").status.value == "FAILED"


def test_an_output_gone_from_the_resumed_run_fails_the_step(client: Client, tmp_path: Path) -> None:
    first = PIPELINE.run(client=client)
    for stored in (tmp_path / "artifacts").rglob("output.pkl"):
        stored.unlink()  # train's output
    rerun = run_pipeline(client, PIPELINE, resume_from=first.id, from_step="report")
    assert rerun.status == "failed"
    assert rerun.error is not None and rerun.error.startswith("step report failed: ")
    assert steps_of(rerun)["report"] == ("failed", None)
    assert calls["report"] == 1  # the first run's only


# -- whose outputs a run may read --------------------------------------------------------------

BOB = Principal("bob", Role.EDITOR, via="token")
unpickled: list[str] = []  # what reading a Planted output did


def _plant(what: str) -> Box:
    unpickled.append(what)
    return Box(0)


class Planted:
    """An output whose reading runs code (as any pickle may)."""

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (_plant, ("read",))


@step(cache=True)
def planted() -> Planted:
    calls["planted"] += 1
    return Planted()


@step
def after(planted: Any) -> str:
    return type(planted).__name__


def test_a_registered_pipeline_is_run_by_those_who_may_write_it(client: Client) -> None:
    store = client.tracking.store
    AuthService(store).create_user("bob", Role.EDITOR)
    client.pipelines.register_pipeline(PipelineSpec(name="churn", entrypoint="flows:churn"))
    with acting_as(BOB), pytest.raises(PermissionDenied, match="'bob' may not write pipeline"):
        run_pipeline(client, PIPELINE)
    with store.write() as conn:  # private to its owner: bob may not even see it
        conn.execute(delete(grants).where(grants.c.grantee_type == "everyone"))
    with acting_as(BOB), pytest.raises(NotFound, match="pipeline 'churn' does not exist"):
        run_pipeline(client, PIPELINE)
    with store.read() as conn:
        assert conn.execute(select(pipeline_runs.c.id)).all() == []  # nothing recorded
    assert calls["get_data"] == 0
    assert PIPELINE.run(client=client).status == "succeeded"  # its owner runs it
    with acting_as(BOB):  # a pipeline nobody registered is anyone's to run in process
        assert Pipeline("scratch", [get_data]).run(client=client).created_by == "bob"


def test_outputs_are_reused_only_from_the_creators_own_runs(client: Client) -> None:
    pipeline = Pipeline("shared", [planted, after])  # registered by nobody: anyone runs it
    unpickled.clear()
    with acting_as(BOB):
        planter = pipeline.run(client=client)
    assert planter.created_by == "bob"
    owners = pipeline.run(client=client)  # bob's cached pickle is not read: a miss
    assert steps_of(owners)["planted"] == ("succeeded", None)
    assert unpickled == [] and calls["planted"] == 2
    again = pipeline.run(client=client)  # the owner's own entry is
    assert steps_of(again)["planted"] == ("cached", owners.id)
    assert unpickled == ["read"] and calls["planted"] == 2


def test_a_rerun_of_another_creators_run_reads_no_pickle(client: Client) -> None:
    first = PIPELINE.run(client=client)  # train's output is a pickle (Box)
    bobs = Pipeline("churn", PIPELINE.steps, PIPELINE.params, experiment="bobs-churn")
    with acting_as(BOB):
        refused = run_pipeline(client, bobs, resume_from=first.id, from_step="report")
        assert refused.status == "failed"
        assert (
            f"its step 'train' output is a pickle written by a run of {first.created_by!r}, "
            "and this run is 'bob''s"
        ) in (refused.error or "")
        assert calls["report"] == 1
        # parquet and JSON outputs are data, not code: those are reused
        rerun = run_pipeline(client, bobs, resume_from=first.id, from_step="train")
    assert steps_of(rerun)["transform"] == ("reused", first.id)
    assert steps_of(rerun)["train"] == ("succeeded", None)


def test_a_cached_step_taking_the_context_is_keyed_by_the_params(client: Client) -> None:
    @step(cache=True)
    def threshold(context: StepContext) -> float:
        calls["threshold"] += 1
        return float(context.params["threshold"])

    pipeline = Pipeline("p", [threshold], params={"threshold": 0.5})
    first = pipeline.run(client=client)
    changed = pipeline.run(params={"threshold": 0.9}, client=client)
    assert steps_of(changed)["threshold"] == ("succeeded", None)
    assert load_output(client, changed.id, "threshold") == 0.9
    same = pipeline.run(params={"threshold": 0.9}, client=client)
    assert steps_of(same)["threshold"] == ("cached", changed.id)
    assert calls["threshold"] == 2 and first.steps[0].cache_key != changed.steps[0].cache_key


def test_a_default_json_cannot_sort_still_has_a_stable_digest(client: Client) -> None:
    @step(cache=True)
    def keyed(options: Any = {1: "a", "b": 2}) -> int:  # noqa: B006
        calls["keyed"] += 1
        return len(options)

    pipeline = Pipeline("k", [keyed])
    first = pipeline.run(client=client)
    assert steps_of(pipeline.run(client=client))["keyed"] == ("cached", first.id)
    assert runner._digest({1: "a", "b": 2}) != runner._digest({1: "a", "b": 3})


def test_a_worker_may_keep_step_output_off_its_console(
    client: Client, capsys: pytest.CaptureFixture[str]
) -> None:
    @step
    def chatty(context: StepContext) -> None:
        print("printed by the step")
        context.log.info("logged by the step")

    pipeline = Pipeline("chatty", [chatty])
    with client.tracking.store.write() as conn:
        queued = records.insert_run(conn, pipeline="chatty", trigger="manual", created_by="ann")
    assert queued is not None
    done = execute(client, pipeline, queued, echo=False)
    log = client.read_artifact(done.run_id or "", done.steps[0].log_path or "").decode()
    assert "printed by the step" in log and "logged by the step" in log
    shown = capsys.readouterr()
    assert "by the step" not in shown.out + shown.err
    pipeline.run(client=client)  # echoed by default
    assert "printed by the step" in capsys.readouterr().out
