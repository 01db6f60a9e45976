from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

from plinth.errors import InvalidArgument
from plinth.registry.signature import compatible, enforce, infer_signature
from plinth.registry.types import ColumnSpec, Signature


def _sig(*inputs: tuple[str, str], outputs: tuple[tuple[str, str], ...] = ()) -> Signature:
    return Signature(
        inputs=[ColumnSpec(n, d) for n, d in inputs],
        outputs=[ColumnSpec(n, d) for n, d in outputs],
    )


AGE_INCOME = _sig(("age", "int64"), ("income", "float64"))


# --- inference -------------------------------------------------------------------------


def test_infers_each_dtype_of_a_dataframe() -> None:
    frame = pd.DataFrame(
        {
            "age": np.array([30, 40], dtype=np.int64),
            "small": np.array([1, 2], dtype=np.int32),
            "income": [1.5, 2.5],
            "active": [True, False],
            "city": pd.Series(["Oslo", "Rome"], dtype=object),
            "plan": pd.Series(["a", None], dtype="string"),
            "joined": pd.to_datetime(["2024-01-01", "2024-02-01"]).astype("datetime64[ns]"),
            "tier": pd.Categorical(["x", "y"]),
            "mixed": pd.Series([1, "a"], dtype=object),
        }
    )
    assert infer_signature(frame).inputs == [
        ColumnSpec("age", "int64"),
        ColumnSpec("small", "int32"),
        ColumnSpec("income", "float64"),
        ColumnSpec("active", "bool"),
        ColumnSpec("city", "string"),
        ColumnSpec("plan", "string"),
        ColumnSpec("joined", "datetime64[ns]"),
        ColumnSpec("tier", "category"),
        ColumnSpec("mixed", "object"),
    ]


def test_a_2d_array_names_its_columns_by_position() -> None:
    sig = infer_signature(np.zeros((3, 2), dtype=np.float32))
    assert sig.inputs == [ColumnSpec("0", "float32"), ColumnSpec("1", "float32")]
    assert sig.outputs == []


def test_infers_from_a_dict_of_columns_and_a_dict_of_scalars() -> None:
    expected = [ColumnSpec("age", "int64"), ColumnSpec("city", "string")]
    assert infer_signature({"age": [1, 2], "city": ["a", "b"]}).inputs == expected
    assert infer_signature({"age": 1, "city": "a"}).inputs == expected


def test_infers_from_a_list_of_rows() -> None:
    rows = [{"age": 1, "income": 2.0}, {"age": 3, "income": 4.5}]
    assert infer_signature(rows).inputs == AGE_INCOME.inputs


def test_non_string_column_names_become_strings() -> None:
    assert infer_signature(pd.DataFrame({0: [1.0], 1: [2.0]})).input_names == ["0", "1"]


def test_infers_outputs() -> None:
    frame = pd.DataFrame({"a": [1]})
    assert infer_signature(frame, np.array([0, 1])).outputs == [ColumnSpec("0", "int64")]
    named = pd.Series([0.5], name="score")
    assert infer_signature(frame, named).outputs == [ColumnSpec("score", "float64")]
    proba = np.zeros((2, 2), dtype=np.float32)
    assert infer_signature(frame, proba).outputs == [
        ColumnSpec("0", "float32"),
        ColumnSpec("1", "float32"),
    ]


@pytest.mark.parametrize(
    ("data", "words"),
    [(np.zeros(3), "2-D"), ("a,b", "cannot read model input from a str"), ([1, 2], "list")],
)
def test_refuses_inputs_it_cannot_read(data: object, words: str) -> None:
    with pytest.raises(InvalidArgument, match=words):
        infer_signature(data)


def test_refuses_duplicate_columns() -> None:
    frame = pd.DataFrame([[1, 2]], columns=["a", "a"])
    with pytest.raises(InvalidArgument, match="more than one column named 'a'"):
        infer_signature(frame)


