"""A/B experiments in the central store: design, changes (each one recorded as a version),
lifecycle (draft -> running <-> paused -> stopped) and layers of mutually exclusive
experiments."""

from __future__ import annotations

import secrets
from dataclasses import replace
from datetime import datetime
from typing import Any, NamedTuple

import pyarrow as pa
from pydantic import TypeAdapter
from sqlalchemy import Connection, insert, select, update

from plinth.abtests.buckets import Allocation, allocate
from plinth.abtests.checks import SharePeriod, share_periods
from plinth.abtests.decisions import (
    CheckOutcome,
    Promotion,
    check_promotable,
    check_sample_ratio,
    no_winner_message,
    promotable_arm,
    significant_winner,
    stop_reasons,
)
from plinth.abtests.design import (
    Mutation,
    changes_between,
    check_canary_start,
    check_change_allowed,
    check_design,
    check_name,
    coerce,
    coerce_arms,
    coerce_bandit,
    coerce_canary,
    coerce_guardrails,
    coerce_kpi,
    next_status,
    read_config,
    with_schedule,
)
from plinth.abtests.events import Event, append_events, check_events
from plinth.abtests.layers import join_layer, layer_view, leave_layer
from plinth.abtests.planning import Plan, plan
from plinth.abtests.results import Results, compute_results
from plinth.abtests.timeline import Timeline, compute_timeline
from plinth.abtests.types import (
    Arm,
    Bandit,
    Canary,
    ControllerAction,
    Experiment,
    ExperimentVersion,
    Guardrail,
    Kpi,
    Mode,
    Status,
    Unit,
)
from plinth.api import endpoint
from plinth.auth.access import Access, access_for, guarded
from plinth.auth.types import Action, Kind, Role
from plinth.errors import AlreadyExists, Conflict, InvalidArgument, NotFound, PermissionDenied
from plinth.registry.service import RegistryService
from plinth.registry.types import Stage
from plinth.registry.uris import parse_model_uri
from plinth.store.engine import Store
from plinth.store.schema import abtest_versions, abtests
from plinth.store.sql import (
    check_max_results,
    decode_page_token,
    encode_page_token,
    now_ms,
    to_datetime,
)
from plinth.tracking.types import Page

_EXPERIMENT: TypeAdapter[Experiment] = TypeAdapter(Experiment)
_MODE: TypeAdapter[Mode] = TypeAdapter(Mode)
_UNIT: TypeAdapter[Unit] = TypeAdapter(Unit)
_SHARES: TypeAdapter[dict[str, float]] = TypeAdapter(dict[str, float])
_CHANGES: TypeAdapter[dict[str, str]] = TypeAdapter(dict[str, str])


class ScheduleMark(NamedTuple):
    """A version a controller's schedule counts from (``last_schedule_mark``)."""

    version: int
    action: str
    changed_by: str
    changed_at: datetime
    changes: dict[str, str]


