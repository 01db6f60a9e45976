"""Feature-store benchmark: Plinth against Feast, same data, same machine, one run.

    .venv/bin/python benchmarks/features.py            # full (about 5-8 minutes)
    .venv/bin/python benchmarks/features.py --quick    # smoke run (about 2-3 minutes)

Feast runs in its own virtualenv (``benchmarks/.venvs/feast``, made on first use with pip:
``feast[duckdb]``); Plinth runs with this interpreter. Each workload runs in a fresh
subprocess (``_plinth_features.py`` / ``_feast_features.py``) on a fresh store and prints its
figures as JSON.

The data is made once, seeded, by ``make_data`` and written to Parquet under
``benchmarks/.work/features-data/``; both workers read the same files:

- ``features.parquet``: C customers x T event times (one per slot of a year, so a key never
  has two rows at one time), 5 float features ``f0..f4``; feature groups have a 30-day TTL.
- ``entity.parquet``: the entity rows of the point-in-time join (``row_id``, ``customer_id``,
  ``event_timestamp``): random keys and times, plus rows at exactly a feature's event time,
  before any feature value, more than the TTL after the last one, with unknown keys, and
  copies of other rows (same key and timestamp).
- ``online-<date>.parquet``: one row per entity for materialisation, event times in the last
  week (made for today's date, so that online values are within the TTL).

Workloads: ``ingest`` (Plinth: validated ``insert``; Feast: ``write_to_offline_store``),
``pit`` (Plinth's join and the bare DuckDB ASOF join it is built on; Feast: ``pit_file``,
``pit_duckdb``), ``online_sqlite`` / ``online_redis`` (materialise, then look up in-process)
and ``server`` (look up over HTTP). The joins' outputs are written to
``benchmarks/.work/features-results/`` and compared here, value by value, with the bare ASOF
join's. The table is printed and also written, as plain text, to
``benchmarks/.work/last-features.txt``.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import sys
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C
from _common import Row

FEAST_VENV = C.VENVS_DIR / "feast"
FEAST_REQUIREMENTS = (
    ("feast[duckdb]==0.67.*", "psutil", "httpx"),
    # A registry mirror may not have every package of the newest release yet.
    ("feast[duckdb]>=0.60", "psutil", "httpx"),
)
PLINTH_WORKER = C.BENCH_DIR / "_plinth_features.py"
FEAST_WORKER = C.BENCH_DIR / "_feast_features.py"
DATA_ROOT = C.WORK_DIR / "features-data"
RESULTS_DIR = C.WORK_DIR / "features-results"
REDIS_URL = "redis://127.0.0.1:6379"
REDIS_DB = 11

# --------------------------------------------------------------------------- the shared data

SEED = 42
FIRST_ID = 1000  # customer ids are FIRST_ID, FIRST_ID + 1, ...
FEATURES = [f"f{i}" for i in range(5)]
GROUP = "customer_stats"
TTL_DAYS = 30
START = datetime(2025, 1, 1, tzinfo=UTC)
SPAN_DAYS = 365
DATA_VERSION = 1  # bump when make_data changes, so cached files are made again
# Share of the entity rows of each edge case; the rest are random keys and times.
EDGE_SHARES = {"exact": 0.02, "before_first": 0.02, "past_ttl": 0.02, "unknown_key": 0.01}
DUPLICATE_SHARE = 0.03


@dataclass(frozen=True)
class Sizes:
    customers: int
    timestamps: int
    entity_rows: int
    online_entities: int
    lookups: int
    server_lookups: int
    repeats: int

    @property
    def rows(self) -> int:
        return self.customers * self.timestamps


FULL = Sizes(
    customers=10_000,
    timestamps=100,
    entity_rows=100_000,
    online_entities=200_000,
    lookups=2_000,
    server_lookups=2_000,
    repeats=3,
)
QUICK = Sizes(
    customers=1_000,
    timestamps=100,
    entity_rows=10_000,
    online_entities=20_000,
    lookups=500,
    server_lookups=500,
    repeats=2,
)
TIMEOUTS = {"pit_file": 1800, "pit_duckdb": 1800, "pit": 900, "ingest": 900}


def data_dir(sizes: Sizes) -> Path:
    key = C.cache_key(DATA_VERSION, SEED, sizes.customers, sizes.timestamps, sizes.entity_rows)
    return DATA_ROOT / f"{sizes.customers}x{sizes.timestamps}-{sizes.entity_rows}-{key}"


def make_data(sizes: Sizes) -> Path:
    """Write the offline and entity tables once (cached by size), the online table once a
    day; returns their folder. Needs numpy and pyarrow (this interpreter has them)."""
    folder = data_dir(sizes)
    meta_path = folder / "meta.json"
    if not meta_path.exists():
        C.log(f"writing the feature data to {folder}")
        shutil.rmtree(folder, ignore_errors=True)
        building = folder.with_name(folder.name + ".building")
        shutil.rmtree(building, ignore_errors=True)
        building.mkdir(parents=True)
        meta = _write_offline(building, sizes)
        (building / "meta.json").write_text(json.dumps(meta, indent=1))
        building.rename(folder)
    meta = json.loads(meta_path.read_text())
    online = folder / f"online-{sizes.online_entities}-{datetime.now(UTC):%Y%m%d}.parquet"
    if not online.exists():
        for old in folder.glob("online-*.parquet"):
            old.unlink()
        _write_online(online, sizes)
    meta["online"] = online.name
    (folder / "run.json").write_text(json.dumps(meta, indent=1))
    return folder


def _timestamps(micros):  # numpy int64 microseconds -> Arrow timestamp[us, UTC]
    import pyarrow as pa

    return pa.array(micros, pa.int64()).cast(pa.timestamp("us", "UTC"))


def _feature_columns(rng, n: int) -> dict:
    return {
        "f0": rng.standard_normal(n),
        "f1": rng.uniform(0.0, 100.0, n),  # the range expectation: 0 <= f1 <= 100
        "f2": rng.exponential(1.0, n),
        "f3": rng.normal(50.0, 10.0, n),
        "f4": rng.uniform(-1.0, 1.0, n),
    }


def _write_offline(folder: Path, sizes: Sizes) -> dict:
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(SEED)
    c, t = sizes.customers, sizes.timestamps
    second = 1_000_000
    start = int(START.timestamp()) * second
    span = SPAN_DAYS * 86_400 * second
    ttl = TTL_DAYS * 86_400 * second
    step = span // t
    # One event per customer and slot, at whole seconds: never two rows of a key at one time.
    slots = np.tile(np.arange(t, dtype=np.int64), c)
    jitter = rng.integers(0, step // second, c * t) * second
    times = start + slots * step + jitter
    ids = FIRST_ID + np.arange(c, dtype=np.int64)
    offline = pa.table(
        {
            "customer_id": np.repeat(ids, t),
            "event_time": _timestamps(times),
            **_feature_columns(rng, c * t),
        }
    )
    pq.write_table(offline, folder / "features.parquet", row_group_size=128 * 1024)

    n = sizes.entity_rows
    counts = {name: int(n * share) for name, share in EDGE_SHARES.items()}
    n_dup = int(n * DUPLICATE_SHARE)
    n_random = n - sum(counts.values()) - n_dup
    keys, stamps = [], []
    # random keys, random microsecond times over the year and a little after it
    keys.append(rng.choice(ids, n_random))
    stamps.append(rng.integers(start, start + span + ttl // 2, n_random))
    # exactly at a feature's event time (the value at that time counts)
    pick = rng.integers(0, c * t, counts["exact"])
    keys.append(np.repeat(ids, t)[pick])
    stamps.append(times[pick])
    # before any feature value (null features)
    keys.append(rng.choice(ids, counts["before_first"]))
    stamps.append(start - rng.integers(1, 60 * 86_400, counts["before_first"]) * second)
    # more than the TTL after the customer's last value (null features)
    who = rng.integers(0, c, counts["past_ttl"])
    last = times.reshape(c, t)[:, -1]
    keys.append(ids[who])
    stamps.append(last[who] + ttl + rng.integers(3600, 60 * 86_400, counts["past_ttl"]) * second)
    # keys that have no feature rows at all
    keys.append(ids[-1] + 1 + rng.integers(0, 1000, counts["unknown_key"]))
    stamps.append(rng.integers(start, start + span, counts["unknown_key"]))
    key_col, stamp_col = np.concatenate(keys), np.concatenate(stamps)
    # copies of other rows: the same key and timestamp more than once
    copy = rng.integers(0, len(key_col), n_dup)
    key_col = np.concatenate([key_col, key_col[copy]])
    stamp_col = np.concatenate([stamp_col, stamp_col[copy]])
    order = rng.permutation(n)
    entity = pa.table(
        {
            "row_id": np.arange(n, dtype=np.int64),
            "customer_id": key_col[order],
            "event_timestamp": _timestamps(stamp_col[order]),
        }
    )
    pq.write_table(entity, folder / "entity.parquet")
    return {
        "sizes": asdict(sizes),
        "seed": SEED,
        "rows": c * t,
        "entity_rows": n,
        "edge_rows": {**counts, "duplicates": n_dup, "random": n_random},
        "features": FEATURES,
        "group": GROUP,
        "ttl_days": TTL_DAYS,
        "first_id": FIRST_ID,
        "customers": c,
    }


def _write_online(path: Path, sizes: Sizes) -> None:
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(SEED + 1)
    m = sizes.online_entities
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    newest = int(today.timestamp()) * 1_000_000
    week = 7 * 86_400 * 1_000_000
    table = pa.table(
        {
            "customer_id": FIRST_ID + np.arange(m, dtype=np.int64),
            "event_time": _timestamps(newest - rng.integers(0, week, m)),
            **_feature_columns(rng, m),
        }
    )
    pq.write_table(table, path)


# --------------------------------------------------------------------------- worker helpers


def worker_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The CLI shared by both workers."""
    p = argparse.ArgumentParser()
    p.add_argument("--workload", required=True)
    p.add_argument("--n", type=int, default=0, help="size (rows, lookups); 0 = the data's")
    p.add_argument("--tmp", required=True, help="a fresh scratch folder for this workload")
    p.add_argument("--data", required=True, help="the folder make_data wrote")
    p.add_argument("--results", default=str(RESULTS_DIR), help="where join outputs go")
    p.add_argument("--repeats", type=int, default=3, help="timed runs of a join")
    p.add_argument("--lookups", type=int, default=2_000, help="timed online lookups")
    p.add_argument("--max-seconds", type=float, default=60.0, help="bound for timing loops")
    p.add_argument("--redis-db", type=int, default=REDIS_DB)
    return p.parse_args(argv)


