"""Request bodies in, predictions out: the shapes a model service accepts and answers.

``POST /predict`` takes any of::

    [{"age": 41, "plan": "pro"}, ...]                      records
    {"age": 41, "plan": "pro"}                             one record
    {"records": [...]}  or MLflow's {"dataframe_records": [...]}
    {"columns": {"age": [41, 35], "plan": ["pro", "free"]}}
    MLflow's {"dataframe_split": {"columns": ["age", "plan"], "data": [[41, "pro"], ...]}}

The Open Inference Protocol (KServe v2) body is read in ``oip.py``.

Every shape is read into columns (a name → a list of values, all of one length): the
form a model's signature is enforced on fastest.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson

from plinth.errors import InvalidArgument

Rows = list[dict[str, Any]]
Columns = dict[str, list[Any]]


def parse_json(body: bytes) -> Any:
    if not body.strip():
        raise InvalidArgument('the request body is empty; send JSON records, e.g. [{"age": 41}]')
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as e:
        raise InvalidArgument(f"the request body is not valid JSON: {e}") from None


def dumps(value: Any) -> bytes:
    """JSON bytes; numpy arrays and scalars as lists and numbers, NaN and infinities null."""
    return orjson.dumps(value, option=orjson.OPT_SERIALIZE_NUMPY)


def size(columns: Columns) -> int:
    return len(next(iter(columns.values()), ()))


def to_columns(rows: Rows) -> Columns:
    """Row dicts as columns; a key some rows lack is None there."""
    names = dict.fromkeys(rows[0])
    for row in rows:
        if len(row) != len(names) or row.keys() != names.keys():
            names.update(dict.fromkeys(row))
    return {name: [row.get(name) for row in rows] for name in names}


def to_rows(columns: Columns) -> Rows:
    names = list(columns)
    return [dict(zip(names, values, strict=True)) for values in zip(*columns.values(), strict=True)]


def records(payload: Any) -> Columns:
    """The columns of a ``/predict`` body."""
    if isinstance(payload, list):
        rows = payload
    elif isinstance(payload, dict):
        if "dataframe_split" in payload:
            return _split(payload["dataframe_split"])
        if "columns" in payload and isinstance(payload["columns"], dict):
            return check_columns(payload["columns"], "columns")
        found = next((payload[k] for k in ("records", "dataframe_records") if k in payload), None)
        if found is None:
            found = payload.get("inputs", [payload])
        if isinstance(found, dict):
            return check_columns(found, "inputs")
        rows = found
    else:
        raise InvalidArgument(
            f"the request body is a JSON {type(payload).__name__}; send records "
            '([{...}, ...]) or columns ({"columns": {...}})'
        )
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise InvalidArgument("records must be a list of JSON objects, one per row")
    if not rows:
        raise InvalidArgument("the request holds no rows")
    return _named(to_columns(rows))


def _named(columns: Columns) -> Columns:
    if not columns:
        raise InvalidArgument("the request's rows hold no columns")
    return columns


def check_columns(columns: dict[str, Any], what: str) -> Columns:
    """Columns of one length (at least one row), named by strings."""
    lengths = {name: len(v) if isinstance(v, list) else None for name, v in columns.items()}
    if not columns or None in lengths.values():
        bad = next((n for n, size in lengths.items() if size is None), None)
        raise InvalidArgument(
            f"{what} must map each column to a list of values"
            + (f"; {bad!r} is not a list" if bad else "")
        )
    if len(set(lengths.values())) > 1:
        raise InvalidArgument(f"{what} have different lengths: {lengths}")
    if not next(iter(lengths.values())):
        raise InvalidArgument("the request holds no rows")
    return {str(name): values for name, values in columns.items()}


def _split(split: Any) -> Columns:
    if not isinstance(split, dict) or not isinstance(split.get("columns"), list):
        raise InvalidArgument('dataframe_split needs {"columns": [...], "data": [[...], ...]}')
    names, data = split["columns"], split.get("data")
    if not isinstance(data, list) or not all(
        isinstance(r, list) and len(r) == len(names) for r in data
    ):
        raise InvalidArgument(f"dataframe_split data must be rows of {len(names)} values")
    if not data:
        raise InvalidArgument("the request holds no rows")
    if len(set(names)) != len(names):
        raise InvalidArgument("dataframe_split names a column more than once")
    return _named({str(n): list(v) for n, v in zip(names, zip(*data, strict=True), strict=True)})


def plain(predictions: Any) -> Any:
    """Predictions as ``dumps`` writes them: a numeric array as is (NaN and infinities
    become null), a DataFrame as one object per row, anything else as a list."""
    if hasattr(predictions, "to_dict") and hasattr(predictions, "columns"):
        return predictions.to_dict(orient="records")
    values = np.asarray(predictions)
    if values.dtype.kind in "fiub":
        return np.ascontiguousarray(values)
    return values.tolist()
