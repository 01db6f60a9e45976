"""Logged models: create, finalize, tags, params, search, files, outputs of runs and who
may do what; on SQLite and PostgreSQL."""

from __future__ import annotations

from contextlib import AbstractContextManager
from pathlib import Path

import pytest

from plinth.auth.context import acting_as
from plinth.auth.service import AuthService
from plinth.auth.types import Kind, Principal, Role
from plinth.errors import Conflict, InvalidArgument, NotFound, PermissionDenied
from plinth.store.artifacts import ArtifactStore
from plinth.store.engine import Store, open_store
from plinth.tracking.logged_models import (
    LoggedModelService,
    LoggedModelStatus,
)
from plinth.tracking.service import TrackingService
from tests.backends import empty_tables


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.integration)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    if request.param == "sqlite":
        return open_store(f"sqlite:///{tmp_path / 'plinth.db'}")
    found = open_store(request.getfixturevalue("postgres_uri"))
    empty_tables(found)
    return found


@pytest.fixture
def artifacts(tmp_path: Path) -> ArtifactStore:
    return ArtifactStore(str(tmp_path / "artifacts"))


@pytest.fixture
def tracking(store: Store, artifacts: ArtifactStore) -> TrackingService:
    return TrackingService(store, artifacts)


@pytest.fixture
def models(store: Store, artifacts: ArtifactStore) -> LoggedModelService:
    return LoggedModelService(store, artifacts)


def test_a_model_is_created_pending_and_finalized_ready(
    tracking: TrackingService, models: LoggedModelService
) -> None:
    run = tracking.create_run("churn")
    made = models.create(
        run.experiment_id,
        name="clf",
        model_type="sklearn",
        source_run_id=run.id,
        params={"C": "1.0"},
        tags={"team": "growth"},
    )
    assert made.id.startswith("m-") and len(made.id) == 34
    assert made.status is LoggedModelStatus.PENDING
    assert made.artifact_path == f"{run.experiment_id}/models/{made.id}/artifacts"
    assert (made.source_run_id, made.params, made.tags) == (
        run.id,
        {"C": "1.0"},
        {"team": "growth"},
    )
    ready = models.finalize(made.id, "LOGGED_MODEL_READY")
    assert ready.status is LoggedModelStatus.READY
    assert models.get(made.id) == ready
    assert ready.updated_at >= made.updated_at
    with pytest.raises(InvalidArgument, match="LOGGED_MODEL_READY"):
        models.finalize(made.id, "LOGGED_MODEL_PENDING")
    assert models.location(made.id) == (
        run.experiment_id,
        made.artifact_path,
    )
    assert models.create(run.experiment_id).name.startswith("model-")  # a name is made up


def test_bad_ids_unknown_models_and_runs_of_other_experiments(
    tracking: TrackingService, models: LoggedModelService
) -> None:
    run = tracking.create_run("churn")
    other = tracking.create_run("fraud")
    with pytest.raises(InvalidArgument, match="'m-' and 32 hex digits"):
        models.get("m-123")
    with pytest.raises(NotFound, match="does not exist"):
        models.get("m-" + "0" * 32)
    with pytest.raises(NotFound, match="experiment"):
        models.create("no-such-experiment")
    with pytest.raises(InvalidArgument, match="another experiment"):
        models.create(run.experiment_id, source_run_id=other.id)
    with pytest.raises(NotFound, match="run"):
        models.create(run.experiment_id, source_run_id="f" * 32)


def test_tags_change_params_do_not(tracking: TrackingService, models: LoggedModelService) -> None:
    run = tracking.create_run("churn")
    model = models.create(run.experiment_id, params={"C": "1.0"}, tags={"a": "1"})
    assert models.set_tags(model.id, {"a": "2", "b": "3"}).tags == {"a": "2", "b": "3"}
    models.delete_tag(model.id, "a")
    assert models.get(model.id).tags == {"b": "3"}
    with pytest.raises(NotFound, match="no tag 'a'"):
        models.delete_tag(model.id, "a")
    models.log_params(model.id, {"C": "1.0", "penalty": "l2"})  # the same value again is fine
    assert models.get(model.id).params == {"C": "1.0", "penalty": "l2"}
    with pytest.raises(Conflict, match="immutable"):
        models.log_params(model.id, {"C": "2.0"})
    with pytest.raises(InvalidArgument, match="strings"):
        models.set_tags(model.id, {"n": 1})  # type: ignore[dict-item]


def test_a_deleted_model_is_gone_but_its_files_stay(
    tracking: TrackingService, models: LoggedModelService, artifacts: ArtifactStore
) -> None:
    run = tracking.create_run("churn")
    model = models.create(run.experiment_id)
    with models.open_writer(model.id, "MLmodel") as out:
        out.write(b"flavors: {}")
    models.delete(model.id)
    for call in (models.get, models.delete, lambda m: models.open_reader(m, "MLmodel")):
        with pytest.raises(NotFound, match="does not exist"):
            call(model.id)
    assert models.search([run.experiment_id]).items == []
    assert artifacts.read_bytes(f"{model.artifact_path}/MLmodel") == b"flavors: {}"