def worker_main(workloads: dict, tool: str, notes: list[str], versions) -> None:
    """A worker's main: run the named workload on the data, print its figures as JSON."""
    args = worker_args()
    if args.workload not in workloads:
        raise SystemExit(f"unknown workload {args.workload!r}; one of {sorted(workloads)}")
    tmp = Path(args.tmp).resolve()
    tmp.mkdir(parents=True, exist_ok=True)
    data = Path(args.data).resolve()
    result = workloads[args.workload](args, tmp, data, read_meta(data))
    result.update(workload=args.workload, tool=tool, notes=notes, versions=versions())
    C.emit(result)


def read_meta(folder: str | Path) -> dict:
    return json.loads((Path(folder) / "run.json").read_text())


def percentiles(ns: list[int], prefix: str) -> dict[str, float]:
    """p50/p99/mean in ms of per-call times in nanoseconds."""
    ordered = sorted(ns)

    def at(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] / 1e6

    return {
        f"{prefix}_p50_ms": at(0.50),
        f"{prefix}_p99_ms": at(0.99),
        f"{prefix}_mean_ms": sum(ordered) / len(ordered) / 1e6,
        f"{prefix}_calls": float(len(ordered)),
    }


def timed_calls(call, args_list: list, warmup: int, max_seconds: float) -> list[int]:
    """Call ``call(a)`` for each ``a`` (after ``warmup`` untimed calls); per-call ns. Stops
    early after ``max_seconds`` (at least 50 calls)."""
    import gc

    for a in args_list[:warmup]:
        call(a)
    out: list[int] = []
    clock = time.perf_counter_ns
    deadline = clock() + int(max_seconds * 1e9)
    gc.collect()
    for a in args_list[warmup:]:
        t0 = clock()
        call(a)
        t1 = clock()
        out.append(t1 - t0)
        if t1 > deadline and len(out) >= 50:
            break
    return out


