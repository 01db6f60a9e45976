"""``ActiveRun``: what log_metric takes, ended runs, runs attached from another process.

Against every backend (the ``client`` fixture: SQLite, PostgreSQL, a server over HTTP).
"""

from __future__ import annotations

import math
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import plinth
from plinth.client import Client, connect
from plinth.tracking.types import MetricBatch, RunStatus


def batch(keys: list[str], values: list[Any], steps: list[Any] | None = None) -> MetricBatch:
    n = len(keys)
    return MetricBatch(keys, values, steps or list(range(n)), [0] * n, [None] * n)


@pytest.mark.parametrize(
    ("call", "words"),
    [
        (lambda run: run.log_metric("acc", "high"), "'acc': value 'high' is not a number"),
        (lambda run: run.log_metric("acc", None), "'acc': value None is not a number"),
        (lambda run: run.log_metric("acc", True), "'acc': value True is not a number"),
        (lambda run: run.log_metric("acc", [0.5]), r"'acc': value \[0.5\] is not a number"),
        (lambda run: run.log_metric("acc", 0.5, step="one"), "'acc': step 'one' is not an int"),
        (lambda run: run.log_metric("acc", 0.5, step=1.5), "'acc': step 1.5 is not an int"),
        (lambda run: run.log_metric("acc", 0.5, step=True), "'acc': step True is not an int"),
        (lambda run: run.log_metric("acc", 0.5, step=2**63), "'acc': step .* 64 bits"),
        (lambda run: run.log_metric("acc", 0.5, is_best="yes"), "'acc': is_best must be"),
        (lambda run: run.log_metric("acc", 0.5, timestamp="now"), "'acc': timestamp 'now'"),
        (lambda run: run.log_metric("acc", 0.5, timestamp=math.inf), "'acc': timestamp inf"),
        (lambda run: run.log_metrics({"ok": 1.0, "acc": "x"}), "'acc': value 'x'"),
    ],
)
def test_bad_points_are_refused_when_logged_and_lose_nothing_else(
    client: Client, call: Any, words: str
) -> None:
    with client.start_run(experiment="churn") as run:
        run.log_metric("acc", 0.1, step=0)
        with pytest.raises(plinth.InvalidArgument, match=words):
            call(run)
        run.log_metric("acc", 0.2, step=1)
    got = client.get_run(run.id)
    assert got.status is RunStatus.FINISHED
    assert [(p.step, p.value) for p in client.get_metric_history(run.id, "acc")] == [
        (0, 0.1),
        (1, 0.2),
    ]


def test_numbers_of_every_kind_are_taken(client: Client) -> None:
    with client.start_run(experiment="churn") as run:
        for step, value in enumerate([1, 2.5, np.float32(0.5), np.int64(7), Decimal("0.25")]):
            run.log_metric("m", value, step=np.int64(step))  # type: ignore[arg-type]
    history = client.get_metric_history(run.id, "m")
    assert [(p.step, p.value) for p in history] == [(0, 1), (1, 2.5), (2, 0.5), (3, 7), (4, 0.25)]


@pytest.mark.parametrize(
    ("bad", "words"),
    [
        (batch(["acc", "acc"], [0.5, "high"]), "'acc'"),
        (batch(["acc", "acc"], [0.5, None]), "'acc'"),
        (batch(["acc", "acc"], [0.5, 0.6], [0, "one"]), "'acc'"),
        (batch(["acc", "acc"], [0.5, True]), "'acc'"),
    ],
)
def test_a_bad_batch_is_refused_whole_and_the_run_goes_on(
    client: Client, bad: MetricBatch, words: str
) -> None:
    run = client.start_run(experiment="churn")
    run.log_metric("loss", 1.0)
    run.flush()
    with pytest.raises(plinth.InvalidArgument, match=words):
        client.tracking.log_metric_batch(run.id, bad)
    run.log_metric("loss", 0.5)
    run.end()
    got = client.get_run(run.id)
    assert got.status is RunStatus.FINISHED
    assert got.metrics["loss"].count == 2 and "acc" not in got.metrics


def test_an_ended_run_takes_no_new_points(client: Client) -> None:
    with client.start_run(experiment="churn") as run:
        run.log_metric("val_f1", 0.8)
    with pytest.raises(plinth.Conflict, match=r"is FINISHED: an ended run takes no new metric"):
        client.tracking.log_metric_batch(run.id, batch(["val_f1"], [99.0]))
    with pytest.raises(plinth.InvalidArgument, match="has ended"):
        run.log_metric("val_f1", 99.0)
    summary = client.get_run(run.id).metrics["val_f1"]
    assert (summary.count, summary.last, summary.max) == (1, 0.8, 0.8)