def test_files_are_written_atomically_listed_and_deleted(
    tracking: TrackingService, models: LoggedModelService
) -> None:
    run = tracking.create_run("churn")
    model = models.create(run.experiment_id)
    with models.open_writer(model.id, "data/model.pkl") as out:
        out.write(b"weights")
    broken = models.open_writer(model.id, "data/half.pkl")
    broken.write(b"half")
    broken.discard()  # type: ignore[attr-defined]
    assert [(e.path, e.is_dir) for e in models.list_files(model.id)] == [("data", True)]
    assert [e.path for e in models.list_files(model.id, "data")] == ["data/model.pkl"]
    with models.open_reader(model.id, "data/model.pkl") as source:
        assert source.read() == b"weights"
    with pytest.raises(InvalidArgument, match=r"'\.\.'"):
        models.open_writer(model.id, "../../escape")
    models.delete_files(model.id, "data")
    assert models.list_files(model.id) == []


def test_search_filters_orders_and_pages(
    tracking: TrackingService, models: LoggedModelService
) -> None:
    run = tracking.create_run("churn")
    experiment = run.experiment_id
    made = [
        models.create(experiment, name=f"clf-{i}", model_type=kind, tags={"team": team})
        for i, (kind, team) in enumerate(
            [("sklearn", "growth"), ("xgboost", "growth"), ("sklearn", "risk")]
        )
    ]
    models.finalize(made[0].id, LoggedModelStatus.READY)
    models.create(tracking.create_run("fraud").experiment_id, name="elsewhere")

    def names(filter: str | None = None, **more: object) -> list[str]:
        found = models.search([experiment], filter=filter, **more)  # type: ignore[arg-type]
        return [m.name for m in found.items]

    newest_first = models.search([experiment]).items
    assert sorted(m.name for m in newest_first) == ["clf-0", "clf-1", "clf-2"]
    times = [m.created_at for m in newest_first]
    assert times == sorted(times, reverse=True)
    assert names("model_type = 'sklearn'") == ["clf-2", "clf-0"]
    assert names("tags.team = 'growth' AND model_type != 'sklearn'") == ["clf-1"]
    assert names("name LIKE 'clf-%' and tags.`team` ILIKE 'RISK'") == ["clf-2"]
    assert names("status = 'READY'") == names("status ILIKE 'ready'") == ["clf-0"]
    assert names("name = 'clf-0 AND model_type = ''x'''") == []  # an AND in quotes
    assert names(f"creation_timestamp >= {made[0].created_at}", order_by=[("name", True)]) == [
        "clf-0",
        "clf-1",
        "clf-2",
    ]
    first = models.search([experiment], max_results=2, order_by=[("name", True)])
    assert [m.name for m in first.items] == ["clf-0", "clf-1"]
    rest = models.search(
        [experiment], max_results=2, order_by=[("name", True)], page_token=first.next_page_token
    )
    assert ([m.name for m in rest.items], rest.next_page_token) == (["clf-2"], None)
    for bad, fragment in (
        ("metrics.auc > 0.9", "unknown field"),
        ("name = 'a' OR name = 'b'", "cannot read"),
        ("creation_timestamp = 'yesterday'", "number"),
        ("name > 'a'", "text"),
    ):
        with pytest.raises(InvalidArgument, match=fragment):
            names(bad)
    with pytest.raises(InvalidArgument, match="ordered by"):
        names(order_by=[("metrics.auc", False)])
    with pytest.raises(InvalidArgument, match="experiment_ids"):
        models.search([])


def test_a_run_takes_its_models_as_outputs(
    tracking: TrackingService, models: LoggedModelService
) -> None:
    run = tracking.create_run("churn")
    other = tracking.create_run("churn")
    model = models.create(run.experiment_id)
    models.log_outputs(run.id, [model.id])
    assert models.get(model.id).source_run_id == run.id
    models.log_outputs(run.id, [model.id])  # again: nothing changes
    with pytest.raises(InvalidArgument, match="already the output of run"):
        models.log_outputs(other.id, [model.id])
    elsewhere = tracking.create_run("fraud")
    with pytest.raises(InvalidArgument, match="another experiment"):
        models.log_outputs(elsewhere.id, [model.id])


def test_a_deleted_runs_artifacts_are_not_deleted(
    store: Store, tracking: TrackingService, artifacts: ArtifactStore
) -> None:
    from sqlalchemy import update

    from plinth.store.schema import runs
    from plinth.tracking.logged_models import delete_run_artifacts

    run = tracking.create_run("churn")
    for name in ("a.txt", "b.txt"):
        with tracking.open_artifact_writer(run.id, name) as out:
            out.write(b"x")
    delete_run_artifacts(store, artifacts, run.id, "a.txt")
    assert [e.path for e in tracking.list_artifacts(run.id)] == ["b.txt"]
    with store.write() as conn:
        conn.execute(update(runs).where(runs.c.id == run.id).values(deleted_at=1))
    with pytest.raises(Conflict, match="deleted"):
        delete_run_artifacts(store, artifacts, run.id, "b.txt")
    with pytest.raises(NotFound):
        delete_run_artifacts(store, artifacts, "f" * 32, "b.txt")