class AbTestService:
    """Designs and lifecycles of A/B experiments. A running experiment's changes are
    limited to its shares, guardrails and hypothesis (with a reason); each change, and each
    start, pause, resume and stop, is a new version in its history."""

    def __init__(
        self,
        store: Store,
        root_uri: str | None = None,
        registry: RegistryService | None = None,
    ) -> None:
        self.store = store
        # the artifact root holding the exposure and event logs (``abtests/{name}/...``)
        self.root_uri = root_uri
        # the model registry a winner is promoted through (its gates and history)
        self.registry = registry

    @property
    def access(self) -> Access:
        return access_for(self.store)

    @endpoint("POST", "/abtests")
    @guarded(role=Role.EDITOR)
    def create_abtest(
        self,
        name: str,
        hypothesis: str,
        primary: Kpi,
        arms: list[Arm],
        mde: float,
        guardrails: list[Guardrail] | None = None,
        mode: Mode = Mode.AB,
        unit: Unit = Unit.USER,
        alpha: float = 0.05,
        power: float = 0.8,
        layer: str | None = None,
        traffic: float = 1.0,
        reason: str = "",
        canary: Canary | None = None,
        bandit: Bandit | None = None,
    ) -> Experiment:
        """A new experiment in draft, owned by its creator, with a salt of its own. A canary
        or bandit experiment gets the default schedule of its mode unless one is given."""
        check_name(name)
        at = to_datetime(now_ms())
        draft = Experiment(
            name=name,
            hypothesis=hypothesis,
            owner=self.access.actor(),
            status=Status.DRAFT,
            mode=coerce(_MODE, mode, "mode"),
            unit=coerce(_UNIT, unit, "unit"),
            primary=coerce_kpi(primary),
            arms=coerce_arms(arms),
            mde=mde,
            alpha=alpha,
            power=power,
            salt=secrets.token_hex(16),
            allocation=Allocation(),
            version=1,
            created_at=at,
            updated_at=at,
            guardrails=coerce_guardrails(guardrails),
            layer=layer,
            traffic=traffic,
            canary=coerce_canary(canary),
            bandit=coerce_bandit(bandit),
        )
        draft = with_schedule(draft)
        check_design(draft)
        self._require_models(draft.arms)
        draft = replace(draft, allocation=allocate(draft.shares))
        with self.store.write() as conn:
            if _row(conn, name) is not None:
                raise AlreadyExists(f"A/B experiment {name!r} already exists")
            conn.execute(insert(abtests).values(_columns(draft)))
            self.access.on_created(conn, Kind.ABTEST, name)
            _record(conn, draft, "create", reason, {}, draft.owner)
        return draft

    @endpoint("GET", "/abtests/{name}")
    @guarded(Action.READ, Kind.ABTEST, "name")
    def get_abtest(self, name: str) -> Experiment:
        with self.store.read() as conn:
            return _load(conn, name)

    @endpoint("GET", "/abtests")
    @guarded()
    def list_abtests(
        self,
        status: Status | None = None,
        layer: str | None = None,
        max_results: int = 100,
        page_token: str | None = None,
    ) -> Page[Experiment]:
        """The experiments the caller may see, by name; only one status's or layer's if
        given."""
        offset, limit = decode_page_token(page_token), check_max_results(max_results)
        query = select(abtests.c.name).order_by(abtests.c.name)
        if status is not None:
            query = query.where(abtests.c.status == coerce(TypeAdapter(Status), status, "status"))
        if layer is not None:
            query = query.where(abtests.c.layer == layer)
        visible = self.access.visible(Kind.ABTEST)
        if visible is not None:
            query = query.where(abtests.c.name.in_(visible))
        with self.store.read() as conn:
            names = list(conn.execute(query.offset(offset).limit(limit + 1)).scalars())
            items = [_load(conn, n) for n in names[:limit]]
        return Page(items, encode_page_token(offset + limit) if len(names) > limit else None)

    @endpoint("POST", "/abtests/{name}")
    @guarded(Action.WRITE, Kind.ABTEST, "name")
    def update_abtest(
        self,
        name: str,
        hypothesis: str | None = None,
        shares: dict[str, float] | None = None,
        guardrails: list[Guardrail] | None = None,
        arms: list[Arm] | None = None,
        primary: Kpi | None = None,
        mde: float | None = None,
        alpha: float | None = None,
        power: float | None = None,
        mode: Mode | None = None,
        unit: Unit | None = None,
        layer: str | None = None,
        traffic: float | None = None,
        reason: str = "",
        canary: Canary | None = None,
        bandit: Bandit | None = None,
    ) -> Experiment:
        """Change a design: anything in draft; once started only ``shares`` (a share per
        arm named; the others keep theirs), ``guardrails``, ``hypothesis`` and the
        ``canary`` or ``bandit`` schedule, with a ``reason``. New shares move only the units
        they must. ``layer=""`` leaves a layer; a new mode drops the old mode's schedule."""
        if shares is not None and arms is not None:
            raise InvalidArgument("give shares or arms, not both: arms carry their own shares")
        given: dict[str, Any] = {
            "hypothesis": hypothesis,
            "guardrails": None if guardrails is None else coerce_guardrails(guardrails),
            "arms": None if arms is None else self._require_models(coerce_arms(arms)),
            "primary": None if primary is None else coerce_kpi(primary),
            "mde": mde,
            "alpha": alpha,
            "power": power,
            "mode": None if mode is None else coerce(_MODE, mode, "mode"),
            "unit": None if unit is None else coerce(_UNIT, unit, "unit"),
            "layer": layer or None,
            "traffic": traffic,
            "canary": coerce_canary(canary),
            "bandit": coerce_bandit(bandit),
        }
        fields = {k: v for k, v in given.items() if v is not None}
        if layer == "":
            fields["layer"] = None

        def change(before: Experiment) -> Experiment:
            after = replace(before, **fields)
            if after.mode is not before.mode:
                after = replace(
                    after,
                    canary=after.canary if "canary" in fields else None,
                    bandit=after.bandit if "bandit" in fields else None,
                )
            if shares is not None:
                after = replace(after, arms=_with_shares(before, coerce(_SHARES, shares, "shares")))
            return with_schedule(after)

        return self._change(name, "update", reason, change)

    @endpoint("POST", "/abtests/{name}/start")
    @guarded(Action.WRITE, Kind.ABTEST, "name")
    def start_abtest(self, name: str, reason: str = "") -> Experiment:
        """draft -> running; in a layer, the experiment takes its traffic's share of the
        layer's units (Conflict when the layer has not that much free)."""
        return self._transition(name, "start", reason)

    @endpoint("POST", "/abtests/{name}/pause")
    @guarded(Action.WRITE, Kind.ABTEST, "name")
    def pause_abtest(self, name: str, reason: str = "") -> Experiment:
        """running -> paused: every unit gets the control arm; the layer's units stay held."""
        return self._transition(name, "pause", reason)

    @endpoint("POST", "/abtests/{name}/resume")
    @guarded(Action.WRITE, Kind.ABTEST, "name")
    def resume_abtest(self, name: str, reason: str = "") -> Experiment:
        """paused -> running, every unit back in the arm it had."""
        return self._transition(name, "resume", reason)

    @endpoint("POST", "/abtests/{name}/stop")
    @guarded(Action.WRITE, Kind.ABTEST, "name")
    def stop_abtest(self, name: str, reason: str = "") -> Experiment:
        """running or paused -> stopped, for good; its units in the layer are freed."""
        return self._transition(name, "stop", reason)

    @endpoint("GET", "/abtests/{name}/history")
    @guarded(Action.READ, Kind.ABTEST, "name")
    def abtest_history(self, name: str) -> list[ExperimentVersion]:
        """Every version, oldest first: who changed what, when and why."""
        v = abtest_versions.c
        with self.store.read() as conn:
            _load(conn, name)
            rows = conn.execute(
                select(abtest_versions).where(v.name == name).order_by(v.version)
            ).all()
        return [
            ExperimentVersion(
                name=row.name,
                version=row.version,
                action=row.action,
                changed_by=row.changed_by,
                changed_at=to_datetime(row.changed_at),
                reason=row.reason,
                changes=TypeAdapter(dict[str, str]).validate_json(row.changes),
                experiment=read_config(row.config),
            )
            for row in rows
        ]

    @endpoint("POST", "/abtests/{name}/events")
    @guarded(Action.WRITE, Kind.ABTEST, "name")
    def log_events(self, name: str, events: list[Event]) -> int:
        """Record outcome events (``plinth.abtests.events``): the whole batch is checked
        first and stored in one commit, or refused naming ``events[i].field``. Idempotent on
        ``event_id`` (duplicates are dropped when results are read). Returns the count.
        The rule is WRITE on the experiment: events change its results, so a caller who
        may only read them must not be able to add any."""
        with self.store.read() as conn:
            _load(conn, name)
        return append_events(self._root(), name, check_events(name, events))

    # Not an @endpoint: its body is an Arrow IPC stream (``plinth.server.abtest_data``).
    @guarded(Action.WRITE, Kind.ABTEST, "name")
    def log_exposures(self, name: str, exposures: pa.Table) -> int:
        """Record a batch of exposures another process routed (a remote ``plinth router``
        or ``Predictor`` whose client cannot reach this artifact store): checked whole
        (``traffic.check_batch``: columns, types, arm names, times), then appended in one
        commit, or refused naming ``exposures[i].column`` with nothing stored. WRITE on the
        experiment, as for events: exposures change its results. Returns the count."""
        from plinth.abtests.traffic import check_batch, write_batch

        with self.store.read() as conn:
            exp = _load(conn, name)
        checked = check_batch(exp, exposures)
        write_batch(self._root(), name, checked)
        return int(checked.num_rows)

    @endpoint("GET", "/abtests/{name}/results")
    @guarded(Action.READ, Kind.ABTEST, "name")
    def abtest_results(self, name: str) -> Results:
        """Per-arm KPI, lifts against control, SRM, Bayesian read-out, Holm-adjusted
        p-values and guardrails, from the exposure and event logs (``results.py``)."""
        with self.store.read() as conn:
            exp = _load(conn, name)
        return compute_results(exp, self._root(), self._periods(name))

    @endpoint("GET", "/abtests/{name}/timeline")
    @guarded(Action.READ, Kind.ABTEST, "name")
    def abtest_timeline(self, name: str, points: int = 60) -> Timeline:
        """The primary KPI per arm over time, with the lift and its always-valid interval
        narrowing, at up to ``points`` evenly spaced cut times (``timeline.py``)."""
        with self.store.read() as conn:
            exp = _load(conn, name)
        return compute_timeline(exp, self._root(), points)

    @endpoint("POST", "/abtests/{name}/promote")
    @guarded(Action.WRITE, Kind.ABTEST, "name")
    def promote_abtest(
        self, name: str, arm: str | None = None, reason: str = "", force: bool = False
    ) -> Promotion:
        """Move an arm's model version to PRODUCTION through the registry's gates
        (GateFailed: nothing changes), then stop the experiment if it runs or is paused and
        record the promotion in its history. The arm is ``arm``, else the significant
        winner of the results (Conflict when there is none). Conflict too when the
        sample-ratio-mismatch check flags the assignment (its results cannot be trusted),
        unless ``force``. The registry's own rule applies too: moving a version into
        PRODUCTION takes promoter on the model."""
        with self.store.read() as conn:
            exp = _load(conn, name)
        check_promotable(exp)
        results = compute_results(exp, self._root(), self._periods(name))
        check_sample_ratio(exp, results, force)
        if arm is None:
            arm = significant_winner(exp, results)
            if arm is None:
                raise Conflict(no_winner_message(exp, results))
        uri = str(promotable_arm(exp, arm).model_uri)
        registry = self._registry()
        version = registry.resolve(uri)
        said = f": {reason.strip()}" if reason.strip() else ""
        promoted = registry.set_stage(
            version.model_name,
            version.version,
            Stage.PRODUCTION,
            reason=f"winner of A/B experiment {name!r} (arm {arm!r}, {uri}){said}",
        )
        what = f"arm {arm}: models:/{promoted.model_name}/{promoted.version} -> PRODUCTION"

        def change(before: Experiment) -> Experiment:
            if before.status is Status.STOPPED:
                return before
            return replace(before, status=Status.STOPPED)  # stopped_at: the version's time

        after = self._change(name, "promote", reason, change, {"promoted": what})
        return Promotion(after, arm, promoted)

    @endpoint("POST", "/abtests/{name}/check")
    @guarded(Action.WRITE, Kind.ABTEST, "name")
    def check_abtest(self, name: str) -> CheckOutcome:
        """Stop a running or paused experiment once every arm has its planned sample, or
        once a guardrail is established broken (``decisions.py``); the reasons are
        recorded. Otherwise nothing changes. Returns what was decided and why."""
        with self.store.read() as conn:
            exp = _load(conn, name)
        if exp.status not in (Status.RUNNING, Status.PAUSED):
            note = f"it is {exp.status}: only a running or paused experiment is checked"
            return CheckOutcome(name, exp.status, False, notes=[note])
        results = compute_results(exp, self._root(), self._periods(name))
        reasons, plan, notes = stop_reasons(exp, results)
        planned = None if plan is None else plan.per_arm
        outcome = CheckOutcome(
            name, exp.status, False, reasons, planned, results.units_by_arm, notes
        )
        if not reasons:
            return outcome
        try:
            after = self._transition(name, "stop", "auto-stop: " + "; ".join(reasons))
        except Conflict as exc:  # stopped by someone else since it was read
            return replace(outcome, status=Status.STOPPED, notes=[*notes, exc.message])
        return replace(outcome, status=after.status, stopped=True)

    @endpoint("GET", "/abtests/{name}/plan")
    @guarded(Action.READ, Kind.ABTEST, "name")
    def plan_abtest(self, name: str, baseline: float | None = None, days: int = 7) -> Plan:
        """The sample per arm the design needs (its mde, alpha and power; a proportion KPI
        also needs the control's ``baseline`` rate) and, from the arms' models' recent
        traffic in their prediction logs, how many days it takes (``planning.py``)."""
        with self.store.read() as conn:
            exp = _load(conn, name)
            return plan(conn, exp, now_ms(), baseline, days, self._may_read_model)

    # -- the controller's (canary steps, rollbacks, bandit re-allocations; controller.py) --

    @endpoint("POST", "/abtests/{name}/reallocate")
    @guarded(Action.WRITE, Kind.ABTEST, "name")
    def reallocate_abtest(self, name: str, reason: str = "") -> ControllerAction:
        """Re-allocate a running bandit experiment's traffic now (Thompson sampling over
        its arms' primary KPI so far, none below its floor), without waiting for its
        schedule; recorded like the controller's, with the probabilities."""
        from plinth.abtests.controller import reallocate_now

        return reallocate_now(self, name, reason)

    @endpoint("POST", "/abtest-controller/tick")
    @guarded(role=Role.ADMIN)
    def tick_abtests(self) -> list[ControllerAction]:
        """One pass of the controller over the running experiments, as ``plinth server``
        runs it in the background: canary steps and rollbacks, bandit re-allocations and
        the automatic stop, each recorded in the experiment's history by "controller"."""
        from plinth.abtests.controller import run_once

        return run_once(self)

    def apply_control(
        self,
        name: str,
        action: str,
        seen_version: int,
        at: datetime | None,
        reason: str,
        shares: dict[str, float] | None = None,
        stop: bool = False,
        noted: dict[str, str] | None = None,
    ) -> ExperimentVersion | None:
        """The controller's change to a running experiment, recorded at ``at`` (None: the
        clock, read under the experiment's lock): new ``shares`` and/or a stop. Returns the
        version it recorded. Compare-and-set on the version it decided from: None (nothing
        changes) when the experiment changed since, so a step decided twice, by two
        controllers at once, is taken once."""

        class Moved(Exception):
            pass

        def change(before: Experiment) -> Experiment:
            if before.version != seen_version or before.status is not Status.RUNNING:
                raise Moved
            after = before
            if shares is not None:
                after = replace(after, arms=_with_shares(before, shares))
            if stop:
                after = replace(after, status=Status.STOPPED)
            return after

        try:
            return self._recorded(name, action, reason, change, noted, at=at)
        except Moved:
            return None

    def running_names(self) -> list[str]:
        """The names of the running experiments (all of them: the controller's view), read
        without their designs, so one that cannot be read fails alone."""
        query = select(abtests.c.name).where(abtests.c.status == Status.RUNNING.value)
        with self.store.read() as conn:
            return sorted(conn.execute(query).scalars())

    def last_schedule_mark(
        self, name: str, actions: tuple[str, ...], fields: tuple[str, ...]
    ) -> ScheduleMark | None:
        """The latest version (by version) of ``name`` that is one of ``actions`` or an
        ``update`` changing one of ``fields``: what a schedule counts from. None if none."""
        v = abtest_versions.c
        query = (
            select(v.version, v.action, v.changed_by, v.changed_at, v.changes)
            .where(v.name == name, v.action.in_((*actions, "update")))
            .order_by(v.version.desc())
        )
        with self.store.read() as conn:
            for row in conn.execute(query):
                changes = _CHANGES.validate_json(row.changes)
                if row.action != "update" or any(f in changes for f in fields):
                    at = to_datetime(int(row.changed_at))
                    return ScheduleMark(row.version, row.action, row.changed_by, at, changes)
        return None

    def _require_models(self, arms: list[Arm]) -> list[Arm]:
        """An experiment may only name models its designer may read: it exposes their
        answers, their traffic and, through promotion, their stages."""
        for i, arm in enumerate(arms):
            if arm.model_uri is None:
                continue
            model = parse_model_uri(arm.model_uri).name
            try:
                self.access.require(Action.READ, Kind.MODEL, model)
            except NotFound as exc:
                raise NotFound(f"arms[{i}].model_uri: {exc.message}") from None
        return arms

    def _may_read_model(self, model: str) -> bool:
        try:
            self.access.require(Action.READ, Kind.MODEL, model, log=False)
        except (NotFound, PermissionDenied):
            return False
        return True

    def _registry(self) -> RegistryService:
        if self.registry is None:
            raise InvalidArgument("this A/B service has no model registry to promote through")
        return self.registry

    def _periods(self, name: str) -> list[SharePeriod]:
        """The periods of constant shares for the results' sample-ratio check."""
        return share_periods(self.abtest_history(name))

    def _root(self) -> str:
        if self.root_uri is None:
            raise InvalidArgument(
                "this A/B service has no artifact root for its exposure and event logs"
            )
        return self.root_uri

    # -- changes ---------------------------------------------------------------------------

    def _transition(self, name: str, action: str, reason: str) -> Experiment:
        # started_at / stopped_at are the version's own time, taken by ``_change`` under
        # the experiment's lock
        def change(before: Experiment) -> Experiment:
            after = replace(before, status=next_status(before, action))
            if action == "start":
                check_canary_start(before)
            return after

        return self._change(name, action, reason, change)

    def _change(
        self,
        name: str,
        action: str,
        reason: str,
        change: Mutation,
        noted: dict[str, str] | None = None,
        at: datetime | None = None,
    ) -> Experiment:
        """``noted``: what the action did beyond the design's fields, for its history;
        ``at``: when it happened (the controller's clock), else now."""
        return self._recorded(name, action, reason, change, noted, at).experiment

    def _recorded(
        self,
        name: str,
        action: str,
        reason: str,
        change: Mutation,
        noted: dict[str, str] | None = None,
        at: datetime | None = None,
    ) -> ExperimentVersion:
        """``_change``, returning the version it recorded (an update that changes nothing
        records none: the version returned is then the current one, with no changes)."""
        actor = self.access.actor()
        with self.store.write() as conn:
            _lock(conn, name)
            before = _load(conn, name)
            after = change(before)
            changes = {**changes_between(before, after), **(noted or {})}
            if action == "update":
                if not changes:
                    return _version(before, action, actor, reason, {})
                check_change_allowed(before, after, changes)
                if before.status is not Status.DRAFT and not reason.strip():
                    raise InvalidArgument(
                        f"reason: say why A/B experiment {name!r} changes while it is "
                        f"{before.status} (it is recorded in its history)"
                    )
                check_design(after)
            if after.shares != before.shares:
                after = replace(after, allocation=allocate(after.shares, before.allocation))
            stamp = at or to_datetime(now_ms())
            after = replace(after, version=before.version + 1, updated_at=stamp)
            stopping = after.status is Status.STOPPED and before.status is not Status.STOPPED
            if stopping:
                after = replace(after, stopped_at=stamp)
            if before.status is Status.DRAFT and after.status is Status.RUNNING:
                after = replace(after, started_at=stamp)
            if action == "start" and after.layer is not None:
                join_layer(conn, after)
            elif stopping and after.layer is not None:
                leave_layer(conn, after.layer, name)
            conn.execute(update(abtests).where(abtests.c.name == name).values(_columns(after)))
            after = _load(conn, name)
            _record(conn, after, action, reason, changes, actor)
        return _version(after, action, actor, reason, changes)


