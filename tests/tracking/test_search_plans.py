"""How SQLite runs a search over many runs: the shapes that keep it fast (issue 10, item 18).

Plans, not timings: a regression shows as a scan where an index should drive the query.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select

from plinth.client import Client, connect
from plinth.store.schema import experiments, runs
from plinth.tracking.search import Statistics, order_by, ordered_metrics, parse_filter


@pytest.fixture
def client(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Client:
    monkeypatch.setattr(Statistics, "MIN_RUNS", 40)
    client = connect(store_uri=f"sqlite:///{tmp_path / 'plinth.db'}", artifact_uri=str(tmp_path))
    for r in range(60):
        with client.start_run(experiment="bench", capture_environment=False) as run:
            run.log_params({f"p{j}": (r * 7 + j) % 10 for j in range(5)}, group="hyper")
            run.log_metrics({f"m{j}": ((r * 13 + j) % 60) / 60 for j in range(3)}, step=0)
    return client


def plan(client: Client, text: str, terms: list[str]) -> str:
    matching = parse_filter(text, ordered_metrics(terms))
    query = select(runs.c.id).join(experiments, experiments.c.id == runs.c.experiment_id)
    query = order_by(query.where(matching.where), terms, matching.metrics, matching.bounds)
    with client.tracking.store.read() as conn:
        sql = str(query.limit(101).compile(conn, compile_kwargs={"literal_binds": True}))
        return "\n".join(row[3] for row in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + sql))


def test_search_keeps_sqlite_statistics_for_its_plans(client: Client) -> None:
    with client.tracking.store.read() as conn:
        assert not conn.exec_driver_sql(
            "SELECT 1 FROM sqlite_master WHERE name = 'sqlite_stat1'"
        ).first()
    client.search_runs(filter="params.hyper.p1 = 3")
    with client.tracking.store.read() as conn:
        stats = dict(
            conn.exec_driver_sql("SELECT idx, stat FROM sqlite_stat1 WHERE tbl = 'runs'").all()
        )
    assert stats and all(int(stat.split()[0]) == 60 for stat in stats.values())


def test_a_param_predicate_drives_the_query_through_its_index(client: Client) -> None:
    client.search_runs()  # the statistics
    found = plan(client, "metrics.m0 > 0.9 and params.hyper.p1 = 3", ["metrics.m1 DESC"])
    assert "SEARCH params USING INDEX ix_params_key_value_num (key=? AND value_num=?)" in found
    assert "SCAN runs" not in found


def test_a_bounded_ordering_metric_is_read_in_index_order(client: Client) -> None:
    found = plan(client, "metrics.m0 > 0.5", ["metrics.m0 DESC"])
    assert (
        "SEARCH metric_summaries_1 USING INDEX ix_metric_summaries_key_last (key=? AND last>?)"
        in found
    )
    assert "USE TEMP B-TREE FOR ORDER BY" not in found  # for the tie-break on id only
