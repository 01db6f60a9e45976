"""A metric's series for a chart: read as columns, downsampled on the server.

A series of 200,000 points is a few megabytes of JSON and a slow chart; a chart is at most
a few thousand pixels wide. MinMaxLTTB (tsdownsample, in Rust) picks the points that keep
the curve's shape; the series' lowest and highest points are always kept, and the is-best
points travel apart so that every one can be marked.
"""

from __future__ import annotations

import math

import numpy as np
from sqlalchemy import Connection, func, select
from tsdownsample import MinMaxLTTBDownsampler

from plinth.errors import InvalidArgument
from plinth.store.schema import metrics
from plinth.tracking.types import MetricSeries

MAX_POINTS = 20_000


def read_series(
    conn: Connection,
    run_id: str,
    key: str,
    max_points: int,
    start: float | None = None,
    end: float | None = None,
) -> MetricSeries:
    if not 3 <= max_points <= MAX_POINTS:
        raise InvalidArgument(f"max_points must be 3 to {MAX_POINTS}, got {max_points}")
    for name, bound in (("start", start), ("end", end)):
        if bound is not None and not math.isfinite(bound):
            raise InvalidArgument(f"{name} must be a finite step, got {bound}")
    if start is not None and end is not None and start > end:
        raise InvalidArgument(f"start ({start}) is after end ({end})")
    m = metrics.c
    where = [m.run_id == run_id, m.key == key]
    if start is not None:
        where.append(m.step >= math.floor(start))
    if end is not None:
        where.append(m.step <= math.ceil(end))
    count = conn.execute(select(func.count()).where(*where)).scalar_one()
    if not count:
        return MetricSeries(key, 0, [], [], [], [], False)
    # NULL stores NaN: a gap, never drawn, counted above
    query = select(m.step, m.value, m.is_best).where(*where, m.value.is_not(None))
    result = conn.execute(query.order_by(m.step, m.id))
    # The driver's own rows: a SQLAlchemy Row per point costs more than reading the points
    # (200,000 points: 0.4 s against 0.15 s), and numpy takes the tuples as they come.
    rows = result.cursor.fetchall()
    result.close()
    points = np.fromiter(rows, dtype=_POINT, count=len(rows))
    steps, values = points["step"], points["value"]
    drawn = np.isfinite(values)  # infinities cannot be drawn either: gaps
    kept = np.flatnonzero(drawn)
    if len(kept) > max_points:
        kept = kept[downsample(steps[kept], values[kept], max_points)]
    best_at = np.flatnonzero(points["best"] & drawn)
    if len(best_at) > max_points:  # keep the last (the best so far) and an even spread
        spread = best_at[:: math.ceil(len(best_at) / max_points)]
        best_at = np.unique(np.append(spread, best_at[-1]))
    return MetricSeries(
        key,
        int(count),
        steps[kept].tolist(),
        values[kept].tolist(),
        steps[best_at].tolist(),
        values[best_at].tolist(),
        len(kept) < int(drawn.sum()),
    )


_POINT = np.dtype([("step", np.int64), ("value", np.float64), ("best", np.bool_)])


def downsample(x: np.ndarray, y: np.ndarray, n_out: int) -> np.ndarray:
    """Positions (ascending) of about ``n_out`` points of (x, y) that keep its shape, its
    first, last, lowest and highest points included."""
    if n_out >= len(x):
        return np.arange(len(x))
    # LTTB needs x increasing; steps may repeat (a point logged twice at one step), and
    # then the row order (step, then id) stands in for them
    xs = x.astype(np.float64) if bool(np.all(np.diff(x) > 0)) else np.arange(len(x), dtype=float)
    sampler = MinMaxLTTBDownsampler()  # type: ignore[no-untyped-call]
    picked = sampler.downsample(xs, y, n_out=max(n_out - 2, 4)).astype(np.int64)
    extremes = np.array([0, len(x) - 1, int(np.argmin(y)), int(np.argmax(y))])
    return np.unique(np.concatenate([picked, extremes]))
