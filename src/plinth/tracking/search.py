"""The run filter language, parsed into SQLAlchemy expressions (never into SQL text).

    metrics.val_f1 > 0.8 and params.hyper.lr = 0.1 and tags.team = 'risk'
    and status = 'FINISHED' or (name like 'lgbm-%' and not tags.bad is not null)

Identifiers: ``metrics.NAME`` (its last value; ``metrics.NAME.min|max|best|count`` too),
``params.GROUP.NAME`` or ``params.NAME`` (any group), ``tags.NAME``, and the attributes
below. Names with other characters go in backticks: ``metrics.`val f1```.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, exists, func, not_, or_, select, true
from sqlalchemy.sql.elements import ColumnClause

from plinth.errors import InvalidArgument
from plinth.store.engine import Store
from plinth.store.schema import experiments, metric_summaries, params, run_tags, runs
from plinth.tracking.types import RunStatus

ATTRIBUTES: dict[str, Any] = {
    "id": runs.c.id,
    "name": runs.c.name,
    "number": runs.c.number,
    "status": runs.c.status,
    "owner": runs.c.owner,
    "description": runs.c.description,
    "start_time": runs.c.start_time,
    "end_time": runs.c.end_time,
    # milliseconds from start to end; none while a run goes on
    "duration": runs.c.end_time - runs.c.start_time,
    "experiment_id": runs.c.experiment_id,
    "experiment": experiments.c.name,
}
TIME_ATTRIBUTES = {"start_time", "end_time"}
NUMBER_ATTRIBUTES = {"number", "duration"} | TIME_ATTRIBUTES
METRIC_FIELDS = {"last", "min", "max", "best", "count", "best_step", "last_step"}
MAX_NESTING = 64
MAX_ORDER_BY = 16
_OPS = ("<=", ">=", "!=", "<>", "==", "=", "<", ">")

_TOKEN = re.compile(
    r"""
    (?P<ws>\s+)
  | (?P<number>[-+]?(?:\d+\.?\d*(?:[eE][-+]?\d+)?|\.\d+(?:[eE][-+]?\d+)?))
  | (?P<string>'(?:[^'\\]|\\.|'')*'|"(?:[^"\\]|\\.)*")
  | (?P<ident>(?:[A-Za-z_][A-Za-z0-9_\-]*|`[^`]+`)(?:\.(?:[A-Za-z_0-9][A-Za-z0-9_\-]*|`[^`]+`))*)
  | (?P<op><=|>=|!=|<>|==|=|<|>)
  | (?P<punct>[(),])
    """,
    re.VERBOSE,
)
_KEYWORDS = {"and", "or", "not", "in", "like", "ilike", "is", "null", "true", "false"}


@dataclass(frozen=True)
class Token:
    kind: str
    text: str
    pos: int  # 1-based column

    @property
    def word(self) -> str:
        return self.text.lower() if self.kind == "ident" else ""


def _fail(pos: int, problem: str, where: str = "filter") -> InvalidArgument:
    return InvalidArgument(f"{where}: at position {pos}: {problem}")


def tokenize(text: str) -> list[Token]:
    tokens: list[Token] = []
    i = 0
    while i < len(text):
        m = _TOKEN.match(text, i)
        if m is None:
            raise _fail(i + 1, f"unexpected character {text[i]!r}")
        kind = m.lastgroup or ""
        if kind != "ws":
            tokens.append(Token(kind, m.group(), i + 1))
        i = m.end()
    return tokens


@dataclass(frozen=True)
class Ident:
    kind: str  # metric | param | tag | attribute
    name: str
    group: str | None = None
    field: str = "last"
    pos: int = 0


def parse_ident(text: str, pos: int, where: str = "filter") -> Ident:
    parts = [p[1:-1] if p.startswith("`") else p for p in _split_ident(text)]
    head = parts[0].lower()
    if head in ("metric", "metrics") and len(parts) in (2, 3):
        field = parts[2].lower() if len(parts) == 3 else "last"
        if field not in METRIC_FIELDS:
            raise _fail(
                pos,
                f"unknown metric field {parts[2]!r}; use one of {sorted(METRIC_FIELDS)}",
                where,
            )
        return Ident("metric", parts[1], field=field, pos=pos)
    if head in ("param", "params") and len(parts) in (2, 3):
        if len(parts) == 3:
            return Ident("param", parts[2], group=parts[1], pos=pos)
        return Ident("param", parts[1], pos=pos)
    if head in ("tag", "tags") and len(parts) == 2:
        return Ident("tag", parts[1], pos=pos)
    if len(parts) == 1 and head in ATTRIBUTES:
        return Ident("attribute", head, pos=pos)
    if len(parts) == 2 and head in ("attribute", "attributes", "run") and parts[1] in ATTRIBUTES:
        return Ident("attribute", parts[1], pos=pos)
    raise _fail(
        pos,
        f"unknown identifier {text!r}; use metrics.NAME, params.GROUP.NAME, params.NAME, "
        f"tags.NAME or one of {sorted(ATTRIBUTES)}",
        where,
    )


def _split_ident(text: str) -> list[str]:
    return re.findall(r"`[^`]+`|[^.]+", text)


class _Parser:
    def __init__(self, text: str, ordered: frozenset[str]) -> None:
        self.text = text
        self.ordered = ordered
        self.tokens = tokenize(text)
        self.i = 0
        self.depth = 0

    def peek(self) -> Token | None:
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def next(self, expected: str) -> Token:
        tok = self.peek()
        if tok is None:
            raise _fail(len(self.text) + 1, f"expected {expected}, got the end of the filter")
        self.i += 1
        return tok

    def accept_word(self, word: str) -> bool:
        tok = self.peek()
        if tok is not None and tok.word == word:
            self.i += 1
            return True
        return False

    def parse(self) -> Filter:
        if not self.tokens:
            return Filter(true(), frozenset())
        found = self.or_expr()
        tok = self.peek()
        if tok is not None:
            raise _fail(tok.pos, f"expected 'and', 'or' or the end of the filter, got {tok.text!r}")
        return found

    def or_expr(self) -> Filter:
        parts = [self.and_expr()]
        while self.accept_word("or"):
            parts.append(self.and_expr())
        if len(parts) == 1:
            return parts[0]
        return Filter(
            or_(*(p.where for p in parts)), frozenset.intersection(*(p.metrics for p in parts))
        )

    def and_expr(self) -> Filter:
        parts = [self.not_expr()]
        while self.accept_word("and"):
            parts.append(self.not_expr())
        if len(parts) == 1:
            return parts[0]
        return Filter(
            and_(*(p.where for p in parts)),
            frozenset.union(*(p.metrics for p in parts)),
            tuple(b for p in parts for b in p.bounds),
        )

    def not_expr(self) -> Filter:
        self.depth += 1
        if self.depth > MAX_NESTING:
            tok = self.peek()
            raise _fail(
                tok.pos if tok else len(self.text), f"nested deeper than {MAX_NESTING} levels"
            )
        try:
            return self._not_expr()
        finally:
            self.depth -= 1

    def _not_expr(self) -> Filter:
        if self.accept_word("not"):
            return Filter(not_(self.not_expr().where), frozenset())
        tok = self.peek()
        if tok is not None and tok.text == "(":
            self.i += 1
            found = self.or_expr()
            close = self.next("')'")
            if close.text != ")":
                raise _fail(close.pos, f"expected ')', got {close.text!r}")
            return found
        return self.comparison()

    def comparison(self) -> Filter:
        start = self.i
        where = self._comparison()
        ident = parse_ident(self.tokens[start].text, self.tokens[start].pos)
        op = self.tokens[start + 1]
        positive = op.kind == "op" or op.word in ("like", "ilike", "in")
        is_not_null = op.word == "is" and self.tokens[start + 2].word == "not"
        required = ident.kind == "metric" and (positive or is_not_null)
        bounds: tuple[Bound, ...] = ()
        if ident.kind == "metric" and op.kind == "op" and op.text in ("<", "<=", ">", ">=", "="):
            end, self.i = self.i, start + 2
            bounds = ((ident.name, ident.field, op.text, self.value().value),)
            self.i = end
        return Filter(where, frozenset([ident.name]) if required else frozenset(), bounds)

    def _comparison(self) -> ColumnElement[bool]:
        tok = self.next("an identifier such as metrics.val_f1")
        if tok.kind != "ident" or tok.word in _KEYWORDS:
            raise _fail(tok.pos, f"expected an identifier such as metrics.val_f1, got {tok.text!r}")
        ident = parse_ident(tok.text, tok.pos)
        op_tok = self.next("an operator (=, !=, <, <=, >, >=, like, ilike, in, is)")
        if op_tok.kind == "op":
            value = self.value()
            op = "=" if op_tok.text == "==" else op_tok.text
            return compile_condition(ident, op, value, self.ordered)
        word = op_tok.word
        negate = False
        if word == "not":
            negate = True
            word = self.next("'in', 'like' or 'ilike' after 'not'").word
        if word in ("like", "ilike"):
            cond = compile_condition(ident, word, self.value(), self.ordered)
        elif word == "in":
            cond = compile_condition(ident, "in", self.value_list(), self.ordered)
        elif word == "is" and not negate:
            is_not = self.accept_word("not")
            null_tok = self.next("'null'")
            if null_tok.word != "null":
                raise _fail(null_tok.pos, f"expected 'null' after 'is', got {null_tok.text!r}")
            cond = compile_presence(ident)
            return cond if is_not else not_(cond)
        else:
            raise _fail(
                op_tok.pos,
                f"expected an operator (=, !=, <, <=, >, >=, like, ilike, in, is), got {op_tok.text!r}",
            )
        return not_(cond) if negate else cond

    def value(self) -> Literal:
        tok = self.next("a value (a number, a 'string', true or false)")
        if tok.kind == "number":
            # Integers stay exact while the store can hold them; beyond 64 bits compare as floats.
            integral = not any(c in tok.text for c in ".eE")
            if integral and abs(int(tok.text)) < 2**63:
                return Literal(int(tok.text), tok.pos)
            return Literal(float(tok.text), tok.pos)
        if tok.kind == "string":
            body = tok.text[1:-1]
            quote = tok.text[0]
            body = body.replace(quote * 2, quote) if quote == "'" else body
            return Literal(re.sub(r"\\(.)", r"\1", body), tok.pos)
        if tok.word in ("true", "false"):
            return Literal(tok.word == "true", tok.pos)
        raise _fail(
            tok.pos, f"expected a value (a number, a 'string', true or false), got {tok.text!r}"
        )

    def value_list(self) -> Literal:
        open_tok = self.next("'('")
        if open_tok.text != "(":
            raise _fail(open_tok.pos, f"expected '(' after 'in', got {open_tok.text!r}")
        values = [self.value().value]
        while True:
            tok = self.next("',' or ')'")
            if tok.text == ")":
                return Literal(values, open_tok.pos)
            if tok.text != ",":
                raise _fail(tok.pos, f"expected ',' or ')', got {tok.text!r}")
            values.append(self.value().value)


@dataclass(frozen=True)
class Literal:
    value: Any
    pos: int


def _apply(column: Any, op: str, value: Any) -> ColumnElement[bool]:
    ops: dict[str, Callable[[], ColumnElement[bool]]] = {
        "=": lambda: column == value,
        "!=": lambda: column != value,
        "<>": lambda: column != value,
        "<": lambda: column < value,
        "<=": lambda: column <= value,
        ">": lambda: column > value,
        ">=": lambda: column >= value,
        "like": lambda: column.like(value),
        "ilike": lambda: column.ilike(value),
        "in": lambda: column.in_(value),
    }
    return ops[op]()


def _kind_of(value: Any) -> str:
    values = value if isinstance(value, list) else [value]
    if all(isinstance(v, bool) for v in values):
        return "bool"
    if all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
        return "number"
    if all(isinstance(v, str) for v in values):
        return "string"
    return "mixed"


def compile_condition(
    ident: Ident, op: str, literal: Literal, ordered: frozenset[str] = frozenset()
) -> ColumnElement[bool]:
    value, kind = literal.value, _kind_of(literal.value)
    if kind == "mixed":
        raise _fail(literal.pos, "the values in an 'in' list must all be numbers or all strings")
    if op in ("like", "ilike") and kind != "string":
        raise _fail(literal.pos, f"'{op}' needs a 'string' pattern")
    if ident.kind == "metric":
        if kind != "number":
            raise _fail(literal.pos, f"metrics.{ident.name} is a number; compare it with a number")
        column = getattr(metric_summaries.c, ident.field)
        if ident.name in ordered:
            # The query walks this metric's (key, value) index in order (the bound is
            # repeated on its join, see ``order_by``): a per-run check lets it stop at the
            # page's end, where an id list would be built whole first.
            return exists().where(
                metric_summaries.c.run_id == runs.c.id,
                metric_summaries.c.key == ident.name,
                _apply(column, op, value),
            )
        return _runs_in(
            metric_summaries.c.run_id,
            metric_summaries.c.key == ident.name,
            _apply(column, op, value),
        )
    if ident.kind == "param":
        if kind == "bool":
            value = [float(v) for v in value] if isinstance(value, list) else float(value)
            column = params.c.value_num
            type_cond: ColumnElement[bool] = params.c.value_type == "bool"
        elif kind == "number":
            column, type_cond = params.c.value_num, params.c.value_type != "bool"
        else:
            column, type_cond = params.c.value_str, true()
        where = [params.c.key == ident.name, type_cond]
        if ident.group is not None:
            where.append(params.c.group == ident.group)
        return _runs_in(params.c.run_id, *where, _apply(column, op, value))
    if ident.kind == "tag":
        if kind != "string":
            raise _fail(literal.pos, f"tags.{ident.name} is a string; compare it with a 'string'")
        return _runs_in(
            run_tags.c.run_id, run_tags.c.key == ident.name, _apply(run_tags.c.value, op, value)
        )
    return _attribute_condition(ident, op, literal, kind)


def _attribute_condition(ident: Ident, op: str, literal: Literal, kind: str) -> ColumnElement[bool]:
    column: ColumnClause[Any] = ATTRIBUTES[ident.name]
    value = literal.value
    if ident.name in TIME_ATTRIBUTES:
        values = value if isinstance(value, list) else [value]
        converted = [_to_millis(v, literal.pos) for v in values]
        value = converted if isinstance(value, list) else converted[0]
    elif ident.name in NUMBER_ATTRIBUTES:
        if kind != "number":
            raise _fail(literal.pos, f"{ident.name} is a number; compare it with a number")
    elif kind != "string":
        raise _fail(literal.pos, f"{ident.name} is a string; compare it with a 'string'")
    if ident.name == "status" and op in ("=", "!=", "<>", "in"):
        for status in value if isinstance(value, list) else [value]:
            if status not in RunStatus.__members__:
                raise _fail(
                    literal.pos,
                    f"unknown status {status!r}; use one of {list(RunStatus.__members__)}",
                )
    return _apply(column, op, value)


def _to_millis(value: Any, pos: int) -> int:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return int(value)
    if isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            raise _fail(
                pos, f"{value!r} is not an ISO date or time such as '2026-11-25T14:00'"
            ) from None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        return int(moment.timestamp() * 1000)
    raise _fail(pos, "times compare with an ISO date 'YYYY-MM-DD...' or milliseconds")


def _runs_in(run_id: Any, *where: ColumnElement[bool]) -> ColumnElement[bool]:
    # "runs.id IN (ids matching)" rather than a correlated EXISTS: the database reads the
    # matching ids once from the (key, value) index instead of probing once per run, and a
    # selective predicate (a param's value) then drives the whole query.
    return runs.c.id.in_(select(run_id).where(*where))


def compile_presence(ident: Ident) -> ColumnElement[bool]:
    """True where the identifier has a value (``is not null``)."""
    if ident.kind == "metric":
        return exists().where(
            metric_summaries.c.run_id == runs.c.id, metric_summaries.c.key == ident.name
        )
    if ident.kind == "param":
        where = [params.c.key == ident.name]
        if ident.group is not None:
            where.append(params.c.group == ident.group)
        return _runs_in(params.c.run_id, *where)
    if ident.kind == "tag":
        return _runs_in(run_tags.c.run_id, run_tags.c.key == ident.name)
    column: ColumnClause[Any] = ATTRIBUTES[ident.name]
    return column.is_not(None)


@dataclass(frozen=True)
class Filter:
    """A compiled filter, the metrics every matching run must have, and the bounds the
    filter puts on metrics in every case (comparisons joined by ``and`` at the top)."""

    where: ColumnElement[bool]
    metrics: frozenset[str]
    bounds: tuple[Bound, ...] = ()


Bound = tuple[str, str, str, Any]  # metric name, field, operator, value


def parse_filter(text: str | None, ordered: frozenset[str] = frozenset()) -> Filter:
    """Compile a filter; ``ordered`` names the metrics the query is ordered by."""
    if text is None or not text.strip():
        return Filter(true(), frozenset())
    if len(text) > 10_000:
        raise InvalidArgument("filter: longer than 10,000 characters")
    return _Parser(text, ordered).parse()


def ordered_metrics(texts: list[str] | None) -> frozenset[str]:
    """The metrics named by well-formed order_by terms (``order_by`` checks them all)."""
    names = set()
    for text in texts or []:
        try:
            tokens = tokenize(text) if isinstance(text, str) else []
            if tokens and tokens[0].kind == "ident":
                ident = parse_ident(tokens[0].text, tokens[0].pos)
                if ident.kind == "metric":
                    names.add(ident.name)
        except InvalidArgument:
            continue
    return frozenset(names)


def order_by(
    query: Select[Any],
    texts: list[str],
    required: frozenset[str],
    bounds: tuple[Bound, ...] = (),
) -> Select[Any]:
    """Add ORDER BY terms to a runs query; NULLs (missing values) sort last. ``bounds``
    (the filter's) are repeated on the joined metric, so that the database can walk the
    part of its (key, value) index they leave, in order, and stop at the page's end."""
    if len(texts) > MAX_ORDER_BY:
        raise InvalidArgument(
            f"order_by: {len(texts)} terms; at most {MAX_ORDER_BY} (each metric term is a join)"
        )
    for i, text in enumerate(texts, 1):
        if not isinstance(text, str) or len(text) > 1_000:
            raise InvalidArgument(f"order_by: term {i} is not an 'IDENTIFIER [ASC|DESC]' string")
        where = f"order_by term {i} ({text!r})"
        tokens = tokenize_order(text, where)
        words = [t.text for t in tokens]
        if (
            not words
            or len(words) > 2
            or tokens[0].kind != "ident"
            or (len(words) == 2 and words[1].lower() not in ("asc", "desc"))
        ):
            raise InvalidArgument(f"order_by: {text!r} is not 'IDENTIFIER [ASC|DESC]'")
        descending = len(words) == 2 and words[1].lower() == "desc"
        ident = parse_ident(words[0], tokens[0].pos, where)
        if ident.kind == "metric":
            # A join (not a subquery) lets the database walk the (key, last) index in order;
            # an inner one when the filter already demands the metric.
            summary = metric_summaries.alias()
            on = and_(
                summary.c.run_id == runs.c.id,
                summary.c.key == ident.name,
                *(
                    _apply(getattr(summary.c, field), op, value)
                    for name, field, op, value in bounds
                    if name == ident.name and field == ident.field
                ),
            )
            query = query.join(summary, on, isouter=ident.name not in required)
            columns: list[Any] = [getattr(summary.c, ident.field)]
        else:
            columns = order_columns(ident)
        for column in columns:
            query = query.order_by(
                column.desc().nulls_last() if descending else column.asc().nulls_last()
            )
    return query


def tokenize_order(text: str, where: str) -> list[Token]:
    try:
        return tokenize(text)
    except InvalidArgument as exc:
        raise InvalidArgument(exc.message.replace("filter:", f"{where}:", 1)) from None


def order_columns(ident: Ident) -> list[Any]:
    """Scalar expressions that sort runs by a param, tag or attribute."""
    if ident.kind == "param":
        where = [params.c.run_id == runs.c.id, params.c.key == ident.name]
        if ident.group is not None:
            where.append(params.c.group == ident.group)
        # Numbers sort by value, strings alphabetically: order by both columns.
        return [
            select(params.c.value_num).where(*where).limit(1).scalar_subquery(),
            select(params.c.value_str).where(*where).limit(1).scalar_subquery(),
        ]
    if ident.kind == "tag":
        return [
            select(run_tags.c.value)
            .where(run_tags.c.run_id == runs.c.id, run_tags.c.key == ident.name)
            .scalar_subquery()
        ]
    return [ATTRIBUTES[ident.name]]


class Statistics:
    """Keeps SQLite's table statistics (``ANALYZE``) fresh enough for search to plan well.

    Without them SQLite guesses that an experiment holds a few runs and scans all of them,
    probing each run's params, where a param predicate's index would give the few
    matching runs at once (10,000 runs: 55 ms against 5). Checked at most once a minute;
    redone when the store holds twice the runs it held at the last analysis.
    PostgreSQL keeps its own (autovacuum)."""

    MIN_RUNS = 1_000
    EVERY_S = 60.0

    def __init__(self, store: Store) -> None:
        self.store = store
        self._checked = -math.inf

    def refresh(self) -> None:
        if not self.store.is_sqlite or time.monotonic() - self._checked < self.EVERY_S:
            return
        self._checked = time.monotonic()
        with self.store.read() as conn:
            count = conn.execute(select(func.count()).select_from(runs)).scalar_one()
            if count < self.MIN_RUNS:
                return
            analysed = None
            if conn.exec_driver_sql(_HAS_STATS).first() is not None:
                analysed = conn.exec_driver_sql(_RUNS_ANALYSED).scalar()
        if analysed is not None and count <= 2 * int(str(analysed).split()[0]):
            return
        with self.store.write() as conn:
            conn.exec_driver_sql("PRAGMA analysis_limit=1000")  # samples: milliseconds
            conn.exec_driver_sql("ANALYZE")


_HAS_STATS = "SELECT 1 FROM sqlite_master WHERE name = 'sqlite_stat1'"
_RUNS_ANALYSED = "SELECT stat FROM sqlite_stat1 WHERE tbl = 'runs' LIMIT 1"
