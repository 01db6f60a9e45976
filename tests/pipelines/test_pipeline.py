"""``Pipeline``: steps wired by parameter name, checked when the pipeline is built."""

from __future__ import annotations

from typing import Any

import pytest

import plinth
from plinth.errors import InvalidArgument
from plinth.pipelines.pipeline import Input, Pipeline
from plinth.pipelines.step import step


@step
def get_data(context: Any, since: str = "2026-01-01") -> list[int]:
    return [1, 2]


@step
def train(get_data: list[int], rate: float) -> int:
    return len(get_data)


@step
def evaluate(train: int, get_data: list[int]) -> int:
    return train


def test_parameters_are_wired_by_name() -> None:
    pipeline = Pipeline("churn", [get_data, train, evaluate], params={"rate": 0.1})
    assert plinth.Pipeline is Pipeline
    assert pipeline.step_names == ["get_data", "train", "evaluate"]
    assert pipeline.inputs == {
        "get_data": {"context": Input("context", "context"), "since": Input("param", "since")},
        "train": {"get_data": Input("step", "get_data"), "rate": Input("param", "rate")},
        "evaluate": {"train": Input("step", "train"), "get_data": Input("step", "get_data")},
    }
    assert pipeline.step("train") is train
    assert "churn" in repr(pipeline)


def test_an_input_from_nowhere_names_the_step_and_parameter() -> None:
    with pytest.raises(InvalidArgument) as caught:
        Pipeline("churn", [get_data, train])
    message = str(caught.value)
    assert "step 'train' takes 'rate'" in message
    assert "no earlier step (get_data)" in message


def test_a_step_using_a_later_step_is_refused() -> None:
    with pytest.raises(InvalidArgument, match="step 'train' takes 'get_data', which runs after"):
        Pipeline("churn", [train, get_data], params={"rate": 1})


def test_a_step_using_itself_is_refused() -> None:
    @step
    def loop(loop: int) -> int:
        return loop

    with pytest.raises(InvalidArgument, match="takes 'loop', which is itself"):
        Pipeline("p", [loop])


def test_step_names_are_unique() -> None:
    other = step(name="get_data")(lambda: 1)
    with pytest.raises(InvalidArgument, match="two steps are named 'get_data'"):
        Pipeline("p", [get_data, other])


def test_only_steps_and_at_least_one() -> None:
    with pytest.raises(InvalidArgument, match="item 1 is function, not a step"):
        Pipeline("p", [get_data, lambda get_data: 1])  # type: ignore[list-item]
    with pytest.raises(InvalidArgument, match="has no steps"):
        Pipeline("p", [])


@pytest.mark.parametrize("name", ["", " ", "a/b", "../../etc", "a\x00b", "x" * 201, "pipé"])
def test_a_pipeline_is_named_as_the_service_names_one(name: str) -> None:
    with pytest.raises(InvalidArgument, match=r"pipeline name .* is not valid"):
        Pipeline(name, [get_data])
    with pytest.raises(InvalidArgument, match="experiment name 'a/b' is not valid"):
        Pipeline("p", [get_data], experiment="a/b")
    assert Pipeline("churn-retrain.v2", [get_data], experiment="Churn_2").name == "churn-retrain.v2"


def test_params_must_be_stored_as_given() -> None:
    # keys JSON cannot sort (as the run's params are stored) are refused when built
    with pytest.raises(InvalidArgument, match="param 'o' is dict"):
        Pipeline("p", [get_data], params={"o": {1: "a", "b": 2}})


def test_an_unknown_step_lists_the_steps() -> None:
    pipeline = Pipeline("p", [get_data])
    with pytest.raises(InvalidArgument, match="has no step 'nope'; its steps are get_data"):
        pipeline.step("nope")


def test_params_must_be_json_values() -> None:
    with pytest.raises(InvalidArgument, match="param 'since' is datetime"):
        from datetime import datetime

        Pipeline("p", [get_data], params={"since": datetime(2026, 1, 1)})
