"""MLflow's search filters and order_by for registered models and model versions:
``name = 'x' AND tags.`a b` LIKE 'y%'``, comparisons joined by AND, parsed here and applied
in Python to what the registry service lists (never spliced into SQL)."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from plinth.errors import InvalidArgument
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
_TOKEN = re.compile(
    r"""\s*(?:(?P<string>'(?:[^']|'')*'|"(?:[^"\\]|\\.)*")|(?P<number>-?\d+)(?![\w.])
    |(?P<op>!=|<>|<=|>=|=|<|>|\(|\)|,)
    |(?P<word>[A-Za-z_][A-Za-z0-9_]*(?:\.(?:`[^`]+`|"[^"]+"|[A-Za-z0-9_.\-]+))?|`[^`]+`))""",
    re.X,
)
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
    tokens = _tokens(text or "")
    clauses: list[_Clause] = []
    i = 0
    while i < len(tokens):
        if clauses:
            if tokens[i] != ("word", "AND"):
                raise _bad(text, f"expected AND before {tokens[i][1]!r} (OR is not supported)")
            i += 1
        clause, i = _clause(tokens, i, spec, text or "")
        clauses.append(clause)
    return Filter(clauses)


def _tokens(text: str) -> list[tuple[str, str]]:
    found, at = [], 0
    while text[at:].strip():
        match = _TOKEN.match(text, at)
        if match is None or not match.lastgroup:
            raise _bad(text, f"cannot read it from {text[at:].strip()[:30]!r}")
        kind, value = match.lastgroup, match.group(match.lastgroup)
        if kind == "word" and value.upper() in ("AND", "LIKE", "ILIKE", "IN", "NOT"):
            value = value.upper()
        found.append((kind, value))
        at = match.end()
    return found


def _clause(tokens: list[tuple[str, str]], i: int, spec: _Spec, text: str) -> tuple[_Clause, int]:
    def at(j: int) -> tuple[str, str]:
        if j >= len(tokens):
            raise _bad(text, "it ends in the middle of a comparison")
        return tokens[j]

    kind, ident = at(i)
    if kind != "word":
        raise _bad(text, f"expected a name such as name or tags.KEY, not {ident!r}")
    prefix, dot, rest = ident.partition(".")
    tag = bool(dot) and prefix in ("tag", "tags")
    if dot and not tag and prefix not in ("attribute", "attributes"):
        raise _bad(text, f"{ident!r}: the prefixes are tags. and attribute.")
    key = _unquote(rest if dot else ident)
    kind_of = "tag" if tag else spec.attributes.get(key)
    if kind_of is None:
        valid = ", ".join(sorted(spec.attributes))
        raise _bad(text, f"{spec.what} have no attribute {key!r} (valid: {valid}, tags.KEY)")
    op = at(i + 1)[1]
    i += 2
    if op == "NOT" and at(i) == ("word", "IN"):
        op, i = "NOT IN", i + 1
    op = "!=" if op == "<>" else op
    if op not in _OPS[kind_of]:
        raise _bad(
            text, f"{ident} does not take {op!r} (it takes {', '.join(sorted(_OPS[kind_of]))})"
        )
    value: Any
    if op in ("IN", "NOT IN"):
        value, i = _value_list(tokens, i, text)
    else:
        vkind, raw = at(i)
        i += 1
        if vkind not in ("string", "number"):
            raise _bad(text, f"expected a quoted value after {ident} {op}, not {raw!r}")
        value = _unquote(raw) if vkind == "string" else raw
        if kind_of == "number":
            if not re.fullmatch(r"-?\d+", value):
                raise _bad(text, f"{ident} is compared with a whole number, not {raw}")
            value = int(value)
        elif vkind != "string":
            raise _bad(text, f"{ident} is compared with a quoted string such as '{raw}'")
    return _Clause(tag, key, op, value), i


def _value_list(tokens: list[tuple[str, str]], i: int, text: str) -> tuple[tuple[str, ...], int]:
    if i >= len(tokens) or tokens[i] != ("op", "("):
        raise _bad(text, "IN takes a list of quoted values in parentheses: ('a', 'b')")
    values: list[str] = []
    i += 1
    while i < len(tokens) and tokens[i][0] == "string":
        values.append(_unquote(tokens[i][1]))
        i += 1
        if i < len(tokens) and tokens[i] == ("op", ","):
            i += 1
    if i >= len(tokens) or tokens[i] != ("op", ")") or not values:
        raise _bad(text, "IN takes a list of quoted values in parentheses: ('a', 'b')")
    return tuple(values), i + 1


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
        return _like(value, op == "ILIKE").fullmatch(str(lhs)) is not None
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


def _like(pattern: str, ignore_case: bool) -> re.Pattern[str]:
    parts = ("." if c == "_" else ".*" if c == "%" else re.escape(c) for c in pattern)
    return re.compile("".join(parts), re.S | (re.I if ignore_case else 0))


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