# --------------------------------------------------------------------------- the runner


class Bench(C.Bench):
    """``_common.Bench`` with the reference tool's python per tool name (there it is MLflow's)
    and the data folder passed to every worker."""

    def __init__(self, pythons: dict[str, Path | None], data: Path, keep: bool) -> None:
        workers = {"plinth": PLINTH_WORKER, "feast": FEAST_WORKER}
        super().__init__("features", workers, TIMEOUTS, None, keep)
        self.pythons = pythons
        self.data = data

    def python_for(self, tool: str) -> Path | None:
        return self.pythons.get(tool)

    def worker_arguments(self, workload: str, n: int, tmp: Path) -> list[str]:
        return [*super().worker_arguments(workload, n, tmp), "--data", str(self.data)]


def redis_available(db: int) -> str | None:
    """None when Redis answers at REDIS_URL, else why not."""
    try:
        import redis
    except ImportError:
        return "the redis package is not installed in this interpreter"
    try:
        redis.Redis.from_url(f"{REDIS_URL}/{db}", socket_connect_timeout=1).ping()
    except redis.RedisError as exc:
        return f"Redis at {REDIS_URL} does not answer: {exc}"
    return None


def compare_with_floor(
    results: Path, name: str, entity: Path, expected_rows: int
) -> dict[str, int] | None:
    """Rows of a join output (``results/<name>.parquet``) against the bare ASOF join's:
    output rows, entity rows missing or repeated, and rows whose 5 values differ (null
    matches null). Missing rows are told apart: copies of another entity row (same key and
    timestamp), rows without any value in the TTL window, and others."""
    out, floor = results / f"{name}.parquet", results / "bare-asof.parquet"
    if not out.exists() or not floor.exists():
        return None
    import duckdb

    differs = " OR ".join(f"r.{f} IS DISTINCT FROM b.{f}" for f in FEATURES)
    all_null = " AND ".join(f"b.{f} IS NULL" for f in FEATURES)
    con = duckdb.connect()
    rows, distinct = con.execute(
        f"SELECT count(*), count(DISTINCT row_id) FROM read_parquet('{out}')"
    ).fetchone()
    missing, copies, no_value, mismatched = con.execute(
        f"""WITH e AS (
                SELECT row_id, count(*) OVER (PARTITION BY customer_id, event_timestamp) > 1
                       AS copied
                FROM read_parquet('{entity}'))
            SELECT count(*) FILTER (WHERE r.row_id IS NULL),
                   count(*) FILTER (WHERE r.row_id IS NULL AND e.copied),
                   count(*) FILTER (WHERE r.row_id IS NULL AND NOT e.copied AND {all_null}),
                   count(*) FILTER (WHERE r.row_id IS NOT NULL AND ({differs}))
            FROM read_parquet('{floor}') b
            JOIN e USING (row_id)
            LEFT JOIN (SELECT DISTINCT ON (row_id) * FROM read_parquet('{out}')) r
            USING (row_id)"""
    ).fetchone()
    return {
        "rows": rows,
        "expected": expected_rows,
        "repeated": rows - distinct,
        "missing": missing,
        "missing_copies": copies,
        "missing_without_value": no_value,
        "mismatched": mismatched,
    }