def test_an_ended_run_takes_spooled_points_logged_before_its_end_only(client: Client) -> None:
    with client.start_run(experiment="churn") as run:
        run.log_metric("val_f1", 0.8)
    ended = client.get_run(run.id).end_time
    assert ended is not None
    end_ms = int(ended.timestamp() * 1000)

    def spooled(at_ms: int, first_seq: int) -> MetricBatch:
        return MetricBatch(["val_f1"], [0.9], [1], [at_ms], [None], spool="w1", first_seq=first_seq)

    client.tracking.log_metric_batch(run.id, spooled(end_ms - 10, 0))  # a writer overtaken
    client.tracking.log_metric_batch(run.id, spooled(end_ms - 10, 0))  # again: taken once
    with pytest.raises(plinth.Conflict, match="is FINISHED"):
        client.tracking.log_metric_batch(run.id, spooled(end_ms + 1000, 1))  # after the end
    summary = client.get_run(run.id).metrics["val_f1"]
    assert (summary.count, summary.last) == (2, 0.9)


def test_a_writer_of_a_run_its_owner_ended_is_told_so(client: Client) -> None:
    owner = client.start_run(experiment="churn")
    worker = client.attach_run(owner.id)
    worker.log_metric("loss", 1.0)
    worker.flush()
    owner.end()
    worker.log_metric("loss", 0.5, timestamp=time.time() + 5)  # surely after the end
    with pytest.raises(plinth.Conflict, match="FINISHED"):
        worker.flush()
    with pytest.raises(plinth.Conflict, match="FINISHED"):
        worker.log_metric("loss", 0.4)
    worker.detach()
    assert client.get_run(owner.id).metrics["loss"].count == 1


def test_an_attached_run_is_left_to_its_owner(client: Client) -> None:
    owner = client.start_run(experiment="churn")
    with client.attach_run(owner.id) as worker:
        worker.log_metric("loss", 1.0)
    assert worker not in plinth.tracking.run._open_runs  # nothing left for the exit hook
    got = client.get_run(owner.id)
    assert got.status is RunStatus.RUNNING  # its block ended; the run did not
    assert got.metrics["loss"].count == 1
    owner.end()
    assert client.get_run(owner.id).status is RunStatus.FINISHED


def test_is_best_is_judged_against_the_stored_best(client: Client) -> None:
    owner = client.start_run(experiment="churn")
    owner.log_metric("acc", 0.9, step=0)
    owner.flush()
    other = client.attach_run(owner.id)
    other.log_metric("acc", 0.5, step=1)  # its own first point, but not the run's best
    other.log_metric("acc", 0.95, step=2)
    other.detach()
    owner.end()
    flags = [p.is_best for p in client.get_metric_history(owner.id, "acc")]
    assert flags == [True, False, True]
    assert client.get_run(owner.id).metrics["acc"].best == 0.95


def test_a_batch_written_twice_is_stored_once(client: Client) -> None:
    run = client.start_run(experiment="churn")
    spooled = MetricBatch(["m"] * 3, [1.0, 2.0, 3.0], [0, 1, 2], [0] * 3, [None] * 3, {}, "ab12", 0)
    client.tracking.log_metric_batch(run.id, spooled)
    client.tracking.log_metric_batch(run.id, spooled)  # a retry after a lost answer
    overlapping = MetricBatch(["m"] * 2, [3.0, 4.0], [2, 3], [0] * 2, [None] * 2, {}, "ab12", 2)
    client.tracking.log_metric_batch(run.id, overlapping)
    assert client.tracking.get_spool_progress(run.id, "ab12") == 4
    run.end()
    # The same end again with the same points, as a retry would send them, changes nothing.
    client.tracking.end_run(run.id, RunStatus.FINISHED, overlapping)
    assert [p.value for p in client.get_metric_history(run.id, "m")] == [1.0, 2.0, 3.0, 4.0]


def test_without_a_spool_a_retried_write_is_stored_once(tmp_path: Path, sqlite_uri: str) -> None:
    """A home the spool cannot be made in (a read-only one): the buffer marks its batches
    itself, so a flush or an end whose answer was lost, retried, writes its points once."""
    (tmp_path / "a-file").write_text("")
    home = tmp_path / "a-file" / "home"
    with connect(sqlite_uri, home=home, flush_interval=3600) as client:
        run = client.start_run(experiment="churn", capture_environment=False)
        assert run._spool is None
        lose_next_answer(client, "log_metric_batch")
        lose_next_answer(client, "end_run")
        for step in range(3):
            run.log_metric("loss", 1.0 / (step + 1), step=step)
        with pytest.raises(plinth.Unavailable):
            run.flush()  # written, but the answer was lost
        run.flush()
        run.log_metric("loss", 0.1, step=3)
        with pytest.raises(plinth.Unavailable):
            run.end()  # ended with its last point, but the answer was lost
        run.end()
        assert [p.step for p in client.get_metric_history(run.id, "loss")] == [0, 1, 2, 3]
        assert client.get_run(run.id).status is RunStatus.FINISHED


def lose_next_answer(client: Client, operation: str) -> None:
    """The next call of ``operation`` is made, then fails as if its answer were lost."""
    real = getattr(client.tracking, operation)
    lost: list[bool] = []

    def call(*args: Any, **kwargs: Any) -> Any:
        answer = real(*args, **kwargs)
        if not lost:
            lost.append(True)
            raise plinth.Unavailable("the answer was lost on the way", "the test")
        return answer

    setattr(client.tracking, operation, call)
