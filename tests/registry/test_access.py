"""Who may do what in the registry: each operation's rule, for callers with and without
permissions on the model, against a local store (SQLite and PostgreSQL)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest

import plinth
from plinth.auth.access import access_for
from plinth.auth.context import acting_as
from plinth.auth.service import AuthService
from plinth.auth.types import Kind, Principal, Role
from plinth.client import Client, connect
from plinth.registry.gates import Gate
from plinth.registry.types import Stage
from plinth.store.engine import open_store
from tests.backends import FAST_FLUSH, empty_tables, local_client, running_server

Data = tuple[pd.DataFrame, pd.Series]

BOB = Principal("bob", Role.EDITOR, via="token")
CAROL = Principal("carol", Role.VIEWER, via="token")
MALLORY = Principal("mallory", Role.EDITOR, via="token")


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.integration)])
def client(request: pytest.FixtureRequest, tmp_path: Path) -> Client:
    artifacts = str(tmp_path / "artifacts")
    if request.param == "sqlite":
        return local_client(f"sqlite:///{tmp_path / 'plinth.db'}", artifacts)
    uri = request.getfixturevalue("postgres_uri")
    empty_tables(open_store(uri))
    return local_client(uri, artifacts)


@pytest.fixture
def auth(client: Client) -> AuthService:
    service = AuthService(client.tracking.store)
    for principal in (BOB, CAROL, MALLORY):
        service.create_user(principal.name, principal.role)
    return service


def register(client: Client, model: Any, data: Data, name: str = "churn") -> Any:
    return client.register_model(model, name=name, input_example=data[0][:5])


def stage_of(client: Client, name: str, version: int) -> Stage:
    return client.registry.get_model_version(name, version).stage


def events(auth: AuthService, event: str) -> list[Any]:
    return auth.list_security_events(event=event)


class TestStages:
    def test_an_editor_moves_to_staging_but_not_to_production(
        self, client: Client, auth: AuthService, churn_model: Any, churn_data: Data
    ) -> None:
        register(client, churn_model, churn_data)
        auth.grant(Kind.MODEL, "churn", "user", "bob", "editor")
        with acting_as(BOB):
            mv = register(client, churn_model, churn_data)
            assert mv.owner == "bob"
            client.set_stage("churn", mv.version, "staging")
            history = client.model_history("churn")
            with pytest.raises(plinth.PermissionDenied, match="promoter"):
                client.set_stage("churn", mv.version, "production")
            assert stage_of(client, "churn", mv.version) is Stage.STAGING
            assert client.model_history("churn") == history
        assert client.registry.get_registered_model("churn").production_version is None

    def test_a_promoter_moves_to_production_and_out(
        self, client: Client, auth: AuthService, churn_model: Any, churn_data: Data
    ) -> None:
        register(client, churn_model, churn_data)
        register(client, churn_model, churn_data)
        client.set_stage("churn", 1, "production")
        auth.grant(Kind.MODEL, "churn", "user", "bob", "editor")
        with acting_as(BOB), pytest.raises(plinth.PermissionDenied):
            client.set_stage("churn", 1, "archived")  # taking production away is a promotion
        assert stage_of(client, "churn", 1) is Stage.PRODUCTION
        auth.grant(Kind.MODEL, "churn", "user", "bob", "promoter")
        with acting_as(BOB):
            client.set_stage("churn", 2, "production", "better")
            client.set_stage("churn", 2, "staging", "oops")
        assert (stage_of(client, "churn", 1), stage_of(client, "churn", 2)) == (
            Stage.ARCHIVED,
            Stage.STAGING,
        )
        moves = [(h.actor, h.version, h.to_value) for h in client.model_history("churn")[-3:]]
        assert moves == [("bob", 1, "ARCHIVED"), ("bob", 2, "PRODUCTION"), ("bob", 2, "STAGING")]
        promoted, demoted = events(auth, "model_promoted"), events(auth, "model_demoted")
        assert [(e.actor, e.target) for e in promoted] == [
            ("bob", "model:churn"),
            (access_for(client.tracking.store).default.name, "model:churn"),
        ]
        assert [e.actor for e in demoted] == ["bob"] and "v2" in demoted[0].detail

    def test_aliases_and_rollback_need_a_promoter(
        self, client: Client, auth: AuthService, churn_model: Any, churn_data: Data
    ) -> None:
        register(client, churn_model, churn_data)
        register(client, churn_model, churn_data)
        client.set_stage("churn", 1, "production")
        client.set_stage("churn", 2, "production")
        client.set_alias("churn", "champion", 2)
        auth.grant(Kind.MODEL, "churn", "user", "bob", "editor")
        with acting_as(BOB):
            with pytest.raises(plinth.PermissionDenied):
                client.set_alias("churn", "champion", 1)
            with pytest.raises(plinth.PermissionDenied):
                client.registry.delete_alias("churn", "champion")
            with pytest.raises(plinth.PermissionDenied):
                client.rollback("churn")
        assert client.registry.resolve("models:/churn@champion").version == 2
        assert client.registry.resolve("models:/churn@production").version == 2
        auth.grant(Kind.MODEL, "churn", "user", "bob", "promoter")
        with acting_as(BOB):
            assert client.rollback("churn", "bad release").version == 1
            client.set_alias("churn", "champion", 1)
        assert client.registry.resolve("models:/churn@champion").version == 1
        assert [e.actor for e in events(auth, "model_rolled_back")] == ["bob"]
        assert events(auth, "model_alias_set")[0].actor == "bob"  # newest first


class TestGatesAndDeletes:
    def test_gates_change_only_with_owner(
        self, client: Client, auth: AuthService, churn_model: Any, churn_data: Data
    ) -> None:
        register(client, churn_model, churn_data)
        gate = Gate("metric", "val_auc >= 0.8")
        client.registry.set_gates("churn", [gate])
        auth.grant(Kind.MODEL, "churn", "user", "bob", "promoter")
        with acting_as(BOB), pytest.raises(plinth.PermissionDenied, match="owner"):
            client.registry.set_gates("churn", [])
        assert client.registry.get_gates("churn") == [gate]
        auth.grant(Kind.MODEL, "churn", "user", "bob", "owner")
        with acting_as(BOB):
            assert client.registry.set_gates("churn", []) == []
        assert client.registry.get_gates("churn") == []
        changed = events(auth, "model_gates_changed")
        assert (changed[0].actor, changed[0].detail) == ("bob", "[]")  # newest first

    def test_delete_needs_owner_and_is_logged(
        self, client: Client, auth: AuthService, churn_model: Any, churn_data: Data
    ) -> None:
        register(client, churn_model, churn_data)
        auth.grant(Kind.MODEL, "churn", "user", "bob", "promoter")
        with acting_as(BOB), pytest.raises(plinth.PermissionDenied, match="owner"):
            client.registry.delete_model_version("churn", 1)
        assert client.registry.get_model_version("churn", 1).version == 1
        assert events(auth, "model_version_deleted") == []
        auth.grant(Kind.MODEL, "churn", "user", "bob", "owner")
        with acting_as(BOB):
            client.registry.delete_model_version("churn", 1, reason="leaked data")
        with pytest.raises(plinth.NotFound):
            client.registry.get_model_version("churn", 1)
        deleted = events(auth, "model_version_deleted")
        assert [(e.actor, e.target) for e in deleted] == [("bob", "model:churn")]
        assert "v1" in deleted[0].detail and "leaked data" in deleted[0].detail
        assert client.model_history("churn")[-1].actor == "bob"

    def test_an_attacker_cannot_delete_production_by_promoting_another_first(
        self, client: Client, auth: AuthService, churn_model: Any, churn_data: Data
    ) -> None:
        register(client, churn_model, churn_data)
        client.set_stage("churn", 1, "production")
        auth.grant(Kind.MODEL, "churn", "user", "mallory", "editor")
        with acting_as(MALLORY):
            mv = register(client, churn_model, churn_data)  # editors register
            with pytest.raises(plinth.PermissionDenied):
                client.set_stage("churn", mv.version, "production")
            with pytest.raises(plinth.PermissionDenied):
                client.set_stage("churn", 1, "archived")
            with pytest.raises(plinth.PermissionDenied):
                client.registry.delete_model_version("churn", 1)
            with pytest.raises(plinth.PermissionDenied):
                client.registry.set_gates("churn", [])
        assert stage_of(client, "churn", 1) is Stage.PRODUCTION
        refused = events(auth, "permission_denied")
        assert {e.actor for e in refused} == {"mallory"} and len(refused) == 4


class TestCallers:
    def test_registering_needs_editor_on_the_model(
        self, client: Client, auth: AuthService, churn_model: Any, churn_data: Data
    ) -> None:
        register(client, churn_model, churn_data)
        with acting_as(MALLORY), pytest.raises(plinth.PermissionDenied, match="editor"):
            register(client, churn_model, churn_data)  # may read it, not write it
        with acting_as(CAROL), pytest.raises(plinth.PermissionDenied, match="editor role"):
            register(client, churn_model, churn_data, name="carols")  # viewers create nothing
        auth.revoke_grant(Kind.MODEL, "churn", "everyone", "*")
        with acting_as(MALLORY), pytest.raises(plinth.NotFound):
            register(client, churn_model, churn_data)
        assert client.registry.get_registered_model("churn").latest_version == 1

    def test_a_new_model_belongs_to_its_creator(
        self, client: Client, auth: AuthService, churn_model: Any, churn_data: Data
    ) -> None:
        with acting_as(BOB):
            register(client, churn_model, churn_data, name="bobs")
            client.set_stage("bobs", 1, "production")  # its owner may do anything with it
            client.registry.create_registered_model("bobs-empty")
        assert client.registry.get_registered_model("bobs").owner == "bob"
        assert client.registry.get_registered_model("bobs-empty").owner == "bob"
        assert [g.grantee for g in auth.list_grants(Kind.MODEL, "bobs")] == ["*", "bob"]
        with acting_as(CAROL):
            assert client.registry.get_registered_model("bobs").production_version == 1
            with pytest.raises(plinth.PermissionDenied, match="editor role"):
                client.registry.create_registered_model("carols")

    def test_the_actor_is_the_caller_not_the_request(
        self, client: Client, auth: AuthService, churn_model: Any, churn_data: Data
    ) -> None:
        register(client, churn_model, churn_data)
        auth.grant(Kind.MODEL, "churn", "user", "bob", "editor")
        with acting_as(BOB):
            with pytest.raises(TypeError, match="actor"):
                client.registry.update_model_version(  # type: ignore[call-arg]
                    "churn", 1, "x", actor="alice"
                )
            client.registry.update_model_version("churn", 1, "mine")
        assert client.model_history("churn")[-1].actor == "bob"

    def test_a_remote_actor_field_is_refused(self, tmp_path: Path, churn_model: Any) -> None:
        with running_server(tmp_path / "home") as url:
            with connect(url, **FAST_FLUSH) as remote:  # type: ignore[arg-type]
                remote.register_model(churn_model, name="churn")
            body = {"stage": "STAGING", "actor": "alice"}
            answer = httpx.post(f"{url}/api/v1/models/churn/versions/1/stage", json=body)
            assert answer.status_code == 422, answer.text
            assert "actor" in answer.text
            history = httpx.get(f"{url}/api/v1/models/churn/history").json()
        assert [h["actor"] for h in history if h["actor"] == "alice"] == []
        assert history[-1]["action"] == "register"

    def test_listing_and_search_hide_private_models(
        self, client: Client, auth: AuthService, churn_model: Any, churn_data: Data
    ) -> None:
        register(client, churn_model, churn_data)
        register(client, churn_model, churn_data, name="secret")
        auth.revoke_grant(Kind.MODEL, "secret", "everyone", "*")
        with acting_as(BOB):
            assert [m.name for m in client.registry.list_registered_models().items] == ["churn"]
            assert {v.model_name for v in client.registry.search_model_versions()} == {"churn"}
            assert client.registry.search_model_versions(name="secret") == []
            for read in (
                lambda: client.registry.get_registered_model("secret"),
                lambda: client.registry.get_model_version("secret", 1),
                lambda: client.registry.get_gates("secret"),
                lambda: client.registry.resolve("models:/secret@latest"),
                lambda: client.registry.model_history("secret"),
                lambda: client.registry.open_package_file("secret", 1, "plinth-model.json"),
                lambda: client.registry.set_stage("secret", 1, Stage.STAGING),
            ):
                with pytest.raises(plinth.NotFound, match=r"secret.* does not exist"):
                    read()
        auth.grant(Kind.MODEL, "secret", "user", "bob", "viewer")
        with acting_as(BOB):
            names = [m.name for m in client.registry.list_registered_models().items]
            assert names == ["churn", "secret"]
            assert client.registry.resolve("models:/secret@latest").version == 1

    def test_staging_a_package_needs_editor_on_its_model(
        self, client: Client, auth: AuthService, churn_model: Any, churn_data: Data
    ) -> None:
        register(client, churn_model, churn_data)
        path = "models/churn/packages/abc/model.pkl"
        with acting_as(MALLORY), pytest.raises(plinth.PermissionDenied):
            client.registry.open_staging_writer(path)
        auth.revoke_grant(Kind.MODEL, "churn", "everyone", "*")
        with acting_as(MALLORY), pytest.raises(plinth.NotFound):
            client.registry.open_staging_writer(path)
        with acting_as(CAROL), pytest.raises(plinth.PermissionDenied, match="editor role"):
            client.registry.open_staging_writer("models/new-one/packages/abc/model.pkl")
        auth.grant(Kind.MODEL, "churn", "user", "bob", "editor")
        with acting_as(BOB):
            with client.registry.open_staging_writer(path) as out:
                out.write(b"weights")
            with client.registry.open_staging_writer("models/bobs/packages/x/m.pkl") as out:
                out.write(b"new model")
        assert client.registry.artifacts.read_bytes(path) == b"weights"

    def test_a_run_registered_from_needs_editor_on_its_experiment(
        self, client: Client, auth: AuthService, churn_model: Any, churn_data: Data
    ) -> None:
        frame, _ = churn_data
        with client.start_run(experiment="private") as run:
            run.log_model(churn_model, input_example=frame[:5])
        experiment = client.tracking.get_experiment("private").id
        auth.revoke_grant(Kind.EXPERIMENT, "private", "everyone", "*")
        package = f"{experiment}/{run.id}/artifacts/model"
        with acting_as(BOB), pytest.raises(plinth.NotFound, match="of run"):
            client.registry.create_model_version("stolen", package, run.id)
        with pytest.raises(plinth.NotFound):
            client.registry.get_registered_model("stolen")
        auth.grant(Kind.EXPERIMENT, "private", "user", "bob", "viewer")
        # registering freezes the run's model files: a reader of the run may not
        with acting_as(BOB), pytest.raises(plinth.PermissionDenied, match="of run"):
            client.registry.create_model_version("stolen", package, run.id)
        auth.grant(Kind.EXPERIMENT, "private", "user", "bob", "editor")
        with acting_as(BOB):
            assert client.registry.create_model_version("stolen", package, run.id).version == 1


def test_every_registry_operation_has_a_rule() -> None:
    from plinth.api import endpoints_of
    from plinth.registry.service import RegistryService

    for ep in endpoints_of(RegistryService):
        method = getattr(RegistryService, ep.name)
        assert hasattr(method, "__plinth_access__"), ep.name
    for name in ("open_package_file", "open_staging_writer"):
        assert hasattr(getattr(RegistryService, name), "__plinth_access__"), name
