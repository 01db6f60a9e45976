"""MLflow's search syntax, parsed and translated into Plinth's filter language
(``plinth.tracking.search``) or checked in Python where Plinth's language has no word for it.

MLflow's filters are comparisons joined by ``AND`` (no ``OR``, no parentheses):

    metrics.rmse < 1 and params.model = 'lgbm' and tags."team name" = 'risk'
    and attributes.status IN ('FINISHED', 'FAILED') and dataset.name LIKE 'train%'

An identifier is ``ENTITY.KEY`` split at its first dot (``metrics.val.f1`` is the metric
``val.f1``), the key bare, in double quotes or in backticks; a bare word is an attribute.
The translation never splices user text: every name goes in backticks, every string
literal is escaped, every number is re-printed from its value.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from plinth.errors import InvalidArgument

Value = str | int | float | tuple[str, ...]

_ENTITIES = {
    "metric": "metric",
    "metrics": "metric",
    "param": "param",
    "params": "param",
    "parameter": "param",
    "parameters": "param",
    "tag": "tag",
    "tags": "tag",
    "attribute": "attribute",
    "attributes": "attribute",
    "attr": "attribute",
    "run": "attribute",
    "dataset": "dataset",
    "datasets": "dataset",
}
_ALIASES = {"created": "start_time", "Created": "start_time"}
_ALIASES.update({name: "run_name" for name in ("run name", "Run name", "Run Name")})
NUMERIC_OPS = ("=", "!=", "<", "<=", ">", ">=")
STRING_OPS = ("=", "!=", "LIKE", "ILIKE")
LIST_OPS = ("IN", "NOT IN")
RUN_ATTRIBUTES = {
    # MLflow attribute -> Plinth attribute (artifact_uri is taken apart, see _artifact_uri)
    "run_id": "id",
    "run_name": "name",
    "status": "status",
    "user_id": "owner",
    "start_time": "start_time",
    "end_time": "end_time",
    "artifact_uri": "",
}
NUMERIC_ATTRIBUTES = {"start_time", "end_time"}
DATASET_KEYS = {"name", "digest", "context"}
PLINTH_STATUSES = {"RUNNING", "FINISHED", "FAILED", "KILLED"}
RUN_NAME_TAG = "mlflow.runName"
MAX_FILTER = 10_000
_ALWAYS = "id is not null"
_NEVER = "id is null"


@dataclass(frozen=True)
class Comparison:
    entity: str  # metric | param | tag | attribute | dataset
    key: str
    op: str  # one of NUMERIC_OPS, STRING_OPS, LIST_OPS
    value: Value


def _fail(what: str, pos: int, problem: str) -> InvalidArgument:
    return InvalidArgument(f"{what}: at position {pos}: {problem}")


# -- tokens ----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Token:
    kind: str  # ident | word | string | number | op | punct
    pos: int  # 1-based
    text: str = ""
    entity: str | None = None  # ident: the part before the first dot
    value: Any = None


_NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*(?:[eE][-+]?\d+)?|\.\d+(?:[eE][-+]?\d+)?)")
_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_BARE_KEY = re.compile(r"[A-Za-z0-9_.]+")
_OPS = ("<=", ">=", "!=", "<>", "=", "<", ">")


def _quoted(text: str, i: int, quote: str, what: str) -> tuple[str, int]:
    """The text of a quoted string starting at ``i`` (doubled quotes and backslash
    escapes taken), and the position after it."""
    out: list[str] = []
    j = i + 1
    while j < len(text):
        c = text[j]
        if c == "\\" and quote != "`" and j + 1 < len(text):
            out.append(text[j + 1])
            j += 2
        elif c == quote:
            if quote != "`" and text.startswith(quote, j + 1):
                out.append(quote)
                j += 2
            else:
                return "".join(out), j + 1
        else:
            out.append(c)
            j += 1
    raise _fail(what, i + 1, f"the {quote} opened here is never closed")


def _tokenize(text: str, what: str) -> list[_Token]:
    tokens: list[_Token] = []
    i = 0
    while i < len(text):
        c = text[i]
        if c.isspace():
            i += 1
        elif c in "'\"":
            value, i2 = _quoted(text, i, c, what)
            tokens.append(_Token("string", i + 1, text[i:i2], value=value))
            i = i2
        elif (m := _NUMBER.match(text, i)) and not (
            c in "+-" and tokens and tokens[-1].kind in ("ident", "number", "string")
        ):
            literal = m.group()
            integral = not any(ch in literal for ch in ".eE")
            parsed = int(literal) if integral else float(literal)
            if not math.isfinite(parsed):
                raise _fail(what, i + 1, f"{literal} is not a finite number")
            tokens.append(_Token("number", i + 1, literal, value=parsed))
            i = m.end()
        elif c == "`" or _WORD.match(text, i):
            tokens.append(_identifier(text, i, what))
            i = tokens[-1].pos - 1 + len(tokens[-1].text)
        elif op := next((o for o in _OPS if text.startswith(o, i)), None):
            tokens.append(_Token("op", i + 1, op))
            i += len(op)
        elif c in "(),":
            tokens.append(_Token("punct", i + 1, c))
            i += 1
        else:
            raise _fail(what, i + 1, f"unexpected character {c!r}")
    return tokens


def _identifier(text: str, i: int, what: str) -> _Token:
    start = i
    if text[i] == "`":
        head, i = _quoted(text, i, "`", what)
    else:
        m = _WORD.match(text, i)
        assert m is not None
        head, i = m.group(), m.end()
    if i >= len(text) or text[i] != ".":
        kind = "word" if text[start] != "`" else "ident"
        return _Token(kind, start + 1, text[start:i], value=head)
    i += 1
    if i < len(text) and text[i] in '`"':
        key, i = _quoted(text, i, text[i], what)
    else:
        m = _BARE_KEY.match(text, i)
        if m is None:
            raise _fail(what, i + 1, f"expected a name after {head!r}.")
        key, i = m.group(), m.end()
    return _Token("ident", start + 1, text[start:i], entity=head, value=key)


# -- comparisons -----------------------------------------------------------------------


def parse(text: str | None, what: str = "filter") -> list[Comparison]:
    """MLflow's filter as comparisons (all must hold); entity and key are not checked here."""
    if text is None or not text.strip():
        return []
    if len(text) > MAX_FILTER:
        raise InvalidArgument(f"{what}: longer than {MAX_FILTER:,} characters")
    tokens = _tokenize(text, what)
    found: list[Comparison] = []
    i = 0
    while True:
        comparison, i = _comparison(tokens, i, text, what)
        found.append(comparison)
        if i == len(tokens):
            return found
        tok = tokens[i]
        if tok.kind == "word" and tok.value.upper() == "AND":
            i += 1
            continue
        if tok.kind == "word" and tok.value.upper() == "OR":
            raise _fail(what, tok.pos, "MLflow's search syntax joins comparisons with AND only")
        raise _fail(what, tok.pos, f"expected AND or the end of the filter, got {tok.text!r}")