def as_user(name: str, role: Role) -> AbstractContextManager[object]:
    return acting_as(Principal(name, role, via="token"))


def test_write_needs_write_on_the_experiment_read_needs_read(
    store: Store, tracking: TrackingService, models: LoggedModelService
) -> None:
    from plinth.auth.access import configure_access

    configure_access(store, private_by_default=True)
    auth = AuthService(store)
    for name, role in (("alice", Role.EDITOR), ("victor", Role.VIEWER), ("mallory", Role.EDITOR)):
        auth.create_user(name, role=role)
    with as_user("alice", Role.EDITOR):
        run = tracking.create_run("churn")
        model = models.create(run.experiment_id, tags={"a": "1"})
    auth.grant(Kind.EXPERIMENT, run.experiment_id, "user", "victor", "viewer")
    with as_user("victor", Role.VIEWER):
        assert models.get(model.id).id == model.id
        assert [m.id for m in models.search([run.experiment_id]).items] == [model.id]
        for write in (
            lambda: models.set_tags(model.id, {"b": "2"}),
            lambda: models.finalize(model.id, LoggedModelStatus.READY),
            lambda: models.open_writer(model.id, "x"),
            lambda: models.delete(model.id),
            lambda: models.create(run.experiment_id),
            lambda: models.log_outputs(run.id, [model.id]),
        ):
            with pytest.raises(PermissionDenied):
                write()
    with as_user("mallory", Role.EDITOR):
        with pytest.raises(NotFound, match=f"logged model '{model.id}' does not exist"):
            models.get(model.id)
        with pytest.raises(NotFound):
            models.set_tags(model.id, {"b": "2"})
        with pytest.raises(NotFound):
            models.search([run.experiment_id])
    configure_access(store)


def test_another_users_private_run_or_model_reads_as_a_missing_one(
    store: Store, tracking: TrackingService, models: LoggedModelService
) -> None:
    from plinth.auth.access import configure_access

    configure_access(store, private_by_default=True)
    auth = AuthService(store)
    for name in ("alice", "mallory"):
        auth.create_user(name, role=Role.EDITOR)
    with as_user("alice", Role.EDITOR):
        hidden_run = tracking.create_run("churn")
        hidden_model = models.create(hidden_run.experiment_id)
    missing_run, missing_model = "f" * 32, "m-" + "f" * 32
    try:
        with as_user("mallory", Role.EDITOR):
            own = tracking.create_run("fraud")
            for source in (hidden_run.id, missing_run):
                with pytest.raises(NotFound) as caught:
                    models.create(own.experiment_id, source_run_id=source)
                assert str(caught.value) == f"run {source!r} does not exist"
            for model_id in (hidden_model.id, missing_model):
                with pytest.raises(NotFound) as caught:
                    models.log_outputs(own.id, [model_id])
                assert str(caught.value) == f"logged model {model_id!r} does not exist"
        # one the caller may read still gets the real reason
        with as_user("alice", Role.EDITOR):
            other = tracking.create_run("churn-2")
            with pytest.raises(InvalidArgument, match="belongs to another experiment"):
                models.create(other.experiment_id, source_run_id=hidden_run.id)
    finally:
        configure_access(store)


def test_a_search_names_at_most_1000_experiments_checked_in_a_few_statements(
    store: Store, tracking: TrackingService, models: LoggedModelService
) -> None:
    from sqlalchemy import event

    from plinth.auth.access import configure_access

    configure_access(store, private_by_default=True)
    auth = AuthService(store)
    auth.create_user("alice", role=Role.EDITOR)
    statements: list[str] = []

    def count(*_: object) -> None:
        statements.append("")

    try:
        with as_user("alice", Role.EDITOR):
            experiments = [tracking.create_run(f"e{i}").experiment_id for i in range(30)]
            model = models.create(experiments[0])
            with pytest.raises(InvalidArgument, match="at most 1,000"):
                models.search(experiments * 34)  # 1,020
            counts = []
            for searched in (experiments[:1], experiments * 33):  # 1 and 990 ids
                statements.clear()
                event.listen(store.engine, "before_cursor_execute", count)
                try:
                    found = models.search(searched)
                finally:
                    event.remove(store.engine, "before_cursor_execute", count)
                assert [m.id for m in found.items] == [model.id]
                counts.append(len(statements))
            assert counts[0] == counts[1]  # not one lookup per id
        auth.create_user("mallory", role=Role.EDITOR)
        with as_user("mallory", Role.EDITOR), pytest.raises(NotFound) as caught:
            models.search(["f" * 32, experiments[3]])
        assert str(caught.value) == f"experiment {'f' * 32!r} does not exist"
        with as_user("mallory", Role.EDITOR), pytest.raises(NotFound) as caught:
            models.search([experiments[3]])  # hidden reads as missing
        assert str(caught.value) == f"experiment {experiments[3]!r} does not exist"
    finally:
        configure_access(store)
