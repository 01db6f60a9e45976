"""Feast half of the feature-store benchmark (a worker; run with the Feast venv's python).

    benchmarks/.venvs/feast/bin/python benchmarks/_feast_features.py --workload pit_file \\
        --tmp /tmp/x --data benchmarks/.work/features-data/<folder>

Same CLI and JSON output as ``_plinth_features.py``. Every workload gets a fresh Feast repo
in ``<tmp>/repo`` (a ``feature_store.yaml`` with a file registry, the local provider, the
``file`` (dask) or ``duckdb`` offline store and the SQLite online store), defined and applied
from Python: an entity ``customer`` (join key ``customer_id``) and a feature view
``customer_stats`` with a 30-day TTL over a ``FileSource`` on the benchmark's Parquet file.
"""

from __future__ import annotations

import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C

from features import FEATURES, GROUP, percentiles, timed_calls, worker_main

NOTES: list[str] = []
FEAST_TABLE = f"bench_{GROUP}"  # the SQLite online store's table: <project>_<view>


def _repo(tmp: Path, source: Path, offline: str, ttl_days: int):
    """A Feast repo whose feature view reads ``source``; returns the applied FeatureStore."""
    from feast import Entity, FeatureStore, FeatureView, Field, FileSource, ValueType
    from feast.types import Float64, Int64

    repo = tmp / "repo"
    repo.mkdir(parents=True, exist_ok=True)
    (repo / "feature_store.yaml").write_text(
        "project: bench\n"
        f"registry: {repo / 'registry.db'}\n"
        "provider: local\n"
        f"offline_store:\n  type: {offline}\n"
        f"online_store:\n  type: sqlite\n  path: {repo / 'online.db'}\n"
        "entity_key_serialization_version: 3\n"
    )
    customer = Entity(name="customer", join_keys=["customer_id"], value_type=ValueType.INT64)
    view = FeatureView(
        name=GROUP,
        entities=[customer],
        ttl=timedelta(days=ttl_days),
        schema=[
            Field(name="customer_id", dtype=Int64),
            *(Field(name=name, dtype=Float64) for name in FEATURES),
        ],
        source=FileSource(name=f"{GROUP}_source", path=str(source), timestamp_field="event_time"),
        online=True,
    )
    store = FeatureStore(repo_path=str(repo))
    store.apply([customer, view])
    return store


def _mb(n: int) -> float:
    return n / 2**20


# --------------------------------------------------------------------------- workloads


def w_ingest(args, tmp: Path, data: Path, meta: dict) -> dict:
    """``write_to_offline_store`` of the offline rows into the view's (empty) Parquet file.
    Feast has no validated insert: this is its plain append."""
    import pyarrow.parquet as pq

    table = pq.read_table(data / "features.parquet")
    target = tmp / "offline.parquet"
    pq.write_table(table.slice(0, 0), target)  # the source file must exist, with its schema
    store = _repo(tmp, target, "file", meta["ttl_days"])
    df = table.to_pandas()
    del table
    before = C.peak_rss_bytes()
    t0 = time.perf_counter()
    store.write_to_offline_store(GROUP, df)
    dt = time.perf_counter() - t0
    stored = pq.read_metadata(target).num_rows
    n = len(df)
    NOTES.append("no validation (Feast has no validated insert); appends to the Parquet file")
    return {
        "figures": {
            "rows_per_s": n / dt,
            "seconds": dt,
            "peak_rss_mb": _mb(C.peak_rss_bytes()),
            "rss_before_mb": _mb(before),
        },
        "verified": stored == n,
        "checks": {"rows": n, "stored": stored},
    }


