"""The filter language's parser, without a database."""

from __future__ import annotations

import pytest
from sqlalchemy import select
from sqlalchemy.dialects import sqlite

import plinth
from plinth.store.schema import runs
from plinth.tracking.search import MAX_ORDER_BY, order_by, ordered_metrics, parse_filter, tokenize


def compiled(text: str) -> str:
    return str(parse_filter(text).where.compile(dialect=sqlite.dialect()))


def test_values_become_bound_parameters_never_sql() -> None:
    sql = compiled("name = 'x''; DROP TABLE runs; --' and tags.team = 'risk'")
    assert "DROP" not in sql and "risk" not in sql
    assert sql.count("?") >= 2


HOSTILE = "x'); DROP TABLE runs; --"


@pytest.mark.parametrize(
    "text",
    [
        f"metrics.`{HOSTILE}` > 0.5",
        f"metrics.`{HOSTILE}`.best <= 1",
        f"metrics.`{HOSTILE}` is null",
        f"params.`{HOSTILE}` = 3",
        f"params.hyper.`{HOSTILE}` = 'gbm'",
        f"params.`{HOSTILE}`.lr in (1, 2)",
        f"params.`{HOSTILE}` is not null",
        f"tags.`{HOSTILE}` = 'a'",
        f"tags.`{HOSTILE}` is null",
    ],
)
def test_names_become_bound_parameters_never_sql(text: str) -> None:
    """Metric, param (and group) and tag names are values too, backticked or not."""
    sql = compiled(text)
    assert "DROP" not in sql and "x')" not in sql
    assert "?" in sql


@pytest.mark.parametrize(
    "term",
    [
        f"metrics.`{HOSTILE}` DESC",
        f"params.`{HOSTILE}`",
        f"params.`{HOSTILE}`.lr",
        f"tags.`{HOSTILE}`",
    ],
)
def test_order_by_names_become_bound_parameters_never_sql(term: str) -> None:
    sql = str(order_by(select(runs.c.id), [term], frozenset()).compile(dialect=sqlite.dialect()))
    assert "DROP" not in sql and "x')" not in sql
    assert "?" in sql


def test_empty_filter_matches_everything() -> None:
    assert compiled("") == compiled("   ") == "1"


@pytest.mark.parametrize(
    "text",
    [
        "metrics.val_f1 > 0.8",
        "metrics.`val f1` >= 1e-3",
        "params.hyper.lr = 0.1 and params.model = 'gbm'",
        "tags.team in ('a', 'b') or not status = 'FAILED'",
        "name ilike 'LGBM%' and number != 3",
        "metrics.loss.best < .5 and params.flag = true",
        'tags.note = "double \\" quoted"',
        "(metrics.a > 1 or metrics.b > 1) and end_time is not null",
        "name not like 'x%' and number not in (1, 2)",
        "start_time >= '2026-01-01T00:00:00+00:00'",
    ],
)
def test_valid_filters_parse(text: str) -> None:
    parse_filter(text)


@pytest.mark.parametrize(
    ("text", "position", "words"),
    [
        ("metrics.val_f1 >", 17, "end of the filter"),
        ("metrics.x ~ 1", 11, "unexpected character"),
        ("params.a.b.c = 1", 1, "unknown identifier"),
        ("metrics.x.median > 1", 1, "unknown metric field"),
        ("tags.team = 3", 13, "compare it with a 'string'"),
        ("number = 'x'", 10, "compare it with a number"),
        ("name in ('a', 1)", 9, "all be numbers or all strings"),
        ("name like 3", 11, "needs a 'string' pattern"),
        ("start_time > 'yesterday'", 14, "ISO date"),
        ("name = 'a' name = 'b'", 12, "expected 'and', 'or'"),
        ("name is 'x'", 9, "expected 'null'"),
        ("and name = 'x'", 1, "expected an identifier"),
        ("name in 'a'", 9, "expected '('"),
    ],
)
def test_errors_name_position_and_problem(text: str, position: int, words: str) -> None:
    with pytest.raises(plinth.InvalidArgument) as caught:
        parse_filter(text)
    assert f"at position {position}:" in str(caught.value)
    assert words in str(caught.value)


def test_oversized_filter_is_refused() -> None:
    with pytest.raises(plinth.InvalidArgument, match="longer than"):
        parse_filter("name = 'x' or " * 1000 + "name = 'y'")


