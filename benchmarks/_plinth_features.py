"""Plinth half of the feature-store benchmark (a worker; run with the project's python).

    .venv/bin/python benchmarks/_plinth_features.py --workload pit --tmp /tmp/x \\
        --data benchmarks/.work/features-data/<folder>

Same CLI and JSON output as ``_feast_features.py`` (``features.worker_args``). Every workload
gets a fresh Plinth home (``PLINTH_HOME=<tmp>/home``), set before plinth is imported; the
data comes from the Parquet files ``features.make_data`` wrote. Only the public API is used
(``plinth.feature_store()`` and its methods).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C

from features import FEATURES, GROUP, percentiles, timed_calls, worker_main

NOTES: list[str] = []


def _feature_store(tmp: Path, online_uri: str | None = None):
    """A feature store in a fresh home, with the customer entity defined."""
    home = tmp / "home"
    home.mkdir(parents=True, exist_ok=True)
    os.environ["PLINTH_HOME"] = str(home)
    for name in ("PLINTH_URI", "PLINTH_STORE_URI", "PLINTH_ARTIFACT_URI", "PLINTH_ONLINE_URI"):
        os.environ.pop(name, None)
    if online_uri:
        os.environ["PLINTH_ONLINE_URI"] = online_uri
    import plinth

    fs = plinth.feature_store()
    fs.create_entity("customer", join_keys=["customer_id"])
    return fs


def _group(fs, schema):
    return fs.create_feature_group(
        GROUP, entity="customer", event_time="event_time", schema=schema, online=True, ttl="30d"
    )


def _read(path: Path):
    import pyarrow.parquet as pq

    return pq.read_table(path)


def _mb(n: int) -> float:
    return n / 2**20


# --------------------------------------------------------------------------- workloads


def w_ingest(args, tmp: Path, data: Path, meta: dict) -> dict:
    """``fg.insert(df)`` of the offline rows (a pandas DataFrame) with an expectation suite."""
    from plinth.features.types import Expectation

    df = _read(data / "features.parquet").to_pandas()
    fs = _feature_store(tmp)
    group = _group(fs, df.dtypes)
    suite = [Expectation(kind="not_null", column=f) for f in FEATURES]
    suite.append(Expectation(kind="range", column="f1", min=0.0, max=100.0))
    fs.service.set_expectations(GROUP, group.version, suite, mode="strict")
    group = fs.get_feature_group(GROUP)
    before = C.peak_rss_bytes()
    t0 = time.perf_counter()
    commit = group.insert(df)
    dt = time.perf_counter() - t0
    stored = group.read().num_rows
    reports = fs.service.list_reports(GROUP, group.version)
    n = len(df)
    NOTES.append(f"{len(suite)} expectations, mode strict; report passed: {reports[-1].passed}")
    return {
        "figures": {
            "rows_per_s": n / dt,
            "seconds": dt,
            "peak_rss_mb": _mb(C.peak_rss_bytes()),
            "rss_before_mb": _mb(before),
        },
        "verified": commit.rows == n and stored == n and bool(reports) and reports[-1].passed,
        "checks": {"rows": n, "committed": commit.rows, "stored": stored},
    }


def bare_asof_sql(features_path: Path, entity_path: Path, ttl_days: int) -> str:
    """The floor: one DuckDB ASOF LEFT JOIN over the Parquet files, with the TTL bound."""
    ttl_us = ttl_days * 86_400 * 1_000_000
    values = ", ".join(
        f"CASE WHEN epoch_us(f.event_time) >= epoch_us(e.event_timestamp) - {ttl_us} "
        f"THEN f.{name} END AS {name}"
        for name in FEATURES
    )
    return (
        f"SELECT e.row_id, e.customer_id, e.event_timestamp, {values} "
        f"FROM read_parquet('{entity_path}') e "
        f"ASOF LEFT JOIN read_parquet('{features_path}') f "
        "ON e.customer_id = f.customer_id AND e.event_timestamp >= f.event_time "
        "ORDER BY e.row_id"
    )


def w_pit(args, tmp: Path, data: Path, meta: dict) -> dict:
    """Plinth's point-in-time join, then the bare ASOF join; both outputs are saved."""
    import duckdb
    import pyarrow.parquet as pq

    offline = _read(data / "features.parquet")
    entity_df = _read(data / "entity.parquet").to_pandas()
    fs = _feature_store(tmp)
    group = _group(fs, offline.schema)
    t0 = time.perf_counter()
    group.insert(offline)
    NOTES.append(f"insert of the offline rows (untimed here): {time.perf_counter() - t0:.1f} s")
    del offline
    features = [f"{GROUP}:{name}" for name in FEATURES]
    times, out = [], None
    for _ in range(max(1, args.repeats)):
        t0 = time.perf_counter()
        out = fs.get_historical_features(
            entity_df, features=features, timestamp_column="event_timestamp"
        ).to_arrow()
        times.append(time.perf_counter() - t0)
    peak = C.peak_rss_bytes()

    sql = bare_asof_sql(data / "features.parquet", data / "entity.parquet", meta["ttl_days"])
    bare_times, bare = [], None
    for _ in range(max(1, args.repeats)):
        t0 = time.perf_counter()
        con = duckdb.connect()
        bare = con.sql(sql).to_arrow_table()
        con.close()
        bare_times.append(time.perf_counter() - t0)

    results = Path(args.results)
    results.mkdir(parents=True, exist_ok=True)
    pq.write_table(out.select(["row_id", *FEATURES]), results / "plinth.parquet")
    pq.write_table(bare.select(["row_id", *FEATURES]), results / "bare-asof.parquet")
    n = len(entity_df)
    in_order = out.column("row_id").to_pylist() == list(range(n))
    return {
        "figures": {
            "plinth_s": C.median(times[1:] or times),
            "plinth_first_s": times[0],
            "bare_s": C.median(bare_times[1:] or bare_times),
            "bare_first_s": bare_times[0],
            "peak_rss_mb": _mb(peak),
        },
        "runs": len(times[1:] or times),
        "verified": out.num_rows == n and bare.num_rows == n and in_order,
        "checks": {"rows": out.num_rows, "bare_rows": bare.num_rows, "in_order": in_order},
    }


