"""Request bodies in, predictions out: the shapes a model service accepts and answers.

``POST /predict`` takes any of::

    [{"age": 41, "plan": "pro"}, ...]                      records
    {"age": 41, "plan": "pro"}                             one record
    {"records": [...]}  or MLflow's {"dataframe_records": [...]}
    {"columns": {"age": [41, 35], "plan": ["pro", "free"]}}
    MLflow's {"dataframe_split": {"columns": ["age", "plan"], "data": [[41, "pro"], ...]}}

The Open Inference Protocol (KServe v2) body is ``{"inputs": [{"name", "shape",
"datatype", "data"}, ...]}``: one tensor per column named like the model's inputs, or one
2-D tensor whose columns are the model's inputs in signature order.
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np

from plinth.errors import InvalidArgument

Rows = list[dict[str, Any]]


def parse_json(body: bytes) -> Any:
    if not body.strip():
        raise InvalidArgument('the request body is empty; send JSON records, e.g. [{"age": 41}]')
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError) as e:
        raise InvalidArgument(f"the request body is not valid JSON: {e}") from None


def records(payload: Any) -> Rows:
    """The rows of a ``/predict`` body."""
    if isinstance(payload, list):
        rows = payload
    elif isinstance(payload, dict):
        if "dataframe_split" in payload:
            return _split(payload["dataframe_split"])
        if "columns" in payload and isinstance(payload["columns"], dict):
            return _columns(payload["columns"], "columns")
        found = next((payload[k] for k in ("records", "dataframe_records") if k in payload), None)
        if found is None:
            found = payload.get("inputs", [payload])
        if isinstance(found, dict):
            return _columns(found, "inputs")
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
    return rows


def _columns(columns: dict[str, Any], what: str) -> Rows:
    lengths = {name: len(v) if isinstance(v, list) else None for name, v in columns.items()}
    if not columns or None in lengths.values():
        bad = next((n for n, size in lengths.items() if size is None), None)
        raise InvalidArgument(
            f"{what} must map each column to a list of values"
            + (f"; {bad!r} is not a list" if bad else "")
        )
    if len(set(lengths.values())) > 1:
        raise InvalidArgument(f"{what} have different lengths: {lengths}")
    names = list(columns)
    rows = [dict(zip(names, values, strict=True)) for values in zip(*columns.values(), strict=True)]
    if not rows:
        raise InvalidArgument("the request holds no rows")
    return rows


def _split(split: Any) -> Rows:
    if not isinstance(split, dict) or not isinstance(split.get("columns"), list):
        raise InvalidArgument('dataframe_split needs {"columns": [...], "data": [[...], ...]}')
    names, data = split["columns"], split.get("data")
    if not isinstance(data, list) or not all(
        isinstance(r, list) and len(r) == len(names) for r in data
    ):
        raise InvalidArgument(f"dataframe_split data must be rows of {len(names)} values")
    if not data:
        raise InvalidArgument("the request holds no rows")
    return [dict(zip(names, row, strict=True)) for row in data]


def v2_records(payload: Any, input_names: list[str]) -> Rows:
    """The rows of an Open Inference Protocol ``infer`` body."""
    inputs = payload.get("inputs") if isinstance(payload, dict) else None
    if not isinstance(inputs, list) or not inputs:
        raise InvalidArgument('an infer request needs "inputs": [{name, shape, datatype, data}]')
    for tensor in inputs:
        if not isinstance(tensor, dict) or "data" not in tensor or "name" not in tensor:
            raise InvalidArgument("each input needs a name, shape, datatype and data")
    if len(inputs) == 1 and inputs[0]["name"] not in input_names:
        shape = inputs[0].get("shape") or []
        if len(shape) == 2 and shape[1] == len(input_names):  # one [rows, columns] tensor
            data = np.asarray(inputs[0]["data"], dtype=object).reshape(shape)
            return [dict(zip(input_names, row, strict=True)) for row in data.tolist()]
    columns = {}
    for tensor in inputs:
        data = tensor["data"]
        if not isinstance(data, list):
            raise InvalidArgument(f"input {tensor['name']!r}: data must be a list")
        flat = np.asarray(data, dtype=object).reshape(-1).tolist()
        columns[str(tensor["name"])] = flat
    return _columns(columns, "inputs")


def plain(predictions: Any) -> list[Any]:
    """Predictions as JSON values: NaN and infinities become null."""
    if hasattr(predictions, "to_dict") and hasattr(predictions, "columns"):
        return [_clean_row(r) for r in predictions.to_dict(orient="records")]
    values = predictions.tolist() if hasattr(predictions, "tolist") else list(predictions)
    if values and isinstance(values[0], float):
        return [v if math.isfinite(v) else None for v in values]
    if values and isinstance(values[0], list):
        return [[_clean(v) for v in row] for row in values]
    return values


def v2_outputs(predictions: Any, name: str = "predict") -> list[dict[str, Any]]:
    """Output tensors: one per column of a DataFrame, else one named ``name``."""
    if hasattr(predictions, "columns"):
        return [_tensor(str(c), predictions[c].to_numpy()) for c in predictions.columns]
    return [_tensor(name, np.asarray(predictions))]


def _tensor(name: str, values: np.ndarray[Any, Any]) -> dict[str, Any]:
    kind = values.dtype.kind
    datatype = {"f": "FP64", "i": "INT64", "u": "UINT64", "b": "BOOL"}.get(kind, "BYTES")
    data = values.reshape(-1).tolist()
    if kind == "f":
        data = [v if math.isfinite(v) else None for v in data]
    elif datatype == "BYTES":
        data = [str(v) for v in data]
    return {"name": name, "datatype": datatype, "shape": list(values.shape), "data": data}


def _clean(value: Any) -> Any:
    return None if isinstance(value, float) and not math.isfinite(value) else value


def _clean_row(row: dict[str, Any]) -> dict[str, Any]:
    return {str(k): _clean(v) for k, v in row.items()}