def test_tokens_carry_positions() -> None:
    assert [(t.kind, t.pos) for t in tokenize("a.b >= 'x'")] == [
        ("ident", 1),
        ("op", 5),
        ("string", 8),
    ]


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("metrics.f1 sideways", "is not 'IDENTIFIER [ASC|DESC]'"),
        ("", "is not 'IDENTIFIER [ASC|DESC]'"),
        ("a b c", "is not 'IDENTIFIER [ASC|DESC]'"),
        ("colour", "order_by term 1 ('colour'): at position 1: unknown identifier"),
        ("metrics.f1.median", "order_by term 1 ('metrics.f1.median'): at position 1: unknown"),
        ("name ~ DESC", "order_by term 1 ('name ~ DESC'): at position 6: unexpected"),
    ],
)
def test_bad_order_by_says_order_by(text: str, words: str) -> None:
    with pytest.raises(plinth.InvalidArgument) as caught:
        order_by(select(runs.c.id), [text], frozenset())
    assert caught.value.message.startswith("order_by")
    assert words in caught.value.message
    assert "filter" not in caught.value.message


def test_order_by_takes_a_bounded_number_of_terms() -> None:
    order_by(select(runs.c.id), ["metrics.m DESC"] * MAX_ORDER_BY, frozenset())
    with pytest.raises(plinth.InvalidArgument, match=f"2000 terms; at most {MAX_ORDER_BY}"):
        order_by(select(runs.c.id), ["metrics.m DESC"] * 2000, frozenset())


def test_order_by_a_backticked_name_with_spaces() -> None:
    sql = str(order_by(select(runs.c.id), ["metrics.`val f1` DESC"], frozenset()).compile())
    assert "DESC" in sql


@pytest.mark.parametrize(
    ("text", "required"),
    [
        ("metrics.a > 1 and metrics.b < 2", {"a", "b"}),
        ("metrics.a > 1 or metrics.b < 2", set()),
        ("(metrics.a > 1 or metrics.a < 0) and tags.t = 'x'", {"a"}),
        ("not metrics.a > 1", set()),
        ("metrics.a is null", set()),
        ("metrics.a is not null", {"a"}),
        ("metrics.a not in (1, 2)", set()),
    ],
)
def test_metrics_a_filter_requires(text: str, required: set[str]) -> None:
    assert parse_filter(text).metrics == required


def test_ordering_by_a_required_metric_is_an_inner_join() -> None:
    sql = str(order_by(select(runs.c.id), ["metrics.f1 DESC"], frozenset({"f1"})).compile())
    assert "LEFT OUTER JOIN" not in sql and "JOIN metric_summaries" in sql
    sql = str(order_by(select(runs.c.id), ["metrics.f1 DESC"], frozenset()).compile())
    assert "LEFT OUTER JOIN metric_summaries" in sql


def test_deep_nesting_is_refused_not_a_crash() -> None:
    with pytest.raises(plinth.InvalidArgument, match="nested deeper"):
        parse_filter("(" * 500 + "name = 'x'" + ")" * 500)
    with pytest.raises(plinth.InvalidArgument, match="nested deeper"):
        parse_filter("not " * 500 + "name = 'x'")


def test_ordering_by_a_metric_the_filter_bounds_walks_its_index() -> None:
    """The bound is repeated on the join, so the (key, last) index gives the page in order."""
    matching = parse_filter("metrics.f1 > 0.5", ordered_metrics(["metrics.f1 DESC"]))
    query = order_by(select(runs.c.id), ["metrics.f1 DESC"], matching.metrics, matching.bounds)
    sql = str(query.compile())
    assert "metric_summaries_1.last > " in sql


@pytest.mark.parametrize(
    ("text", "bounds"),
    [
        ("metrics.a > 1 and metrics.b.min <= 2", {("a", "last", ">", 1), ("b", "min", "<=", 2)}),
        ("metrics.a > 1 or metrics.b < 2", set()),
        ("not metrics.a > 1", set()),
        ("metrics.a in (1, 2)", set()),
        (
            "(metrics.a > 1 and name = 'x') and metrics.a < 3",
            {("a", "last", ">", 1), ("a", "last", "<", 3)},
        ),
    ],
)
def test_bounds_are_the_top_level_conjuncts(text: str, bounds: set[tuple[object, ...]]) -> None:
    assert set(parse_filter(text).bounds) == bounds
