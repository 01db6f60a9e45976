from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from plinth.errors import InvalidArgument
from plinth.features.types import Expectation
from plinth.features.validation import KINDS, SAMPLE_ROWS, check_expectation, validate

TABLE = pa.table(
    {
        "id": [1, 2, 3, 4, 5, 6, 7, 8],
        "day": [1, 1, 1, 2, 2, 3, 3, 3],
        "amount": [1.0, 2.0, None, 4.0, float("nan"), 6.0, 7.0, 100.0],
        "segment": ["a", "b", "a", "c", None, "a", "zz", "b"],
        "email": ["x@y.io", "bad", "a@b.co", "c@d.org", "e@f.net", None, "nope", "g@h.de"],
    }
)
VALUES = np.array([1.0, 2.0, 4.0, 6.0, 7.0, 100.0])  # amount without null and NaN


def judge(**fields: Any) -> Any:
    (result,) = validate(TABLE, [Expectation(**fields)])
    return result


class TestRowRules:
    def test_not_null_counts_null_and_nan(self) -> None:
        result = judge(kind="not_null", column="amount")
        assert not result.passed and result.failed_rows == 2
        assert [r["id"] for r in result.sample] == [3, 5]
        assert judge(kind="not_null", column="id").passed

    def test_unique(self) -> None:
        assert judge(kind="unique", column="id").passed
        result = judge(kind="unique", columns=["day"])
        assert not result.passed and result.failed_rows == 8
        assert [r["id"] for r in result.sample] == [1, 2, 3, 4, 5]

    def test_unique_over_several_columns_ignores_nulls(self) -> None:
        result = judge(kind="unique", columns=["day", "segment"])
        assert result.failed_rows == 2  # (1, "a") twice; (2, None) is skipped
        assert [r["id"] for r in result.sample] == [1, 3]
        assert result.sample[0] == {
            "id": 1,
            "day": 1,
            "amount": 1.0,
            "segment": "a",
            "email": "x@y.io",
        }

    def test_range(self) -> None:
        assert judge(kind="range", column="amount", min=0, max=100).passed
        result = judge(kind="range", column="amount", min=2, max=10)
        assert result.failed_rows == 2 and [r["id"] for r in result.sample] == [1, 8]
        assert "outside [2, 10]" in result.detail
        assert judge(kind="range", column="id", max=6).failed_rows == 2

    def test_allowed_values(self) -> None:
        assert judge(kind="allowed_values", column="segment", values=["a", "b", "c", "zz"]).passed
        result = judge(kind="allowed_values", column="segment", values=["a", "b"])
        assert result.failed_rows == 2 and [r["segment"] for r in result.sample] == ["c", "zz"]
        assert judge(kind="allowed_values", column="day", values=[1, 2]).failed_rows == 3

    def test_regex(self) -> None:
        result = judge(kind="regex", column="email", pattern=r"^[^@]+@[^@]+\.[a-z]+$")
        assert not result.passed and result.failed_rows == 2
        assert [r["email"] for r in result.sample] == ["bad", "nope"]
        assert judge(kind="regex", column="email", pattern="@|bad|nope").passed

    def test_sample_holds_at_most_five_rows(self) -> None:
        result = judge(kind="range", column="id", min=100)
        assert result.failed_rows == 8 and len(result.sample) == SAMPLE_ROWS


class TestAggregateRules:
    def test_row_count(self) -> None:
        assert judge(kind="row_count", min=8, max=8).passed
        result = judge(kind="row_count", min=10)
        assert not result.passed and result.failed_rows == 0
        assert "row count is 8, below the minimum 10" in result.detail

    def test_mean(self) -> None:
        mean = float(VALUES.mean())
        assert judge(kind="mean", column="amount", min=mean - 0.01, max=mean + 0.01).passed
        result = judge(kind="mean", column="amount", max=10)
        assert not result.passed and f"is {mean}" in result.detail and "above" in result.detail

    def test_std_is_the_sample_std(self) -> None:
        std = float(VALUES.std(ddof=1))
        assert judge(kind="std", column="amount", min=std - 1e-9, max=std + 1e-9).passed
        assert not judge(kind="std", column="amount", max=1).passed

    @pytest.mark.parametrize("q", [0.0, 0.25, 0.5, 0.9, 1.0])
    def test_quantile_matches_numpy(self, q: float) -> None:
        expected = float(np.quantile(VALUES, q))
        assert judge(kind="quantile", column="amount", q=q, min=expected, max=expected).passed
        assert not judge(kind="quantile", column="amount", q=q, min=expected + 1).passed

    def test_no_values_fails(self) -> None:
        empty = pa.table({"x": pa.array([], pa.float64())})
        (result,) = validate(empty, [Expectation("mean", column="x", min=0)])
        assert not result.passed and "no values" in result.detail


class TestMalformed:
    @pytest.mark.parametrize(
        ("fields", "message"),
        [
            ({"kind": "spelling"}, "unknown expectation kind"),
            ({"kind": "not_null"}, "needs a column"),
            ({"kind": "unique"}, "needs a column or columns"),
            ({"kind": "range", "column": "x"}, "needs min, max or both"),
            ({"kind": "mean", "column": "x", "min": 2, "max": 1}, "min 2 above max 1"),
            ({"kind": "quantile", "column": "x", "min": 1}, "q between 0 and 1"),
            ({"kind": "quantile", "column": "x", "min": 1, "q": 1.5}, "q between 0 and 1"),
            ({"kind": "allowed_values", "column": "x"}, "non-empty list"),
            ({"kind": "regex", "column": "x"}, "needs a pattern"),
            ({"kind": "regex", "column": "x", "pattern": "(?=look)"}, "not valid RE2"),
        ],
    )
    def test_check_expectation(self, fields: dict[str, Any], message: str) -> None:
        with pytest.raises(InvalidArgument, match=message):
            check_expectation(Expectation(**fields))

    def test_every_kind_is_known(self) -> None:
        assert set(KINDS) == {
            "not_null",
            "unique",
            "range",
            "allowed_values",
            "regex",
            "row_count",
            "mean",
            "std",
            "quantile",
        }

    def test_unknown_column(self) -> None:
        with pytest.raises(InvalidArgument, match="names column 'nope'"):
            validate(TABLE, [Expectation("not_null", column="nope")])
        with pytest.raises(InvalidArgument, match="names column 'nope'"):
            validate(TABLE, [Expectation("unique", columns=["id", "nope"])])

    def test_wrong_column_type(self) -> None:
        with pytest.raises(InvalidArgument, match="needs a numeric column"):
            validate(TABLE, [Expectation("mean", column="segment", min=0)])
        with pytest.raises(InvalidArgument, match="needs a string column"):
            validate(TABLE, [Expectation("regex", column="id", pattern="1")])

    def test_allowed_values_of_another_type(self) -> None:
        with pytest.raises(InvalidArgument, match="do not fit column 'id'"):
            validate(TABLE, [Expectation("allowed_values", column="id", values=["one"])])

    def test_a_bad_expectation_stops_the_suite_before_any_is_judged(self) -> None:
        with pytest.raises(InvalidArgument):
            validate(TABLE, [Expectation("not_null", column="id"), Expectation("nope")])