# --- enforcement -----------------------------------------------------------------------


def test_a_missing_column_is_named_with_its_dtype() -> None:
    with pytest.raises(InvalidArgument) as caught:
        enforce(AGE_INCOME, pd.DataFrame({"income": [1.0]}))
    assert caught.value.message == "input is missing column 'age' (int64) that the model needs"


def test_every_missing_column_is_named() -> None:
    with pytest.raises(InvalidArgument, match=r"columns 'age' \(int64\), 'income' \(float64\)"):
        enforce(AGE_INCOME, pd.DataFrame({"other": [1]}))


def test_a_wrong_dtype_names_the_column_and_both_dtypes() -> None:
    with pytest.raises(InvalidArgument) as caught:
        enforce(AGE_INCOME, pd.DataFrame({"age": ["thirty"], "income": [1.0]}))
    assert caught.value.message == "column 'age' has dtype string, but the model needs int64"


def test_extra_columns_are_dropped_and_order_is_fixed() -> None:
    given = pd.DataFrame({"extra": ["x", "y"], "income": [1.0, 2.0], "age": [3, 4]})
    out = enforce(AGE_INCOME, given)
    assert list(out.columns) == ["age", "income"]
    assert out["age"].tolist() == [3, 4]
    assert list(out.dtypes.astype(str)) == ["int64", "float64"]


@pytest.mark.parametrize(
    ("given", "needed"),
    [
        (np.array([1, 2], dtype=np.int64), "float64"),
        (np.array([1, 2], dtype=np.int32), "int64"),
        (np.array([1, 2], dtype=np.float32), "float64"),
        (np.array([1, 2], dtype=np.float64), "float32"),
        (np.array([1, 2], dtype=np.int64), "int32"),
        (np.array([1, 2], dtype=np.uint8), "int64"),
        (np.array([True, False]), "bool"),
        (np.array([True, False]), "boolean"),
        (pd.array([1, None], dtype="Int64"), "float64"),
    ],
)
def test_safe_conversions_are_made(given: object, needed: str) -> None:
    out = enforce(_sig(("x", needed)), pd.DataFrame({"x": given}))
    assert str(out["x"].dtype) == needed


@pytest.mark.parametrize(
    ("given", "needed"),
    [
        (np.array([True, False]), "float64"),
        (np.array([1.5, 2.0]), "int64"),
        (np.array([1, 2]), "string"),
        (pd.to_datetime(["2024-01-01"]), "int64"),
    ],
)
def test_unsafe_conversions_are_refused(given: object, needed: str) -> None:
    with pytest.raises(
        InvalidArgument, match=f"column 'x' has dtype .*, but the model needs {needed}"
    ):
        enforce(_sig(("x", needed)), pd.DataFrame({"x": given}))


def test_ints_that_do_not_fit_are_refused() -> None:
    with pytest.raises(InvalidArgument, match="outside the range of int32"):
        enforce(_sig(("x", "int32")), pd.DataFrame({"x": [2**40]}))
    with pytest.raises(InvalidArgument, match="outside the range of uint8"):
        enforce(_sig(("x", "uint8")), pd.DataFrame({"x": [-1]}))


def test_missing_values_do_not_become_ints() -> None:
    with pytest.raises(InvalidArgument, match="column 'x' has missing values"):
        enforce(_sig(("x", "int64")), pd.DataFrame({"x": pd.array([1, None], dtype="Int64")}))


def test_string_columns_accept_any_string_kind_with_missing_values() -> None:
    sig = _sig(("city", "string"))
    for column in (
        pd.Series(["a", None], dtype=object),
        pd.Series(["a", None], dtype="string"),
        pd.Series([None, None], dtype=object),
    ):
        out = enforce(sig, pd.DataFrame({"city": column}))
        assert out["city"].iloc[0] == column.iloc[0] or column.isna().all()
    with pytest.raises(InvalidArgument, match="column 'city' has dtype object"):
        enforce(sig, pd.DataFrame({"city": pd.Series(["a", 1], dtype=object)}))


