"""The data monitoring reads: a window of the prediction log as one Arrow table (the model's
inputs and its prediction, one row per prediction), and a model version's training data.

A window is read with one SQL select of the requests in it, newest first, streamed: each
request's JSON inputs (``{"age": [41, 35]}``) are decoded with orjson and appended to
per-column lists, so a window of 200,000 one-row requests costs 200,000 small decodes and
no pandas frame per request. At most ``max_rows`` predictions are read: past that the
window keeps the newest ones and says so (``capped``), so a busy model's check stays
bounded in time and memory.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import orjson
import pyarrow as pa
from sqlalchemy import select

from plinth.store.schema import predictions

if TYPE_CHECKING:
    from sqlalchemy import Connection

    from plinth.features.service import FeatureService
    from plinth.registry.types import ModelVersion
    from plinth.store.engine import Store

MAX_WINDOW_ROWS = 200_000
PREDICTION = "prediction"
SCORE = "__score"  # the positive class's probability, when the outputs carry one
REQUEST_ID = "__request_id"
ROW = "__row"
AT = "__at"
META = (REQUEST_ID, ROW, AT)
# keys of a dict output that hold a probability (or the class probabilities)
_PROBABILITY_KEYS = ("probabilities", "probability", "proba", "probas", "score")
_LABEL_KEYS = ("prediction", "label", "class", "predicted")
_FETCH = 1_000


@dataclass(frozen=True)
class Window:
    """The predictions of one model version made in [start, end) (ms), newest first."""

    table: pa.Table  # input columns, "prediction", and "__score" when the outputs hold one
    start: int
    end: int
    requests: int
    capped: bool  # more predictions were in the window than were read

    @property
    def rows(self) -> int:
        return int(self.table.num_rows)

    @property
    def inputs(self) -> list[str]:
        return [c for c in self.table.column_names if c != PREDICTION and not c.startswith("__")]

    def note(self) -> str:
        if not self.capped:
            return ""
        return f"only the newest {self.rows:,} predictions of the window were read"


def read_window(
    store: Store,
    model: str,
    version: int | None,
    start: int,
    end: int,
    *,
    max_rows: int = MAX_WINDOW_ROWS,
    meta: bool = False,
) -> Window:
    """The logged predictions of ``model`` (one version, or all) made in [start, end), the
    newest ``max_rows`` of them; with ``meta`` also each one's request id, row within its
    request and time (``__request_id``, ``__row``, ``__at``), for joining labels."""
    return read_windows(store, model, version, start, end, 1, max_rows=max_rows, meta=meta)


def read_windows(
    store: Store,
    model: str,
    version: int | None,
    start: int,
    end: int,
    windows: int,
    *,
    max_rows: int = MAX_WINDOW_ROWS,
    meta: bool = False,
) -> Window:
    """``read_window`` of [start, end) cut in ``windows`` equal windows, each bounded on its
    own (``max_rows`` shared out), so a busy recent day does not push older days out."""
    width = (end - start) // windows
    each = max(max_rows // windows, 1)
    reader = _Reader(meta)
    capped = False
    with store.read() as conn:
        for i in reversed(range(windows)):  # newest first, as within a window
            low = start + i * width
            high = end if i == windows - 1 else low + width
            capped |= _read(conn, _query(model, version, low, high), reader, each)
    return Window(reader.table(), start, end, reader.requests, capped)


def _query(model: str, version: int | None, start: int, end: int) -> Any:
    p = predictions.c
    query = (
        select(p.request_id, p.at, p.inputs, p.outputs, p.rows)
        .where(p.model_name == model, p.at >= start, p.at < end)
        .order_by(p.at.desc(), p.id.desc())
    )
    return query if version is None else query.where(p.model_version == version)


def _read(conn: Connection, query: Any, reader: _Reader, max_rows: int) -> bool:
    """Add the query's requests to ``reader`` up to ``max_rows`` more predictions; True
    when some were left out."""
    limit = reader.rows + max_rows
    first = reader.rows
    result = conn.execute(query)
    try:
        while True:
            batch = result.fetchmany(_FETCH)
            if not batch:
                return False
            for request_id, at, inputs, outputs, rows in batch:  # tuples: cheaper than names
                if reader.rows + rows > limit and reader.rows > first:
                    return True
                reader.add(request_id, at, inputs, outputs, rows)
    finally:
        result.close()


class _Reader:
    """Per-column lists of decoded requests; columns a request lacks are filled with nulls."""

    def __init__(self, meta: bool) -> None:
        self.meta = meta
        self.columns: dict[str, list[Any]] = {}
        self.outputs: list[Any] = []
        self.ids: list[str] = []
        self.positions: list[int] = []
        self.times: list[int] = []
        self.rows = 0
        self.requests = 0

    def add(self, request_id: str, at: int, inputs: str, outputs: str, rows: int) -> None:
        decoded: dict[str, list[Any]] = orjson.loads(inputs)
        columns = self.columns
        for name, values in decoded.items():
            column = columns.get(name)
            if column is None:
                column = columns[name] = [None] * self.rows
            column.extend(values if isinstance(values, list) else [values] * rows)
        out = orjson.loads(outputs)
        self.outputs.extend(out if isinstance(out, list) else [out] * rows)
        self.rows += rows
        self.requests += 1
        if len(decoded) != len(columns):  # columns this request lacks: nulls
            for column in columns.values():
                if len(column) < self.rows:
                    column.extend([None] * (self.rows - len(column)))
        if self.meta:
            self.ids.extend([request_id] * rows)
            self.positions.extend(range(rows))
            self.times.extend([at] * rows)

    def table(self) -> pa.Table:
        arrays: dict[str, pa.Array] = {n: _array(v) for n, v in self.columns.items()}
        prediction, score = prediction_columns(self.outputs)
        arrays[PREDICTION] = prediction
        if score is not None:
            arrays[SCORE] = score
        if self.meta:
            arrays[REQUEST_ID] = pa.array(self.ids, pa.string())
            arrays[ROW] = pa.array(self.positions, pa.int32())
            arrays[AT] = pa.array(self.times, pa.int64())
        return pa.table(arrays) if arrays else pa.table({PREDICTION: pa.array([], pa.float64())})


def _array(values: list[Any]) -> pa.Array:
    try:
        return pa.array(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError):  # mixed kinds: keep them readable as text
        return pa.array([None if v is None else str(v) for v in values], pa.string())


def prediction_columns(outputs: list[Any]) -> tuple[pa.Array, pa.Array | None]:
    """The prediction as logged (one value per row), and the positive class's probability
    when the outputs carry one: a float in [0, 1] (not only 0 and 1), a list of class
    probabilities (the last class is the positive one, as scikit-learn orders ``classes_``)
    or a dict holding one of ``probabilities``/``probability``/``proba``/``score``."""
    if not outputs:
        return pa.array([], pa.float64()), None
    first = next((o for o in outputs if o is not None), None)
    if isinstance(first, dict):
        return _from_dicts(outputs)
    if isinstance(first, list):
        scores = [_positive(o) for o in outputs]
        labels = [None if s is None else int(s >= 0.5) for s in scores]
        return pa.array(labels, pa.int64()), pa.array(scores, pa.float64())
    prediction = _array(outputs)
    if pa.types.is_floating(prediction.type) and _probabilities(outputs):
        return prediction, prediction
    return prediction, None


def _from_dicts(outputs: list[Any]) -> tuple[pa.Array, pa.Array | None]:
    first = next(o for o in outputs if isinstance(o, dict))
    score_key = next((k for k in _PROBABILITY_KEYS if k in first), None)
    label_key = next((k for k in _LABEL_KEYS if k in first), None)
    scores = None
    if score_key is not None:
        values = [o.get(score_key) if isinstance(o, dict) else None for o in outputs]
        scores = pa.array([_positive(v) for v in values], pa.float64())
    if label_key is not None:
        labels = _array([o.get(label_key) if isinstance(o, dict) else None for o in outputs])
    elif scores is not None:
        labels = pa.array([None if s is None else int(s >= 0.5) for s in scores.to_pylist()])
    else:
        labels = pa.array([orjson.dumps(o).decode() for o in outputs], pa.string())
    return labels, scores


def _positive(value: Any) -> float | None:
    if isinstance(value, list):
        value = value[-1] if value else None
    if isinstance(value, dict):  # {"0": 0.2, "1": 0.8}: the last class
        value = list(value.values())[-1] if value else None
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _probabilities(values: list[Any]) -> bool:
    numbers = [v for v in values if isinstance(v, float) and math.isfinite(v)]
    inside = all(0.0 <= v <= 1.0 for v in numbers)
    return bool(numbers) and inside and any(v not in (0.0, 1.0) for v in numbers)


@dataclass(frozen=True)
class TrainingData:
    """Where a model version's training data is: its first linked training dataset."""

    dataset_id: int
    uri: str  # the Delta table of its rows
    label: str | None
    timestamp_column: str
    source: str  # "training dataset 7 (churn:v1)"


def training_data(features: FeatureService, version: ModelVersion) -> TrainingData | None:
    """The first training dataset linked to ``version`` (as the score checks read it);
    None when none is linked."""
    linked = version.lineage.get("training_datasets") or []
    if not linked:
        return None
    info = features.get_training_dataset(int(linked[0]))
    return TrainingData(
        info.id,
        info.uri,
        info.label,
        info.timestamp_column,
        f"training dataset {info.id} ({info.view}:v{info.view_version})",
    )


def storage_options(uri: str) -> dict[str, str]:
    """What deltalake needs to read ``uri`` (credentials of S3 from the environment)."""
    from plinth.features.offline import s3_storage_options

    return s3_storage_options({}) if uri.startswith(("s3://", "s3a://")) else {}


def iso(ms: int) -> str:
    """``ms`` since the epoch as UTC text for messages (2026-01-02T10:00:00Z); a time
    outside the years 1 to 9999 as its ms (a message must not fail)."""
    try:
        return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    except (ValueError, OverflowError, OSError):
        return f"{ms} ms since the epoch"
