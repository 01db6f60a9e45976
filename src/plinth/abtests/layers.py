"""Layers: experiments that must not share a unit. A layer has a salt of its own; each of
its started experiments (running or paused) owns ``traffic`` of its 10,000 buckets, an
``Allocation`` with experiments in place of arms, so a unit is in at most one of them.
Starting one takes free buckets and moves nobody; stopping one frees its buckets."""

from __future__ import annotations

import secrets

from pydantic import TypeAdapter
from sqlalchemy import Connection, select, update

from plinth.abtests.buckets import Allocation, allocate
from plinth.abtests.types import Experiment
from plinth.errors import Conflict
from plinth.store.schema import abtest_layers, abtests
from plinth.store.sql import now_ms, upsert

_ALLOCATION: TypeAdapter[Allocation] = TypeAdapter(Allocation)
_EXPERIMENT: TypeAdapter[Experiment] = TypeAdapter(Experiment)


def layer_view(conn: Connection, layer: str, name: str) -> tuple[str | None, list[tuple[int, int]]]:
    """The layer's salt (None before any experiment of it started) and the buckets of it
    ``name`` owns."""
    row = conn.execute(select(abtest_layers).where(abtest_layers.c.name == layer)).first()
    if row is None:
        return None, []
    return row.salt, _ALLOCATION.validate_json(row.allocation).ranges.get(name, [])


def join_layer(conn: Connection, exp: Experiment) -> None:
    """Give ``exp`` its traffic's share of its layer's buckets, taken from the free ones;
    Conflict when fewer are free."""
    assert exp.layer is not None
    previous = _locked(conn, exp.layer)
    held = _traffic_of(conn, [n for n in previous.ranges if n != exp.name])
    free = 1 - sum(held.values())
    if exp.traffic > free + 1e-9:
        raise Conflict(
            f"cannot start A/B experiment {exp.name!r}: it takes {exp.traffic:g} of layer "
            f"{exp.layer!r}, which has {max(free, 0):g} free: lower its traffic, or ask "
            "the owners of the layer's running experiments to stop one"
        )
    _save(conn, exp.layer, allocate({**held, exp.name: exp.traffic}, previous))


def leave_layer(conn: Connection, layer: str, name: str) -> None:
    previous = _locked(conn, layer)
    held = _traffic_of(conn, [n for n in previous.ranges if n != name])
    _save(conn, layer, allocate(held, previous) if held else Allocation())


def _locked(conn: Connection, layer: str) -> Allocation:
    """The layer's allocation, its row locked until the transaction ends (made, with a
    fresh salt, if the layer is new)."""
    fresh = {
        "name": layer,
        "salt": secrets.token_hex(16),
        "allocation": "{}",
        "updated_at": now_ms(),
    }
    upsert(conn, abtest_layers, [fresh], ["name"])
    found = conn.execute(
        select(abtest_layers.c.allocation).where(abtest_layers.c.name == layer).with_for_update()
    ).scalar_one()
    return _ALLOCATION.validate_json(found)


def _traffic_of(conn: Connection, names: list[str]) -> dict[str, float]:
    """Each experiment's share of the layer (its design's ``traffic``)."""
    if not names:
        return {}
    rows = conn.execute(select(abtests.c.name, abtests.c.config).where(abtests.c.name.in_(names)))
    return {name: _EXPERIMENT.validate_json(config).traffic for name, config in rows}


def _save(conn: Connection, layer: str, allocation: Allocation) -> None:
    conn.execute(
        update(abtest_layers)
        .where(abtest_layers.c.name == layer)
        .values(allocation=_ALLOCATION.dump_json(allocation).decode(), updated_at=now_ms())
    )