def null_rows(path: Path) -> int | None:
    if not path.exists():
        return None
    import pyarrow.parquet as pq

    return pq.read_table(path, columns=[FEATURES[0]]).column(0).null_count


class CheckRow(Row):
    """A row of counts (no speed-up)."""

    def ratio(self) -> float | None:
        return None


def main(argv: list[str] | None = None) -> int:
    ap = C.runner_options(__doc__.split("\n\n")[0], "feast")
    ap.add_argument(
        "--redis-db",
        type=int,
        default=REDIS_DB,
        help=f"the Redis database the Redis workload flushes and fills (default {REDIS_DB})",
    )
    opts = C.parse_runner_options(ap, argv, "features")
    s = QUICK if opts.quick else FULL
    started = time.perf_counter()
    source_at_start = _git_state()
    data = make_data(s)
    shutil.rmtree(RESULTS_DIR, ignore_errors=True)
    RESULTS_DIR.mkdir(parents=True)

    feast_py = None
    if not opts.no_feast:
        try:
            feast_py = C.ensure_venv(FEAST_VENV, FEAST_REQUIREMENTS, check_import="feast")
        except Exception as exc:  # the table still shows Plinth
            C.log(f"Feast venv unavailable: {C.key_error_line(str(exc))}")

    b = Bench({"plinth": Path(sys.executable), "feast": feast_py}, data, opts.keep)
    b.wait_quiet = opts.wait_quiet
    P, F = "plinth", "feast"
    notes: list[str] = []
    reps = str(s.repeats)

    # Ingestion ----------------------------------------------------------------------------
    p_ing = b.run(P, "ingest", s.rows)
    f_ing = b.run(F, "ingest", s.rows)
    # Point-in-time joins --------------------------------------------------------------------
    p_pit = b.run(P, "pit", s.entity_rows, repeats=reps, max_seconds="120")
    f_file = b.run(F, "pit_file", s.entity_rows, repeats=reps, max_seconds="300")
    f_duck = b.run(F, "pit_duckdb", s.entity_rows, repeats=reps, max_seconds="300")
    # Materialisation and online lookups ---------------------------------------------------
    look = str(s.lookups)
    p_sql = b.run(P, "online_sqlite", s.online_entities, lookups=look, max_seconds="60")
    f_sql = b.run(F, "online_sqlite", s.online_entities, lookups=look, max_seconds="60")
    why_no_redis = redis_available(opts.redis_db)
    p_red = None
    if why_no_redis is None:
        p_red = b.run(
            P,
            "online_redis",
            s.online_entities,
            lookups=look,
            max_seconds="60",
            redis_db=str(opts.redis_db),
        )
    else:
        notes.append(f"Redis rows skipped: {why_no_redis}")
    srv = str(s.server_lookups)
    p_srv = b.run(P, "server", s.online_entities, lookups=srv, max_seconds="60")
    f_srv = b.run(F, "server", s.online_entities, lookups=srv, max_seconds="60")

    if _git_state() != source_at_start:
        notes.append(
            "Plinth's src/ changed while the benchmark ran (someone was editing it): its "
            "figures may come from different versions of the code if these files matter: "
            + ", ".join(_changed_since(source_at_start[0]))
        )
    floor_nulls = null_rows(RESULTS_DIR / "bare-asof.parquet")
    if floor_nulls is not None:
        notes.append(
            f"bare ASOF join: {floor_nulls:,} of {s.entity_rows:,} entity rows get no value "
            "(unknown key, before the first value, or older than the TTL)"
        )
    checks = {
        name: compare_with_floor(RESULTS_DIR, name, data / "entity.parquet", s.entity_rows)
        for name in ("plinth", "feast-file", "feast-duckdb")
    }

    for name, check in checks.items():
        if check and (check["rows"] != s.entity_rows or check["mismatched"] or check["missing"]):
            text = (
                f"{name} join: {check['rows']:,} rows for {s.entity_rows:,} entity rows; "
                f"missing {check['missing']:,} ({check['missing_copies']:,} copies of another "
                f"row's key and timestamp, {check['missing_without_value']:,} without a value "
                f"in the TTL window), repeated {check['repeated']:,}, values differing from "
                f"the bare join in {check['mismatched']:,}"
            )
            # Plinth must match the floor; a reference tool's deviation is a finding.
            (b.errors if name == "plinth" else notes).append(text)

    # The table ------------------------------------------------------------------------------
    rows = _rows(s, p_ing, f_ing, p_pit, f_file, f_duck, p_sql, f_sql, p_red, p_srv, f_srv, checks)
    versions = _versions(b, source_at_start)
    machine = C.machine_info()
    mode = "quick" if opts.quick else "full"
    title = (
        f"Plinth vs Feast — feature store ({mode}; speed-up = how many times Plinth is "
        f"faster/leaner, > 1{C.TIMES} favours Plinth)"
    )
    meta = read_meta(data)
    edges = meta["edge_rows"]
    footer = [
        "versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()),
        f"machine: {machine['nproc']} CPUs, {machine['cpu']}, {machine['memory']}, {machine['os']}",
        f"data: {s.customers:,} customers x {s.timestamps} event times = {s.rows:,} rows x "
        f"{len(FEATURES)} float64 features, TTL {TTL_DAYS} days (seed {SEED}); entity rows: "
        + ", ".join(f"{k} {v:,}" for k, v in edges.items())
        + f"; online: {s.online_entities:,} entities, one row each.",
        "point-in-time join: Plinth fs.get_historical_features(...).to_arrow() on its Delta "
        "table; Feast get_historical_features(...).to_df() on the Parquet file (file = "
        "dask offline store, duckdb = DuckDB offline store); bare = one DuckDB ASOF LEFT "
        "JOIN with the TTL bound over the Parquet files (Plinth's python). Median of the "
        "timed runs; rows and values checked against the bare join (the 'Feast/ref.' column "
        "of the floor row holds the bare join).",
        "online: Plinth fs.materialize + fs.get_online_features; Feast store.materialize + "
        "store.get_online_features(...).to_dict(), both to SQLite (Plinth also to Redis db "
        f"{opts.redis_db}); random keys, per-call times after a warm-up. HTTP: a kept-alive "
        "httpx.Client posting to `plinth server` / `feast serve`.",
        "peak RSS = the worker process' high-water mark (data loading included).",
        C.busy_line(b.busy),
        *notes,
    ]
    for res in (p_ing, f_ing, p_pit, f_file, f_duck, p_sql, f_sql, p_red, p_srv, f_srv):
        for note in (res or {}).get("notes", []):
            footer.append(f"{res['tool']} {res['workload']}: {note}")
    C.HEADERS = ["workload", "Plinth", "Feast/ref.", "speed-up", "unit", "target", "note"]
    return C.finish_report(rows, title, footer, opts, b.errors, started)


