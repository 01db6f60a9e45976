"""Model signatures: the input columns a model needs, inferred from an example and enforced
on every prediction.

Inputs may be a pandas DataFrame, a 2-D numpy array, a dict of columns (or of scalars, for
one row) or a list of row dicts. Array columns have no names: an example array's columns
are named "0", "1", ... as pandas numbers them, and an array given for prediction is read
by position in the signature's order.

Dtypes are pandas dtype names, with every string column (object holding only strings,
``string``, pandas 3's ``str``) called ``string``. A column converts to the dtype a model
needs when no value can change meaning: int to float, ints of any width when the values
fit, floats of any width (JSON carries one number type), datetimes of any unit, bool to
nullable boolean, and an object column of strings or missing values to ``string``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd  # type: ignore[import-untyped]

from plinth.errors import InvalidArgument
from plinth.registry.types import ColumnSpec, Signature

_INT = re.compile(r"u?int\d+")
_FLOAT = re.compile(r"float\d+")
_SEQUENCES = (list, tuple, np.ndarray, pd.Series, pd.Index)


def infer_signature(input_example: object, output_example: object = None) -> Signature:
    """The signature of the columns in ``input_example`` (and ``output_example``, when given:
    a 1-D output is one column named "0", or the Series' name)."""
    inputs = _specs(as_frame(input_example))
    outputs = [] if output_example is None else _specs(_output_frame(output_example))
    return Signature(inputs=inputs, outputs=outputs)


def enforce(signature: Signature, data: object) -> pd.DataFrame:
    """``data`` as a DataFrame with exactly the signature's input columns, in its order and
    dtypes; extra columns are dropped. Missing or unconvertible columns are refused."""
    if isinstance(data, Mapping):
        fast = _numeric_columns(signature, data)
        if fast is not None:
            return fast
    frame = as_frame(data, names=signature.input_names)
    missing = [spec for spec in signature.inputs if spec.name not in frame.columns]
    if missing:
        listed = ", ".join(f"{spec.name!r} ({spec.dtype})" for spec in missing)
        plural = "s" if len(missing) > 1 else ""
        raise InvalidArgument(f"input is missing column{plural} {listed} that the model needs")
    columns = {spec.name: _conform(frame[spec.name], spec) for spec in signature.inputs}
    return pd.DataFrame(columns, index=frame.index)


def _numeric_columns(signature: Signature, data: Mapping[str, Any]) -> pd.DataFrame | None:
    """The fast path for the common case, a model of numpy-typed numeric and bool inputs
    given columns (a request's JSON lists): one numpy conversion per column, one block.
    None whenever anything needs a closer look (a missing column, None among the values,
    strings, a narrowing or any other conversion), which the general path then judges
    with the same rules and messages."""
    arrays: list[np.ndarray[Any, Any]] = []
    for spec in signature.inputs:
        need = _NUMPY.get(spec.dtype)
        values = data.get(spec.name)
        if need is None or not isinstance(values, list | np.ndarray):
            return None
        try:
            array = np.asarray(values)
        except ValueError:  # ragged nested lists
            return None
        kind = array.dtype.kind
        if array.ndim != 1:
            return None
        widens = (need.kind == "f" and kind in "fiu") or need.kind == kind == "b"
        if not (widens or (need.kind in "iu" and kind in "iu" and np.can_cast(array.dtype, need))):
            return None
        arrays.append(array.astype(need, copy=False))
    if not arrays or len({len(a) for a in arrays}) != 1:
        return None
    names = signature.input_names
    if len({a.dtype for a in arrays}) == 1:  # one block: what a model converts back for free
        return pd.DataFrame(np.column_stack(arrays), columns=names)
    return pd.DataFrame(dict(zip(names, arrays, strict=True)))


_NUMPY = {
    name: np.dtype(name)
    for name in (
        *(f"{sign}int{bits}" for sign in ("", "u") for bits in (8, 16, 32, 64)),
        "float16",
        "float32",
        "float64",
        "bool",
    )
}


def compatible(old: Signature, new: Signature) -> list[str]:
    """What stops input that satisfies ``old`` from satisfying ``new``: input columns ``new``
    needs that ``old`` does not provide or that do not convert, and outputs ``old`` produced
    that ``new`` drops or changes (when both declare outputs). Empty when compatible."""
    problems: list[str] = []
    provided = {spec.name: spec.dtype for spec in old.inputs}
    for spec in new.inputs:
        given = provided.get(spec.name)
        if given is None:
            problems.append(
                f"needs input column {spec.name!r} ({spec.dtype}), which the current signature does not provide"
            )
        elif not _castable(given, spec.dtype):
            problems.append(
                f"needs input column {spec.name!r} as {spec.dtype}, but the current signature provides {given}"
            )
    if old.outputs and new.outputs:
        produced = {spec.name: spec.dtype for spec in new.outputs}
        for spec in old.outputs:
            now = produced.get(spec.name)
            if now is None:
                problems.append(f"no longer produces output column {spec.name!r} ({spec.dtype})")
            elif not _castable(now, spec.dtype):
                problems.append(
                    f"produces output column {spec.name!r} as {now} instead of {spec.dtype}"
                )
    return problems


def as_frame(data: object, names: Sequence[str] | None = None) -> pd.DataFrame:
    """A DataFrame with string column names for any accepted input kind; a 2-D array's
    columns take ``names`` by position when given."""
    if isinstance(data, pd.DataFrame):
        frame = data
    elif isinstance(data, np.ndarray):
        frame = _array_frame(data, names)
    elif isinstance(data, Mapping):
        one_row = not any(isinstance(v, _SEQUENCES) for v in data.values())
        frame = pd.DataFrame([dict(data)] if one_row else dict(data))
    elif isinstance(data, list | tuple) and all(isinstance(row, Mapping) for row in data):
        frame = pd.DataFrame.from_records(list(data))
    else:
        raise InvalidArgument(
            f"cannot read model input from a {type(data).__qualname__}: pass a pandas DataFrame, a 2-D numpy array, a dict of columns or a list of row dicts"
        )
    if not all(isinstance(name, str) for name in frame.columns):
        frame = frame.rename(columns=str)
    if not frame.columns.is_unique:
        duplicated = sorted(set(frame.columns[frame.columns.duplicated()]))
        raise InvalidArgument(
            f"input has more than one column named {', '.join(map(repr, duplicated))}"
        )
    return frame


def dtype_name(column: pd.Series) -> str:
    """The signature's name for a column's dtype."""
    dtype = column.dtype
    if isinstance(dtype, pd.StringDtype):
        return "string"
    if (
        pd.api.types.is_object_dtype(dtype)
        and pd.api.types.infer_dtype(column, skipna=True) == "string"
    ):
        return "string"
    return str(dtype)


def _array_frame(array: np.ndarray[Any, Any], names: Sequence[str] | None) -> pd.DataFrame:
    if array.ndim != 2:
        raise InvalidArgument(
            f"a model input array must be 2-D (rows, columns), got shape {array.shape}"
        )
    if names is None:
        return pd.DataFrame(array, columns=[str(i) for i in range(array.shape[1])])
    if len(names) != array.shape[1]:
        raise InvalidArgument(
            f"input array has {array.shape[1]} columns but the model needs {len(names)}: {', '.join(map(repr, names))}"
        )
    return pd.DataFrame(array, columns=list(names))


def _output_frame(output: object) -> pd.DataFrame:
    if isinstance(output, pd.Series):
        return output.to_frame("0" if output.name is None else str(output.name))
    if isinstance(output, pd.DataFrame | Mapping) or (
        isinstance(output, list | tuple) and output and isinstance(output[0], Mapping)
    ):
        return as_frame(output)
    array = np.asarray(output)
    # one column per trailing element: a 1-D output is one column, (n, a, b) is a*b
    return as_frame(array.reshape(len(array), -1) if array.ndim else array.reshape(1, 1))


def _specs(frame: pd.DataFrame) -> list[ColumnSpec]:
    return [ColumnSpec(name=name, dtype=dtype_name(column)) for name, column in frame.items()]


def _kind(dtype: str) -> str:
    lowered = dtype.lower()
    if lowered in ("bool", "boolean"):
        return "bool"
    if _INT.fullmatch(lowered):
        return "int"
    if _FLOAT.fullmatch(lowered):
        return "float"
    if lowered.startswith("datetime64"):
        return "datetime_tz" if "," in lowered else "datetime"
    return lowered  # string, category, object, timedelta64[ns], ...


def _castable(given: str, expected: str) -> bool:
    if given == expected:
        return True
    have, need = _kind(given), _kind(expected)
    return (
        need == "object" or have == need or (have, need) in {("int", "float"), ("object", "string")}
    )


def _conform(column: pd.Series, spec: ColumnSpec) -> pd.Series:
    given = dtype_name(column)
    need = _kind(spec.dtype)
    if not _castable(given, spec.dtype) or (
        given == "object" and need == "string" and not column.isna().all()
    ):
        raise InvalidArgument(
            f"column {spec.name!r} has dtype {given}, but the model needs {spec.dtype}"
        )
    if given == spec.dtype or need in ("string", "object"):
        return column
    if need == "int":
        _check_fits(column, given, spec)
    try:
        return column.astype(spec.dtype)
    except (TypeError, ValueError) as exc:
        raise InvalidArgument(
            f"column {spec.name!r} ({given}) does not convert to {spec.dtype}, which the model needs: {exc}"
        ) from None


def _check_fits(column: pd.Series, given: str, spec: ColumnSpec) -> None:
    """numpy wraps integers that overflow a narrower type without a word: check first."""
    if given[0] in "IU" and column.isna().any():  # nullable Int64 and co.
        if spec.dtype[0] in "iu":  # numpy ints have no missing value
            raise InvalidArgument(
                f"column {spec.name!r} has missing values, but the model needs {spec.dtype}"
            )
        column = column.dropna()
    if np.can_cast(given.lower(), spec.dtype.lower()):
        return
    limits = np.iinfo(spec.dtype.lower())
    if len(column) and (column.min() < limits.min or column.max() > limits.max):
        raise InvalidArgument(
            f"column {spec.name!r} has values outside the range of {spec.dtype} ({limits.min} to {limits.max}), which the model needs"
        )
