"""The data of the monitoring benchmark: seeded, written once as Parquet (and a Delta table).

``reference`` and ``current`` tables of N rows x 50 columns (40 numeric, 10 categorical),
the current with drift of known size planted in a stated set of columns (``DRIFTED``) and
every other column drawn again from the reference's distribution. Generated in chunks of
``CHUNK`` rows (each chunk from its own seed), so memory stays bounded and the same rows come
out whatever the machine. A manifest next to the files records the spec they were made from;
the files are made again only when it changes.

Used by ``monitoring.py`` (the project's interpreter: numpy, pyarrow, deltalake); the
workers only read the files.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

SEED = 14
CHUNK = 250_000
ROW_GROUP = 131_072


@dataclass(frozen=True)
class Col:
    """One column: how to draw it and what drift the current gets.

    kind: normal | lognormal | poisson | uniform_int | few_int | few_float | binary_int |
    category | bool. ``shift`` is the mean shift in reference standard deviations
    (numeric), ``moved`` the share of rows moved onto the first category (categorical)."""

    name: str
    kind: str
    a: float = 0.0
    b: float = 1.0
    k: int = 0  # number of categories / distinct values
    nulls: float = 0.0
    shift: float = 0.0
    moved: float = 0.0

    @property
    def numeric(self) -> bool:
        return self.kind not in ("category", "bool")

    @property
    def drifted(self) -> bool:
        return self.shift != 0.0 or self.moved != 0.0


def _columns() -> list[Col]:
    cols: list[Col] = []
    # 14 normal floats, various locations and scales; 5 shifted by 0.05-0.5 std
    shifts = {0: 0.05, 1: 0.08, 2: 0.12, 3: 0.2, 4: 0.5}
    for i in range(14):
        cols.append(
            Col(f"n{i:02d}", "normal", a=10.0 * i - 30.0, b=0.5 + i, shift=shifts.get(i, 0.0))
        )
    # 2 normal floats with 2% nulls
    cols.append(Col("f00", "normal", a=1.0, b=2.0, nulls=0.02))
    cols.append(Col("f01", "normal", a=-5.0, b=0.1, nulls=0.02, shift=0.3))
    # 10 lognormal floats (skewed); 1 shifted
    for i in range(10):
        cols.append(
            Col(f"l{i:02d}", "lognormal", a=0.1 * i, b=0.4 + 0.1 * i, shift=0.15 if i == 0 else 0.0)
        )
    # 8 integer-valued with many distinct values; 1 shifted
    for i in range(4):
        cols.append(Col(f"i{i:02d}", "poisson", a=20.0 + 60.0 * i, shift=0.25 if i == 0 else 0.0))
    for i in range(4, 8):
        cols.append(Col(f"i{i:02d}", "uniform_int", a=0, b=100 * (i - 2)))
    # integer with 8 distinct values (Evidently: categorical, its int rule), 5 distinct, 0/1
    cols.append(Col("i08", "few_int", k=8))
    cols.append(Col("i09", "few_int", k=5))
    cols.append(Col("i10", "binary_int", a=0.3))
    # 3 floats with at most 5 distinct values
    for i in range(3):
        cols.append(Col(f"d{i:02d}", "few_float", k=3 + i))
    # 9 categorical strings with 3-50 categories (Zipf-like shares); 3 with share changes
    ks = [3, 5, 8, 12, 20, 30, 40, 50, 7]
    moved = {0: 0.02, 1: 0.16, 2: 0.3}
    for i, k in enumerate(ks):
        cols.append(
            Col(
                f"c{i:02d}", "category", k=k, nulls=0.01 if i == 8 else 0.0, moved=moved.get(i, 0.0)
            )
        )
    cols.append(Col("b00", "bool", a=0.2))
    return cols


COLUMNS = _columns()
DRIFTED = [c.name for c in COLUMNS if c.drifted]
assert len(COLUMNS) == 50 and sum(c.numeric for c in COLUMNS) == 40, len(COLUMNS)


def _lognormal_std(mu: float, s: float) -> float:
    return math.sqrt((math.exp(s * s) - 1.0) * math.exp(2 * mu + s * s))


def ref_std(col: Col) -> float:
    """The reference distribution's standard deviation (for the planted shift)."""
    if col.kind == "normal":
        return col.b
    if col.kind == "lognormal":
        return _lognormal_std(col.a, col.b)
    if col.kind == "poisson":
        return math.sqrt(col.a)
    raise ValueError(f"no shift for {col.kind} column {col.name}")


def _shares(k: int) -> np.ndarray:
    w = 1.0 / np.arange(1, k + 1) ** 0.8
    return w / w.sum()


def _category_shares(col: Col, current: bool) -> np.ndarray:
    p = _shares(col.k)
    if current and col.moved:
        p = p * (1 - col.moved)
        p[-1] += col.moved  # the rarest category gains `moved` of all rows
    return p


def _draw(col: Col, n: int, rng: np.random.Generator, current: bool) -> pa.Array:
    shift = col.shift if current else 0.0
    mask = rng.random(n) < col.nulls if col.nulls else None
    if col.kind == "normal":
        values = rng.normal(col.a + shift * col.b, col.b, n)
    elif col.kind == "lognormal":
        values = rng.lognormal(col.a, col.b, n) + shift * ref_std(col)
    elif col.kind == "poisson":
        values = rng.poisson(col.a, n) + round(shift * ref_std(col))
    elif col.kind == "uniform_int":
        values = rng.integers(int(col.a), int(col.b) + 1, n)
    elif col.kind == "few_int":
        values = rng.binomial(col.k - 1, 0.4, n)
    elif col.kind == "binary_int":
        values = (rng.random(n) < col.a).astype(np.int64)
    elif col.kind == "few_float":
        values = rng.integers(0, col.k, n) * 0.5 + 1.0
    elif col.kind == "bool":
        return pa.array(rng.random(n) < col.a)
    elif col.kind == "category":
        labels = np.array([f"{col.name}_v{j:02d}" for j in range(col.k)], dtype=object)
        idx = rng.choice(col.k, size=n, p=_category_shares(col, current))
        return pa.array(labels[idx], type=pa.string(), mask=mask)
    else:
        raise ValueError(col.kind)
    return pa.array(values, mask=mask)


