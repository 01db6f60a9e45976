"""Names in the feature store: identifiers, feature references and online table names."""

from __future__ import annotations

import re
from collections.abc import Iterable

from plinth.errors import InvalidArgument
from plinth.features.types import FeatureGroup

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,99}$")


def check_identifier(name: str, what: str) -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        raise InvalidArgument(
            f"{what} {name!r} is not valid: use letters, digits and '_', starting with a letter or '_'"
        )
    return name


def parse_ref(ref: str) -> tuple[str, int | None, str]:
    """``"group:feature"`` or ``"group:v2:feature"`` -> (group, version or None, feature)."""
    parts = ref.split(":") if isinstance(ref, str) else []
    if len(parts) == 2 and all(parts):
        return parts[0], None, parts[1]
    if len(parts) == 3 and parts[1][:1] == "v" and parts[1][1:].isdigit() and parts[0] and parts[2]:
        return parts[0], int(parts[1][1:]), parts[2]
    raise InvalidArgument(f"feature reference {ref!r} is not 'group:feature' or 'group:v2:feature'")


def by_group(features: Iterable[str]) -> dict[tuple[str, int | None], list[str]]:
    """Feature references grouped by (group, version or None), in request order."""
    grouped: dict[tuple[str, int | None], list[str]] = {}
    for ref in features:
        name, version, feature = parse_ref(ref)
        grouped.setdefault((name, version), []).append(feature)
    return grouped


def online_table(group: FeatureGroup) -> str:
    return f"{group.name}__v{group.version}"