def _rows(s, p_ing, f_ing, p_pit, f_file, f_duck, p_sql, f_sql, p_red, p_srv, f_srv, checks):
    fig = C.fig
    sec, ms3, mb = "{:,.3f}", "{:,.3f}", "{:,.0f}"
    x = C.TIMES

    def check_rows(what: str, key: str) -> list[Row]:
        def v(name: str) -> float | None:
            c = checks.get(name)
            return None if c is None else float(c[key])

        return [
            CheckRow(f"{what}: Plinth vs Feast file", v("plinth"), v("feast-file"), "rows"),
            CheckRow(f"{what}: Plinth vs Feast duckdb", v("plinth"), v("feast-duckdb"), "rows"),
        ]

    def lookup(label: str, p: dict | None, f: dict | None, prefix: str, target99: str) -> list:
        def pair(q: str) -> tuple[float | None, float | None]:
            return fig(p, f"{prefix}_{q}_ms"), fig(f, f"{prefix}_{q}_ms")

        return [
            Row(f"{label}, p50", *pair("p50"), "ms", False, fmt=ms3, note=_calls(p, f, prefix)),
            Row(f"{label}, p99", *pair("p99"), "ms", False, fmt=ms3, target=target99),
        ]

    m = s.online_entities
    return [
        Row(
            f"ingest {s.rows:,} rows, validated (Feast: unvalidated append)",
            fig(p_ing, "rows_per_s"),
            fig(f_ing, "rows_per_s"),
            "rows/s",
            target="report",
            note="Plinth fg.insert with not_null f0..f4 + range f1; Feast write_to_offline_store",
        ),
        Row(
            "ingest: peak RSS",
            fig(p_ing, "peak_rss_mb"),
            fig(f_ing, "peak_rss_mb"),
            "MB",
            higher_is_better=False,
            fmt=mb,
            target="report",
        ),
        Row(
            f"point-in-time join {s.entity_rows:,} x {s.rows:,} vs Feast file store",
            fig(p_pit, "plinth_s"),
            fig(f_file, "join_s"),
            "s",
            higher_is_better=False,
            fmt=sec,
            target=f"≥ 10{x} Feast",
            note=_runs(p_pit, f_file),
        ),
        Row(
            "point-in-time join vs Feast DuckDB store",
            fig(p_pit, "plinth_s"),
            fig(f_duck, "join_s"),
            "s",
            higher_is_better=False,
            fmt=sec,
            target=f"≥ 3{x} Feast",
            note=_runs(p_pit, f_duck),
        ),
        Row(
            "point-in-time join vs bare DuckDB ASOF (floor)",
            fig(p_pit, "plinth_s"),
            fig(p_pit, "bare_s"),
            "s",
            higher_is_better=False,
            fmt=sec,
            target=f"≥ 0.67{x} (within 1.5{x})",
            note="reference column: the bare ASOF join",
        ),
        Row(
            "point-in-time join, first call vs Feast DuckDB",
            fig(p_pit, "plinth_first_s"),
            fig(f_duck, "join_first_s"),
            "s",
            higher_is_better=False,
            fmt=sec,
            note=f"file store first call: {_fmt(fig(f_file, 'join_first_s'), sec)} s",
        ),
        *check_rows(f"join output rows (expect {s.entity_rows:,})", "rows"),
        *check_rows("join rows whose values differ from bare ASOF", "mismatched"),
        Row(
            "point-in-time join: peak RSS vs Feast file",
            fig(p_pit, "peak_rss_mb"),
            fig(f_file, "peak_rss_mb"),
            "MB",
            higher_is_better=False,
            fmt=mb,
            target="report",
        ),
        Row(
            "point-in-time join: peak RSS vs Feast DuckDB",
            fig(p_pit, "peak_rss_mb"),
            fig(f_duck, "peak_rss_mb"),
            "MB",
            higher_is_better=False,
            fmt=mb,
            target="report",
        ),
        Row(
            f"materialise {m:,} entities to SQLite",
            fig(p_sql, "materialize_per_s"),
            fig(f_sql, "materialize_per_s"),
            "entities/s",
            target=f"≥ 10{x} Feast",
            note=_secs(p_sql, f_sql, "materialize_s"),
        ),
        Row(
            f"materialise {m:,} entities: Plinth to Redis",
            fig(p_red, "materialize_per_s"),
            None,
            "entities/s",
            note=_secs(p_red, None, "materialize_s"),
        ),
        Row(
            "materialise: peak RSS (SQLite)",
            fig(p_sql, "peak_rss_mb"),
            fig(f_sql, "peak_rss_mb"),
            "MB",
            higher_is_better=False,
            fmt=mb,
            target="report",
        ),
        *lookup("online 1 entity x 5, SQLite", p_sql, f_sql, "one", "< 0.1 ms"),
        *lookup("online 100 entities x 5, SQLite", p_sql, f_sql, "hundred", "< 1 ms"),
        *lookup("online 1 entity x 5, Plinth Redis", p_red, None, "one", "< 0.5 ms"),
        *lookup("online 100 entities x 5, Plinth Redis", p_red, None, "hundred", "< 2 ms"),
        *lookup("HTTP 1 entity x 5 (feature server)", p_srv, f_srv, "http", "< 1.5 ms"),
        Row(
            "feature server: RSS after the lookups",
            fig(p_srv, "server_rss_mb"),
            fig(f_srv, "server_rss_mb"),
            "MB",
            higher_is_better=False,
            fmt=mb,
            note="the server's process tree",
        ),
    ]


