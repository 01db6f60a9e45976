"""MLflow's search syntax: parsed, checked, and translated into Plinth's filter language
without splicing user text."""

from __future__ import annotations

import pytest

from plinth.errors import InvalidArgument
from plinth.server.mlflow.filters import (
    Comparison,
    experiment_filter,
    experiment_order,
    like,
    parse,
    run_filter,
    run_order_by,
)
from plinth.tracking.search import parse_filter, tokenize
from plinth.tracking.types import DatasetInput


def plinth(text: str) -> str | None:
    return run_filter(text).plinth


@pytest.mark.parametrize(
    ("mlflow", "expected"),
    [
        ("metrics.rmse < 1", "metrics.`rmse` < 1"),
        ("metric.rmse >= -0.5", "metrics.`rmse` >= -0.5"),
        ("metrics.val.f1 > 1e3", "metrics.`val.f1` > 1000.0"),  # split at the first dot
        ("metrics.`my metric` = 2", "metrics.`my metric` = 2"),
        ('metrics."my-metric" != 2', "metrics.`my-metric` != 2"),
        ("tags.team = 'risk'", "tags.`team` = 'risk'"),
        ("tags.`extra-key` LIKE 'a%'", "tags.`extra-key` like 'a%'"),
        ("tag.t ILIKE '%B'", "tags.`t` ilike '%B'"),
        ("tags.mlflow.runName = 'lgbm'", "name = 'lgbm'"),
        ("attributes.run_name = 'x'", "name = 'x'"),
        ("`Run name` = 'x'", "name = 'x'"),
        ("run_id IN ('a', 'b')", "id in ('a', 'b')"),
        ("attr.run_id NOT IN ('a')", "id not in ('a')"),
        ("user_id != 'ann'", "owner != 'ann'"),
        ("created > 1700000000000", "start_time > 1700000000000"),
        ("attributes.end_time <= 5", "end_time <= 5"),
        ("status = 'FINISHED'", "status in ('FINISHED')"),
        ("status != 'FINISHED'", "status not in ('FINISHED')"),
        ("status = 'SCHEDULED'", "id is null"),  # MLflow's status Plinth never has
        ("status != 'SCHEDULED'", "id is not null"),
        ("status IN ('SCHEDULED', 'KILLED')", "status in ('KILLED')"),
        ("status LIKE 'FIN%'", "status like 'FIN%'"),
        ("params.model = 'lgbm'", "params.`default`.`model` = 'lgbm'"),
        ("params.model LIKE 'lg%'", "params.`default`.`model` like 'lg%'"),
        (
            "params.lr = '0.1'",  # a number-looking value also matches Plinth's number params
            "(params.`default`.`lr` = '0.1' or params.`default`.`lr` = 0.1)",
        ),
        ("params.lr = '0.10'", "params.`default`.`lr` = '0.10'"),  # not how 0.1 shows
        (
            "params.hyper.depth = '6'",  # a Plinth group shows as GROUP.KEY
            "(params.`default`.`hyper.depth` = '6' or params.`default`.`hyper.depth` = 6 "
            "or params.`hyper`.`depth` = '6' or params.`hyper`.`depth` = 6)",
        ),
        (
            "metrics.a > 1 AND tags.b = 'c' and params.d != 'e'",
            "metrics.`a` > 1 and tags.`b` = 'c' and params.`default`.`d` != 'e'",
        ),
        ("", None),
        ("   ", None),
    ],
)
def test_translation(mlflow: str, expected: str | None) -> None:
    translated = plinth(mlflow)
    assert translated == expected
    if translated is not None:
        parse_filter(translated)  # Plinth's parser takes it


def test_an_artifact_uri_is_taken_apart_into_the_experiment_and_the_run() -> None:
    e, r = "a" * 32, "b" * 32
    uri = f"mlflow-artifacts:/{e}/{r}/artifacts"
    assert plinth(f"artifact_uri = '{uri}'") == f"((experiment_id = '{e}' and id = '{r}'))"
    assert plinth(f"artifact_uri != '{uri}'") == f"not ((experiment_id = '{e}' and id = '{r}'))"
    assert plinth("artifact_uri = 's3://elsewhere'") == "id is null"
    with pytest.raises(InvalidArgument, match="artifact_uri takes the operators"):
        plinth("artifact_uri LIKE 'mlflow-artifacts:/%'")


