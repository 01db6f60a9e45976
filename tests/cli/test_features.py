"""``plinth features`` against a feature store filled through the Python API in the same
PLINTH_HOME (a local SQLite store, Delta tables and a SQLite online store in tmp_path)."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from plinth.cli import app, main
from plinth.client import default_client
from plinth.features.store import FeatureStore
from plinth.features.types import Expectation, FeatureSpec

runner = CliRunner(env={"COLUMNS": "200"})  # wide enough that no table cell is folded
NOW = datetime.now(UTC).replace(microsecond=0)


@pytest.fixture(autouse=True)
def wide_tables(monkeypatch: pytest.MonkeyPatch) -> None:
    # rich reads COLUMNS once, when the console is made (maybe before CliRunner's env)
    from plinth import cli

    monkeypatch.setattr(cli.out, "width", 200)


def invoke(*args: str) -> Any:
    result = runner.invoke(app, ["features", *args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result


def invoke_json(*args: str) -> Any:
    return json.loads(invoke(*args, "--json").stdout)


def run_main(monkeypatch: pytest.MonkeyPatch, *args: str) -> int:
    """``plinth.cli.main`` as the console script runs it (error handling included)."""
    monkeypatch.setattr(sys, "argv", ["plinth", "features", *args])
    with pytest.raises(SystemExit) as exited:
        main()
    return int(exited.value.code or 0)


def fails(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *args: str) -> str:
    """The one-line error of a refused command (exit 1, nothing on stdout)."""
    assert run_main(monkeypatch, *args) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("error: ") and captured.err.count("\n") == 1
    return captured.err


@pytest.fixture
def store() -> FeatureStore:
    return default_client().feature_store()  # the client the CLI uses: same PLINTH_HOME


def frame(ids: list[int], ages: list[float], orders: list[int]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "customer_id": ids,
            "event_time": [NOW - timedelta(days=a) for a in ages],
            "orders_30d": orders,
            "avg_spend": [20.0 + i for i in range(len(ids))],
        }
    )


@pytest.fixture
def filled(store: FeatureStore) -> FeatureStore:
    """customer_stats v1 (online, ttl 30d, a warn-mode range rule) with two commits: 1001
    seen a day ago, 1002 sixty days ago (outside the TTL), 1003 two days ago; the second
    commit breaks the rule once."""
    store.create_entity("customer", ["customer_id"], description="a paying customer")
    features = [
        FeatureSpec("orders_30d", "int64", "orders in the last 30 days", {"team": "growth"}),
        FeatureSpec("avg_spend", "float64", "mean basket [EUR]"),
    ]
    store.create_feature_group(
        "customer_stats",
        "customer",
        "event_time",
        features,
        online=True,
        ttl="30d",
        description="30-day order aggregates",
    )
    rule = Expectation("range", column="orders_30d", min=0, max=100)
    store.service.set_expectations("customer_stats", 1, [rule], mode="warn")
    group = store.get_feature_group("customer_stats")  # a handle holds the definition it was given
    group.insert(frame([1001, 1002], [1, 60], [3, 7]))
    group.insert(frame([1003, 1001], [2, 3], [500, 4]))
    return store


# -- catalog ---------------------------------------------------------------------------


def test_entities(filled: FeatureStore) -> None:
    [customer] = invoke_json("entities")
    assert customer["name"] == "customer" and customer["join_keys"] == ["customer_id"]
    assert customer["value_type"] == "int64"
    text = invoke("entities").stdout
    assert "customer_id" in text and "a paying customer" in text


def test_groups_filters_and_versions(filled: FeatureStore) -> None:
    [group] = invoke_json("groups")
    assert (group["name"], group["version"], group["online"]) == ("customer_stats", 1, True)
    assert group["ttl_seconds"] == 30 * 86400
    text = invoke("groups").stdout
    assert "customer_stats" in text and "30d" in text
    assert [g["name"] for g in invoke_json("groups", "--query", "growth")] == ["customer_stats"]
    assert invoke_json("groups", "--query", "no such thing") == []
    assert invoke_json("groups", "--entity", "supplier") == []
    filled.create_feature_group("customer_stats", "customer", "event_time", {"orders_7d": "int64"})
    assert [g["version"] for g in invoke_json("groups")] == [2]
    assert [g["version"] for g in invoke_json("groups", "--all-versions")] == [1, 2]


def test_show(filled: FeatureStore) -> None:
    shown = invoke_json("show", "customer_stats")
    assert shown["group"]["keys"] == ["customer_id"]
    assert [f["name"] for f in shown["group"]["features"]] == ["orders_30d", "avg_spend"]
    assert shown["group"]["validation_mode"] == "warn"
    assert shown["commits"] == 2 and shown["last_commit"]["commit_version"] == 1
    assert shown["materialized_until"] is None
    text = invoke("show", "customer_stats").stdout
    for expected in (
        "customer_stats:v1",
        "event time: event_time",
        "ttl: 30d",
        "range(orders_30d, min=0.0, max=100.0)",
        "commits: 2",
        "materialized until: never",
        "team=growth",
        "mean basket [EUR]",  # printed as it is, not read as markup
    ):
        assert expected in text, expected
    filled.materialize("customer_stats")
    assert invoke_json("show", "customer_stats", "--version", "1")["materialized_until"] == 1


def test_commits(filled: FeatureStore) -> None:
    listed = invoke_json("commits", "customer_stats")
    assert [(c["commit_version"], c["rows"]) for c in listed] == [(0, 2), (1, 2)]
    assert [c["validation_passed"] for c in listed] == [True, False]
    assert datetime.fromisoformat(listed[0]["at"]).tzinfo is not None
    text = invoke("commits", "customer_stats").stdout
    assert "upsert" in text and "FAILED" in text


def test_reports_show_what_failed(filled: FeatureStore) -> None:
    listed = invoke_json("reports", "customer_stats")
    assert [r["passed"] for r in listed] == [True, False]
    [failed] = invoke_json("reports", "customer_stats", "--failed")
    [result] = failed["results"]
    assert result["failed_rows"] == 1 and result["sample"][0]["orders_30d"] == 500
    text = invoke("reports", "customer_stats", "--failed").stdout
    assert "range(orders_30d" in text and "FAILED" in text and "passed" not in text


def test_stats_of_the_last_or_a_given_commit(filled: FeatureStore) -> None:
    last = invoke_json("stats", "customer_stats")
    assert last["commit_version"] == 1
    orders = {s["column"]: s for s in last["statistics"]}["orders_30d"]
    assert (orders["count"], orders["min"], orders["max"], orders["mean"]) == (2, 4, 500, 252.0)
    first = invoke_json("stats", "customer_stats", "--commit", "0")
    orders = {s["column"]: s for s in first["statistics"]}["orders_30d"]
    assert (orders["nulls"], orders["distinct"], orders["max"]) == (0, 2, 7)
    text = invoke("stats", "customer_stats", "--commit", "0").stdout
    assert "orders_30d" in text and "avg_spend" in text and "Delta version 0" in text


# -- online ----------------------------------------------------------------------------


def test_materialize_then_incremental(filled: FeatureStore) -> None:
    done = invoke_json("materialize", "customer_stats")
    assert done == {
        "group": "customer_stats",
        "version": 1,
        "rows_written": 3,  # the latest row of each of the three customers
        "materialized_until": 1,
    }
    assert invoke_json("materialize", "customer_stats", "--incremental")["rows_written"] == 0
    filled.get_feature_group("customer_stats").insert(frame([1004], [0.5], [1]))
    assert (
        "wrote 1 row(s) of customer_stats:v1"
        in invoke("materialize", "customer_stats", "--incremental").stdout
    )


def test_materialize_a_window(filled: FeatureStore) -> None:
    start = (NOW - timedelta(days=10)).isoformat()
    end = (NOW - timedelta(hours=36)).replace(tzinfo=None).isoformat() + "Z"
    # only 1003 (two days ago) and 1001's older row (three days ago) fall inside
    done = invoke_json("materialize", "customer_stats", "--start", start, "--end", end)
    assert done["rows_written"] == 2


def test_lookup_gives_values_and_statuses(filled: FeatureStore) -> None:
    filled.materialize("customer_stats")
    refs = ("customer_stats:orders_30d", "customer_stats:v1:avg_spend")
    keys = ("--key", "customer_id=1001", "--key", "customer_id=1002", "-k", "customer_id=9")
    found = invoke_json("lookup", *refs, *keys)
    assert [r["orders_30d"] for r in found["rows"]] == [3, None, None]
    assert [s["orders_30d"] for s in found["statuses"]] == ["PRESENT", "OUTSIDE_TTL", "NOT_FOUND"]
    assert found["rows"][0]["customer_id"] == 1001  # sent as an int, found as one
    text = invoke("lookup", *refs, *keys).stdout
    for expected in ("customer_id=1001", "PRESENT", "OUTSIDE_TTL", "NOT_FOUND", "20"):
        assert expected in text, expected


# -- errors ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "command",
    [
        ["show", "nope"],
        ["commits", "nope"],
        ["reports", "nope"],
        ["stats", "nope"],
        ["materialize", "nope"],
        ["lookup", "nope:x", "--key", "customer_id=1"],
    ],
)
def test_an_unknown_group_is_named(
    filled: FeatureStore,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    command: list[str],
) -> None:
    assert "feature group 'nope' does not exist" in fails(monkeypatch, capsys, *command)


def test_an_unknown_version_or_commit_is_named(
    filled: FeatureStore, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert "'customer_stats' v7" in fails(
        monkeypatch, capsys, "show", "customer_stats", "--version", "7"
    )
    message = fails(monkeypatch, capsys, "stats", "customer_stats", "--commit", "9")
    assert "no commit at Delta version 9: 0, 1" in message


@pytest.mark.parametrize("key", ["customer_id", "customer_id=", "=5", "a=1,a=2"])
def test_a_malformed_key_is_refused(
    filled: FeatureStore,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    key: str,
) -> None:
    message = fails(monkeypatch, capsys, "lookup", "customer_stats:orders_30d", "--key", key)
    assert f"--key {key!r} is not join_key=value" in message


def test_a_key_of_the_wrong_type_is_refused(
    filled: FeatureStore, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    message = fails(
        monkeypatch, capsys, "lookup", "customer_stats:orders_30d", "-k", "customer_id=abc"
    )
    assert "key 'customer_id' of customer_stats:v1 is an integer, got 'abc'" in message


def test_keys_must_name_the_same_columns(
    filled: FeatureStore, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ("lookup", "customer_stats:orders_30d", "-k", "customer_id=1", "-k", "id=2")
    assert "every --key must name ['customer_id']" in fails(monkeypatch, capsys, *args)


def test_an_unknown_feature_is_named(
    filled: FeatureStore, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ("lookup", "customer_stats:orders_7d", "--key", "customer_id=1001")
    assert "has no feature 'orders_7d'" in fails(monkeypatch, capsys, *args)


def test_naive_or_malformed_times_are_refused(
    filled: FeatureStore, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    naive = fails(monkeypatch, capsys, "materialize", "customer_stats", "--start", "2026-01-31")
    assert "--start '2026-01-31' has no timezone" in naive
    assert "2026-01-31T00:00:00+00:00" in naive
    assert "not an ISO time" in fails(
        monkeypatch, capsys, "materialize", "customer_stats", "--end", "yesterday"
    )
    assert "is not before --end" in fails(
        monkeypatch,
        capsys,
        *("materialize", "customer_stats", "--start", "2026-02-01T00:00:00Z"),
        *("--end", "2026-01-01T00:00:00Z"),
    )
    assert "takes no --start" in fails(
        monkeypatch,
        capsys,
        *("materialize", "customer_stats", "--incremental", "--start", "2026-01-01T00:00Z"),
    )
    assert filled.service.get_materialized_until("customer_stats", 1) is None


def test_stats_of_a_group_without_commits(
    store: FeatureStore, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    store.create_entity("customer", ["customer_id"])
    store.create_feature_group("empty", "customer", "event_time", {"x": "float64"})
    assert "empty:v1 has no commits yet" in fails(monkeypatch, capsys, "stats", "empty")
    assert invoke_json("commits", "empty") == [] and invoke_json("reports", "empty") == []


# -- drift on write --------------------------------------------------------------------


def payments(seed: int, *, shift: float = 0.0, channels: list[float] | None = None) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = 500
    return pd.DataFrame(
        {
            "customer_id": np.arange(rows) + seed * 10_000,
            "event_time": [NOW - timedelta(minutes=i) for i in range(rows)],
            "amount": rng.normal(100.0 + shift, 15.0, rows),
            "items": rng.poisson(3.0, rows).astype("int64"),
            "channel": rng.choice(["web", "app", "shop"], rows, p=channels or [0.5, 0.3, 0.2]),
        }
    )


@pytest.fixture
def drifting(store: FeatureStore) -> FeatureStore:
    """payments v1 with three commits: a first, an undrifted one, and one whose amount and
    channel moved."""
    store.create_entity("customer", ["customer_id"])
    features = [FeatureSpec(n, t) for n, t in (("amount", "float64"), ("items", "int64"))]
    features.append(FeatureSpec("channel", "string"))
    store.service.create_feature_group("payments", "customer", "event_time", features)
    store.insert("payments", payments(1))
    store.insert("payments", payments(2))
    store.insert("payments", payments(3, shift=15.0, channels=[0.2, 0.3, 0.5]))
    return store


def test_commits_show_the_drift_verdict(drifting: FeatureStore) -> None:
    listed = invoke_json("commits", "payments")
    assert listed[0]["drift"]["reference"] is None and "reason" in listed[0]["drift"]
    assert [c["drift"].get("drifted_columns") for c in listed] == [None, 0, 2]
    assert listed[2]["drift"]["reference"] == "previous commit 1"
    text = invoke("commits", "payments").stdout
    assert "drift" in text and "0/3 drifted" in text and "2/3 drifted" in text
    assert "—" in text  # the first commit: nothing to compare with


def test_commit_drift_prints_each_column(drifting: FeatureStore) -> None:
    text = invoke("commit-drift", "payments", "2").stdout
    assert "against previous commit 1 (500 row(s)); plinth preset" in text
    assert "2 of 3 column(s) drifted" in text
    lines = {line.split("│")[1].strip(): line for line in text.splitlines() if line.count("│") > 6}
    assert "DRIFTED" in lines["amount"] and "DRIFTED" in lines["channel"]
    assert "DRIFTED" not in lines["items"]
    assert invoke_json("commit-drift", "payments", "2")["drifted_columns"] == 2
    first = invoke("commit-drift", "payments", "0").stdout
    assert "not checked: the first profiled commit of payments:v1" in first


def test_drift_reference_is_shown_and_chosen(
    drifting: FeatureStore, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    shown = invoke("drift-reference", "payments").stdout
    assert "drift reference of payments:v1: the previous commit (plinth preset)" in shown
    assert invoke_json("drift-reference", "payments", "--days", "7")["days"] == 7
    assert "the commits of the last 7 day(s)" in invoke("show", "payments").stdout
    pinned = invoke_json("drift-reference", "payments", "--commit", "0", "--preset", "evidently")
    assert pinned == {"kind": "commit", "days": None, "commit": 0, "preset": "evidently"}
    assert invoke_json("drift-reference", "payments", "--preset", "plinth")["commit"] == 0
    drifting.insert("payments", payments(4))
    assert invoke_json("commits", "payments")[3]["drift"]["reference"] == "pinned commit 0"
    assert invoke_json("drift-reference", "payments", "--none")["kind"] == "none"
    drifting.insert("payments", payments(5))
    assert invoke_json("commits", "payments")[4]["drift"] is None
    assert "—" in invoke("commits", "payments").stdout
    assert "not checked" in invoke("commit-drift", "payments", "4").stdout
    both = fails(monkeypatch, capsys, "drift-reference", "payments", "--none", "--days", "3")
    assert "give one of --previous, --days N, --commit C, --none; got --days, --none" in both
    assert "no commit at Delta version 42" in fails(
        monkeypatch, capsys, "drift-reference", "payments", "--commit", "42"
    )
    assert "positive number of days, got -1" in fails(
        monkeypatch, capsys, "drift-reference", "payments", "--days", "-1"
    )
    assert "no commit at Delta version 9" in fails(
        monkeypatch, capsys, "commit-drift", "payments", "9"
    )


def test_a_failed_drift_check_shows_as_an_error(
    drifting: FeatureStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("the tests fell over")

    monkeypatch.setattr("plinth.stats.drift.drift_report", broken)
    drifting.insert("payments", payments(4))
    rows = [line for line in invoke("commits", "payments").stdout.splitlines() if "│" in line]
    assert rows[-1].rstrip(" │").endswith("error")
    text = invoke("commit-drift", "payments", "3").stdout
    assert "ERROR drift check failed: RuntimeError: the tests fell over" in text


def test_the_module_imports_on_its_own() -> None:
    # plinth.cli registers the sub-app at its end, so importing this module first must work
    done = subprocess.run(
        [sys.executable, "-c", "import plinth.cli.features, plinth.cli"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr


# -- inserting, views, lineage, deleting -----------------------------------------------


def ratio(df: pd.DataFrame) -> pd.Series:
    # a [bracketed] comment: shown as written, not as rich markup
    return df["orders_30d"] / df["avg_spend"]


def test_a_view_shows_the_source_that_runs(filled: FeatureStore) -> None:
    import plinth

    made = plinth.on_demand(inputs=["orders_30d", "avg_spend"], outputs={"r": "float64"})(ratio)
    filled.create_feature_view(
        "churn",
        ["customer_stats:orders_30d", "customer_stats:avg_spend"],
        request={"amount": "float64"},
        transformations=[made],
        label="churned",
    )
    shown = invoke("view", "churn").stdout
    assert "transformation ratio: orders_30d, avg_spend -> r float64" in shown
    assert made.source.startswith("def ratio(")
    assert made.source in shown  # every line, as stored
    assert "request: amount float64" in shown and "label: churned" in shown
    assert invoke_json("view", "churn", "--version", "1")["transformations"][0]["source"] == (
        made.source
    )


def test_insert_streams_a_parquet_file(filled: FeatureStore, tmp_path: Any) -> None:
    path = tmp_path / "more.parquet"
    frame([2001, 2002, 2003], [1, 1, 1], [1, 2, 3]).to_parquet(path)
    commit = invoke_json("insert", "customer_stats", str(path), "--chunk-rows", "2", "--online")
    assert (commit["rows"], commit["commit_version"]) == (3, 2)
    assert (
        "committed 3 row(s) to customer_stats:v1 as Delta version 3"
        in invoke("insert", "customer_stats", str(path)).stdout
    )
    found = filled.get_online_features(["customer_stats:orders_30d"], [{"customer_id": 2003}])
    assert found.rows[0]["orders_30d"] == 3


def test_insert_refusals(
    filled: FeatureStore, tmp_path: Any, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    assert "no Parquet file or folder" in fails(
        monkeypatch, capsys, "insert", "customer_stats", str(tmp_path / "missing.parquet")
    )
    path = tmp_path / "bad.parquet"
    frame([1], [1], [1]).drop(columns=["avg_spend"]).to_parquet(path)
    assert "avg_spend" in fails(monkeypatch, capsys, "insert", "customer_stats", str(path))


def test_views_datasets_usage_and_delete(
    filled: FeatureStore, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    view = filled.create_feature_view("churn", ["customer_stats:orders_30d"], description="v")
    entity = pd.DataFrame({"customer_id": [1001], "event_timestamp": [NOW]})
    dataset = view.create_training_dataset(entity)
    [listed] = invoke_json("views")
    assert listed["features"] == ["customer_stats:v1:orders_30d"]
    assert "customer_stats:v1:orders_30d" in invoke("views").stdout
    [made] = invoke_json("datasets", "--view", "churn")
    assert made["id"] == dataset.id and made["group_commits"] == {"customer_stats:v1": 1}
    usage = invoke_json("usage", "customer_stats:orders_30d")
    assert usage["feature_views"] == ["churn:v1"] and usage["training_datasets"] == [dataset.id]
    assert "churn:v1" in invoke("usage", "customer_stats").stdout
    assert "read by the feature views" in fails(
        monkeypatch, capsys, "delete", "customer_stats", "--yes"
    )
    assert invoke_json("delete", "customer_stats", "--yes", "--force") == ["customer_stats:v1"]
    assert "does not exist" in fails(monkeypatch, capsys, "show", "customer_stats")