def expected_statistic(col: Col) -> float:
    """What Evidently's default test should measure on this column at large sizes: the
    normalised Wasserstein distance (= the shift, in std) or the Jensen-Shannon distance."""
    if col.kind == "poisson":
        return round(col.shift * ref_std(col)) / ref_std(col)
    if col.numeric:
        return abs(col.shift)
    if not col.moved:
        return 0.0
    from scipy.spatial.distance import jensenshannon

    return float(jensenshannon(_category_shares(col, False), _category_shares(col, True)))


def spec_hash(rows: int) -> str:
    text = json.dumps([asdict(c) for c in COLUMNS] + [rows, SEED, CHUNK], sort_keys=True)
    return hashlib.sha1(text.encode()).hexdigest()[:12]


def _write(path: Path, rows: int, current: bool) -> None:
    tmp = path.with_suffix(".tmp")
    writer: pq.ParquetWriter | None = None
    for start in range(0, rows, CHUNK):
        n = min(CHUNK, rows - start)
        rng = np.random.default_rng([SEED, int(current), start])
        table = pa.table({c.name: _draw(c, n, rng, current) for c in COLUMNS})
        if writer is None:
            writer = pq.ParquetWriter(tmp, table.schema, compression="zstd")
        writer.write_table(table, row_group_size=ROW_GROUP)
    assert writer is not None
    writer.close()
    tmp.rename(path)


def ensure_parquet(folder: Path, rows: int, log=print) -> tuple[Path, Path]:
    """``(reference, current)`` Parquet files of ``rows`` rows, made once."""
    folder.mkdir(parents=True, exist_ok=True)
    ref, cur = folder / f"reference_{rows}.parquet", folder / f"current_{rows}.parquet"
    manifest = folder / f"manifest_{rows}.json"
    want = spec_hash(rows)
    made = ref.exists() and cur.exists() and manifest.exists()
    if made and json.loads(manifest.read_text()).get("spec") == want:
        return ref, cur
    log(f"writing {rows:,} x {len(COLUMNS)} reference and current Parquet files to {folder}")
    _write(ref, rows, False)
    _write(cur, rows, True)
    manifest.write_text(json.dumps({"spec": want, "rows": rows, "drifted": DRIFTED}))
    return ref, cur


# --------------------------------------------------------------------------- the Delta table

DELTA_BATCH = 1_000_000


def _delta_batch(start: int, n: int) -> pa.Table:
    rng = np.random.default_rng([SEED, 99, start])
    cities = np.array([f"city_{j:03d}" for j in range(200)], dtype=object)
    return pa.table(
        {
            "id": pa.array(np.arange(start, start + n, dtype=np.int64)),
            "ts": pa.array(
                (1_700_000_000_000_000 + np.arange(start, start + n) * 1_000_000).astype("int64"),
                type=pa.timestamp("us", tz="UTC"),
            ),
            "amount": pa.array(rng.lognormal(3.0, 1.0, n)),
            "score": pa.array(rng.random(n)),
            "x": pa.array(rng.normal(0.0, 1.0, n), mask=rng.random(n) < 0.01),
            "qty": pa.array(rng.poisson(4.0, n)),
            "age": pa.array(rng.integers(18, 90, n).astype(np.int32)),
            "city": pa.array(cities[rng.choice(200, n, p=_shares(200))], type=pa.string()),
            "channel": pa.array(
                np.array(["web", "app", "store", "phone"], dtype=object)[rng.integers(0, 4, n)]
            ),
            "flag": pa.array(rng.random(n) < 0.1),
        }
    )


def ensure_delta(uri: Path, rows: int, log=print) -> dict[str, float]:
    """A Delta table of ``rows`` rows x 10 columns written once (in batches of 1M rows);
    returns ``{"rows", "arrow_bytes", "disk_bytes"}``."""
    from deltalake import DeltaTable, write_deltalake

    info = uri.parent / f"{uri.name}.json"
    want = {"spec": hashlib.sha1(f"{rows}-{SEED}-{DELTA_BATCH}-v1".encode()).hexdigest()[:12]}
    if info.exists() and (uri / "_delta_log").exists():
        got = json.loads(info.read_text())
        if got.get("spec") == want["spec"]:
            return got
    import shutil

    shutil.rmtree(uri, ignore_errors=True)
    log(f"writing a {rows:,}-row Delta table to {uri} (batches of {DELTA_BATCH:,})")
    arrow_bytes = 0
    for start in range(0, rows, DELTA_BATCH):
        batch = _delta_batch(start, min(DELTA_BATCH, rows - start))
        arrow_bytes += batch.nbytes
        write_deltalake(str(uri), batch, mode="append")
    disk = sum(p.stat().st_size for p in uri.rglob("*.parquet"))
    out = {
        **want,
        "rows": rows,
        "arrow_bytes": arrow_bytes,
        "disk_bytes": disk,
        "version": DeltaTable(str(uri)).version(),
    }
    info.write_text(json.dumps(out))
    return out