def _lookup_rows(meta: dict, entities: int, count: int, size: int, seed: int) -> list[list[dict]]:
    import numpy as np

    rng = np.random.default_rng(seed)
    ids = meta["first_id"] + rng.integers(0, entities, (count, size))
    return [[{"customer_id": int(k)} for k in row] for row in ids]


def _materialized(tmp: Path, data: Path, meta: dict, online_uri: str | None):
    """A store with the online table inserted offline (untimed) and materialised (timed)."""
    table = _read(data / meta["online"])
    fs = _feature_store(tmp, online_uri)
    group = _group(fs, table.schema)
    group.insert(table)
    before = C.peak_rss_bytes()
    t0 = time.perf_counter()
    written = fs.materialize(GROUP)
    dt = time.perf_counter() - t0
    figures = {
        "materialize_s": dt,
        "materialize_per_s": table.num_rows / dt,
        "peak_rss_mb": _mb(C.peak_rss_bytes()),
        "rss_before_mb": _mb(before),
    }
    return fs, table, written, figures


def _check_values(fs, table, keys: list[int]) -> bool:
    features = [f"{GROUP}:{name}" for name in FEATURES]
    got = fs.get_online_features(features, [{"customer_id": k} for k in keys]).rows
    ids = table.column("customer_id").to_pylist()
    where = {k: i for i, k in enumerate(ids)}
    for k, row in zip(keys, got, strict=True):
        i = where[k]
        if any(row[f] != table.column(f)[i].as_py() for f in FEATURES):
            return False
    return True