def _comparison(tokens: list[_Token], i: int, text: str, what: str) -> tuple[Comparison, int]:
    def at(j: int, expected: str) -> _Token:
        if j >= len(tokens):
            raise _fail(what, len(text) + 1, f"expected {expected}, got the end of the filter")
        return tokens[j]

    ident = at(i, "an identifier such as metrics.rmse")
    if ident.kind == "word" and ident.value.upper() in ("AND", "OR", "NOT", "IN", "LIKE", "ILIKE"):
        raise _fail(what, ident.pos, f"expected an identifier, got {ident.text!r}")
    if ident.kind not in ("ident", "word"):
        raise _fail(
            what, ident.pos, f"expected an identifier such as metrics.rmse, got {ident.text!r}"
        )
    entity, key = _entity(ident, what)
    op_tok = at(i + 1, "a comparison operator")
    j = i + 2
    if op_tok.kind == "op":
        op = "!=" if op_tok.text == "<>" else op_tok.text
    elif op_tok.kind == "word" and op_tok.value.upper() in ("LIKE", "ILIKE", "IN"):
        op = op_tok.value.upper()
    elif op_tok.kind == "word" and op_tok.value.upper() == "NOT":
        nxt = at(j, "IN")
        if nxt.kind != "word" or nxt.value.upper() != "IN":
            raise _fail(what, nxt.pos, f"expected IN after NOT, got {nxt.text!r}")
        op, j = "NOT IN", j + 1
    else:
        raise _fail(
            what,
            op_tok.pos,
            f"expected an operator (=, !=, <, <=, >, >=, LIKE, ILIKE, IN, NOT IN), got {op_tok.text!r}",
        )
    if op in LIST_OPS:
        values, j = _value_list(tokens, j, at, what)
        return Comparison(entity, key, op, values), j
    tok = at(j, "a value")
    if tok.kind not in ("string", "number"):
        raise _fail(what, tok.pos, f"expected a 'string' or a number, got {tok.text!r}")
    return Comparison(entity, key, op, tok.value), j + 1


