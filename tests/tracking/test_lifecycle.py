"""Runs and experiments deleted (softly), restored and renamed: the tracking contract on
every backend (SQLite, PostgreSQL, a server over HTTP)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import plinth
from plinth.auth.types import Kind, Role
from plinth.client import Client
from plinth.tracking.types import DatasetInput, MetricBatch, RunStatus
from tests.backends import AuthServer

pytestmark = pytest.mark.filterwarnings(
    "ignore:Using `httpx` with `starlette.testclient` is deprecated"
)


def _batch() -> MetricBatch:
    return MetricBatch(["loss"], [0.5], [1], [1_700_000_000_000], [None])


def ids(page: Any) -> set[str]:
    return {r.id for r in page}


# Every write a run takes, each refused once the run is deleted.
WRITES: dict[str, Callable[[Client, str], Any]] = {
    "log_params": lambda c, r: c.tracking.log_params(r, {"lr": 0.2}),
    "log_metric_batch": lambda c, r: c.tracking.log_metric_batch(r, _batch()),
    "set_tags": lambda c, r: c.tracking.set_tags(r, {"k": "v"}),
    "delete_tag": lambda c, r: c.tracking.delete_tag(r, "team"),
    "log_input": lambda c, r: c.tracking.log_input(r, DatasetInput("d", "s3://b/d")),
    "set_seed": lambda c, r: c.tracking.set_seed(r, 7),
    "rename_run": lambda c, r: c.rename_run(r, "other"),
    "reopen_run": lambda c, r: c.reopen_run(r),
    "end_run": lambda c, r: c.tracking.end_run(r, RunStatus.FINISHED),
    "artifact": lambda c, r: c.upload_artifact_bytes(r, b"x", "notes.txt"),
}


class TestRuns:
    def test_a_deleted_run_leaves_searches_and_comes_back(self, client: Client) -> None:
        kept = client.tracking.create_run("churn", "kept")
        gone = client.tracking.create_run("churn", "gone", tags={"team": "risk"})
        client.tracking.log_params(gone.id, {"lr": 0.1})
        assert client.get_run(gone.id).deleted_at is None
        client.delete_run(gone.id)
        deleted = client.get_run(gone.id)  # still there by its id, its data kept
        assert deleted.deleted_at is not None and deleted.params == {"default": {"lr": 0.1}}
        assert ids(client.search_runs()) == {kept.id}
        assert ids(client.search_runs(experiments=["churn"], view="active")) == {kept.id}
        assert ids(client.search_runs(view="deleted")) == {gone.id}
        assert ids(client.search_runs(view="all")) == {kept.id, gone.id}
        assert ids(client.search_runs("params.default.lr = 0.1", view="all")) == {gone.id}
        assert client.compare_runs([kept.id, gone.id]).run_names == ["kept", "gone"]
        client.delete_run(gone.id)  # again: nothing changes
        assert client.get_run(gone.id).deleted_at == deleted.deleted_at
        client.restore_run(gone.id)
        assert client.get_run(gone.id).deleted_at is None
        assert ids(client.search_runs()) == {kept.id, gone.id}
        client.restore_run(gone.id)  # a run that is not deleted: nothing to do
        for missing in (client.delete_run, client.restore_run):
            with pytest.raises(plinth.NotFound, match="no-such-run"):
                missing("no-such-run")

    def test_a_deleted_run_takes_no_writes(self, client: Client) -> None:
        run = client.tracking.create_run("churn", "r", tags={"team": "risk"})
        client.delete_run(run.id)
        for name, write in WRITES.items():
            with pytest.raises(plinth.Conflict, match=f"run {run.id} is deleted; restore it"):
                write(client, run.id)
                pytest.fail(f"{name} wrote to a deleted run")
        unchanged = client.get_run(run.id)
        assert (unchanged.name, unchanged.status) == ("r", RunStatus.RUNNING)
        assert (unchanged.params, unchanged.metrics, unchanged.inputs) == ({}, {}, [])
        assert unchanged.tags == {"team": "risk"} and client.list_artifacts(run.id) == []
        client.restore_run(run.id)
        for write in WRITES.values():  # restored, it takes them all again
            write(client, run.id)
        restored = client.get_run(run.id)
        assert (restored.name, restored.status) == ("other", RunStatus.FINISHED)
        assert restored.metrics["loss"].count == 1 and restored.lineage.seed == 7

    def test_an_active_run_deleted_refuses_its_writer_until_restored(self, client: Client) -> None:
        run = client.start_run("churn", capture_environment=False)
        run.log_param("lr", 0.1)
        client.delete_run(run.id)
        with pytest.raises(plinth.Conflict, match="is deleted"):
            run.log_param("depth", 3)
        with pytest.raises(plinth.Conflict, match="is deleted"):
            run.end()
        client.restore_run(run.id)
        run.end()  # the end refused is taken once the run is back
        ended = client.get_run(run.id)
        assert ended.status is RunStatus.FINISHED and ended.params == {"default": {"lr": 0.1}}

    def test_an_ended_run_reopens(self, client: Client) -> None:
        run = client.tracking.create_run("churn", "r")
        client.tracking.log_metric_batch(run.id, _batch())
        client.tracking.end_run(run.id, RunStatus.FAILED)
        ended = client.get_run(run.id)
        with pytest.raises(plinth.Conflict, match="an ended run takes no new metric points"):
            client.tracking.log_metric_batch(run.id, _batch())
        reopened = client.reopen_run(run.id)
        assert (reopened.status, reopened.end_time) == (RunStatus.RUNNING, None)
        assert reopened.heartbeat_at >= ended.heartbeat_at
        assert reopened.metrics["loss"].count == 1  # what it had, it keeps
        client.tracking.log_metric_batch(run.id, _batch())  # and it takes points again
        assert client.reopen_run(run.id).status is RunStatus.RUNNING  # RUNNING: no change
        client.tracking.end_run(run.id, RunStatus.FINISHED)  # it may end another way
        again = client.get_run(run.id)
        assert (again.status, again.metrics["loss"].count) == (RunStatus.FINISHED, 2)
        assert again.end_time is not None
        with pytest.raises(plinth.NotFound):
            client.reopen_run("no-such-run")

    def test_rename(self, client: Client) -> None:
        run = client.tracking.create_run("churn", "first")
        client.tracking.create_run("churn", "taken")
        renamed = client.rename_run(run.id, "better")
        assert (renamed.id, renamed.name, renamed.number) == (run.id, "better", 1)
        assert client.get_run(run.id).name == "better"
        assert client.rename_run(run.id, "better").name == "better"  # the same name: no change
        with pytest.raises(plinth.AlreadyExists, match="'churn' already has a run named 'taken'"):
            client.rename_run(run.id, "taken")
        for bad in ("", "tab\there"):
            with pytest.raises(plinth.InvalidArgument, match="run name"):
                client.rename_run(run.id, bad)
        with pytest.raises(plinth.NotFound):
            client.rename_run("no-such-run", "x")
        client.tracking.create_run("other", "taken")  # names are per experiment
        assert client.get_run(run.id).name == "better"

    def test_a_bad_view_is_refused(self, client: Client) -> None:
        for view in ("ACTIVE_ONLY", "", "deleted "):
            with pytest.raises(plinth.InvalidArgument, match="view must be one of active"):
                client.search_runs(view=view)
            with pytest.raises(plinth.InvalidArgument, match="view must be one of active"):
                client.list_experiments(view=view)


class TestExperiments:
    def test_delete_takes_the_runs_and_restore_brings_back_exactly_those(
        self, client: Client
    ) -> None:
        churn = client.create_experiment("churn")
        before = client.tracking.create_run("churn", "deleted-before")
        runs = [client.tracking.create_run("churn", f"r{i}") for i in range(2)]
        other = client.tracking.create_run("fraud", "elsewhere")
        client.delete_run(before.id)
        client.delete_experiment("churn")
        deleted = client.get_experiment("churn")  # by name and by id, deleted_at set
        assert deleted.deleted_at is not None and client.get_experiment(churn.id) == deleted
        assert [e.name for e in client.list_experiments()] == ["fraud"]
        assert [e.name for e in client.list_experiments(view="deleted")] == ["churn"]
        assert [e.name for e in client.list_experiments(view="all")] == ["churn", "fraud"]
        assert ids(client.search_runs()) == {other.id}
        assert ids(client.search_runs(experiments=["churn"])) == set()
        taken = [client.get_run(r.id).deleted_at for r in runs]
        assert taken == [deleted.deleted_at] * 2  # the experiment's own instant
        assert client.get_run(before.id).deleted_at != deleted.deleted_at
        client.delete_experiment(churn.id)  # again: nothing changes
        assert client.get_experiment("churn").deleted_at == deleted.deleted_at
        with pytest.raises(plinth.Conflict, match="experiment 'churn'"):
            client.restore_run(runs[0].id)  # not while its experiment is deleted
        client.restore_experiment("churn")
        assert client.get_experiment("churn").deleted_at is None
        assert ids(client.search_runs()) == {other.id, *(r.id for r in runs)}
        assert client.get_run(before.id).deleted_at is not None  # deleted on its own: stays
        client.restore_experiment("churn")  # not deleted: nothing to do
        assert [e.name for e in client.list_experiments()] == ["churn", "fraud"]

    def test_a_deleted_experiment_takes_no_runs_nor_its_name_again(self, client: Client) -> None:
        churn = client.create_experiment("churn", tags={"team": "risk"})
        client.delete_experiment("churn")
        for ref in ("churn", churn.id):  # never used silently, nor made anew
            with pytest.raises(plinth.Conflict, match="experiment 'churn' is deleted"):
                client.tracking.create_run(ref)
            with pytest.raises(plinth.Conflict, match="experiment 'churn' is deleted"):
                client.start_run(ref, capture_environment=False)
        with pytest.raises(plinth.AlreadyExists, match=r"'churn' already exists \(deleted\)"):
            client.create_experiment("churn")
        with pytest.raises(plinth.Conflict, match="'churn' is deleted; restore it first"):
            client.tracking.set_experiment_tags("churn", {"team": "growth"})
        with pytest.raises(plinth.Conflict, match="'churn' is deleted; restore it first"):
            client.tracking.delete_experiment_tag("churn", "team")
        assert client.search_runs(view="all").items == []
        assert client.get_experiment("churn").tags == {"team": "risk"}
        # renamed, a deleted experiment frees its name
        assert client.rename_experiment("churn", "churn-old").deleted_at is not None
        assert client.tracking.create_run("churn").experiment_id != churn.id

    def test_rename(self, client: Client) -> None:
        churn = client.create_experiment("churn", tags={"team": "risk"})
        client.create_experiment("fraud")
        run = client.tracking.create_run("churn", "r")
        renamed = client.rename_experiment("churn", "team/churn")
        assert (renamed.id, renamed.name, renamed.tags) == (churn.id, "team/churn", churn.tags)
        assert client.get_experiment("team/churn") == renamed
        assert client.get_run(run.id).experiment_name == "team/churn"
        assert ids(client.search_runs(experiments=["team/churn"])) == {run.id}
        with pytest.raises(plinth.NotFound, match="'churn'"):
            client.get_experiment("churn")
        assert client.rename_experiment(churn.id, "team/churn") == renamed  # the same: no change
        with pytest.raises(plinth.AlreadyExists, match="'fraud' already exists"):
            client.rename_experiment("team/churn", "fraud")
        with pytest.raises(plinth.InvalidArgument, match="reads as an experiment id"):
            client.rename_experiment("team/churn", "0" * 32)
        with pytest.raises(plinth.InvalidArgument, match="experiment name"):
            client.rename_experiment("team/churn", " ")
        with pytest.raises(plinth.NotFound, match="nope"):
            client.rename_experiment("nope", "new")
        client.create_experiment("churn")  # the old name is free
        assert [e.name for e in client.list_experiments()] == ["churn", "fraud", "team/churn"]

    def test_delete_a_tag(self, client: Client) -> None:
        client.create_experiment("a/b", tags={"team": "risk", "owner": "ana"})
        client.tracking.delete_experiment_tag("a/b", "team")
        assert client.get_experiment("a/b").tags == {"owner": "ana"}
        with pytest.raises(plinth.NotFound, match="no tag 'team'"):
            client.tracking.delete_experiment_tag("a/b", "team")
        with pytest.raises(plinth.NotFound, match="nope"):
            client.tracking.delete_experiment_tag("nope", "team")

    def test_unknown_experiments(self, client: Client) -> None:
        for call in (client.delete_experiment, client.restore_experiment):
            with pytest.raises(plinth.NotFound, match="nope"):
                call("nope")


# -- who may: a server with authentication on ------------------------------------------------


@pytest.fixture
def server(tmp_path: Path) -> Iterator[AuthServer]:
    made = AuthServer(tmp_path / "server")
    with made.http:
        yield made


def test_editors_delete_their_runs_and_owners_any_run_and_experiments(
    server: AuthServer,
) -> None:
    olga = server.user("olga", Role.EDITOR)
    ed = server.user("ed", Role.EDITOR)
    http = server.http
    run = http.post("/api/v1/runs", json={"experiment": "churn"}, headers=olga).json()
    server.auth.grant(Kind.EXPERIMENT, "churn", "user", "ed", "editor")
    # an editor does not delete a colleague's run: that needs manage on the experiment
    refused = http.post(f"/api/v1/runs/{run['id']}/delete", json={}, headers=ed)
    assert refused.status_code == 403 and "manage" in refused.json()["message"]
    own = http.post("/api/v1/runs", json={"experiment": "churn"}, headers=ed).json()
    assert http.post(f"/api/v1/runs/{own['id']}/delete", json={}, headers=ed).is_success
    assert http.post(f"/api/v1/runs/{own['id']}/restore", json={}, headers=ed).is_success
    # the experiment's owner deletes and restores anyone's run
    assert http.post(f"/api/v1/runs/{own['id']}/delete", json={}, headers=olga).is_success
    refused = http.post(
        f"/api/v1/runs/{own['id']}/restore", json={}, headers=server.user("vic", Role.EDITOR)
    )
    assert refused.status_code == 404  # no grant on the experiment: not even seen
    assert http.post(f"/api/v1/runs/{own['id']}/restore", json={}, headers=olga).is_success
    assert http.post(f"/api/v1/runs/{run['id']}/end", json={}, headers=olga).is_success
    assert http.post(f"/api/v1/runs/{run['id']}/reopen", json={}, headers=ed).is_success
    renamed = http.post("/api/v1/experiments/churn/rename", json={"new_name": "c2"}, headers=ed)
    assert renamed.json()["name"] == "c2"
    refused = http.post("/api/v1/experiments/c2/delete", json={}, headers=ed)
    assert refused.status_code == 403 and "manage" in refused.json()["message"]
    assert http.get(f"/api/v1/runs/{run['id']}", headers=ed).json()["deleted_at"] is None
    assert http.post("/api/v1/experiments/c2/delete", json={}, headers=olga).is_success
    listed = http.get("/api/v1/experiments", params={"view": "deleted"}, headers=ed).json()
    assert [e["name"] for e in listed["items"]] == ["c2"]
    assert http.post("/api/v1/experiments/c2/restore", json={}, headers=ed).status_code == 403
    assert http.post("/api/v1/experiments/c2/restore", json={}, headers=olga).is_success
    events = [  # the audit log, oldest first
        (e.actor, e.event, e.target)
        for e in reversed(server.auth.list_security_events())
        if e.event.startswith(("run_", "experiment_"))
    ]
    experiment = f"experiment:{renamed.json()['id']}"
    assert events == [
        ("ed", "run_deleted", f"run:{own['id']}"),
        ("ed", "run_restored", f"run:{own['id']}"),
        ("olga", "run_deleted", f"run:{own['id']}"),
        ("olga", "run_restored", f"run:{own['id']}"),
        ("ed", "run_reopened", f"run:{run['id']}"),
        ("ed", "experiment_renamed", experiment),
        ("olga", "experiment_deleted", experiment),
        ("olga", "experiment_restored", experiment),
    ]


def test_spooled_points_of_a_deleted_run_wait_for_its_restore() -> None:
    from plinth.tracking.run import _open_runs

    client = plinth.connect(flush_interval=3600, heartbeat_interval=3600)  # nothing flushes
    run = client.start_run("churn", "killed", capture_environment=False)
    for step in range(5):
        run.log_metric("loss", 1.0 / (step + 1), step=step)
    # The process "dies" with its points spooled, not written.
    run._buffer._closed = True
    run._spool.close(remove=False)
    _open_runs.discard(run)
    client.delete_run(run.id)
    assert client.recover_runs() == {}  # kept, not lost nor an error
    client.restore_run(run.id)
    assert client.recover_runs() == {run.id: 5}
    assert client.get_run(run.id).metrics["loss"].count == 5
    client.close()
