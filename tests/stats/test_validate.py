"""Profiles arrive over HTTP: a forged or broken dict is an InvalidArgument naming the
column and the field, never a crash, a huge allocation or a silently wrong profile."""

from __future__ import annotations

import base64
import copy
import zlib
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from plinth.errors import InvalidArgument
from plinth.stats.profile import ColumnProfile, TableProfile, profile


def _good() -> dict[str, Any]:
    rng = np.random.default_rng(0)
    table = pa.table({"x": rng.normal(size=5000), "c": rng.choice(["a", "b"], 5000)})
    return profile(table, sample_size=100).to_dict()


def _column(data: dict[str, Any], name: str) -> dict[str, Any]:
    return next(c for c in data["columns"] if c["name"] == name)


def _zlib_counts(counts: np.ndarray) -> str:
    return base64.b64encode(zlib.compress(counts.astype("<i8").tobytes())).decode()


FORGED: dict[str, tuple[str, str, Any]] = {
    # case: (column, field path, forged value)
    "kind": ("x", "kind", "tensor"),
    "count": ("x", "count", -1),
    "count_float": ("x", "count", 1.5),
    "nulls": ("x", "nulls", 10**9),
    "width_not_power": ("x", "histogram.width", 0.3),
    "width_negative": ("x", "histogram.width", -1.0),
    "width_zero": ("x", "histogram.width", 0.0),
    "offset_beyond_int64": ("x", "histogram.offset", 2**70),
    "too_many_bins": ("x", "histogram.counts", [0] * 20_000),
    "zlib_bomb": ("x", "histogram.counts", _zlib_counts(np.zeros(10_000_000, np.int64))),
    "negative_bin": ("x", "histogram.counts", [1, -5, 3]),
    "not_base64": ("x", "histogram.counts", "@@not base64@@"),
    "numeric_key": ("x", "values", {"one": 3}),
    "negative_value_count": ("c", "values", {"a": -1}),
    "sample_too_big": ("x", "sample", base64.b64encode(np.zeros(500).tobytes()).decode()),
    "sample_ragged": ("x", "sample", base64.b64encode(b"12345").decode()),
    "sample_size": ("x", "sample_size", -3),
    "min_above_max": ("x", "min", 1e9),
    "mean_string": ("x", "mean", "a lot"),
    "name": ("x", "name", 5),
}


def _forge(case: str) -> dict[str, Any]:
    data = copy.deepcopy(_good())
    name, path, value = FORGED[case]
    target = _column(data, name)
    *parents, leaf = path.split(".")
    for part in parents:
        target = target[part]
    target[leaf] = value
    return data


@pytest.mark.parametrize("case", list(FORGED))
def test_forged_profile_dicts_are_refused_by_column_and_field(case: str) -> None:
    name, path, _ = FORGED[case]
    with pytest.raises(InvalidArgument) as error:
        TableProfile.from_dict(_forge(case))
    message = str(error.value)
    if path != "name":
        assert repr(name) in message and path.split(".")[-1] in message


def test_a_good_profile_round_trips_and_table_level_forgeries_are_refused() -> None:
    data = _good()
    assert TableProfile.from_dict(data).to_dict() == data
    for forged in (
        {**data, "rows": -1},
        {**data, "rows": 10},  # fewer rows than the columns count
        {**data, "columns": data["columns"] * 2},
        {**data, "columns": "x"},
    ):
        with pytest.raises(InvalidArgument):
            TableProfile.from_dict(forged)
    with pytest.raises(InvalidArgument):
        ColumnProfile.from_dict(["not", "a", "dict"])  # type: ignore[arg-type]
