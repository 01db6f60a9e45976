"""The registry contract, run against every backend: SQLite, PostgreSQL and a server over HTTP."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

import plinth
from plinth.client import Client
from plinth.registry.gates import Gate
from plinth.registry.types import GateResult, Stage
from tests.serving.conftest import Rule

Data = tuple[pd.DataFrame, pd.Series]


def register(client: Client, model: Any, data: Data, name: str = "churn", **kw: Any) -> Any:
    return client.register_model(model, name=name, input_example=data[0][:5], **kw)


class TestVersions:
    def test_numbers_lineage_and_signature(
        self, client: Client, churn_model: Any, churn_data: Data
    ) -> None:
        frame, _ = churn_data
        with client.start_run(experiment="churn", seed=3) as run:
            run.log_params({"C": 1.0}, group="hyper")
            run.log_metric("val_auc", 0.91)
            run.log_input("customers", "s3://lake/customers", digest="sha256:aa", rows=300)
            first = run.log_model(churn_model, input_example=frame[:5], registered_model="churn")
        second = register(client, churn_model, churn_data)
        assert (first.version, second.version) == (1, 2)
        assert first.stage is Stage.DEVELOPMENT and first.run_id == run.id
        assert [c.name for c in first.signature.inputs] == ["age", "spend", "visits"]
        assert first.signature.inputs[0].dtype == "int64"
        lineage = first.lineage
        assert lineage["run_id"] == run.id and lineage["params"] == {"hyper": {"C": 1.0}}
        assert lineage["metrics"] == {"val_auc": 0.91}
        assert lineage["datasets"][0]["uri"] == "s3://lake/customers"
        assert lineage["code"]["seed"] == 3 and "scikit-learn" in lineage["requirements"]
        assert first.manifest.flavor == "sklearn" and first.manifest.files
        model = client.registry.get_registered_model("churn")
        assert (model.latest_version, model.production_version) == (2, None)
        by_run = client.registry.search_model_versions(run_id=run.id)
        assert [(v.model_name, v.version) for v in by_run] == [("churn", 1)]

    def test_only_description_and_tags_change(
        self, client: Client, churn_model: Any, churn_data: Data
    ) -> None:
        mv = register(client, churn_model, churn_data)
        changed = client.registry.update_model_version(
            "churn", mv.version, "**better**", {"team": "risk"}
        )
        assert (changed.description, changed.tags) == ("**better**", {"team": "risk"})
        assert changed.manifest == mv.manifest and changed.package_uri == mv.package_uri
        actions = [h.action for h in client.model_history("churn")]
        assert actions == ["register", "description", "tags"]

    def test_load_checks_input_against_the_signature(
        self, client: Client, churn_model: Any, churn_data: Data
    ) -> None:
        frame, _ = churn_data
        register(client, churn_model, churn_data)
        predictor = client.load_model("models:/churn/1")
        expected = churn_model.predict(frame[:10])  # type: ignore[attr-defined]
        shuffled = frame[:10][["visits", "age", "spend"]].assign(extra=1)
        assert list(predictor.predict(shuffled)) == list(expected)  # order fixed, extra ignored
        with pytest.raises(plinth.InvalidArgument, match="spend"):
            predictor.predict(frame[:10].drop(columns=["spend"]))
        with pytest.raises(plinth.InvalidArgument, match="age"):
            predictor.predict(frame[:10].assign(age=["x"] * 10))
        assert client.load_model("models:/churn/1").version == 1  # warm: from the local cache

    def test_a_tampered_package_is_refused(
        self, client: Client, churn_model: Any, churn_data: Data
    ) -> None:
        mv = register(client, churn_model, churn_data)
        client.load_model(mv.uri)
        cache = Path(client.settings.home).resolve() / "cache" / "models" / "churn"
        model_file = next(p for p in cache.rglob("model/*") if p.is_file())
        model_file.write_bytes(model_file.read_bytes()[:-10])  # truncated
        with pytest.raises(plinth.InvalidArgument, match="model"):
            client.load_model(mv.uri)

    def test_uris(self, client: Client, churn_model: Any, churn_data: Data) -> None:
        for _ in range(3):
            register(client, churn_model, churn_data)
        client.set_alias("churn", "champion", version=2)
        client.set_stage("churn", 3, "PRODUCTION")
        assert client.get_model_version("models:/churn/1").version == 1
        assert client.get_model_version("models:/churn@champion").version == 2
        assert client.get_model_version("models:/churn@production").version == 3
        assert client.get_model_version("models:/churn@latest").version == 3
        assert client.get_model_version("churn", 2).aliases == ["champion"]
        for bad in [
            "churn/1",
            "models:/churn",
            "models:/churn/0",
            "models:/churn@",
            "models:/bad name/1",
        ]:
            with pytest.raises(plinth.InvalidArgument):
                client.get_model_version(bad)
        with pytest.raises(plinth.NotFound):
            client.get_model_version("models:/churn@nobody")
        with pytest.raises(plinth.NotFound):
            client.get_model_version("models:/churn/9")
        with pytest.raises(plinth.NotFound):
            client.get_model_version("models:/nothing/1")

    def test_no_input_example_cannot_reach_production(
        self, client: Client, churn_model: Any, churn_data: Data
    ) -> None:
        mv = client.register_model(churn_model, name="churn")
        assert mv.signature is None
        client.set_stage("churn", mv.version, "STAGING")
        with pytest.raises(plinth.GateFailed, match="no signature"):
            client.set_stage("churn", mv.version, "PRODUCTION")
        assert client.get_model_version("churn", mv.version).stage is Stage.STAGING


class TestStages:
    def test_one_production_and_the_audit_trail(
        self, client: Client, churn_model: Any, churn_data: Data
    ) -> None:
        for _ in range(2):
            register(client, churn_model, churn_data)
        client.set_stage("churn", 1, "PRODUCTION", reason="first")
        client.set_stage("churn", 2, "PRODUCTION", reason="beats v1 on holdout")
        assert client.get_model_version("churn", 1).stage is Stage.ARCHIVED
        assert client.get_model_version("churn", 2).stage is Stage.PRODUCTION
        rows = [
            (h.action, h.version, h.from_value, h.to_value) for h in client.model_history("churn")
        ]
        assert rows[-3:] == [
            ("stage", 1, "DEVELOPMENT", "PRODUCTION"),
            ("stage", 1, "PRODUCTION", "ARCHIVED"),
            ("stage", 2, "DEVELOPMENT", "PRODUCTION"),
        ]
        last = client.model_history("churn")[-1]
        assert last.reason == "beats v1 on holdout" and last.actor and last.at.tzinfo

    def test_rollback(self, client: Client, churn_model: Any, churn_data: Data) -> None:
        for _ in range(3):
            register(client, churn_model, churn_data)
        with pytest.raises(plinth.Conflict, match="no earlier PRODUCTION"):
            client.rollback("churn")
        client.set_stage("churn", 1, "PRODUCTION")
        client.set_stage("churn", 3, "PRODUCTION")
        restored = client.rollback("churn", reason="v3 misbehaves")
        assert restored.version == 1 and restored.stage is Stage.PRODUCTION
        assert client.get_model_version("churn", 3).stage is Stage.ARCHIVED
        history = client.model_history("churn")
        assert [(h.action, h.version) for h in history[-2:]] == [("rollback", 3), ("rollback", 1)]
        assert history[-1].reason == "v3 misbehaves"

    def test_rollback_restores_the_previous_production_not_the_oldest(
        self, client: Client, churn_model: Any, churn_data: Data
    ) -> None:
        for version in (1, 2, 3):
            register(client, churn_model, churn_data)
            client.set_stage("churn", version, "PRODUCTION")
        restored = client.rollback("churn", reason="v3 misbehaves")
        assert restored.version == 2 and restored.stage is Stage.PRODUCTION
        stages = {v: client.get_model_version("churn", v).stage for v in (1, 2, 3)}
        assert stages == {1: Stage.ARCHIVED, 2: Stage.PRODUCTION, 3: Stage.ARCHIVED}

    def test_archived_needs_saying_so(
        self, client: Client, churn_model: Any, churn_data: Data
    ) -> None:
        register(client, churn_model, churn_data)
        client.set_stage("churn", 1, "ARCHIVED")
        with pytest.raises(plinth.Conflict, match="allow_archived"):
            client.set_stage("churn", 1, "STAGING")
        assert client.set_stage("churn", 1, "STAGING", allow_archived=True).stage is Stage.STAGING

    def test_bad_stage_and_aliases(
        self, client: Client, churn_model: Any, churn_data: Data
    ) -> None:
        register(client, churn_model, churn_data)
        with pytest.raises(plinth.InvalidArgument, match="PRODUCTION"):
            client.set_stage("churn", 1, "LIVE")
        assert client.set_stage("churn", 1, "staging").stage is Stage.STAGING
        with pytest.raises(plinth.NotFound):
            client.set_alias("churn", "champion", version=5)
        with pytest.raises(plinth.InvalidArgument, match="reserved"):
            client.set_alias("churn", "production", version=1)
        with pytest.raises(plinth.NotFound):
            client.registry.delete_alias("churn", "champion")
        client.set_alias("churn", "champion", version=1)
        client.registry.delete_alias("churn", "champion")
        assert client.get_model_version("churn", 1).aliases == []


class TestGates:
    def test_metric_threshold(self, client: Client, churn_model: Any, churn_data: Data) -> None:
        with client.start_run(experiment="churn") as run:
            run.log_metric("auc", 0.7)
            low = run.log_model(
                churn_model, input_example=churn_data[0][:5], registered_model="churn"
            )
        with client.start_run(experiment="churn") as run:
            run.log_metric("auc", 0.9)
            high = run.log_model(
                churn_model, input_example=churn_data[0][:5], registered_model="churn"
            )
        client.registry.set_gates("churn", [Gate("metric", expression="auc >= 0.8")])
        with pytest.raises(plinth.GateFailed, match=r"auc >= 0.8: auc = 0.7") as refused:
            client.set_stage("churn", low.version, "STAGING")
        # each gate's result in-process; over HTTP the message alone
        in_process = [GateResult("auc >= 0.8", False, "auc = 0.7")]
        assert refused.value.results == ([] if client.remote else in_process)
        assert client.get_model_version("churn", low.version).stage is Stage.DEVELOPMENT
        promoted = client.set_stage("churn", high.version, "PRODUCTION")
        assert promoted.stage is Stage.PRODUCTION
        gates = client.model_history("churn")[-1].details["gates"]
        assert {"gate": "auc >= 0.8", "passed": True, "detail": "auc = 0.9"} in gates
        with pytest.raises(plinth.InvalidArgument):
            client.registry.set_gates("churn", [Gate("metric", expression="auc is great")])

    def test_not_worse_on_holdout(
        self, client: Client, churn_model: Any, weak_model: Any, churn_data: Data
    ) -> None:
        register(client, churn_model, churn_data)
        register(client, weak_model, churn_data)
        client.set_stage("churn", 1, "PRODUCTION")
        client.registry.set_gates("churn", [Gate("not_worse", metric="auc", direction="max")])
        with pytest.raises(plinth.GateFailed, match="needs holdout"):
            client.set_stage("churn", 2, "PRODUCTION")
        with pytest.raises(plinth.GateFailed, match="not worse than production on auc"):
            client.set_stage("churn", 2, "PRODUCTION", holdout=churn_data)
        assert client.get_model_version("churn", 1).stage is Stage.PRODUCTION
        register(client, churn_model, churn_data)
        assert (
            client.set_stage("churn", 3, "PRODUCTION", holdout=churn_data).stage is Stage.PRODUCTION
        )

    def test_not_worse_with_direction_min(
        self, client: Client, churn_model: Any, weak_model: Any, churn_data: Data
    ) -> None:
        # mean absolute error: lower is better, so the strong model must beat the weak one
        register(client, weak_model, churn_data)
        register(client, churn_model, churn_data)
        register(client, weak_model, churn_data)
        client.set_stage("churn", 1, "PRODUCTION")
        client.registry.set_gates("churn", [Gate("not_worse", metric="mae", direction="min")])
        better = client.set_stage("churn", 2, "PRODUCTION", holdout=churn_data)
        assert better.stage is Stage.PRODUCTION
        gate = client.model_history("churn")[-1].details["gates"][-1]
        scores = re.fullmatch(r"candidate (\S+) vs production v1 (\S+)", gate["detail"])
        assert gate["passed"] and scores and float(scores[1]) < float(scores[2])
        with pytest.raises(plinth.GateFailed, match="not worse than production on mae"):
            client.set_stage("churn", 3, "PRODUCTION", holdout=churn_data)
        assert client.get_model_version("churn", 2).stage is Stage.PRODUCTION

    def test_signature_compatibility_names_the_feature(
        self, client: Client, churn_model: Any, churn_data: Data
    ) -> None:
        from sklearn.linear_model import LogisticRegression

        frame, labels = churn_data
        register(client, churn_model, churn_data)
        client.set_stage("churn", 1, "PRODUCTION")
        wider = frame.assign(tenure=frame.age * 2)
        model = LogisticRegression(max_iter=500).fit(wider, labels)
        client.register_model(model, name="churn", input_example=wider[:5])
        with pytest.raises(plinth.GateFailed, match="tenure"):
            client.set_stage("churn", 2, "PRODUCTION")
        assert client.get_model_version("churn", 1).stage is Stage.PRODUCTION


class TestChampionChallenger:
    def test_promoted_then_kept(
        self, client: Client, churn_model: Any, weak_model: Any, churn_data: Data
    ) -> None:
        frame, _ = churn_data
        with client.start_run(experiment="churn", name="weak") as run:
            run.log_metric("val_auc", 0.6)
            run.log_model(weak_model, input_example=frame[:5])
        first = client.register_best(
            experiment="churn", metric="val_auc", model="churn", holdout=churn_data
        )
        assert (first.outcome, first.version, first.champion_version) == ("promoted", 1, None)
        with client.start_run(experiment="churn", name="strong") as run:
            run.log_metric("val_auc", 0.9)
            run.log_model(churn_model, input_example=frame[:5])
        second = client.register_best(
            experiment="churn", metric="val_auc", model="churn", holdout=churn_data
        )
        assert (second.outcome, second.version, second.champion_version) == ("promoted", 2, 1)
        assert second.challenger_score > second.champion_score
        assert client.get_model_version("models:/churn@production").version == 2
        third = client.register_best(
            experiment="churn", metric="val_auc", model="churn", holdout=churn_data
        )
        assert third.outcome == "kept" and third.version is None
        decisions = [h for h in client.model_history("churn") if h.action == "decision"]
        assert [d.to_value for d in decisions] == ["promoted", "promoted", "kept"]
        assert client.get_model_version("models:/churn@production").version == 2

    def test_a_pickled_challenger_is_scored_only_when_trusted(
        self, client: Client, churn_data: Data, tmp_path: Path
    ) -> None:
        marker = tmp_path / "unpickled"
        with client.start_run(experiment="rules", name="rule") as run:
            run.log_metric("val_auc", 0.7)
            run.log_model(Rule(str(marker)), input_example=churn_data[0][:5])
        with pytest.raises(
            plinth.PermissionDenied, match=f"the model of run {run.id} is a pickled"
        ):
            client.register_best(experiment="rules", metric="val_auc", holdout=churn_data)
        assert not marker.exists()
        assert not client.registry.search_model_versions(name="rules")  # nothing registered
        decided = client.register_best(
            experiment="rules", metric="val_auc", holdout=churn_data, trust_pickle=True
        )
        assert decided.outcome == "promoted" and marker.exists()

    def test_no_runs(self, client: Client) -> None:
        with pytest.raises((plinth.InvalidArgument, plinth.NotFound)):
            client.register_best(experiment="nothing", metric="auc")


class TestHousekeeping:
    def test_search_and_delete(self, client: Client, churn_model: Any, churn_data: Data) -> None:
        for name in ("churn", "churn", "fraud"):
            register(client, churn_model, churn_data, name=name)
        client.registry.update_model_version("churn", 2, tags={"team": "risk"})
        client.set_stage("churn", 1, "PRODUCTION")
        client.set_alias("churn", "champion", version=2)
        assert [m.name for m in client.registry.list_registered_models()] == ["churn", "fraud"]
        assert [m.name for m in client.registry.list_registered_models(name_like="fr%")] == [
            "fraud"
        ]
        found = client.registry.search_model_versions(stage=Stage.PRODUCTION)
        assert [(v.model_name, v.version) for v in found] == [("churn", 1)]
        assert [v.version for v in client.registry.search_model_versions(tag="team=risk")] == [2]
        with pytest.raises(plinth.Conflict, match="PRODUCTION"):
            client.registry.delete_model_version("churn", 1)
        with pytest.raises(plinth.Conflict, match="champion"):
            client.registry.delete_model_version("churn", 2)
        mv = client.get_model_version("fraud", 1)
        client.registry.delete_model_version("fraud", 1, reason="obsolete")
        with pytest.raises(plinth.NotFound):
            client.get_model_version("fraud", 1)
        assert not client.registry.search_model_versions(name="fraud")
        assert client.model_history("fraud")[-1].action == "delete"
        if not client.remote:
            assert not client.registry.artifacts.exists(mv.package_uri)

    def test_one_models_versions_page_by_page_and_the_newest_per_stage(
        self, client: Client, churn_model: Any, churn_data: Data
    ) -> None:
        for name in ("c_urn", "churn", "c_urn", "c_urn"):  # "_" is no wildcard here
            register(client, churn_model, churn_data, name=name)
        client.set_stage("c_urn", 2, "STAGING")
        first = client.registry.list_model_versions("c_urn", max_results=2)
        assert [v.version for v in first.items] == [3, 2] and first.next_page_token
        rest = client.registry.list_model_versions(
            "c_urn", max_results=2, page_token=first.next_page_token
        )
        assert [v.version for v in rest.items] == [1] and rest.next_page_token is None
        staged = client.registry.list_model_versions("c_urn", stage=Stage.STAGING)
        assert [v.version for v in staged.items] == [2]
        assert client.registry.latest_versions("c_urn") == {"DEVELOPMENT": 3, "STAGING": 2}
        with pytest.raises(plinth.NotFound):
            client.registry.list_model_versions("nope")
        with pytest.raises(plinth.NotFound):
            client.registry.latest_versions("nope")

    def test_models_by_name(self, client: Client) -> None:
        created = client.registry.create_registered_model(
            "churn", "# Churn\nmodel", {"team": "risk"}
        )
        assert created.description.startswith("# Churn") and created.tags == {"team": "risk"}
        with pytest.raises(plinth.AlreadyExists):
            client.registry.create_registered_model("churn")
        with pytest.raises(plinth.InvalidArgument):
            client.registry.create_registered_model("bad/name")
        with pytest.raises(plinth.NotFound):
            client.registry.get_registered_model("nothing")

    def test_tags_are_deleted_one_by_one(
        self, client: Client, churn_model: Any, churn_data: Data
    ) -> None:
        client.registry.create_registered_model("churn", tags={"team": "risk", "tier": "1"})
        mv = register(client, churn_model, churn_data)
        client.registry.update_model_version("churn", mv.version, tags={"a": "1", "b": "2"})
        client.registry.delete_registered_model_tag("churn", "team")
        client.registry.delete_model_version_tag("churn", mv.version, "a")
        assert client.registry.get_registered_model("churn").tags == {"tier": "1"}
        assert client.get_model_version("churn", mv.version).tags == {"b": "2"}
        with pytest.raises(plinth.NotFound, match="model 'churn' has no tag 'team'"):
            client.registry.delete_registered_model_tag("churn", "team")
        with pytest.raises(plinth.NotFound, match="models:/churn/1 has no tag 'a'"):
            client.registry.delete_model_version_tag("churn", mv.version, "a")
        with pytest.raises(plinth.NotFound, match="no version 9"):
            client.registry.delete_model_version_tag("churn", 9, "b")
        with pytest.raises(plinth.NotFound, match="'nothing'"):
            client.registry.delete_registered_model_tag("nothing", "tier")
        tag_changes = [
            (h.version, h.from_value, h.to_value)
            for h in client.model_history("churn")
            if h.action == "tags"
        ]
        assert tag_changes[-2:] == [
            (None, '{"team": "risk", "tier": "1"}', '{"tier": "1"}'),
            (1, '{"a": "1", "b": "2"}', '{"b": "2"}'),
        ]


@pytest.mark.integration
def test_postgres_and_s3(
    postgres_uri: str, s3_bucket: str, churn_model: Any, churn_data: Data, tmp_path: Path
) -> None:
    """The scaled-out set-up: versions in PostgreSQL, packages in an S3 bucket."""
    from plinth.store.engine import open_store
    from tests.backends import empty_tables, local_client

    empty_tables(open_store(postgres_uri))
    client = local_client(postgres_uri, f"{s3_bucket}/artifacts")
    with client.start_run(experiment="s3") as run:
        logged = run.log_model(
            churn_model, input_example=churn_data[0][:5], registered_model="churn"
        )
    direct = register(client, churn_model, churn_data)
    client.set_stage("churn", direct.version, "PRODUCTION")
    assert (logged.version, direct.version) == (1, 2)
    predictor = client.load_model("models:/churn@production")
    assert len(predictor.predict(churn_data[0][:7])) == 7
    client.set_stage("churn", 1, "ARCHIVED")
    client.registry.delete_model_version("churn", 1)  # its package stays with the run
    assert client.list_artifacts(run.id, "model")


def test_delete_a_registered_model(client: Client, churn_model: Any, churn_data: Data) -> None:
    for name in ("churn", "churn", "fraud"):
        register(client, churn_model, churn_data, name=name)
    client.set_stage("churn", 1, "PRODUCTION")
    client.set_alias("churn", "champion", version=2)
    packages = [client.get_model_version("churn", v).package_uri for v in (1, 2)]
    with pytest.raises(plinth.Conflict, match="models:/churn/1 is in PRODUCTION"):
        client.registry.delete_registered_model("churn")
    assert client.registry.get_registered_model("churn").aliases == {"champion": 2}
    client.set_stage("churn", 1, "ARCHIVED", allow_archived=True)
    client.registry.delete_registered_model("churn")
    with pytest.raises(plinth.NotFound, match="'churn'"):
        client.registry.get_registered_model("churn")
    with pytest.raises(plinth.NotFound):
        client.get_model_version("churn", 2)
    with pytest.raises(plinth.NotFound):
        client.load_model("models:/churn@champion")
    assert [m.name for m in client.registry.list_registered_models()] == ["fraud"]
    assert [v.model_name for v in client.registry.search_model_versions()] == ["fraud"]
    with pytest.raises(plinth.NotFound, match="'churn'"):
        client.registry.delete_registered_model("churn")
    if not client.remote:
        assert not any(client.registry.artifacts.exists(p) for p in packages)
        from sqlalchemy import select

        from plinth.store.schema import model_history

        with client.registry.store.read() as conn:  # the history outlives the model
            rows = conn.execute(
                select(model_history.c.version, model_history.c.action)
                .where(model_history.c.model_name == "churn")
                .order_by(model_history.c.id)
            ).all()
        assert rows[-3:] == [(1, "delete"), (2, "delete"), (None, "delete")]
    again = register(client, churn_model, churn_data)  # the name is free again
    assert again.version == 1 and again.aliases == []