def _fmt(v: float | None, fmt: str) -> str:
    return "—" if v is None else fmt.format(v)


def _runs(p: dict | None, f: dict | None) -> str:
    pn, fn = (p or {}).get("runs"), (f or {}).get("runs")
    return f"median of runs: Plinth {pn or '—'}, Feast {fn or '—'}"


def _secs(p: dict | None, f: dict | None, key: str) -> str:
    pv, fv = C.fig(p, key), C.fig(f, key)
    text = f"Plinth {_fmt(pv, '{:,.2f}')} s"
    return text + (f", Feast {_fmt(fv, '{:,.2f}')} s" if f is not None else "")


def _calls(p: dict | None, f: dict | None, prefix: str) -> str:
    pn, fn = C.fig(p, f"{prefix}_calls"), C.fig(f, f"{prefix}_calls")
    return f"calls: Plinth {_fmt(pn, '{:,.0f}')}, Feast {_fmt(fn, '{:,.0f}')}"


def _versions(b: Bench, source: tuple[str, str]) -> dict[str, str]:
    out = {"Python": platform.python_version()}
    for tool in ("plinth", "feast"):
        for res in b.results.values():
            if res.get("tool") == tool and "versions" in res:
                out.update(res["versions"])
                if tool == "plinth":
                    out["Plinth source at the start"] = source_state(source)
                break
    return out


