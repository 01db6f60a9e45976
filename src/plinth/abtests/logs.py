"""An experiment's exposure and event logs in DuckDB, reduced to per-unit figures and then
to per-arm moments in one statement, so no per-unit row reaches Python.

The rules (the results' and the timeline's):

1. Each unit's arm is the arm of its FIRST exposure (earliest ``at_ms``; at a tie, the arm
   listed first in the design); a unit also seen in another arm stays in its first and is
   counted in ``several``.
2. Events are deduplicated by ``event_id`` among the events of the names asked for: the
   earliest copy wins (by ``at_ms``, then the smaller ``value``), all its fields together.
   An event names its unit, else its request's (the unit of that request's earliest
   exposure).
3. An event counts for a unit's figures at or after the unit's first exposure; the ones
   before it count only for the pre-exposure figures (CUPED's covariate).

How it is read, and why it is fast (10,000,000 exposures and events in a few seconds on
two cores): a local Delta table's active files are read by DuckDB's own parquet reader
(``union_by_name``, so files written before a column was added read it as null), each
table in one pass and only the columns needed; other tables (object stores, deletion
vectors, partitions) go through pyarrow's dataset. The per-unit figures are ONE pipeline:
first exposure per unit (a hash aggregate), the events of the KPIs' names (re-sent ids
found by one aggregate into a small temp table, their copies reduced apart from the
rest), joined to the units (the units are the hash table: ``build_side_probe_side`` is
off in this private database, so each join builds on its right side as written) and
aggregated per unit, then per arm. No temp table holds millions of rows. Units are
counted by the period of their first exposure (for the sample-ratio check of a canary or
a bandit) in the same pass: an ASOF join of the first exposures to the periods' starts,
and a ``histogram`` per arm.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import duckdb
import pyarrow as pa

from plinth.abtests.events import EVENTS_SCHEMA, events_uri
from plinth.abtests.traffic import SCHEMA as EXPOSURES_SCHEMA
from plinth.abtests.traffic import exposures_uri, storage_options


@dataclass(frozen=True)
class Figure:
    """A per-unit figure: the sum of the values of the unit's ``event`` events, or 1 if it
    has any (``any``); those at or after its first exposure, or before it (``pre``)."""

    event: str
    any: bool = False
    pre: bool = False


@dataclass(frozen=True)
class ArmMoments:
    """One arm's units (by first exposure) and the moments of the figures over them (units
    without events count as 0): sums, means, sample variances and covariances (ddof=1).
    When asked for periods: ``by_period``, its units by the period of their first exposure
    (index), leaving out the ``settling`` ones first exposed while their period settled."""

    units: int
    several: int
    sums: dict[Figure, float] = field(default_factory=dict)
    means: dict[Figure, float] = field(default_factory=dict)
    variances: dict[Figure, float] = field(default_factory=dict)
    covariances: dict[tuple[Figure, Figure], float] = field(default_factory=dict)
    by_period: dict[int, int] = field(default_factory=dict)
    settling: int = 0


@dataclass(frozen=True)
class Increments:
    """Per arm and cut index (1..points): the units whose first exposure falls in it, and
    the change of ``sum(f)`` and ``sum(f * g)`` over the units from the cut before."""

    units: dict[str, dict[int, int]]
    sums: dict[str, dict[int, dict[Figure, float]]]
    products: dict[str, dict[int, dict[tuple[Figure, Figure], float]]]


@dataclass(frozen=True)
class RouterFigures:
    """Per arm, over its exposures (not units): latency count and p99 (linear
    interpolation, numpy's default), and outcomes known and not "ok"."""

    latencies: int
    p99: float | None
    outcomes: int
    errors: int


def _cores() -> int:
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


class Logs:
    """``with Logs(root, experiment) as logs:`` a private in-memory DuckDB database with
    the views ``exposures`` and ``events``."""

    def __init__(self, root: str, experiment: str, arms: list[str]) -> None:
        self.arms = arms
        # a private database: the optimizer setting below is global to a database
        self.con = duckdb.connect(
            config={
                "threads": _cores(),
                "preserve_insertion_order": False,
                "disabled_optimizers": "build_side_probe_side",
            }
        )
        try:
            self.exposure_columns, _ = _view(
                self.con, "exposures", exposures_uri(root, experiment), EXPOSURES_SCHEMA
            )
            self.event_columns, self.null_units = _view(
                self.con, "events", events_uri(root, experiment), EVENTS_SCHEMA
            )
        except BaseException:
            self.con.close()
            raise
        self._resent_for: list[str] | None = None

    def __enter__(self) -> Logs:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.con.close()

    # -- the pipeline ---------------------------------------------------------------------

    def _resent(self, names: list[str]) -> bool:
        """The hashes of the ids with more than one copy among the events of ``names``, in
        temp table ``resent`` (few: re-sent events, and ids whose hashes collide, which are
        then told apart by the ids themselves); whether there are any. An event whose
        id's hash is not there is the only one with that id."""
        if self._resent_for != names:
            self.con.execute(
                """
                CREATE OR REPLACE TEMP TABLE resent AS
                SELECT hash(event_id) AS h FROM events WHERE list_contains($names, name)
                GROUP BY h HAVING count(*) > 1
                """,
                {"names": names},
            )
            self._resent_for = names
        found = self.con.execute("SELECT count(*) FROM resent").fetchone()
        return bool(found and found[0])

    def _units_and_events(self, names: list[str]) -> str:
        """CTEs ``fe`` (unit, uid, first_ms, arm, several) and ``ev`` (unit, k, value,
        at_ms: the kept events, ``k`` the 1-based index of their name in ``$names``).
        Only fixed SQL text; every value is a bound parameter. The first exposure is one
        integer ``min``: the time (ms, within +-2**50) times 4096 plus the arm's number (0:
        an arm not in the design), so ties go to the lower arm number; a unit is in several
        arms when its numbers differ (units only ever seen outside the design, left out
        anyway, are not counted there)."""
        by_request = self.null_units and "request_id" in self.event_columns
        request = "CASE WHEN unit IS NULL THEN request_id END" if by_request else "NULL"
        ctes = [
            """
            fe AS (
                SELECT row_number() OVER () AS uid, unit, packed >> 12 AS first_ms,
                       packed & 4095 AS arm, several FROM (
                    SELECT unit, min(ms * 4096 + a) AS packed, min(a) <> max(a) AS several
                    FROM (SELECT unit, least(greatest(at_ms, -(1::BIGINT << 50)), 1::BIGINT << 50) AS ms,
                                 coalesce(list_position($arms, arm), 0) AS a
                          FROM exposures WHERE unit IS NOT NULL AND arm IS NOT NULL)
                    GROUP BY unit))""",
            f"""
            raw AS NOT MATERIALIZED (
                SELECT event_id, list_position($names, name) AS k, value, unit,
                       {request} AS request_id, at_ms
                FROM events WHERE list_contains($names, name))""",
        ]
        if self._resent(names):
            ctes.append(
                """
            kept AS (
                SELECT r.* FROM raw r ANTI JOIN resent s ON hash(r.event_id) = s.h
                UNION ALL
                SELECT event_id, e.k, e.value, e.unit, e.request_id, at_ms FROM (
                    SELECT r.event_id,
                           arg_min({'k': k, 'value': value, 'unit': unit,
                                    'request_id': request_id},
                                   {'at': at_ms, 'value': value}) AS e,
                           min(at_ms) AS at_ms
                    FROM raw r SEMI JOIN resent s ON hash(r.event_id) = s.h
                    GROUP BY r.event_id))"""
            )
        else:
            ctes.append("kept AS (SELECT * FROM raw)")
        if by_request:
            ctes.append(
                """
            asked AS (
                SELECT DISTINCT request_id FROM events
                WHERE unit IS NULL AND request_id IS NOT NULL AND list_contains($names, name)),
            req AS (
                SELECT x.request_id, arg_min(x.unit, x.at_ms) AS unit
                FROM exposures x SEMI JOIN asked a ON x.request_id = a.request_id
                WHERE x.unit IS NOT NULL GROUP BY x.request_id),
            ev AS (
                SELECT coalesce(k.unit, r.unit) AS unit, k.k, k.value, k.at_ms
                FROM kept k LEFT JOIN req r ON k.request_id = r.request_id)"""
            )
        else:
            ctes.append("ev AS (SELECT unit, k, value, at_ms FROM kept)")
        return "WITH " + ",".join(ctes)

    def arm_moments(
        self,
        figures: list[Figure],
        pairs: list[tuple[Figure, Figure]],
        periods: list[tuple[int, int]] | None = None,
    ) -> dict[str, ArmMoments]:
        """Per arm (any arm named by a first exposure): units, units seen in several arms,
        and the moments of ``figures`` and the covariances of ``pairs``. ``periods``:
        ``(start, settle)`` in ms, starts ascending (the first also takes the units before
        it): count each arm's units by the period of their first exposure too, leaving
        out those in its first ``settle`` ms (``ArmMoments.by_period``)."""
        names = sorted({f.event for f in figures})
        columns = [_per_unit(f, names.index(f.event) + 1, "f.first_ms") for f in figures]
        per_arm = ["count(*)", "count(*) FILTER (WHERE several)"]
        for i in range(len(figures)):
            per_arm += [f"sum(x{i})", f"avg(x{i})", f"coalesce(var_samp(x{i}), 0)"]
        for a, b in pairs:
            i, j = figures.index(a), figures.index(b)
            per_arm.append(f"coalesce(covar_samp(x{i}, x{j}), 0)")
        unit_columns = "".join(f", {c} AS x{i}" for i, c in enumerate(columns))
        source, periods_ctes = "fe", ""
        if periods:
            # slot: 2 * the period's index, + 1 while it settled; counted per arm in a map
            source = "fp"
            unit_columns += ", any_value(f.slot) AS slot"
            per_arm.append("histogram(slot)")
            periods_ctes = """,
            p AS (
                SELECT unnest(range(len($starts))) AS period, unnest($starts) AS start_ms,
                       unnest($settles) AS settle_ms),
            fp AS (
                SELECT f.*, p.period * 2 + (f.first_ms < p.start_ms + p.settle_ms)::INT AS slot
                FROM fe f ASOF JOIN p ON f.first_ms >= p.start_ms)"""
        query = f"""
            {self._units_and_events(names)}{periods_ctes},
            pu AS (
                SELECT (f.uid * 2 + f.several::INT) * 4096 + f.arm AS key{unit_columns}
                FROM ev v RIGHT JOIN {source} f ON v.unit = f.unit
                GROUP BY key),
            ua AS (SELECT key % 4096 AS arm, (key // 4096) % 2 = 1 AS several, * FROM pu)
            SELECT arm, {", ".join(per_arm)} FROM ua GROUP BY arm
        """  # composed of fixed text and indices only
        params: dict[str, Any] = {"names": names, "arms": self.arms}
        if periods:
            params["starts"] = [-(2**62), *(start for start, _ in periods[1:])]
            params["settles"] = [settle for _, settle in periods]
        found: dict[str, ArmMoments] = {}
        for row in self.con.execute(query, params).fetchall():
            number, count, several, *rest = row
            arm = self.arms[number - 1] if number else ""
            sums, means, variances = {}, {}, {}
            for i, f in enumerate(figures):
                sums[f], means[f], variances[f] = (float(v) for v in rest[3 * i : 3 * i + 3])
            moved = rest[3 * len(figures) :]
            cov = {p: float(v) for p, v in zip(pairs, moved[: len(pairs)], strict=True)}
            by_slot: dict[int, int] = dict(moved[len(pairs)]) if periods else {}
            by_period = {s // 2: int(n) for s, n in by_slot.items() if s % 2 == 0}
            settling = sum(int(n) for s, n in by_slot.items() if s % 2)
            found[arm] = ArmMoments(
                int(count), int(several), sums, means, variances, cov, by_period, settling
            )
        return found

    def span(self, names: list[str]) -> tuple[int, int] | None:
        """The first exposure's time and the last counted event's or exposure's (ms)."""
        found = self.con.execute(
            f"""
            {self._units_and_events(names)}
            SELECT (SELECT min(first_ms) FROM fe),
                   greatest((SELECT max(at_ms) FROM exposures WHERE unit IS NOT NULL
                                                              AND arm IS NOT NULL),
                            coalesce((SELECT max(v.at_ms) FROM ev v JOIN fe f
                                      ON v.unit = f.unit WHERE v.at_ms >= f.first_ms), 0))
            """,
            {"names": names, "arms": self.arms},
        ).fetchone()
        if not found or found[0] is None:
            return None
        return int(found[0]), int(found[1])

    def increments(
        self,
        figures: list[Figure],
        pairs: list[tuple[Figure, Figure]],
        start: int,
        span: int,
        points: int,
    ) -> Increments:
        """Cumulative figures at ``points`` cut times ``start + span * k / points``
        (k = 1..points; an exposure or event at time t is in cut k when t is at or before
        it), as increments per cut: each unit's figure changes only at the cuts where it
        has events, so ``sum(f * g)`` moves by ``f g - f' g'`` (now and before) there."""
        names = sorted({f.event for f in figures})
        if any(f.pre for f in figures):
            raise ValueError("the timeline counts events after the first exposure only")
        cut = "greatest(1, (({t} - $start) * $points + $span - 1) // $span)"
        add = [_per_unit(f, names.index(f.event) + 1, None) for f in figures]
        inc = "".join(f", {c} AS a{i}" for i, c in enumerate(add))
        running = "".join(
            f", sum(a{i}) OVER (PARTITION BY uid ORDER BY b) AS c{i}" for i in range(len(figures))
        )

        def value(i: int, before: bool) -> str:
            now = f"c{i}" if not before else f"(c{i} - a{i})"
            return f"({now} > 0)::DOUBLE" if figures[i].any else now

        sums = [f"sum({value(i, False)} - {value(i, True)})" for i in range(len(figures))]
        for a, b in pairs:
            i, j = figures.index(a), figures.index(b)
            sums.append(
                f"sum({value(i, False)} * {value(j, False)} - {value(i, True)} * {value(j, True)})"
            )
        query = f"""
            {self._units_and_events(names)},
            inc AS (
                SELECT f.uid, f.arm, {cut.format(t="v.at_ms")} AS b{inc}
                FROM ev v JOIN fe f ON v.unit = f.unit
                WHERE v.at_ms >= f.first_ms AND v.at_ms <= $start + $span
                GROUP BY f.uid, f.arm, b),
            cum AS (SELECT arm, b, * EXCLUDE (arm, b, uid){running} FROM inc)
            SELECT 'e' AS what, arm, b, {", ".join(sums)} FROM cum GROUP BY arm, b
            UNION ALL
            SELECT 'u', arm, {cut.format(t="first_ms")}, count(*){", NULL" * (len(sums) - 1)}
            FROM fe GROUP BY ALL
        """  # composed of fixed text and indices only
        params = {
            "names": names,
            "arms": self.arms,
            "start": start,
            "span": max(span, 1),
            "points": points,
        }
        units: dict[str, dict[int, int]] = {}
        moved: dict[str, dict[int, dict[Figure, float]]] = {}
        products: dict[str, dict[int, dict[tuple[Figure, Figure], float]]] = {}
        for what, number, b, *values in self.con.execute(query, params).fetchall():
            if not number:
                continue  # an arm not in the design
            arm = self.arms[number - 1]
            if what == "u":
                units.setdefault(arm, {})[int(b)] = int(values[0])
                continue
            moved.setdefault(arm, {})[int(b)] = {
                f: float(v) for f, v in zip(figures, values, strict=False)
            }
            products.setdefault(arm, {})[int(b)] = {
                p: float(v) for p, v in zip(pairs, values[len(figures) :], strict=True)
            }
        return Increments(units, moved, products)

    def router(self) -> dict[str, RouterFigures] | None:
        """Per arm, from every exposure: latency and outcome counts and the p99 latency;
        None when the log has neither column (written before the router measured them)."""
        has_latency = "latency_ms" in self.exposure_columns
        has_outcome = "outcome" in self.exposure_columns
        if not (has_latency or has_outcome):
            return None
        latency = "count(latency_ms), quantile_cont(latency_ms, 0.99)" if has_latency else "0, NULL"
        outcome = (
            "count(outcome), count(*) FILTER (WHERE outcome <> 'ok')" if has_outcome else "0, 0"
        )
        rows = self.con.execute(
            f"SELECT arm, {latency}, {outcome} FROM exposures WHERE arm IS NOT NULL GROUP BY arm"
        ).fetchall()
        return {
            arm: RouterFigures(int(n), None if p is None else float(p), int(m), int(e))
            for arm, n, p, m, e in rows
        }

    def latency_quantiles(self, arm: str, quantiles: list[float]) -> list[float]:
        """The order statistics of ``arm``'s latencies at ``quantiles`` (``quantile_disc``:
        the value at rank ``ceil(q n)``)."""
        found = self.con.execute(
            "SELECT quantile_disc(latency_ms, $q) FROM exposures WHERE arm = $arm",
            {"q": quantiles, "arm": arm},
        ).fetchone()
        return [float(v) for v in found[0]] if found and found[0] is not None else []

    def stray_arms(self) -> list[str]:
        rows = self.con.execute(
            "SELECT DISTINCT arm FROM exposures WHERE arm IS NOT NULL "
            "AND NOT list_contains($arms, arm) ORDER BY arm",
            {"arms": self.arms},
        ).fetchall()
        return [r[0] for r in rows]


def _per_unit(f: Figure, k: int, first: str | None) -> str:
    """The per-unit aggregate of figure ``f`` (``k``: its event's index, an int we made)."""
    when = f"v.k = {int(k)}"
    if first is not None:
        when += f" AND v.at_ms {'<' if f.pre else '>='} {first}"
    if f.any:
        return f"max(CASE WHEN {when} THEN 1 ELSE 0 END)"
    return f"sum(CASE WHEN {when} THEN v.value ELSE 0.0 END)"


def _view(
    con: duckdb.DuckDBPyConnection, name: str, uri: str, schema: pa.Schema
) -> tuple[set[str], bool]:
    """Registers the Delta table at ``uri`` as view ``name``: its columns, and whether
    any row may lack a ``unit`` (False when the file statistics show none does)."""
    from deltalake import DeltaTable
    from deltalake.exceptions import TableNotFoundError

    try:
        table = DeltaTable(uri, storage_options=storage_options(uri))
    except TableNotFoundError:
        con.register(name, schema.empty_table())
        return set(schema.names), False
    files = _local_files(table, uri)
    if files is None:
        dataset = table.to_pyarrow_dataset()
        con.register(name, dataset)
        return set(dataset.schema.names), _null_units(table)
    if not files:
        con.register(name, schema.empty_table())
        return set(schema.names), False
    relation = con.read_parquet(files, union_by_name=True)
    relation.create_view(name)
    return set(relation.columns), _null_units(table)


def _local_files(table: Any, uri: str) -> list[str] | None:
    """The table's active parquet files when DuckDB can read them as they are: a local
    table without partitions and without reader features (deletion vectors, column
    mapping); else None."""
    if "://" in uri and not uri.startswith("file://"):
        return None
    metadata = table.metadata()
    mapped = metadata.configuration.get("delta.columnMapping.mode", "none") != "none"
    if table.protocol().reader_features or metadata.partition_columns or mapped:
        return None
    return [u.removeprefix("file://") for u in table.file_uris()]


def _null_units(table: Any) -> bool:
    """False when the file statistics show that every row names its unit."""
    try:
        actions = pa.table(table.get_add_actions(flatten=True))
        counts = actions.column("null_count.unit").to_pylist()
    except (KeyError, ValueError, TypeError):
        return True
    return not (counts and all(c == 0 for c in counts))