def _pit(args, tmp: Path, data: Path, meta: dict, offline: str) -> dict:
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    store = _repo(tmp, data / "features.parquet", offline, meta["ttl_days"])
    entity_df = pq.read_table(data / "entity.parquet").to_pandas()
    features = [f"{GROUP}:{name}" for name in FEATURES]
    times: list[float] = []
    out = None
    started = time.perf_counter()
    # Timed runs up to --repeats, fewer when the first ones take long (at least one).
    while len(times) < max(1, args.repeats) and (
        not times or time.perf_counter() - started < args.max_seconds
    ):
        t0 = time.perf_counter()
        out = store.get_historical_features(entity_df=entity_df, features=features).to_df()
        times.append(time.perf_counter() - t0)
    peak = C.peak_rss_bytes()
    assert isinstance(out, pd.DataFrame)
    results = Path(args.results)
    results.mkdir(parents=True, exist_ok=True)
    name = "feast-file" if offline == "file" else f"feast-{offline}"
    columns = out[["row_id", *FEATURES]].sort_values("row_id", kind="stable")
    pq.write_table(pa.Table.from_pandas(columns, preserve_index=False), results / f"{name}.parquet")
    n = len(entity_df)
    if len(times) < max(1, args.repeats):
        NOTES.append(f"{len(times)} timed run(s): more would pass --max-seconds {args.max_seconds}")
    return {
        "figures": {
            "join_s": C.median(times[1:] or times),
            "join_first_s": times[0],
            "peak_rss_mb": _mb(peak),
        },
        "runs": len(times[1:] or times),
        # Rows lost or repeated are reported by the harness (it compares with the bare join).
        "verified": len(out) > 0,
        "checks": {"rows": len(out), "expected": n},
    }


def w_pit_file(args, tmp: Path, data: Path, meta: dict) -> dict:
    return _pit(args, tmp, data, meta, "file")


def w_pit_duckdb(args, tmp: Path, data: Path, meta: dict) -> dict:
    return _pit(args, tmp, data, meta, "duckdb")


def _lookup_rows(meta: dict, entities: int, count: int, size: int, seed: int) -> list[list[dict]]:
    import numpy as np

    rng = np.random.default_rng(seed)
    ids = meta["first_id"] + rng.integers(0, entities, (count, size))
    return [[{"customer_id": int(k)} for k in row] for row in ids]


def _materialized(tmp: Path, data: Path, meta: dict):
    """A repo over the online rows, materialised (timed) into its SQLite online store."""
    import pyarrow.parquet as pq

    source = data / meta["online"]
    table = pq.read_table(source)
    store = _repo(tmp, source, "file", meta["ttl_days"])
    times = table.column("event_time")
    import pyarrow.compute as pc

    start = pc.min(times).as_py() - timedelta(seconds=1)
    end = datetime.now(UTC) + timedelta(minutes=1)
    before = C.peak_rss_bytes()
    t0 = time.perf_counter()
    store.materialize(start_date=start, end_date=end)
    dt = time.perf_counter() - t0
    figures = {
        "materialize_s": dt,
        "materialize_per_s": table.num_rows / dt,
        "peak_rss_mb": _mb(C.peak_rss_bytes()),
        "rss_before_mb": _mb(before),
    }
    return store, table, figures


def _stored_entities(tmp: Path) -> int:
    import sqlite3

    con = sqlite3.connect(tmp / "repo" / "online.db")
    try:
        return con.execute(f"SELECT count(DISTINCT entity_key) FROM {FEAST_TABLE}").fetchone()[0]
    finally:
        con.close()


def _check_values(store, table, keys: list[int]) -> bool:
    features = [f"{GROUP}:{name}" for name in FEATURES]
    got = store.get_online_features(
        features=features, entity_rows=[{"customer_id": k} for k in keys]
    ).to_dict()
    ids = table.column("customer_id").to_pylist()
    where = {k: i for i, k in enumerate(ids)}
    for j, k in enumerate(keys):
        i = where[k]
        if any(got[f][j] != table.column(f)[i].as_py() for f in FEATURES):
            return False
    return True


