"""Drift on write: each insert's profile is stored with its commit and compared with the
group's reference (the previous commit, the last N days, a pinned commit, or none); the
verdict is stored with the commit, locally and behind a server alike."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sqlalchemy import Connection, func, select, text

import plinth
from plinth.client import Client
from plinth.errors import InvalidArgument, NotFound
from plinth.features.drift import DriftReference
from plinth.features.service import FeatureService
from plinth.features.store import FeatureStore
from plinth.features.types import CommitInfo, FeatureSpec
from plinth.stats.profile import profile
from plinth.store.engine import Store, open_store
from plinth.store.profiles import load_profile, profile_rows
from plinth.store.schema import feature_commits, profiles
from tests.backends import empty_tables, local_client, running_server
from tests.features.conftest import T0

GROUP = "payments"
FEATURES = [
    FeatureSpec("amount", "float64"),
    FeatureSpec("items", "int64"),
    FeatureSpec("score", "float64"),
    FeatureSpec("channel", "string"),
]
CHANNELS = ["web", "app", "shop"]


def batch(
    seed: int, rows: int = 600, *, amount_shift: float = 0.0, channel_p: list[float] | None = None
) -> pd.DataFrame:
    """Rows of new customers (ids from ``seed``); amount ~ N(100 + shift, 15), items ~
    Poisson(3), score ~ U(0, 1), channel web/app/shop at 50/30/20% unless ``channel_p``."""
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "customer_id": np.arange(rows) + seed * 100_000,
            "event_time": [T0 + timedelta(minutes=i) for i in range(rows)],
            "amount": rng.normal(100.0 + amount_shift, 15.0, rows),
            "items": rng.poisson(3.0, rows).astype("int64"),
            "score": rng.random(rows),
            "channel": rng.choice(CHANNELS, rows, p=channel_p or [0.5, 0.3, 0.2]),
        }
    )


SHIFTED = {"amount_shift": 15.0, "channel_p": [0.2, 0.3, 0.5]}  # two columns moved


def define(fs: FeatureStore) -> None:
    fs.create_entity("customer", ["customer_id"])
    fs.service.create_feature_group(GROUP, "customer", "event_time", FEATURES)


def drifted(commit: CommitInfo) -> set[str]:
    assert commit.drift is not None and "columns" in commit.drift, commit.drift
    return {c["column"] for c in commit.drift["columns"] if c["drifted"]}


def central(client: Client) -> Store | None:
    """The central store of a local client (None behind a server)."""
    service = client.features
    return service.store if isinstance(service, FeatureService) else None


def record(fs: FeatureStore, version: int, data: pd.DataFrame | None, at: datetime) -> CommitInfo:
    """Record a commit as a writer does (its profile included), at a given time."""
    prof = None if data is None else profile(data, [f.name for f in FEATURES]).to_dict()
    rows = 0 if data is None else len(data)
    commit = CommitInfo(GROUP, 1, version, rows, "upsert", "", at, profile=prof)
    return fs.service.record_commit(GROUP, commit)


def test_each_insert_is_checked_against_the_previous_commit(
    fs: FeatureStore, fs_client: Client
) -> None:
    define(fs)
    first = fs.insert(GROUP, batch(1))
    assert first.profile is None  # stored, not sent back
    assert first.drift is not None and first.drift["reference"] is None
    assert "first profiled commit of payments:v1" in first.drift["reason"]

    same = fs.insert(GROUP, batch(2))
    assert same.drift is not None and same.drift["reference"] == "previous commit 0"
    assert same.drift["reference_commits"] == [0]
    assert same.drift["tested_columns"] == 4 and drifted(same) == set()
    assert [c["column"] for c in same.drift["columns"]] == [f.name for f in FEATURES]
    assert same.drift["dataset_drifted"] is False
    assert same.drift["reference_rows"] == same.drift["current_rows"] == 600

    moved = fs.insert(GROUP, batch(3, **SHIFTED))
    assert moved.drift is not None and moved.drift["reference"] == "previous commit 1"
    assert drifted(moved) == {"amount", "channel"}
    assert moved.drift["drifted_columns"] == 2

    # stored with the commits, read back by anyone
    listed = fs.service.list_commits(GROUP, 1)
    assert [c.drift for c in listed] == [first.drift, same.drift, moved.drift]
    assert all(c.profile is None for c in listed)

    store = central(fs_client)
    if store is not None:  # the profiles, one per commit, keyed by it
        with store.read() as conn:
            rows = profile_rows(conn, group_name=GROUP, group_version=1)
            assert [(r.subject, r.commit_version) for r in rows] == [
                (f"{GROUP}/1@{v}", v) for v in (2, 1, 0)
            ]
            assert moved.drift["profile"] == rows[0].id
            assert moved.drift["reference_profiles"] == [rows[1].id]
            stored = load_profile(conn, rows[0].id)
        assert stored.rows == 600 and sorted(stored.columns) == sorted(f.name for f in FEATURES)


class Killed(Exception):
    """A writer killed between its Delta commit and its record."""


def test_a_commit_left_unrecorded_is_the_next_ones_previous(
    fs: FeatureStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    from plinth.features import insert as inserting

    define(fs)
    fs.insert(GROUP, batch(1))

    def kill(name: str) -> None:
        if name == "feature-commit":
            raise Killed(name)

    with monkeypatch.context() as patched:
        patched.setattr(inserting, "crash_point", kill)
        with pytest.raises(Killed):
            fs.insert(GROUP, batch(2, **SHIFTED))  # commit 1, not recorded
    assert [c.commit_version for c in fs.service.list_commits(GROUP, 1)] == [0]
    last = fs.insert(GROUP, batch(3, **SHIFTED))
    # commit 1 is recorded first (judged against 0), then commit 2 against commit 1
    assert last.commit_version == 2
    assert last.drift is not None and last.drift["reference"] == "previous commit 1"
    assert drifted(last) == set()
    listed = fs.service.list_commits(GROUP, 1)
    assert [c.commit_version for c in listed] == [0, 1, 2]
    assert listed[1].drift is not None and listed[1].drift["reference"] == "previous commit 0"
    assert drifted(listed[1]) == {"amount", "channel"}


def test_concurrent_inserts_are_each_checked_against_the_commit_before(tmp_path: Path) -> None:
    import threading

    client = local_client(f"sqlite:///{tmp_path / 'plinth.db'}", str(tmp_path / "artifacts"))
    fs = client.feature_store()
    define(fs)
    fs.insert(GROUP, batch(1))
    failed: list[BaseException] = []

    def write(seed: int) -> None:
        try:
            fs.insert(GROUP, batch(seed))
        except BaseException as exc:  # reported below
            failed.append(exc)

    threads = [threading.Thread(target=write, args=(seed,)) for seed in range(2, 8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failed == []
    listed = fs.service.list_commits(GROUP, 1)
    assert sorted(c.commit_version for c in listed) == list(range(7))
    for commit in listed:
        if commit.commit_version > 0:
            assert commit.drift is not None
            assert commit.drift["reference"] == f"previous commit {commit.commit_version - 1}"


def test_a_commit_recorded_before_the_one_it_follows_is_not_compared(fs: FeatureStore) -> None:
    define(fs)
    at = datetime(2026, 3, 10, tzinfo=UTC)
    record(fs, 0, batch(1), at)
    early = record(fs, 2, batch(2, **SHIFTED), at)  # commit 1 not recorded yet
    assert early.drift is not None and early.drift["reference"] is None
    assert (
        "commit 1 of payments:v1, the one before this, is not recorded yet"
        in (early.drift["reason"])
    )
    late = record(fs, 1, batch(3), at)
    assert late.drift is not None and late.drift["reference"] == "previous commit 0"


def test_days_reference_merges_the_window(fs: FeatureStore) -> None:
    define(fs)
    now = datetime(2026, 3, 10, tzinfo=UTC)
    fs.service.set_drift_reference(GROUP, 1, DriftReference("days", days=3))
    record(fs, 0, batch(1, **SHIFTED), now - timedelta(days=10))  # outside the window
    record(fs, 1, batch(2), now - timedelta(days=2))
    record(fs, 2, batch(3), now - timedelta(days=1))
    checked = record(fs, 3, batch(4), now)
    assert checked.drift is not None
    assert checked.drift["reference"] == "2 commit(s) of the last 3 day(s): 1, 2"
    assert checked.drift["reference_commits"] == [1, 2]
    assert checked.drift["reference_rows"] == 1200  # both merged
    assert drifted(checked) == set()

    lonely = record(fs, 4, batch(5), now + timedelta(days=30))
    assert lonely.drift is not None and lonely.drift["reference"] is None
    assert "no profiled commit of payments:v1 in the 3 day(s) before" in lonely.drift["reason"]


def test_a_days_reference_merges_at_most_the_newest_profiles(
    fs: FeatureStore, fs_client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    from plinth.features import drift

    if central(fs_client) is None:
        pytest.skip("sets the service's bound in this process")
    monkeypatch.setattr(drift, "MAX_WINDOW_PROFILES", 2)
    define(fs)
    now = datetime(2026, 3, 10, tzinfo=UTC)
    fs.service.set_drift_reference(GROUP, 1, DriftReference("days", days=3))
    record(fs, 0, batch(1, **SHIFTED), now - timedelta(hours=3))  # in the window, not merged
    record(fs, 1, batch(2), now - timedelta(hours=2))
    record(fs, 2, batch(3), now - timedelta(hours=1))
    checked = record(fs, 3, batch(4), now)
    assert checked.drift is not None
    assert checked.drift["reference"] == (
        "the newest 2 of the 3 commits of the last 3 day(s): 1, 2"
    )
    assert checked.drift["reference_commits"] == [1, 2]
    assert checked.drift["reference_rows"] == 1200
    assert drifted(checked) == set()


def test_a_pinned_commit_is_the_reference(fs: FeatureStore) -> None:
    define(fs)
    fs.insert(GROUP, batch(1))
    fs.insert(GROUP, batch(2, **SHIFTED))
    group = fs.service.set_drift_reference(GROUP, 1, DriftReference("commit", commit=0))
    assert group.drift_reference == DriftReference("commit", commit=0)
    assert fs.service.get_feature_group(GROUP).drift_reference.describe() == (
        "pinned commit 0 (plinth preset)"
    )
    # against the previous commit (shifted) this one would drift; against commit 0 it does not
    back = fs.insert(GROUP, batch(3))
    assert back.drift is not None and back.drift["reference"] == "pinned commit 0"
    assert drifted(back) == set()
    fs.service.set_drift_reference(GROUP, 1, DriftReference("previous"))
    assert drifted(fs.insert(GROUP, batch(4, **SHIFTED))) == {"amount", "channel"}


def test_evidently_preset_is_passed_on(fs: FeatureStore) -> None:
    define(fs)
    fs.service.set_drift_reference(GROUP, 1, DriftReference(preset="evidently"))
    fs.insert(GROUP, batch(1))
    checked = fs.insert(GROUP, batch(2, **SHIFTED))
    assert checked.drift is not None and checked.drift["preset"] == "evidently"
    assert {"amount", "channel"} <= drifted(checked)


def test_no_reference_no_check(fs: FeatureStore, fs_client: Client) -> None:
    define(fs)
    fs.service.set_drift_reference(GROUP, 1, DriftReference("none"))
    fs.insert(GROUP, batch(1))
    assert fs.insert(GROUP, batch(2, **SHIFTED)).drift is None
    assert [c.drift for c in fs.service.list_commits(GROUP, 1)] == [None, None]
    store = central(fs_client)
    if store is not None:  # profiled all the same, for monitors to use
        with store.read() as conn:
            assert len(profile_rows(conn, group_name=GROUP)) == 2


def test_bad_references_are_refused_by_name(fs: FeatureStore) -> None:
    define(fs)
    fs.insert(GROUP, batch(1))
    with pytest.raises(NotFound, match=r"payments:v1 has no commit at Delta version 9 .*: 0\)"):
        fs.service.set_drift_reference(GROUP, 1, DriftReference("commit", commit=9))
    with pytest.raises(InvalidArgument, match="positive number of days, got 0"):
        fs.service.set_drift_reference(GROUP, 1, DriftReference("days", days=0))
    with pytest.raises(InvalidArgument, match="preset 'nannyml' is not one of plinth, evidently"):
        fs.service.set_drift_reference(GROUP, 1, DriftReference(preset="nannyml"))
    with pytest.raises(InvalidArgument, match="kind 'weekly'"):
        fs.service.set_drift_reference(GROUP, 1, DriftReference("weekly"))
    with pytest.raises(InvalidArgument, match="days=3 is for a 'days' drift reference"):
        fs.service.set_drift_reference(GROUP, 1, DriftReference("previous", days=3))
    with pytest.raises(NotFound, match="'nope'"):
        fs.service.set_drift_reference("nope", 1, DriftReference())
    assert fs.service.get_feature_group(GROUP).drift_reference == DriftReference()


def test_a_column_whose_type_changed_is_named_not_flagged(fs: FeatureStore) -> None:
    define(fs)
    at = datetime(2026, 3, 10, tzinfo=UTC)
    earlier = batch(1)
    earlier["items"] = earlier["items"].map(lambda n: f"{n} items")  # text, back then
    record(fs, 0, earlier, at)
    checked = record(fs, 1, batch(2), at + timedelta(hours=1))
    assert checked.drift is not None and "error" not in checked.drift
    [items] = [c for c in checked.drift["columns"] if c["column"] == "items"]
    assert items["drifted"] is False and "items" in items["error"]
    assert drifted(checked) == set()


def test_an_all_null_column_is_a_clear_result(fs: FeatureStore) -> None:
    define(fs)
    fs.insert(GROUP, batch(1))
    empty = batch(2)
    empty["score"] = np.nan
    checked = fs.insert(GROUP, empty)
    assert checked.drift is not None and "error" not in checked.drift
    [score] = [c for c in checked.drift["columns"] if c["column"] == "score"]
    assert score["drifted"] is False and score["error"]
    assert drifted(checked) == set()


def test_a_failing_drift_check_still_records_the_commit(
    fs: FeatureStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    define(fs)
    fs.insert(GROUP, batch(1))

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("the tests fell over")

    monkeypatch.setattr("plinth.stats.drift.drift_report", broken)
    checked = fs.insert(GROUP, batch(2))
    assert checked.drift == {
        "reference": "previous commit 0",
        "error": "drift check failed: RuntimeError: the tests fell over",
    }
    assert [c.commit_version for c in fs.service.list_commits(GROUP, 1)] == [0, 1]
    assert fs.service.list_commits(GROUP, 1)[1].drift == checked.drift


def test_a_failing_profile_names_it_and_records_the_commit(
    fs: FeatureStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    define(fs)

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise MemoryError("no room")

    monkeypatch.setattr("plinth.features.drift.profile_of", broken)
    checked = fs.insert(GROUP, batch(1))
    assert checked.drift == {"reference": None, "error": "profiling the insert failed: no room"}
    [listed] = fs.service.list_commits(GROUP, 1)
    assert listed.drift == checked.drift


def test_unreadable_or_missing_profiles(fs: FeatureStore) -> None:
    define(fs)
    at = datetime(2026, 3, 10, tzinfo=UTC)
    old = record(fs, 0, None, at)  # an older writer: no profile, no verdict
    assert old.drift is None
    bad = CommitInfo(GROUP, 1, 1, 5, "upsert", "", at, profile={"rows": "many"})
    with pytest.raises(InvalidArgument, match="the profile of commit 1 of payments:v1 is not a"):
        fs.service.record_commit(GROUP, bad)  # the writer's bad data: nothing recorded
    assert [c.commit_version for c in fs.service.list_commits(GROUP, 1)] == [0]
    # a commit without a profile is no reference: the next is the first with one
    record(fs, 1, None, at)
    first = record(fs, 2, batch(1), at)
    assert first.drift is not None and "first profiled commit" in first.drift["reason"]


def forged(change: Any) -> dict[str, Any]:
    """A profile of ``batch(1)`` as a writer sends it, changed by ``change``."""
    sent = profile(batch(1), [f.name for f in FEATURES]).to_dict()
    change(sent)
    return sent


def renamed(sent: dict[str, Any]) -> None:
    sent["columns"][0]["name"] = "not_a_feature"


def dropped(sent: dict[str, Any]) -> None:
    del sent["columns"][0]


def doubled(sent: dict[str, Any]) -> None:
    sent["columns"].append(dict(sent["columns"][1]))


def grown(sent: dict[str, Any]) -> None:
    sent["rows"] = 601


def miscounted(sent: dict[str, Any]) -> None:
    sent["columns"][2]["count"] = 7


def broken(sent: dict[str, Any]) -> None:
    sent["columns"] = [1]


@pytest.mark.parametrize(
    ("change", "says"),
    [
        (renamed, r"must have the columns .*unknown \['not_a_feature'\], missing \['amount'\]"),
        (dropped, r"missing \['amount'\]"),
        (doubled, "column 'items' appears twice in the profile"),
        (grown, "has 601 rows, not 600"),
        (miscounted, "column 'score': profile field 'sample' holds 600 values, more than the 7"),
        (broken, "is not a profile"),
    ],
)
def test_a_forged_profile_is_refused_and_nothing_is_recorded(
    fs: FeatureStore, fs_client: Client, change: Any, says: str
) -> None:
    define(fs)
    at = datetime(2026, 3, 10, tzinfo=UTC)
    sent = CommitInfo(GROUP, 1, 0, 600, "upsert", "", at, profile=forged(change))
    with pytest.raises(InvalidArgument, match=says):  # a 400 behind a server
        fs.service.record_commit(GROUP, sent)
    assert fs.service.list_commits(GROUP, 1) == []
    store = central(fs_client)
    if store is not None:
        with store.read() as conn:
            assert profile_rows(conn, group_name=GROUP) == []
    good = CommitInfo(GROUP, 1, 0, 600, "upsert", "", at, profile=forged(lambda sent: None))
    assert fs.service.record_commit(GROUP, good).drift is not None


def test_a_refused_profile_still_records_the_insert(
    fs: FeatureStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    from plinth.features import recording

    define(fs)
    monkeypatch.setattr(recording, "_profile", lambda *a: (forged(grown), None))
    made = fs.insert(GROUP, batch(1))
    assert made.drift is not None and made.drift["reference"] is None
    assert made.drift["error"].startswith("the profile was refused: the profile of commit 0")
    assert [c.commit_version for c in fs.service.list_commits(GROUP, 1)] == [0]


def test_a_failing_profile_save_stores_nothing(
    fs: FeatureStore, fs_client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = central(fs_client)
    if store is None:
        pytest.skip("reads the central store directly")
    define(fs)
    fs.insert(GROUP, batch(1))
    from plinth.store import profiles as stored

    original = stored.save_profile

    def half(*args: Any, **kwargs: Any) -> int:
        original(*args, **kwargs)  # the rows are written, then the store fails
        raise OSError("disk full")

    monkeypatch.setattr(stored, "save_profile", half)
    with pytest.raises(OSError, match="disk full"):
        fs.insert(GROUP, batch(2))
    with store.read() as conn:
        assert conn.execute(select(func.count()).select_from(profiles)).scalar() == 1
        assert conn.execute(select(func.count()).select_from(feature_commits)).scalar() == 1
    # the Delta commit is there without a record; the next insert's repair records it
    monkeypatch.setattr(stored, "save_profile", original)
    fs.insert(GROUP, batch(3))
    listed = fs.service.list_commits(GROUP, 1)
    assert [c.commit_version for c in listed] == [0, 1, 2]  # 1 recorded before 2
    assert all(c.drift is not None for c in listed[1:])
    with store.read() as conn:
        assert len(profile_rows(conn, group_name=GROUP)) == 3


def test_an_already_recorded_commit_keeps_its_verdict(fs: FeatureStore) -> None:
    define(fs)
    fs.insert(GROUP, batch(1))
    moved = fs.insert(GROUP, batch(2, **SHIFTED))
    again = replace(moved, profile=profile(batch(3), ["amount"]).to_dict())
    assert fs.service.record_commit(GROUP, again).drift == moved.drift


def test_a_deleted_group_takes_its_profiles_along(fs: FeatureStore, fs_client: Client) -> None:
    define(fs)
    fs.insert(GROUP, batch(1, **SHIFTED))
    fs.delete_feature_group(GROUP)
    fs.service.create_feature_group(GROUP, "customer", "event_time", FEATURES)
    again = fs.insert(GROUP, batch(2))  # the old group's commit 0 is no reference
    assert again.drift is not None and "first profiled commit" in again.drift["reason"]
    store = central(fs_client)
    if store is not None:
        with store.read() as conn:
            assert len(profile_rows(conn, group_name=GROUP)) == 1


def test_a_server_that_refuses_the_profile_still_records_the_commit(tmp_path: Path) -> None:
    # a request limit that the commit's record fits in, but not with its profile
    with (
        running_server(tmp_path / "server", max_request_bytes=16_384) as url,
        plinth.connect(url, home=tmp_path / "client") as remote,
    ):
        fs = remote.feature_store()
        define(fs)
        fs.insert(GROUP, batch(1))
        checked = fs.insert(GROUP, batch(2))
        assert checked.drift is not None and checked.drift["reference"] is None
        assert "the profile was not sent: request body is larger" in checked.drift["error"]
        assert [c.commit_version for c in fs.service.list_commits(GROUP, 1)] == [0, 1]


@pytest.mark.integration
def test_on_postgresql_a_failure_rolls_back_only_what_it_must(
    postgres_uri: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A failed check inside PostgreSQL's transaction (a savepoint) leaves the commit's
    record; a failed profile save takes the record with it."""
    empty_tables(open_store(postgres_uri))
    client = local_client(postgres_uri, str(tmp_path / "artifacts"))
    fs = client.feature_store()
    store = central(client)
    assert store is not None
    define(fs)
    fs.insert(GROUP, batch(1))
    assert drifted(fs.insert(GROUP, batch(2, **SHIFTED))) == {"amount", "channel"}

    def unreadable(conn: Connection, profile_id: int) -> Any:
        # a failed statement aborts a PostgreSQL transaction, unless inside a savepoint
        return conn.execute(text("SELECT * FROM no_such_table"))

    monkeypatch.setattr("plinth.store.profiles.load_profile", unreadable)
    failed = fs.insert(GROUP, batch(3))
    assert failed.drift is not None
    assert failed.drift["error"].startswith("drift check failed: ProgrammingError")
    assert "no_such_table" in failed.drift["error"]
    assert [c.commit_version for c in fs.service.list_commits(GROUP, 1)] == [0, 1, 2]
    monkeypatch.undo()

    from plinth.store import profiles as stored

    original = stored.save_profile

    def half(*args: Any, **kwargs: Any) -> int:
        original(*args, **kwargs)
        raise OSError("disk full")

    monkeypatch.setattr(stored, "save_profile", half)
    with pytest.raises(OSError, match="disk full"):
        fs.insert(GROUP, batch(4))
    with store.read() as conn:
        assert conn.execute(select(func.count()).select_from(profiles)).scalar() == 3
        assert conn.execute(select(func.count()).select_from(feature_commits)).scalar() == 3