@pytest.mark.parametrize(
    "value",
    [
        "it's",
        "a''b",
        "back\\slash",
        "\\'",
        "' or 1=1 --",
        "x') or (id is not null",
        'say "hi"',
        "tick`tock",
        "line\nbreak",
        "\\\n",
        "%_",
    ],
)
def test_a_hostile_value_reaches_plinth_as_one_literal(value: str) -> None:
    escaped = value.replace("\\", "\\\\").replace("'", "''")
    translated = plinth(f"tags.t = '{escaped}'")
    assert translated is not None
    tokens = tokenize(translated)
    assert [t.kind for t in tokens] == ["ident", "op", "string"]  # nothing escaped the quotes
    compiled = parse_filter(translated).where.compile(compile_kwargs={"literal_binds": False})
    assert list(compiled.params.values()).count(value) == 1


def test_a_double_quoted_value_is_a_string_too() -> None:
    assert plinth('tags.t = "a\'b"') == "tags.`t` = 'a\\'b'"


@pytest.mark.parametrize(
    ("mlflow", "fragment"),
    [
        ("metrics.a > 1 OR metrics.b > 1", "AND only"),
        ("(metrics.a > 1)", "expected an identifier"),
        ("metrics.a > 1 metrics.b > 1", "expected AND"),
        ("metrics.a > 'x'", "compares with a number"),
        ("metrics.a LIKE '1'", "metrics.a takes the operators"),
        ("params.a = 1", "compares with a quoted string"),
        ("params.a > '1'", "params.a takes the operators"),
        ("params.a IN ('1')", "params.a takes the operators"),
        ("tags.a = 1", "compares with a quoted string"),
        ("tags.`a` = 'x", "never closed"),
        ("tags.`a = 'x'", "never closed"),
        ("foo.a = 'x'", "unknown entity 'foo'"),
        ("lifecycle_stage = 'active'", "unknown attribute 'lifecycle_stage'"),
        ("experiment_id = 'x'", "unknown attribute 'experiment_id'"),
        ("start_time = 'yesterday'", "compares with a number"),
        ("start_time LIKE '1%'", "start_time takes the operators"),
        ("run_id IN ()", "IN takes a list of quoted strings"),
        ("run_id IN ('a' 'b')", "expected ',' or ')'"),
        ("run_id IN (1)", "IN takes a list of quoted strings"),
        ("run_id NOT ('a')", "expected IN after NOT"),
        ("metrics.a >", "got the end of the filter"),
        ("metrics.a 1", "expected an operator"),
        ("metrics.a = 1; drop table runs", "unexpected character ';'"),
        ("metrics.a = 1e999", "not a finite number"),
        ("tags.`` = 'x'", "names nothing"),
        ("tags.\"a`b\" = 'x'", "has a backtick"),
        ("dataset.source = 'x'", "dataset.source cannot be searched"),
        ("dataset.name > 'a'", "dataset.name takes the operators"),
        ("metrics.a = 1 AND", "got the end of the filter"),
    ],
)
def test_a_bad_filter_is_refused_naming_the_problem(mlflow: str, fragment: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        run_filter(mlflow)
    assert fragment in caught.value.message


def test_a_filter_longer_than_the_limit_is_refused() -> None:
    with pytest.raises(InvalidArgument, match="longer than"):
        run_filter("metrics.a > 1 and " * 1000 + "metrics.a > 1")


def test_dataset_comparisons_are_checked_on_the_runs_inputs() -> None:
    found = run_filter(
        "dataset.name LIKE 'train%' and dataset.digest IN ('d1', 'd2') "
        "and dataset.context = 'training'"
    )
    assert found.plinth is None
    assert found.datasets == (
        Comparison("dataset", "name", "LIKE", "train%"),
        Comparison("dataset", "digest", "IN", ("d1", "d2")),
        Comparison("dataset", "context", "=", "training"),
    )
    train = DatasetInput("train-2024", "s3://b/t", "d1", context="training")
    other = DatasetInput("eval", "s3://b/e", "d2", context="eval")
    assert found.keeps([train])
    assert found.keeps([other, train])
    assert not found.keeps([other])
    assert not found.keeps([DatasetInput("train-x", "s3://b/t", "d3", context="training")])
    assert not found.keeps([DatasetInput("train-2024", "s3://b/t", "d1")])  # no context
    assert not found.keeps([])


def test_parse_gives_the_comparisons() -> None:
    assert parse("metrics.`a.b` >= 2 and tags.x NOT IN ('1', \"2\")") == [
        Comparison("metric", "a.b", ">=", 2),
        Comparison("tag", "x", "NOT IN", ("1", "2")),
    ]


@pytest.mark.parametrize(
    ("mlflow", "expected"),
    [
        (None, None),
        ([], None),
        (["metrics.rmse"], ["metrics.`rmse`", "start_time DESC"]),
        (["metrics.`val f1` DESC"], ["metrics.`val f1` DESC", "start_time DESC"]),
        (["params.lr ASC", "tags.t"], ["params.`default`.`lr`", "tags.`t`", "start_time DESC"]),
        (["attributes.start_time"], ["start_time"]),
        (["created DESC"], ["start_time DESC"]),
        (["run_name", "tags.mlflow.runName DESC"], ["name", "name DESC", "start_time DESC"]),
        (["artifact_uri"], ["experiment_id", "id", "start_time DESC"]),
        (["user_id desc"], ["owner DESC", "start_time DESC"]),
    ],
)
def test_order_by(mlflow: list[str] | None, expected: list[str] | None) -> None:
    assert run_order_by(mlflow) == expected


@pytest.mark.parametrize(
    "term", ["metrics.a UP", "metrics.a DESC x", "dataset.name", "attributes.bogus", "= 1", ""]
)
def test_a_bad_order_by_is_refused(term: str) -> None:
    with pytest.raises(InvalidArgument, match="order_by term 1"):
        run_order_by([term])


def test_experiment_filters_are_checked_in_python() -> None:
    experiment = {
        "experiment_id": "e1",
        "name": "Churn-v2",
        "creation_time": 10,
        "last_update_time": 20,
        "tags": [{"key": "team", "value": "risk"}],
    }
    assert experiment_filter(None)(experiment)
    assert experiment_filter("name = 'Churn-v2'")(experiment)
    assert experiment_filter("name ILIKE 'churn%' and tags.team = 'risk'")(experiment)
    assert not experiment_filter("name LIKE 'churn%'")(experiment)
    assert not experiment_filter("tags.team != 'risk'")(experiment)
    assert not experiment_filter("tags.owner = 'x'")(experiment)  # no such tag
    assert experiment_filter("creation_time > 5 and last_update_time <= 20")(experiment)
    assert not experiment_filter("attributes.creation_time > 10")(experiment)
    for bad in ("metrics.a > 1", "name > 'a'", "creation_time LIKE '1'", "experiment_id = 'x'"):
        with pytest.raises(InvalidArgument):
            experiment_filter(bad)


def test_experiment_order() -> None:
    assert experiment_order(None) == [("creation_time", True), ("experiment_id", False)]
    assert experiment_order(["name DESC"]) == [("name", True), ("experiment_id", False)]
    assert experiment_order(["experiment_id"]) == [("experiment_id", False)]
    with pytest.raises(InvalidArgument, match=r"cannot order experiments by 'tags\.x'"):
        experiment_order(["tags.x"])


@pytest.mark.parametrize(
    ("text", "pattern", "ignore_case", "expected"),
    [
        ("train-1", "train%", False, True),
        ("Train-1", "train%", False, False),
        ("Train-1", "train%", True, True),
        ("ab", "a_", False, True),
        ("abc", "a_", False, False),
        ("a.c", "a.c", False, True),
        ("abc", "a.c", False, False),  # a dot is a dot, not a regex
        ("line\nbreak", "line%", False, True),
    ],
)
def test_like(text: str, pattern: str, ignore_case: bool, expected: bool) -> None:
    assert like(text, pattern, ignore_case) is expected