def _value_list(
    tokens: list[_Token], j: int, at: Callable[[int, str], _Token], what: str
) -> tuple[tuple[str, ...], int]:
    open_tok = at(j, "'('")
    if open_tok.text != "(":
        raise _fail(what, open_tok.pos, f"expected '(' after IN, got {open_tok.text!r}")
    values: list[str] = []
    j += 1
    while True:
        tok = at(j, "a quoted string")
        if tok.kind != "string":
            raise _fail(what, tok.pos, f"IN takes a list of quoted strings, got {tok.text!r}")
        values.append(tok.value)
        sep = at(j + 1, "',' or ')'")
        j += 2
        if sep.text == ")":
            return tuple(values), j
        if sep.text != ",":
            raise _fail(what, sep.pos, f"expected ',' or ')', got {sep.text!r}")


def _entity(tok: _Token, what: str) -> tuple[str, str]:
    if tok.entity is None:  # a bare word or a backquoted name: an attribute
        return "attribute", _ALIASES.get(tok.value, tok.value)
    entity = _ENTITIES.get(tok.entity)
    if entity is None:
        raise _fail(
            what,
            tok.pos,
            f"unknown entity {tok.entity!r}; use metrics., params., tags., attributes. or dataset.",
        )
    key = tok.value
    if not key:
        raise _fail(what, tok.pos, f"{tok.text!r} names nothing")
    return entity, _ALIASES.get(key, key) if entity == "attribute" else key


# -- runs: the translation -------------------------------------------------------------


@dataclass(frozen=True)
class RunFilter:
    """A run filter as Plinth's filter text (None: every run) and the dataset checks
    Plinth's language cannot say, made on the runs it returns."""

    plinth: str | None
    datasets: tuple[Comparison, ...] = ()

    def keeps(self, inputs: Iterable[Any]) -> bool:
        """Whether a run with these inputs (``DatasetInput``) passes the dataset checks."""
        chosen = list(inputs)
        return all(
            any(_matches(getattr(d, c.key) or "", c.op, c.value) for d in chosen)
            for c in self.datasets
        )


def run_filter(text: str | None) -> RunFilter:
    parts: list[str] = []
    datasets: list[Comparison] = []
    for c in parse(text):
        if c.entity == "dataset":
            datasets.append(_check_dataset(c))
        else:
            parts.append(_translate(c))
    return RunFilter(" and ".join(parts) if parts else None, tuple(datasets))