def w_online(args, tmp: Path, data: Path, meta: dict, online_uri: str | None) -> dict:
    """Materialise, then look up 1 and 100 entities at a time in-process."""
    fs, table, written, figures = _materialized(tmp, data, meta, online_uri)
    m = table.num_rows
    features = [f"{GROUP}:{name}" for name in FEATURES]

    def call(rows):
        return fs.get_online_features(features, rows)

    n = args.lookups
    one = timed_calls(call, _lookup_rows(meta, m, n + 200, 1, 7), 200, args.max_seconds)
    hundred = timed_calls(call, _lookup_rows(meta, m, n + 50, 100, 8), 50, args.max_seconds)
    figures.update(percentiles(one, "one"))
    figures.update(percentiles(hundred, "hundred"))
    sample = [meta["first_id"] + i for i in (0, 1, m // 2, m - 1)]
    values_ok = _check_values(fs, table, sample)
    return {
        "figures": figures,
        "verified": written == m and values_ok,
        "checks": {"written": written, "entities": m, "values_ok": values_ok},
    }


def w_online_sqlite(args, tmp: Path, data: Path, meta: dict) -> dict:
    return w_online(args, tmp, data, meta, None)


def w_online_redis(args, tmp: Path, data: Path, meta: dict) -> dict:
    import redis

    url = f"redis://127.0.0.1:6379/{args.redis_db}"
    client = redis.Redis.from_url(url)
    client.flushdb()
    try:
        NOTES.append(f"online store {url} (flushed before and after)")
        return w_online(args, tmp, data, meta, url)
    finally:
        client.flushdb()


def w_server(args, tmp: Path, data: Path, meta: dict) -> dict:
    """``plinth server`` over a materialised SQLite online store; POST one entity a call."""
    import httpx

    _, table, _, figures = _materialized(tmp, data, meta, None)
    figures = {"materialize_s": figures["materialize_s"]}
    port = C.free_port()
    cmd = [sys.executable, "-m", "plinth", "server", "--host", "127.0.0.1", "--port", str(port)]
    env = {"PLINTH_HOME": os.environ["PLINTH_HOME"], "PLINTH_PORT": str(port), "PLINTH_URI": ""}
    t0 = time.perf_counter()
    proc = C.start_server(cmd, env, tmp / "server.log")
    try:
        try:
            C.wait_http_ok(f"http://127.0.0.1:{port}/health", timeout=60, proc=proc)
        except Exception as exc:
            log = (tmp / "server.log").read_text(errors="replace")
            raise RuntimeError(f"{exc}\n{C._tail(log, 10)}") from exc
        figures["ready_s"] = time.perf_counter() - t0
        C.wait_tree_idle(proc.pid, max_wait=30)
        url = f"http://127.0.0.1:{port}/api/v1/features/online"
        features = [f"{GROUP}:{name}" for name in FEATURES]
        n = args.lookups
        bodies = [
            {"features": features, "entity_rows": rows}
            for rows in _lookup_rows(meta, table.num_rows, n + 200, 1, 9)
        ]
        with httpx.Client() as client:

            def call(body):
                response = client.post(url, json=body)
                response.raise_for_status()
                return response

            times = timed_calls(call, bodies, 200, args.max_seconds)
            key = meta["first_id"] + 1
            sample = call({"features": features, "entity_rows": [{"customer_id": key}]}).json()
        figures.update(percentiles(times, "http"))
        figures["server_rss_mb"] = _mb(C.tree_rss_bytes(proc.pid))
    finally:
        C.stop_server(proc)
    expected = {f: table.column(f)[1].as_py() for f in FEATURES}
    got = {f: sample["rows"][0].get(f) for f in FEATURES}
    return {
        "figures": figures,
        "verified": got == expected,
        "checks": {"expected": expected, "got": got},
    }


WORKLOADS = {
    "ingest": w_ingest,
    "pit": w_pit,
    "online_sqlite": w_online_sqlite,
    "online_redis": w_online_redis,
    "server": w_server,
}


def _versions() -> dict[str, str]:
    import deltalake
    import duckdb
    import pyarrow

    import plinth

    return {
        "Plinth": plinth.__version__,
        "DuckDB": duckdb.__version__,
        "deltalake": deltalake.__version__,
        "pyarrow": pyarrow.__version__,
    }


def main() -> None:
    worker_main(WORKLOADS, "plinth", NOTES, _versions)


if __name__ == "__main__":
    main()