def w_online_sqlite(args, tmp: Path, data: Path, meta: dict) -> dict:
    """Materialise, then look up 1 and 100 entities at a time in-process."""
    store, table, figures = _materialized(tmp, data, meta)
    m = table.num_rows
    features = [f"{GROUP}:{name}" for name in FEATURES]

    def call(rows):
        return store.get_online_features(features=features, entity_rows=rows).to_dict()

    n = args.lookups
    one = timed_calls(call, _lookup_rows(meta, m, n + 200, 1, 7), 200, args.max_seconds)
    hundred = timed_calls(call, _lookup_rows(meta, m, n + 50, 100, 8), 50, args.max_seconds)
    figures.update(percentiles(one, "one"))
    figures.update(percentiles(hundred, "hundred"))
    stored = _stored_entities(tmp)
    sample = [meta["first_id"] + i for i in (0, 1, m // 2, m - 1)]
    values_ok = _check_values(store, table, sample)
    return {
        "figures": figures,
        "verified": stored == m and values_ok,
        "checks": {"stored": stored, "entities": m, "values_ok": values_ok},
    }


def w_server(args, tmp: Path, data: Path, meta: dict) -> dict:
    """``feast serve`` over the materialised repo; POST one entity a call."""
    import httpx

    _, table, figures = _materialized(tmp, data, meta)
    figures = {"materialize_s": figures["materialize_s"]}
    port = C.free_port()
    feast = str(Path(sys.executable).with_name("feast"))
    cmd = [feast, "-c", str(tmp / "repo"), "serve", "-h", "127.0.0.1", "-p", str(port)]
    cmd += ["--no-access-log", "-w", "1"]
    t0 = time.perf_counter()
    proc = C.start_server(cmd, {}, tmp / "server.log")
    try:
        try:
            C.wait_http_ok(f"http://127.0.0.1:{port}/health", timeout=120, proc=proc)
        except Exception as exc:
            log = (tmp / "server.log").read_text(errors="replace")
            raise RuntimeError(f"{exc}\n{C._tail(log, 10)}") from exc
        figures["ready_s"] = time.perf_counter() - t0
        C.wait_tree_idle(proc.pid, max_wait=30)
        url = f"http://127.0.0.1:{port}/get-online-features"
        features = [f"{GROUP}:{name}" for name in FEATURES]
        bodies = [
            {"features": features, "entities": {"customer_id": [rows[0]["customer_id"]]}}
            for rows in _lookup_rows(meta, table.num_rows, args.lookups + 200, 1, 9)
        ]
        with httpx.Client() as client:

            def call(body):
                response = client.post(url, json=body)
                response.raise_for_status()
                return response

            times = timed_calls(call, bodies, 200, args.max_seconds)
            key = meta["first_id"] + 1
            sample = call({"features": features, "entities": {"customer_id": [key]}}).json()
        figures.update(percentiles(times, "http"))
        figures["server_rss_mb"] = _mb(C.tree_rss_bytes(proc.pid))
    finally:
        C.stop_server(proc)
    expected = [table.column(f)[1].as_py() for f in FEATURES]
    got = _served_values(sample, FEATURES)
    return {
        "figures": figures,
        "verified": got == expected,
        "checks": {"expected": expected, "got": got},
    }


def _served_values(response: dict, features: list[str]) -> list:
    """The values of one entity in a feature server response (names may be prefixed)."""
    names = response["metadata"]["feature_names"]
    values = {}
    for name, result in zip(names, response["results"], strict=True):
        values[name.split(":")[-1].split("__")[-1]] = result["values"][0]
    return [values.get(f) for f in features]


WORKLOADS = {
    "ingest": w_ingest,
    "pit_file": w_pit_file,
    "pit_duckdb": w_pit_duckdb,
    "online_sqlite": w_online_sqlite,
    "server": w_server,
}


def _versions() -> dict[str, str]:
    import dask
    import duckdb
    import feast
    import pandas

    return {
        "Feast": feast.__version__,
        "Feast's DuckDB": duckdb.__version__,
        "Feast's pandas": pandas.__version__,
        "dask": dask.__version__,
    }


def main() -> None:
    worker_main(WORKLOADS, "feast", NOTES, _versions)


if __name__ == "__main__":
    main()