def _translate(c: Comparison) -> str:
    if c.entity == "metric":
        _need(c, NUMERIC_OPS, f"metrics.{c.key}")
        return f"metrics.{name(c.key)} {c.op} {number(c.value, f'metrics.{c.key}')}"
    if c.entity == "param":
        return _param(c)
    if c.entity == "tag":
        if c.key == RUN_NAME_TAG:
            return _string_attribute(Comparison("attribute", "run_name", c.op, c.value), "name")
        _need(c, STRING_OPS, f"tags.{c.key}")
        return f"tags.{name(c.key)} {c.op.lower()} {string(c.value, f'tags.{c.key}')}"
    return _attribute(c)


def _need(c: Comparison, ops: tuple[str, ...], label: str) -> None:
    if c.op not in ops:
        raise InvalidArgument(f"filter: {label} takes the operators {', '.join(ops)}, not {c.op}")


def _param(c: Comparison) -> str:
    label = f"params.{c.key}"
    _need(c, STRING_OPS, label)
    literal = string(c.value, label)
    op = c.op.lower()
    alternatives = []
    # MLflow's params are Plinth's "default" group; other groups show as GROUP.KEY
    candidates = [("default", c.key)] + [
        (c.key[:i], c.key[i + 1 :])
        for i, ch in enumerate(c.key)
        if ch == "." and 0 < i < len(c.key) - 1 and c.key[:i] != "default"
    ]
    for group, key in candidates:
        ident = f"params.{name(group)}.{name(key)}"
        alternatives.append(f"{ident} {op} {literal}")
        # a param Plinth logged as a number shows as its text: '0.1' matches it too
        if op in ("=", "!=") and isinstance(c.value, str) and _canonical_number(c.value):
            alternatives.append(f"{ident} {op} {number(_as_number(c.value), label)}")
    return alternatives[0] if len(alternatives) == 1 else f"({' or '.join(alternatives)})"


def _attribute(c: Comparison) -> str:
    if c.key not in RUN_ATTRIBUTES:
        raise InvalidArgument(
            f"filter: unknown attribute {c.key!r}; MLflow's searchable run attributes here "
            f"are {', '.join(sorted(RUN_ATTRIBUTES))}"
        )
    if c.key in NUMERIC_ATTRIBUTES:
        _need(c, NUMERIC_OPS, c.key)
        return f"{c.key} {c.op} {number(c.value, c.key)}"
    if c.key == "artifact_uri":
        return _artifact_uri(c)
    if c.key == "status":
        return _status(c)
    return _string_attribute(c, RUN_ATTRIBUTES[c.key])


def _string_attribute(c: Comparison, plinth_name: str) -> str:
    _need(c, STRING_OPS + LIST_OPS, c.key)
    if isinstance(c.value, tuple):
        listed = ", ".join(string(v, c.key) for v in c.value)
        return f"{plinth_name} {c.op.lower()} ({listed})"
    return f"{plinth_name} {c.op.lower()} {string(c.value, c.key)}"


def _status(c: Comparison) -> str:
    # MLflow knows SCHEDULED (and any text compares); Plinth refuses a status it does not
    # have, where MLflow simply matches nothing
    _need(c, STRING_OPS + LIST_OPS, "status")
    if c.op in ("LIKE", "ILIKE"):
        return _string_attribute(c, "status")
    values = _strings(c, "status")
    known = tuple(v for v in values if v in PLINTH_STATUSES)
    positive = c.op in ("=", "IN")
    if not known:
        return _NEVER if positive else _ALWAYS
    op = {"=": "IN", "!=": "NOT IN"}.get(c.op, c.op)
    return _string_attribute(Comparison("attribute", "status", op, known), "status")


_ARTIFACT_URI = re.compile(r"mlflow-artifacts:/([0-9a-f]{32})/([0-9a-f]{32})/artifacts/?")


def _artifact_uri(c: Comparison) -> str:
    _need(c, ("=", "!=", *LIST_OPS), "artifact_uri")
    values = _strings(c, "artifact_uri")
    runs = []
    for value in values:
        m = _ARTIFACT_URI.fullmatch(value)
        if m is not None:  # any other URI is no run's
            runs.append(f"(experiment_id = '{m.group(1)}' and id = '{m.group(2)}')")
    matching = f"({' or '.join(runs)})" if runs else _NEVER
    return matching if c.op in ("=", "IN") else f"not {matching}"