def test_enforces_each_input_kind() -> None:
    expected = pd.DataFrame({"age": [1, 2], "income": [0.5, 1.5]})
    kinds = [
        {"income": [0.5, 1.5], "age": [1, 2]},
        [{"income": 0.5, "age": 1}, {"age": 2, "income": 1.5, "extra": "x"}],
        expected[["income", "age"]],
    ]
    for data in kinds:
        pd.testing.assert_frame_equal(enforce(AGE_INCOME, data), expected)
    one_row = enforce(AGE_INCOME, {"age": 1, "income": 0.5})
    assert one_row.to_dict("records") == [{"age": 1, "income": 0.5}]


@pytest.mark.parametrize("needed", ["int64", "int32", "uint8", "float64", "float32", "bool"])
@pytest.mark.parametrize(
    "values",
    [[1, 2], [1.5, 2.0], [1, 2.5], [True, False], [2**40, 1], [-1, 3], [1, None], ["1", "2"], [[1], [2]]],
)  # fmt: skip
def test_columns_of_json_values_are_judged_as_a_dataframe_of_them_is(
    values: list[object], needed: str
) -> None:
    # lists of JSON values take a fast numpy path; it must agree with the general one
    sig = _sig(("x", needed), ("y", "float64"))
    columns = {"x": values, "y": [0.5, 1.5]}
    try:
        expected = enforce(sig, pd.DataFrame(columns))
    except InvalidArgument as e:
        with pytest.raises(InvalidArgument, match=re.escape(str(e))):
            enforce(sig, columns)
    else:
        pd.testing.assert_frame_equal(enforce(sig, columns), expected)


def test_an_array_is_read_in_signature_order() -> None:
    out = enforce(AGE_INCOME, np.array([[1, 5], [2, 6]]))
    assert out.to_dict("list") == {"age": [1, 2], "income": [5.0, 6.0]}
    assert list(out.dtypes.astype(str)) == ["int64", "float64"]


def test_an_array_with_the_wrong_width_is_refused() -> None:
    with pytest.raises(
        InvalidArgument, match="has 3 columns but the model needs 2: 'age', 'income'"
    ):
        enforce(AGE_INCOME, np.zeros((1, 3)))


def test_an_array_of_floats_does_not_pass_for_int_columns() -> None:
    # a float array cannot carry ints safely: the model's int column is refused by name
    with pytest.raises(InvalidArgument, match="column 'age' has dtype float64"):
        enforce(_sig(("age", "int64")), np.array([[1.0]]))


# --- compatibility ---------------------------------------------------------------------


def test_identical_and_widening_signatures_are_compatible() -> None:
    assert compatible(AGE_INCOME, AGE_INCOME) == []
    narrower = _sig(("age", "int32"), ("income", "float32"), ("extra", "string"))
    assert compatible(narrower, AGE_INCOME) == []


def test_a_new_input_column_is_named() -> None:
    new = _sig(("age", "int64"), ("income", "float64"), ("tenure", "int64"))
    assert compatible(AGE_INCOME, new) == [
        "needs input column 'tenure' (int64), which the current signature does not provide"
    ]


def test_an_incompatible_dtype_is_named() -> None:
    new = _sig(("age", "string"), ("income", "float64"))
    assert compatible(AGE_INCOME, new) == [
        "needs input column 'age' as string, but the current signature provides int64"
    ]


def test_outputs_are_compared_when_both_declare_them() -> None:
    old = _sig(("a", "int64"), outputs=(("label", "int64"), ("score", "float64")))
    new = _sig(("a", "int64"), outputs=(("label", "string"),))
    assert compatible(old, new) == [
        "produces output column 'label' as string instead of int64",
        "no longer produces output column 'score' (float64)",
    ]
    assert compatible(old, _sig(("a", "int64"))) == []