def _with_shares(exp: Experiment, shares: dict[str, float]) -> list[Arm]:
    unknown = sorted(set(shares) - set(exp.shares))
    if unknown:
        raise InvalidArgument(
            f"shares: no arm named {', '.join(map(repr, unknown))} "
            f"(the arms are {', '.join(exp.shares)})"
        )
    return [replace(arm, share=shares.get(arm.name, arm.share)) for arm in exp.arms]


# -- rows ------------------------------------------------------------------------------------


def _row(conn: Connection, name: str) -> Any:
    return conn.execute(select(abtests).where(abtests.c.name == name)).first()


def _lock(conn: Connection, name: str) -> None:
    # Read-modify-write of one experiment takes turns (a PostgreSQL row lock; SQLite's
    # writers already queue), so no change is lost to a concurrent one.
    conn.execute(select(abtests.c.name).where(abtests.c.name == name).with_for_update())


def _load(conn: Connection, name: str) -> Experiment:
    row = _row(conn, name)
    if row is None:
        raise NotFound(f"A/B experiment {name!r} does not exist")
    exp = read_config(row.config)
    if exp.layer is None:
        return exp
    salt, ranges = layer_view(conn, exp.layer, name)
    return replace(exp, layer_salt=salt, layer_ranges=ranges)