def _strings(c: Comparison, label: str) -> tuple[str, ...]:
    if isinstance(c.value, tuple):
        return c.value
    string(c.value, label)  # refuses a number
    return (str(c.value),)


def _check_dataset(c: Comparison) -> Comparison:
    if c.key not in DATASET_KEYS:
        raise InvalidArgument(
            f"filter: dataset.{c.key} cannot be searched here; use dataset.name, "
            "dataset.digest or dataset.context"
        )
    _need(c, STRING_OPS + LIST_OPS, f"dataset.{c.key}")
    if not isinstance(c.value, str | tuple):
        raise InvalidArgument(f"filter: dataset.{c.key} compares with a quoted string")
    return c


# -- runs: order_by --------------------------------------------------------------------


def run_order_by(terms: list[str] | None) -> list[str] | None:
    """MLflow's order_by as Plinth's; ties go by start time, newest first, as in MLflow."""
    if not terms:
        return None
    translated: list[str] = []
    for i, term in enumerate(terms, 1):
        what = f"order_by term {i}"
        if not isinstance(term, str) or len(term) > 1_000:
            raise InvalidArgument(f"{what} is not an 'IDENTIFIER [ASC|DESC]' string")
        tokens = _tokenize(term, what)
        if (
            not tokens
            or len(tokens) > 2
            or tokens[0].kind not in ("ident", "word")
            or (
                len(tokens) == 2
                and (tokens[1].kind != "word" or tokens[1].value.upper() not in ("ASC", "DESC"))
            )
        ):
            raise InvalidArgument(f"{what} ({term!r}) is not 'IDENTIFIER [ASC|DESC]'")
        direction = " DESC" if len(tokens) == 2 and tokens[1].value.upper() == "DESC" else ""
        entity, key = _entity(tokens[0], what)
        translated += [f"{column}{direction}" for column in _order_columns(entity, key, what)]
    if not any(t.split()[0] == "start_time" for t in translated):
        translated.append("start_time DESC")
    return translated


def _order_columns(entity: str, key: str, what: str) -> list[str]:
    if entity == "metric":
        return [f"metrics.{name(key)}"]
    if entity == "param":
        return [f"params.{name('default')}.{name(key)}"]
    if entity == "tag":
        return ["name"] if key == RUN_NAME_TAG else [f"tags.{name(key)}"]
    if entity == "attribute" and key in RUN_ATTRIBUTES:
        return ["experiment_id", "id"] if key == "artifact_uri" else [RUN_ATTRIBUTES[key]]
    raise InvalidArgument(
        f"{what}: cannot order by {entity} {key!r}; use metrics.KEY, params.KEY, tags.KEY "
        f"or one of {', '.join(sorted(RUN_ATTRIBUTES))}"
    )


# -- experiments (checked in Python: Plinth lists experiments by name only) -------------

EXPERIMENT_ATTRIBUTES = {"name", "creation_time", "last_update_time"}
EXPERIMENT_ORDER = {"name", "experiment_id", "creation_time", "last_update_time"}


def experiment_filter(text: str | None) -> Callable[[dict[str, Any]], bool]:
    """A check of an experiment (its MLflow JSON) against MLflow's experiment filter."""
    checks: list[Comparison] = []
    for c in parse(text):
        if c.entity == "attribute" and c.key in EXPERIMENT_ATTRIBUTES:
            numeric = c.key != "name"
            _need(c, NUMERIC_OPS if numeric else STRING_OPS, c.key)
            if numeric:
                number(c.value, c.key)
            else:
                string(c.value, c.key)
        elif c.entity == "tag":
            _need(c, STRING_OPS, f"tags.{c.key}")
            string(c.value, f"tags.{c.key}")
        else:
            raise InvalidArgument(
                f"filter: experiments are searched by name, creation_time, last_update_time "
                f"and tags.KEY, not by {c.entity} {c.key!r}"
            )
        checks.append(c)

    def keeps(experiment: dict[str, Any]) -> bool:
        for c in checks:
            if c.entity == "tag":
                tags = {t["key"]: t["value"] for t in experiment.get("tags", [])}
                if c.key not in tags or not _matches(tags[c.key], c.op, c.value):
                    return False
            elif not _matches(experiment[c.key], c.op, c.value):
                return False
        return True

    return keeps


