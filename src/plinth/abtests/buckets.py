"""Deterministic, sticky assignment of units (users, sessions, requests) to arms.

The function, to reproduce it in any language::

    digest = SHA-1( UTF-8( salt + ":" + unit_id ) )
    bucket = (first 8 bytes of digest, as an unsigned big-endian integer) mod 10,000

A unit's bucket depends on nothing but the experiment's salt and its own id, so every
router replica, every restart and the embedded mode agree. An ``Allocation`` gives each arm
ranges of buckets; changing the shares (``allocate`` with the previous allocation) moves
only the buckets it must: an arm that shrinks gives up its highest buckets, an arm that
grows takes the freed ones, everyone else keeps their arm.

Layers make experiments mutually exclusive: a layer hashes the unit with its own salt, and
each experiment of the layer owns a share of the layer's buckets (the same ``Allocation``,
experiments in place of arms); a unit is in at most one of them.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from plinth.errors import InvalidArgument

BUCKETS = 10_000


MAX_UNIT_CHARS = 500  # as an event's unit: a unit exposed must be one its outcomes can name


def check_unit_id(unit: str, where: str = "unit_id") -> str:
    """``unit`` if it can be a unit id: non-empty text of at most ``MAX_UNIT_CHARS``
    characters that UTF-8 can encode; else InvalidArgument naming ``where``."""
    if not isinstance(unit, str) or not unit:
        raise InvalidArgument(f"{where}: a unit id is non-empty text, got {unit!r:.80}")
    if len(unit) > MAX_UNIT_CHARS:
        raise InvalidArgument(f"{where}: at most {MAX_UNIT_CHARS} characters, got {len(unit):,}")
    try:
        unit.encode()
    except UnicodeEncodeError:
        raise InvalidArgument(f"{where}: not valid Unicode text (a lone surrogate)") from None
    return unit


def bucket(salt: str, unit: str) -> int:
    """The unit's bucket, 0 to 9,999 (see the module's docstring)."""
    digest = hashlib.sha1(f"{salt}:{unit}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % BUCKETS


@dataclass(frozen=True)
class Allocation:
    """Each arm's half-open bucket ranges ``[start, end)``; buckets no arm owns are not in
    the experiment (its traffic share below 100 %)."""

    ranges: dict[str, list[tuple[int, int]]] = field(default_factory=dict)

    def arm_for(self, at: int) -> str | None:
        for arm, spans in self.ranges.items():
            for start, end in spans:
                if start <= at < end:
                    return arm
        return None

    def counts(self) -> dict[str, int]:
        return {arm: sum(end - start for start, end in spans) for arm, spans in self.ranges.items()}

    def owners(self) -> list[str | None]:
        """The arm of every bucket (a lookup table: one list index per request)."""
        table: list[str | None] = [None] * BUCKETS
        for arm, spans in self.ranges.items():
            for start, end in spans:
                table[start:end] = [arm] * (end - start)
        return table


def shares_to_counts(shares: dict[str, float]) -> dict[str, int]:
    """Bucket counts for shares (0..1 each, at most 1 in all): largest remainders, so the
    counts add up to round(total share x 10,000) exactly."""
    if not shares:
        raise InvalidArgument("give at least one arm a share of the traffic")
    for arm, share in shares.items():
        if not 0 <= share <= 1:
            raise InvalidArgument(f"arm {arm!r}: a share is between 0 and 1, got {share}")
    total = sum(shares.values())
    if total > 1 + 1e-9:
        raise InvalidArgument(f"the arms' shares add up to {total:.4g}, more than 1")
    exact = {arm: share * BUCKETS for arm, share in shares.items()}
    counts = {arm: int(value) for arm, value in exact.items()}
    left = round(total * BUCKETS) - sum(counts.values())
    by_remainder = sorted(exact, key=lambda arm: (counts[arm] - exact[arm], arm))
    for arm in by_remainder[:left]:
        counts[arm] += 1
    return counts


def allocate(shares: dict[str, float], previous: Allocation | None = None) -> Allocation:
    """The allocation for ``shares`` that moves as few buckets as possible from
    ``previous``."""
    counts = shares_to_counts(shares)
    owners: list[str | None] = previous.owners() if previous else [None] * BUCKETS
    owned: dict[str, list[int]] = {arm: [] for arm in counts}
    for at, arm in enumerate(owners):
        if arm in owned:
            owned[arm].append(at)
        else:
            owners[at] = None  # an arm that left the experiment frees its buckets
    for arm, want in counts.items():
        for at in owned[arm][want:]:  # shrinking: the highest buckets go
            owners[at] = None
        owned[arm] = owned[arm][:want]
    free = iter(at for at, arm in enumerate(owners) if arm is None)
    for arm, want in counts.items():
        for _ in range(want - len(owned[arm])):
            owners[next(free)] = arm
    return Allocation({arm: _spans(owners, arm) for arm in counts})


def _spans(owners: list[str | None], arm: str) -> list[tuple[int, int]]:
    spans: list[tuple[int, int]] = []
    start = None
    for at, owner in enumerate([*owners, None]):
        if owner == arm and start is None:
            start = at
        elif owner != arm and start is not None:
            spans.append((start, at))
            start = None
    return spans