def _columns(exp: Experiment) -> dict[str, Any]:
    # The layer's salt and ranges are the layer's own (abtest_layers), not the design's.
    design = replace(exp, layer_salt=None, layer_ranges=[])
    return {
        "name": exp.name,
        "owner": exp.owner,
        "status": exp.status.value,
        "mode": exp.mode.value,
        "layer": exp.layer,
        "salt": exp.salt,
        "version": exp.version,
        "config": _EXPERIMENT.dump_json(design).decode(),
        "created_at": _ms(exp.created_at),
        "updated_at": _ms(exp.updated_at),
        "started_at": None if exp.started_at is None else _ms(exp.started_at),
        "stopped_at": None if exp.stopped_at is None else _ms(exp.stopped_at),
    }


def _version(
    exp: Experiment, action: str, actor: str, reason: str, changes: dict[str, str]
) -> ExperimentVersion:
    return ExperimentVersion(
        exp.name, exp.version, action, actor, exp.updated_at, reason, changes, exp
    )


def _record(
    conn: Connection,
    exp: Experiment,
    action: str,
    reason: str,
    changes: dict[str, str],
    actor: str,
) -> None:
    conn.execute(
        insert(abtest_versions).values(
            name=exp.name,
            version=exp.version,
            action=action,
            changed_by=actor,
            changed_at=_ms(exp.updated_at),
            reason=reason,
            changes=TypeAdapter(dict[str, str]).dump_json(changes).decode(),
            config=_EXPERIMENT.dump_json(exp).decode(),
        )
    )


def _ms(at: Any) -> int:
    return int(at.timestamp() * 1000)