def experiment_order(terms: list[str] | None) -> list[tuple[str, bool]]:
    """(field, descending) pairs; ties by experiment id, as in MLflow."""
    found: list[tuple[str, bool]] = []
    for i, term in enumerate(terms or [], 1):
        words = term.split() if isinstance(term, str) else []
        if not 1 <= len(words) <= 2 or (
            len(words) == 2 and words[1].upper() not in ("ASC", "DESC")
        ):
            raise InvalidArgument(f"order_by term {i} ({term!r}) is not 'FIELD [ASC|DESC]'")
        field = words[0].removeprefix("attributes.").removeprefix("attribute.")
        if field not in EXPERIMENT_ORDER:
            raise InvalidArgument(
                f"order_by term {i}: cannot order experiments by {words[0]!r}; use one of "
                f"{', '.join(sorted(EXPERIMENT_ORDER))}"
            )
        found.append((field, len(words) == 2 and words[1].upper() == "DESC"))
    if not found:
        found.append(("creation_time", True))
    if all(f != "experiment_id" for f, _ in found):
        found.append(("experiment_id", False))
    return found


# -- literals --------------------------------------------------------------------------


def name(text: str) -> str:
    """A name as a Plinth identifier part (always backquoted)."""
    if "`" in text:
        raise InvalidArgument(
            f"filter: the name {text!r} has a backtick (`): it cannot be searched"
        )
    if not text:
        raise InvalidArgument("filter: an empty name cannot be searched")
    return f"`{text}`"


def string(value: Value, label: str) -> str:
    """A string as a Plinth literal: backslashes and quotes escaped."""
    if not isinstance(value, str):
        raise InvalidArgument(f"filter: {label} compares with a quoted string, not {value!r}")
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def number(value: Value, label: str) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidArgument(f"filter: {label} compares with a number, not {value!r}")
    return str(value) if isinstance(value, int) else repr(value)


def _as_number(text: str) -> int | float:
    try:
        return int(text)
    except ValueError:
        return float(text)


def _canonical_number(text: str) -> bool:
    """Whether ``text`` is how a number param shows (see ``param_text``)."""
    try:
        return str(int(text)) == text
    except ValueError:
        pass
    try:
        value = float(text)
    except ValueError:
        return False
    return math.isfinite(value) and repr(value) == text


def _matches(actual: Any, op: str, expected: Value) -> bool:
    if op in LIST_OPS:
        assert isinstance(expected, tuple)
        return (actual in expected) == (op == "IN")
    if op in ("LIKE", "ILIKE"):
        assert isinstance(expected, str)
        return like(str(actual), expected, op == "ILIKE")
    if isinstance(expected, str) != isinstance(actual, str):
        return False
    compare: dict[str, Callable[[Any, Any], bool]] = {
        "=": lambda a, b: a == b,
        "!=": lambda a, b: a != b,
        "<": lambda a, b: a < b,
        "<=": lambda a, b: a <= b,
        ">": lambda a, b: a > b,
        ">=": lambda a, b: a >= b,
    }
    return compare[op](actual, expected)


def like(text: str, pattern: str, ignore_case: bool = False) -> bool:
    """SQL's LIKE: ``%`` any run of characters, ``_`` any one."""
    body = "".join(".*" if c == "%" else "." if c == "_" else re.escape(c) for c in pattern)
    flags = re.DOTALL | (re.IGNORECASE if ignore_case else 0)
    return re.fullmatch(body, text, flags) is not None