def source_state(state: tuple[str, str]) -> str:
    """The commit the Plinth figures were measured on, and whether src/ differed from it
    (others may be editing the working tree while the benchmark runs)."""
    commit, diff = state
    if not commit:
        return "unknown (not a git checkout)"
    return commit + (" with uncommitted changes in src/" if diff else "")


def _changed_since(commit: str, limit: int = 12) -> list[str]:
    """Files under src/ that differ now from ``commit`` (committed since, or not yet)."""
    import subprocess

    def lines(*args: str) -> list[str]:
        proc = subprocess.run(["git", *args], cwd=C.REPO_DIR, capture_output=True, text=True)
        return proc.stdout.splitlines() if proc.returncode == 0 else []

    names = lines("diff", "--name-only", commit, "--", "src")
    names += [ln[3:] for ln in lines("status", "--porcelain", "--", "src") if ln.startswith("??")]
    names = sorted(set(names))
    return names[:limit] + ([f"... {len(names) - limit} more"] if len(names) > limit else [])


def _git_state() -> tuple[str, str]:
    """HEAD and a fingerprint of the uncommitted changes in src/ ("" when none)."""
    import hashlib
    import subprocess

    def git(*args: str) -> str:
        proc = subprocess.run(["git", *args], cwd=C.REPO_DIR, capture_output=True, text=True)
        return proc.stdout if proc.returncode == 0 else ""

    commit = git("rev-parse", "--short", "HEAD").strip()
    changes = git("diff", "HEAD", "--", "src") + git("status", "--porcelain", "--", "src")
    return commit, hashlib.sha1(changes.encode()).hexdigest()[:10] if changes.strip() else ""


if __name__ == "__main__":
    sys.exit(main())
