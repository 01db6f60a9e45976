"""Who may do what in the feature store: the rule of every operation, for callers other
than the embedded default's admin (set per call with ``acting_as``, as the server does)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

import plinth
from plinth.api import endpoints_of
from plinth.auth.access import access_for, configure_access
from plinth.auth.context import acting_as
from plinth.auth.service import AuthService
from plinth.auth.types import Kind, Principal, Role
from plinth.features.service import FeatureService
from plinth.features.serving import OnlineFeatureService
from plinth.features.store import FeatureStore
from plinth.features.types import CommitInfo
from tests.backends import local_client
from tests.features.conftest import define, transactions

BOB = Principal("bob", Role.EDITOR, via="token")  # creates and owns the groups below
DAVE = Principal("dave", Role.EDITOR, via="token")  # another editor, granted nothing
CAROL = Principal("carol", Role.VIEWER, via="token")
STATS = "customer_stats"
NOT_FOUND = r"feature group \W*customer_stats\W* does not exist"
ORDERS = [f"{STATS}:orders_30d"]


@pytest.fixture
def fs(tmp_path: Path) -> Iterator[FeatureStore]:
    client = local_client(f"sqlite:///{tmp_path / 'plinth.db'}", str(tmp_path / "artifacts"))
    client.settings.online_uri = f"sqlite:///{tmp_path / 'online.db'}"
    yield client.feature_store()
    client.close()


def bobs_group(fs: FeatureStore, private: bool = False) -> None:
    """Bob's customer_stats with one commit, materialised; others may read it unless
    ``private`` (its everyone grant revoked by an admin)."""
    with acting_as(BOB):
        define(fs, ttl=None).insert(transactions())  # type: ignore[arg-type, attr-defined]
        fs.materialize(STATS)
    if private:
        AuthService(fs.service.store).revoke_grant(Kind.FEATURE_GROUP, STATS, "everyone", "*")


def offline_commits(fs: FeatureStore) -> int | None:
    return fs.offline.version(fs.service.get_feature_group(STATS))


# -- every operation has a rule ------------------------------------------------------------


@pytest.mark.parametrize("service", [FeatureService, OnlineFeatureService])
def test_every_feature_operation_carries_an_access_rule(service: type) -> None:
    unguarded = [
        ep.name
        for ep in endpoints_of(service)
        if not hasattr(getattr(service, ep.name), "__plinth_access__")
    ]
    assert unguarded == []


# -- entities ------------------------------------------------------------------------------


def test_an_editor_defines_entities_a_viewer_only_reads_them(fs: FeatureStore) -> None:
    with acting_as(CAROL), pytest.raises(plinth.PermissionDenied, match="editor role"):
        fs.create_entity("customer", ["customer_id"])
    with acting_as(BOB):
        fs.create_entity("customer", ["customer_id"])
    with acting_as(CAROL):
        assert fs.service.get_entity("customer").join_keys == ["customer_id"]
        assert [e.name for e in fs.service.list_entities()] == ["customer"]


# -- feature groups ------------------------------------------------------------------------


def test_the_creator_owns_a_new_group_whatever_a_body_says(fs: FeatureStore) -> None:
    bobs_group(fs)
    group = fs.service.get_feature_group(STATS)
    assert group.owner == "bob"
    grants = AuthService(fs.service.store).list_grants(Kind.FEATURE_GROUP, STATS)
    assert {(g.grantee_type, g.grantee, g.level) for g in grants} == {
        ("user", "bob", "owner"),
        ("everyone", "*", "viewer"),
    }
    with acting_as(BOB):
        # the writer of a commit is the caller, not the name the request carries
        forged = CommitInfo(STATS, 1, 7, 1, "upsert", "mallory", datetime.now(UTC))
        assert fs.service.record_commit(STATS, forged).written_by == "bob"
    assert {c.written_by for c in fs.service.list_commits(STATS, 1)} == {"bob"}


def test_a_viewer_reads_a_public_group_but_may_not_write_it(fs: FeatureStore) -> None:
    bobs_group(fs)
    with acting_as(CAROL):
        assert fs.service.get_feature_group(STATS).owner == "bob"
        assert [c.commit_version for c in fs.service.list_commits(STATS, 1)] == [0]
        with pytest.raises(plinth.PermissionDenied, match="'carol' may not write"):
            fs.insert(STATS, transactions())
        with pytest.raises(plinth.PermissionDenied):
            fs.service.set_expectations(STATS, 1, [])
        with pytest.raises(plinth.PermissionDenied):
            fs.materialize(STATS)
    assert offline_commits(fs) == 0  # refused before any row was written


def test_an_editor_needs_editor_on_a_group_for_its_next_version(fs: FeatureStore) -> None:
    bobs_group(fs)
    wider = {"orders_30d": "int64", "avg_spend": "float64", "returns": "int64"}
    with acting_as(DAVE), pytest.raises(plinth.PermissionDenied, match="'dave' may not write"):
        fs.create_feature_group(STATS, "customer", "event_time", wider)
    AuthService(fs.service.store).grant(Kind.FEATURE_GROUP, STATS, "everyone", "*", "editor")
    with acting_as(DAVE):
        assert fs.create_feature_group(STATS, "customer", "event_time", wider).version == 2
        # a new group: the editor role is enough, and the caller owns it
        assert fs.create_feature_group("daves", "customer", "event_time", wider).owner == "dave"
    with acting_as(CAROL), pytest.raises(plinth.PermissionDenied, match="editor role"):
        fs.create_feature_group("carols", "customer", "event_time", wider)


def test_a_private_group_does_not_exist_for_strangers(fs: FeatureStore) -> None:
    bobs_group(fs, private=True)
    for stranger in (CAROL, DAVE):
        with acting_as(stranger):
            with pytest.raises(plinth.NotFound, match=NOT_FOUND):
                fs.service.get_feature_group(STATS)
            with pytest.raises(plinth.NotFound):
                fs.service.list_commits(STATS, 1)
            with pytest.raises(plinth.NotFound):
                fs.insert(STATS, transactions())
            with pytest.raises(plinth.NotFound):
                fs.service.where_used(STATS)
            assert fs.service.list_feature_groups() == []
            assert fs.service.list_feature_groups(all_versions=True) == []
    with acting_as(BOB):
        assert [g.name for g in fs.service.list_feature_groups()] == [STATS]
        assert fs.insert(STATS, transactions()).written_by == "bob"
    assert [g.name for g in fs.service.list_feature_groups()] == [STATS]  # an admin's listing


def test_new_groups_are_private_to_the_creators_team_when_so_configured(
    fs: FeatureStore,
) -> None:
    configure_access(fs.service.store, private_by_default=True)
    team_mate = Principal("erin", Role.EDITOR, groups=("risk",), via="token")
    with acting_as(Principal("bob", Role.EDITOR, groups=("risk",), via="token")):
        define(fs)
    with acting_as(team_mate):
        fs.insert(STATS, transactions())  # the team edits it
    with acting_as(DAVE), pytest.raises(plinth.NotFound):
        fs.service.get_feature_group(STATS)


def test_deleting_a_group_needs_its_ownership_and_is_logged(fs: FeatureStore) -> None:
    bobs_group(fs)
    with acting_as(DAVE), pytest.raises(plinth.PermissionDenied, match="'dave' may not manage"):
        fs.delete_feature_group(STATS)
    assert offline_commits(fs) == 0  # nothing was removed
    with acting_as(BOB):
        assert [g.version for g in fs.delete_feature_group(STATS)] == [1]
    events = AuthService(fs.service.store).list_security_events(event="deleted")
    assert [(e.actor, e.target, e.detail) for e in events] == [
        ("bob", "feature_group:customer_stats", "v1")
    ]
    # its grants went with it: the name is free, and whoever defines it again owns it
    assert grants_of(fs, Kind.FEATURE_GROUP, STATS) == []
    with acting_as(DAVE):
        assert define(fs).owner == "dave"  # type: ignore[attr-defined]


def test_deleting_one_version_keeps_the_groups_grants(fs: FeatureStore) -> None:
    bobs_group(fs)
    with acting_as(BOB):
        fs.create_feature_group(STATS, "customer", "event_time", {"orders_30d": "int64"})
        fs.delete_feature_group(STATS, 1)
    grants = AuthService(fs.service.store).list_grants(Kind.FEATURE_GROUP, STATS)
    assert ("user", "bob", "owner") in {(g.grantee_type, g.grantee, g.level) for g in grants}


# -- feature views and training datasets ----------------------------------------------------


def test_a_view_needs_read_on_every_group_it_reads(fs: FeatureStore) -> None:
    bobs_group(fs, private=True)
    with acting_as(DAVE), pytest.raises(plinth.NotFound, match=NOT_FOUND):
        fs.create_feature_view("churn", ORDERS)
    with acting_as(CAROL), pytest.raises(plinth.PermissionDenied, match="editor role"):
        fs.create_feature_view("churn", ORDERS)
    with acting_as(BOB):
        assert fs.create_feature_view("churn", ORDERS).owner == "bob"


def test_a_new_version_of_a_view_needs_editor_on_it(fs: FeatureStore) -> None:
    bobs_group(fs)
    with acting_as(BOB):
        fs.create_feature_view("churn", ORDERS)
    with acting_as(DAVE):
        assert fs.get_feature_view("churn").version == 1  # everyone may read it
        with pytest.raises(plinth.PermissionDenied, match="'dave' may not write feature view"):
            fs.create_feature_view("churn", [*ORDERS, f"{STATS}:avg_spend"])


def test_private_views_and_their_datasets_are_hidden(fs: FeatureStore) -> None:
    bobs_group(fs)
    entities = transactions()[["customer_id", "event_time"]].rename(
        columns={"event_time": "event_timestamp"}
    )
    with acting_as(BOB):
        fs.create_feature_view("public_view", ORDERS)
        fs.create_feature_view("bobs_view", ORDERS)
        public = fs.create_training_dataset("public_view", entities)
        mine = fs.create_training_dataset("bobs_view", entities)
    assert public.created_by == "bob"
    AuthService(fs.service.store).revoke_grant(Kind.FEATURE_VIEW, "bobs_view", "everyone", "*")
    with acting_as(CAROL):
        assert [v.name for v in fs.service.list_feature_views()] == ["public_view"]
        assert [d.id for d in fs.service.list_training_datasets()] == [public.id]
        assert fs.service.get_training_dataset(public.id).view == "public_view"
        with pytest.raises(plinth.NotFound, match=f"training dataset {mine.id} does not exist"):
            fs.service.get_training_dataset(mine.id)
        with pytest.raises(plinth.NotFound):
            fs.service.list_training_datasets("bobs_view")
        with pytest.raises(plinth.NotFound):
            fs.get_feature_view("bobs_view")
        assert fs.service.where_used(STATS).feature_views == ["public_view:v1"]
        # recording a training dataset takes the editor role
        with pytest.raises(plinth.PermissionDenied, match="editor role"):
            fs.create_training_dataset("public_view", entities)
    with acting_as(BOB):
        assert fs.service.where_used(STATS).feature_views == ["bobs_view:v1", "public_view:v1"]


def test_a_forced_delete_needs_ownership_of_the_views_it_removes(fs: FeatureStore) -> None:
    bobs_group(fs)
    with acting_as(DAVE):
        fs.create_feature_view("daves_view", ORDERS)
    with (
        acting_as(BOB),
        pytest.raises(plinth.PermissionDenied, match="may not manage feature view 'daves_view'"),
    ):
        fs.delete_feature_group(STATS, force=True)
    assert fs.service.get_feature_view("daves_view").version == 1  # nothing was removed
    AuthService(fs.service.store).create_user("bob", Role.EDITOR)
    AuthService(fs.service.store).grant(Kind.FEATURE_VIEW, "daves_view", "user", "bob", "owner")
    with acting_as(BOB):
        fs.delete_feature_group(STATS, force=True)
    with pytest.raises(plinth.NotFound):
        fs.service.get_feature_view("daves_view")
    targets = [e.target for e in AuthService(fs.service.store).list_security_events()]
    assert "feature_view:daves_view" in targets and "feature_group:customer_stats" in targets
    assert grants_of(fs, Kind.FEATURE_VIEW, "daves_view") == []


# -- online lookups -------------------------------------------------------------------------


def test_an_online_lookup_of_a_private_group_is_refused_even_with_a_cached_plan(
    fs: FeatureStore,
) -> None:
    bobs_group(fs, private=True)
    serving = OnlineFeatureService(fs)
    rows = [{"customer_id": 1}]
    assert serving.lookup(ORDERS, rows).rows[0]["orders_30d"] == 5  # the admin's plan is cached
    assert fs.plan_is_cached(ORDERS)
    with acting_as(CAROL):
        assert not fs.plan_is_cached(ORDERS)  # a grants query follows: not on the event loop
        with pytest.raises(plinth.NotFound, match=NOT_FOUND):
            serving.lookup(ORDERS, rows)
        with pytest.raises(plinth.NotFound):
            serving.get_online_features(ORDERS, rows)
        with pytest.raises(plinth.NotFound):
            fs.get_online_features(ORDERS, rows)
        with pytest.raises(plinth.NotFound):
            serving.keys_from_query(ORDERS, {"customer_id": "1"})
    with acting_as(BOB):
        assert serving.get_online_features(ORDERS, rows).rows[0]["orders_30d"] == 5


def test_an_online_lookup_checks_grants_once_however_many_groups(
    fs: FeatureStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    bobs_group(fs)
    with acting_as(BOB):
        fs.create_feature_group(
            "other", "customer", "event_time", {"n": "int64"}, online=True
        ).insert(
            transactions().rename(columns={"orders_30d": "n"})[["customer_id", "event_time", "n"]]
        )
        fs.materialize("other")
    access = access_for(fs.service.store)
    calls: list[Kind] = []
    real = access.visible

    def counted(kind: Kind) -> set[str] | None:
        calls.append(kind)
        return real(kind)

    monkeypatch.setattr(access, "visible", counted)
    features = [*ORDERS, f"{STATS}:avg_spend", "other:n"]
    fs.get_online_features(features, [{"customer_id": 1}])  # the admin: no grants query
    assert calls == []
    with acting_as(CAROL):
        found = fs.get_online_features(features, [{"customer_id": 1}])
    assert found.rows[0]["n"] == 5
    assert calls == [Kind.FEATURE_GROUP]


def grants_of(fs: FeatureStore, kind: Kind, name: str) -> list[Any]:
    """The grants rows of a resource, read from the table: the service refuses to list
    those of one that no longer exists."""
    from sqlalchemy import select

    from plinth.store.schema import grants

    with fs.service.store.read() as conn:
        return list(
            conn.execute(
                select(grants).where(grants.c.kind == kind.value, grants.c.resource == name)
            )
        )
