"""MLflow's search filters and order_by for registered models and model versions:
``name = 'x' AND tags.`a b` LIKE 'y%'``, comparisons joined by AND, read by the runs'
parser (``filters.parse``), checked here and applied in Python to what the registry service
lists (never spliced into SQL)."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from plinth.errors import InvalidArgument
from plinth.server.mlflow.filters import Comparison, like, parse
from plinth.store.sql import decode_page_token, encode_page_token


@dataclass(frozen=True)
class _Spec:
    what: str
    attributes: dict[str, str]  # attribute -> "string" | "number"
    order_keys: tuple[str, ...]
    tiebreak: tuple[tuple[str, bool], ...]


MODELS = _Spec(
    "registered models",
    {"name": "string"},
    ("name", "creation_timestamp", "last_updated_timestamp"),
    (("name", True),),
)
VERSIONS = _Spec(
    "model versions",
    {"name": "string", "run_id": "string", "source_path": "string", "version_number": "number"},
    ("name", "version_number", "creation_timestamp", "last_updated_timestamp"),
    (("name", True), ("version_number", False)),
)
_PROMPT_TAG = "mlflow.prompt.is_prompt"  # MLflow clients filter prompts out by it
_OPS = {
    "string": {"=", "!=", "LIKE", "ILIKE", "IN", "NOT IN"},
    "number": {"=", "!=", "<", "<=", ">", ">="},
    "tag": {"=", "!=", "LIKE", "ILIKE"},
}


@dataclass(frozen=True)
class _Clause:
    tag: bool
    key: str
    op: str
    value: Any  # str, int, or tuple of str (IN)


class Filter:
    """A parsed filter: called with an item's attributes and tags, whether it matches."""

    def __init__(self, clauses: list[_Clause]) -> None:
        self.clauses = clauses

    @property
    def exact(self) -> dict[str, str]:
        """The attributes the filter pins to one value (to narrow a listing by)."""
        return {
            c.key: c.value
            for c in self.clauses
            if not c.tag and c.op == "=" and isinstance(c.value, str)
        }

    def __call__(self, fields: dict[str, Any], tags: dict[str, str]) -> bool:
        return all(_matches(c, fields, tags) for c in self.clauses)


def parse_filter(text: str | None, spec: _Spec) -> Filter:
    """MLflow's filter (read by the runs' parser) checked against what ``spec`` has."""
    return Filter([_clause(c, spec, text) for c in parse(text)])


def _clause(c: Comparison, spec: _Spec, text: str | None) -> _Clause:
    if c.entity not in ("tag", "attribute"):
        raise _bad(text, f"{c.entity} {c.key!r}: the prefixes are tags. and attribute.")
    kind = "tag" if c.entity == "tag" else spec.attributes.get(c.key)
    if kind is None:
        valid = ", ".join(sorted(spec.attributes))
        raise _bad(text, f"{spec.what} have no attribute {c.key!r} (valid: {valid}, tags.KEY)")
    if c.op not in _OPS[kind]:
        raise _bad(
            text, f"{c.key} does not take {c.op!r} (it takes {', '.join(sorted(_OPS[kind]))})"
        )
    value = c.value
    if kind == "number":  # a whole number, or one in quotes
        if isinstance(value, str) and re.fullmatch(r"-?\d+", value):
            value = int(value)
        if not isinstance(value, int):
            raise _bad(text, f"{c.key} is compared with a whole number, not {value!r}")
    elif not isinstance(value, str | tuple):
        raise _bad(text, f"{c.key} is compared with a quoted string such as '{value}'")
    return _Clause(kind == "tag", c.key, c.op, value)


def _unquote(text: str) -> str:
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"`":
        inner = text[1:-1]
        return inner.replace("''", "'") if text[0] == "'" else inner.replace('\\"', '"')
    return text


def _bad(text: str | None, why: str) -> InvalidArgument:
    return InvalidArgument(f"invalid filter {text!r}: {why}")


def _matches(clause: _Clause, fields: dict[str, Any], tags: dict[str, str]) -> bool:
    lhs = tags.get(clause.key) if clause.tag else fields.get(clause.key)
    op, value = clause.op, clause.value
    if lhs is None:
        if clause.tag and clause.key == _PROMPT_TAG:  # a model is not a prompt
            return (op, value) in (("=", "false"), ("!=", "true"))
        return op == "NOT IN"
    if op in ("LIKE", "ILIKE"):
        return like(str(lhs), value, op == "ILIKE")
    compare: dict[str, Callable[[Any, Any], bool]] = {
        "=": lambda a, b: a == b,
        "!=": lambda a, b: a != b,
        "<": lambda a, b: a < b,
        "<=": lambda a, b: a <= b,
        ">": lambda a, b: a > b,
        ">=": lambda a, b: a >= b,
        "IN": lambda a, b: a in b,
        "NOT IN": lambda a, b: a not in b,
    }
    return compare[op](lhs, value)


def page(
    items: list[Any],
    spec: _Spec,
    order_by: list[str],
    fields_of: Callable[[Any], dict[str, Any]],
    max_results: int,
    token: str | None,
) -> tuple[list[Any], str | None]:
    """Sort by ``order_by`` (MLflow's "key [ASC|DESC]", ties by the spec's tiebreak), then
    one page: the items and the next page's token."""
    keys: list[tuple[str, bool]] = []
    for entry in order_by:
        words = entry.split()
        direction = words[1].upper() if len(words) == 2 else "ASC"
        key = _unquote(words[0].removeprefix("attribute.")) if words else ""
        if (
            len(words) not in (1, 2)
            or direction not in ("ASC", "DESC")
            or key not in spec.order_keys
        ):
            raise InvalidArgument(
                f"order_by {entry!r} is not valid: give one of {', '.join(spec.order_keys)}, "
                "optionally followed by ASC or DESC"
            )
        keys.append((key, direction == "ASC"))
    keys += [t for t in spec.tiebreak if t[0] not in {k for k, _ in keys}]
    rows = [(fields_of(item), item) for item in items]
    for key, ascending in reversed(keys):  # stable sorts: the first key decides last
        rows.sort(key=lambda row: row[0][key], reverse=not ascending)
    offset = decode_page_token(token)
    chosen = [item for _, item in rows[offset : offset + max_results]]
    more = len(rows) > offset + max_results
    return chosen, encode_page_token(offset + max_results) if more else None
