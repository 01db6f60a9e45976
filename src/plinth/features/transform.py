"""On-demand transformations: Python functions a feature view applies after reading its
features, offline (to a training set) and online (to a lookup) through the same ``apply``.

A transformation takes a pandas DataFrame holding its inputs and returns a Series (one
output) or a DataFrame / dict with its outputs::

    @plinth.on_demand(inputs=["amount", "avg_spend"], outputs={"amount_over_avg": "float64"})
    def amount_over_avg(df):
        return df["amount"] / df["avg_spend"]

The function is stored with the view as its source text, and that text is what runs,
offline and online (``source.py`` says what a transformation may use besides its
arguments): a serving process needs neither the module that defined it nor a pickle, and
the code that runs is the code the view shows.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

import pyarrow as pa

from plinth.errors import InvalidArgument
from plinth.features.source import load, source_of
from plinth.features.types import FeatureSpec, Transformation

# source -> function: each compiled once while it is among the LOADED_MAX used last (a
# long-lived server meets ever new view versions; the least recently used are dropped).
# Keyed by the source text itself: its hash is computed once per string and cached.
LOADED_MAX = 256
_loaded: OrderedDict[str, Callable[..., Any]] = OrderedDict()


def on_demand(
    inputs: Sequence[str], outputs: dict[str, str] | Sequence[FeatureSpec], name: str | None = None
) -> Callable[[Callable[..., Any]], Transformation]:
    """Decorator: make ``fn`` an on-demand transformation of ``inputs`` into ``outputs``
    (``{name: dtype}``, dtypes as for feature groups)."""

    def wrap(fn: Callable[..., Any]) -> Transformation:
        return transformation(fn, inputs, outputs, name)

    return wrap


def transformation(
    fn: Callable[..., Any],
    inputs: Sequence[str],
    outputs: dict[str, str] | Sequence[FeatureSpec],
    name: str | None = None,
) -> Transformation:
    if isinstance(inputs, str) or not inputs:
        raise InvalidArgument("a transformation needs a list of input columns")
    specs = (
        [FeatureSpec(str(k), str(v)) for k, v in outputs.items()]
        if isinstance(outputs, dict)
        else list(outputs)
    )
    if not specs:
        raise InvalidArgument("a transformation needs at least one output")
    source = source_of(fn)
    label = name or str(getattr(fn, "__name__", "transformation"))
    return Transformation(label, list(inputs), specs, source)


def apply(transformations: Sequence[Transformation], table: pa.Table, view: str) -> pa.Table:
    """Append each transformation's outputs to ``table``, in order (a later one may read an
    earlier one's outputs). The one code path for training data and online lookups."""
    from plinth.features.ingest import ARROW_TYPES

    for t in transformations:
        missing = [c for c in t.inputs if c not in table.column_names]
        if missing:
            raise InvalidArgument(
                f"transformation {t.name!r} of {view} needs {missing}, which the rows lack"
            )
        frame = table.select(t.inputs).to_pandas()
        try:
            result = _function(t, view)(frame)
        except Exception as e:  # the user's code: report it as theirs, not a platform bug
            raise InvalidArgument(
                f"transformation {t.name!r} of {view} raised {type(e).__name__}: {e}"
            ) from e
        columns = _columns(result, t, view)
        for spec in t.outputs:
            values = columns[spec.name]
            if len(values) != table.num_rows:
                raise InvalidArgument(
                    f"transformation {t.name!r} of {view} returned {len(values)} values for "
                    f"{table.num_rows} rows in {spec.name!r}"
                )
            try:
                array = pa.array(_values(values), type=ARROW_TYPES[spec.dtype], from_pandas=True)
            except (pa.ArrowInvalid, pa.ArrowTypeError) as e:
                raise InvalidArgument(
                    f"transformation {t.name!r} of {view}: output {spec.name!r} is not {spec.dtype}: {e}"
                ) from e
            table = table.append_column(spec.name, array)
    return table


def _columns(result: Any, t: Transformation, view: str) -> dict[str, Any]:
    names = [o.name for o in t.outputs]
    if hasattr(result, "to_frame") and len(names) == 1:  # a Series
        return {names[0]: result}
    if hasattr(result, "columns") or isinstance(result, dict):
        present = list(result.columns) if hasattr(result, "columns") else list(result)
        missing = [n for n in names if n not in present]
        if missing:
            raise InvalidArgument(
                f"transformation {t.name!r} of {view} did not return {missing}; it returned {present}"
            )
        return {n: result[n] for n in names}
    raise InvalidArgument(
        f"transformation {t.name!r} of {view} returned a {type(result).__name__}; return a "
        "pandas Series (one output), DataFrame or dict of columns"
    )


def _values(values: Any) -> Any:
    return values.to_numpy() if hasattr(values, "to_numpy") else values


def _function(t: Transformation, view: str) -> Callable[..., Any]:
    # Only the source runs: a record of an older Plinth holding a pickle but no source is
    # refused (load says to re-create the view version), its pickle never loaded.
    key = t.source
    cached = _loaded.get(key)
    if cached is not None:
        _loaded.move_to_end(key)
        return cached
    fn = load(t.source, t.name, view)
    _loaded[key] = fn
    while len(_loaded) > LOADED_MAX:
        _loaded.popitem(last=False)
    return fn
