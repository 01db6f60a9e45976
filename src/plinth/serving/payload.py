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
    return _named(to_columns(rows))


def _named(columns: Columns) -> Columns:
    if not columns:
        raise InvalidArgument("the request's rows hold no columns")
    return columns


def _columns(columns: dict[str, Any], what: str) -> Columns:
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


def v2_columns(payload: Any, input_names: list[str]) -> Columns:
    """The columns of an Open Inference Protocol ``infer`` body."""
    inputs = payload.get("inputs") if isinstance(payload, dict) else None
    if not isinstance(inputs, list) or not inputs:
        raise InvalidArgument('an infer request needs "inputs": [{name, shape, datatype, data}]')
    for tensor in inputs:
        if not isinstance(tensor, dict) or "data" not in tensor or "name" not in tensor:
            raise InvalidArgument("each input needs a name, shape, datatype and data")
    if len(inputs) == 1 and inputs[0]["name"] not in input_names:
        shape = inputs[0].get("shape") or []
        if len(shape) == 2 and shape[1] == len(input_names):  # one [rows, columns] tensor
            data = _tensor_data(inputs[0], shape)
            return dict(zip(input_names, data.T.tolist(), strict=True))
    columns = {}
    for tensor in inputs:
        columns[str(tensor["name"])] = _tensor_data(tensor, [-1]).tolist()
    return _columns(columns, "inputs")


def _tensor_data(tensor: dict[str, Any], shape: list[int]) -> np.ndarray[Any, Any]:
    data = tensor["data"]
    if not isinstance(data, list):
        raise InvalidArgument(f"input {tensor['name']!r}: data must be a list")
    try:
        array = np.asarray(data, dtype=object).reshape(shape)
        if any(isinstance(v, list) for v in array.flat):  # ragged: rows of different lengths
            raise ValueError
        return array
    except ValueError:
        raise InvalidArgument(
            f"input {tensor['name']!r}: data does not fit its shape {tensor.get('shape')}"
        ) from None


def plain(predictions: Any) -> Any:
    """Predictions as ``dumps`` writes them: a numeric array as is (NaN and infinities
    become null), a DataFrame as one object per row, anything else as a list."""
    if hasattr(predictions, "to_dict") and hasattr(predictions, "columns"):
        return predictions.to_dict(orient="records")
    values = np.asarray(predictions)
    if values.dtype.kind in "fiub":
        return np.ascontiguousarray(values)
    return values.tolist()


def v2_outputs(predictions: Any, name: str = "predict") -> list[dict[str, Any]]:
    """Output tensors: one per column of a DataFrame, else one named ``name``."""
    if hasattr(predictions, "columns"):
        return [_tensor(str(c), predictions[c].to_numpy()) for c in predictions.columns]
    return [_tensor(name, np.asarray(predictions))]


def _tensor(name: str, values: np.ndarray[Any, Any]) -> dict[str, Any]:
    kind = values.dtype.kind
    datatype = {"f": "FP64", "i": "INT64", "u": "UINT64", "b": "BOOL"}.get(kind, "BYTES")
    if datatype == "BYTES":
        data: Any = [str(v) for v in values.reshape(-1).tolist()]
    else:
        data = np.ascontiguousarray(values.reshape(-1))
    return {"name": name, "datatype": datatype, "shape": list(values.shape), "data": data}
