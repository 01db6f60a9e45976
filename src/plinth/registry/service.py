"""The registry service: the core plus stage transitions with gates, rollback and
recorded champion/challenger decisions."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from sqlalchemy import Connection, func, select, update
from sqlalchemy.exc import IntegrityError

from plinth.api import endpoint
from plinth.auth.access import Access, guarded
from plinth.auth.types import Action, Kind, Role
from plinth.errors import Conflict, GateFailed, InvalidArgument, NotFound
from plinth.registry import decisions as stored
from plinth.registry import gates as gate_checks
from plinth.registry.core import RegistryCore, _opt
from plinth.registry.rules import may_set_stage, model_exists, stage_action
from plinth.registry.types import Decision, ModelVersion, Stage
from plinth.store import lease
from plinth.store.schema import model_decisions, model_history, model_versions, pipeline_runs
from plinth.store.sql import check_max_results, decode_page_token, encode_page_token, now_ms
from plinth.tracking.types import Page

# what storing a decision adds to it (the history row has its own actor and time)
_STORED_FIELDS = ("id", "actor", "at")
# how long one hold of a model's adjudication lease lasts (a holder renews it meanwhile)
ADJUDICATION_LEASE_SECONDS = 120.0
PIPELINE_KEY_PREFIX = "pipeline-run:"


def _may_read_decision(access: Access, arguments: dict[str, Any]) -> None:
    """viewer on the decision's model"""
    key = str(arguments["key"])
    with access.store.read() as conn:
        name = stored.model_of_key(conn, key)
    if name is None:
        return  # the method says "not found"
    try:
        access.require(Action.READ, Kind.MODEL, name, repr(name))
    except NotFound:  # a private model's decision is not found either
        raise NotFound(f"no decision is recorded with key {key!r}") from None


def _may_adjudicate(access: Access, arguments: dict[str, Any]) -> None:
    """promoter on the model (the editor role, for a model its first adjudication makes)"""
    name = str(arguments["name"])
    if model_exists(access.store, name):
        access.require(Action.PROMOTE, Kind.MODEL, name, repr(name))
    else:
        access.require_role(Role.EDITOR, f"adjudicate new model {name!r}")


class RegistryService(RegistryCore):
    @endpoint("POST", "/models/{name}/versions/{version}/stage")
    @guarded(check=may_set_stage)
    def set_stage(
        self,
        name: str,
        version: int,
        stage: Stage,
        reason: str = "",
        allow_archived: bool = False,
        evidence: dict[str, Any] | None = None,
    ) -> ModelVersion:
        """Move a version to a stage. Entering PRODUCTION archives the current production
        version in the same transaction. Gates run before STAGING and PRODUCTION; a refused
        promotion changes nothing (GateFailed), and so does a race with another promotion.
        Entering or leaving PRODUCTION takes the promoter permission on the model."""
        stage = Stage.parse(stage)
        candidate = self._version(name, version)
        # The rule's check read the stage earlier; the transaction below holds to this one.
        action = stage_action(stage, candidate.stage)
        self.access.require(action, Kind.MODEL, name, repr(name))
        if candidate.stage is stage:
            return candidate
        if candidate.stage is Stage.ARCHIVED and not allow_archived:
            raise Conflict(
                f"{candidate.uri} is ARCHIVED: pass allow_archived=True (--allow-archived) to bring it back to {stage.value}"
            )
        production = self._production(name)
        results = []
        if stage in (Stage.STAGING, Stage.PRODUCTION):
            results = gate_checks.evaluate(
                self._gates_of(name), candidate, production, stage, evidence or {}
            )
            failed = [r for r in results if not r.passed]
            if failed:
                raise GateFailed(
                    f"{candidate.uri} cannot enter {stage.value}: "
                    + "; ".join(f"{r.gate}: {r.detail}" for r in failed),
                    results,
                )
        details: dict[str, Any] = {"gates": [asdict(r) for r in results]}
        if evidence:
            details["evidence"] = evidence
        with self.store.write() as conn:
            self._lock(conn, name)
            if self._load_version(conn, name, version).stage is not candidate.stage:
                raise Conflict(f"{candidate.uri} changed stage during this promotion; try again")
            if self._production_version(conn, name) != (production.version if production else None):
                raise Conflict(
                    f"the PRODUCTION version of {name!r} changed during this promotion; try again"
                )
            self._move(conn, candidate, stage, reason, "stage", details)
            if action is Action.PROMOTE:
                self.access.record(
                    "model_promoted" if stage is Stage.PRODUCTION else "model_demoted",
                    f"model:{name}",
                    detail=f"v{version}: {candidate.stage.value} -> {stage.value} {reason}".strip(),
                    conn=conn,
                )
        return self._version(name, version)

    @endpoint("POST", "/models/{name}/rollback")
    @guarded(Action.PROMOTE, Kind.MODEL, "name")
    def rollback(self, name: str, reason: str = "") -> ModelVersion:
        """Restore the version that was PRODUCTION before the current one."""
        with self.store.write() as conn:
            self._lock(conn, name)
            current = self._production_version(conn, name)
            left = conn.execute(
                select(model_history.c.version)
                .where(
                    model_history.c.model_name == name,
                    model_history.c.from_value == Stage.PRODUCTION.value,
                )
                .order_by(model_history.c.id.desc())
            ).scalars()
            existing = set(
                conn.execute(
                    select(model_versions.c.version).where(model_versions.c.model_name == name)
                ).scalars()
            )
            previous = next((v for v in left if v != current and v in existing), None)
            if previous is None:
                raise Conflict(f"model {name!r} has no earlier PRODUCTION version to roll back to")
            target = self._load_version(conn, name, previous)
            self._move(conn, target, Stage.PRODUCTION, reason, "rollback", {"replaced": current})
            self.access.record(
                "model_rolled_back",
                f"model:{name}",
                detail=f"v{current} -> v{previous} {reason}".strip(),
                conn=conn,
            )
        return self._version(name, previous)

    @endpoint("GET", "/models/{name}/versions")
    @guarded(Action.READ, Kind.MODEL, "name")
    def list_model_versions(
        self,
        name: str,
        stage: Stage | None = None,
        max_results: int = 100,
        page_token: str | None = None,
    ) -> Page[ModelVersion]:
        """One model's versions, newest first, a page at a time (only one stage's if
        ``stage``)."""
        offset = decode_page_token(page_token)
        limit = check_max_results(max_results)
        v = model_versions.c
        query = select(v.version).where(v.model_name == name)
        if stage is not None:
            query = query.where(v.stage == Stage(stage).value)
        query = query.order_by(v.version.desc()).offset(offset).limit(limit + 1)
        with self.store.read() as conn:
            self._model_row(conn, name)
            numbers = conn.execute(query).scalars().all()
            items = [self._load_version(conn, name, n) for n in numbers[:limit]]
        more = len(numbers) > limit
        return Page(items, encode_page_token(offset + limit) if more else None)

    @endpoint("GET", "/models/{name}/stages")
    @guarded(Action.READ, Kind.MODEL, "name")
    def latest_versions(self, name: str) -> dict[str, int]:
        """The newest version in each stage that holds one, e.g. ``{"PRODUCTION": 3}``."""
        v = model_versions.c
        query = select(v.stage, func.max(v.version)).where(v.model_name == name).group_by(v.stage)
        with self.store.read() as conn:
            self._model_row(conn, name)
            return {stage: int(number) for stage, number in conn.execute(query).all()}

    @endpoint("POST", "/models/{name}/adjudication-lease")
    @guarded(check=_may_adjudicate)
    def hold_adjudication(self, name: str, holder: str, release: bool = False) -> bool:
        """Take or renew (``release``: give up) the lease that lets one adjudication of
        ``name`` at a time run (``Client.adjudicate``, local or remote); whether the caller
        holds it now. A hold lasts ``ADJUDICATION_LEASE_SECONDS``; the holder renews it."""
        lease_name, mine = f"adjudicate:{name}", f"{self.access.actor()}:{holder}"
        if release:
            lease.release(self.store, lease_name, mine)
            return False
        return lease.acquire(self.store, lease_name, mine, ADJUDICATION_LEASE_SECONDS)

    @endpoint("POST", "/models/{name}/decisions")
    @guarded(Action.PROMOTE, Kind.MODEL, "name")
    def record_decision(self, name: str, decision: Decision) -> Decision:
        """Record a champion/challenger decision (promoted or kept): a ``decision`` entry in
        the model's history and a stored decision, in one transaction. A decision whose
        ``key`` was recorded before is refused (Conflict) and changes nothing.

        Takes the promoter permission on the model. A "promoted" decision names the
        model's PRODUCTION version. Keys beginning ``pipeline-run:``, ``pipeline_run`` and
        ``alert_id`` are the pipelines': the run must exist, the caller must be an editor of
        its pipeline and the key must begin ``pipeline-run:R:`` (R: the run's first attempt)."""
        if decision.model_name != name:
            raise InvalidArgument(
                f"the decision is about model {decision.model_name!r}, not {name!r}"
            )
        if decision.outcome not in stored.OUTCOMES:
            raise InvalidArgument(
                f"outcome {decision.outcome!r} is not one of {', '.join(stored.OUTCOMES)}"
            )
        self._check_pipeline_claim(decision)
        actor, at = self.access.actor(), now_ms()
        with self.store.write() as conn:
            self._model_row(conn, name)
            self._check_versions(conn, decision)
            if decision.key is not None and stored.by_key(conn, decision.key) is not None:
                raise Conflict(f"a decision with key {decision.key!r} is already recorded")
            try:
                decision_id = stored.insert_decision(conn, decision, actor, at)
            except IntegrityError:  # the same key recorded concurrently
                raise Conflict(
                    f"a decision with key {decision.key!r} is already recorded"
                ) from None
            self._history(
                conn,
                name,
                decision.challenger_version,
                "decision",
                _opt(decision.champion_version),
                decision.outcome,
                decision.reason,
                {
                    **{k: v for k, v in asdict(decision).items() if k not in _STORED_FIELDS},
                    "decision_id": decision_id,
                },
            )
            row = conn.execute(
                select(model_decisions).where(model_decisions.c.id == decision_id)
            ).one()
        return stored.decision_of(row)

    def _check_versions(self, conn: Connection, decision: Decision) -> None:
        name = decision.model_name
        for field_name in ("challenger_version", "champion_version"):
            number = getattr(decision, field_name)
            if (
                number is not None
                and not conn.execute(
                    select(model_versions.c.version).where(
                        model_versions.c.model_name == name, model_versions.c.version == number
                    )
                ).first()
            ):
                raise InvalidArgument(f"{field_name}: model {name!r} has no version {number}")
        if decision.outcome != "promoted":
            return
        promoted = decision.challenger_version
        if decision.version is not None and decision.version != promoted:
            raise InvalidArgument(
                f"a promoted decision's version ({decision.version}) is its challenger_version "
                f"({promoted})"
            )
        production = self._production_version(conn, name)
        if promoted is None or promoted != production:
            raise InvalidArgument(
                f"a promoted decision names the PRODUCTION version of {name!r} "
                f"(v{production}), not {'no version' if promoted is None else f'v{promoted}'}"
            )

    def _check_pipeline_claim(self, decision: Decision) -> None:
        """A decision that claims a pipeline run (its key, ``pipeline_run`` or ``alert_id``)
        comes from an editor of that run's pipeline, under that run's keys."""
        key = decision.key or ""
        if (
            not key.startswith(PIPELINE_KEY_PREFIX)
            and decision.pipeline_run is None
            and decision.alert_id is None
        ):
            return
        if decision.pipeline_run is None:
            raise InvalidArgument(
                f"key {key!r} or alert_id {decision.alert_id!r}: keys beginning "
                f"{PIPELINE_KEY_PREFIX!r} and alert ids belong to a pipeline run; name it "
                "(pipeline_run), or use another key"
            )
        r = pipeline_runs.c
        with self.store.read() as conn:
            run = conn.execute(
                select(r.id, r.pipeline, r.retry_of, r.alert_id).where(
                    r.id == decision.pipeline_run
                )
            ).first()
        if run is None:
            raise InvalidArgument(f"pipeline_run: there is no pipeline run {decision.pipeline_run}")
        self.access.require(Action.WRITE, Kind.PIPELINE, run.pipeline, repr(run.pipeline))
        first = run.retry_of if run.retry_of is not None else run.id
        prefix = f"{PIPELINE_KEY_PREFIX}{first}:"
        if not key.startswith(prefix):
            raise InvalidArgument(
                f"key {decision.key!r}: a decision of pipeline run {run.id} has a key "
                f"beginning {prefix!r}"
            )
        if decision.alert_id is not None and decision.alert_id != run.alert_id:
            raise InvalidArgument(
                f"alert_id {decision.alert_id}: pipeline run {run.id} was triggered by "
                f"{'no alert' if run.alert_id is None else f'alert {run.alert_id}'}"
            )

    @endpoint("GET", "/model-decisions/{key:path}")
    @guarded(check=_may_read_decision)
    def get_decision(self, key: str) -> Decision:
        """The decision recorded under an idempotence key (e.g. ``pipeline-run:12:promote``)."""
        with self.store.read() as conn:
            row = stored.by_key(conn, key)
        if row is None:
            raise NotFound(f"no decision is recorded with key {key!r}")
        return stored.decision_of(row)

    @endpoint("GET", "/model-decisions")
    @guarded()
    def list_decisions(
        self,
        name: str | None = None,
        pipeline_run: int | None = None,
        max_results: int = 100,
        page_token: str | None = None,
    ) -> Page[Decision]:
        """Champion/challenger decisions about the models the caller may read, newest
        first; only one model's, or one pipeline run's, if given."""
        offset, limit = decode_page_token(page_token), check_max_results(max_results)
        d = model_decisions.c
        query = select(model_decisions).order_by(d.id.desc())
        if name is not None:
            query = query.where(d.model_name == name)
        if pipeline_run is not None:
            query = query.where(d.pipeline_run == pipeline_run)
        visible = self.access.visible(Kind.MODEL)
        if visible is not None:
            query = query.where(d.model_name.in_(visible))
        with self.store.read() as conn:
            rows = conn.execute(query.offset(offset).limit(limit + 1)).all()
        items = [stored.decision_of(row) for row in rows[:limit]]
        return Page(items, encode_page_token(offset + limit) if len(rows) > limit else None)

    def _production(self, name: str) -> ModelVersion | None:
        with self.store.read() as conn:
            self._model_row(conn, name)
            version = self._production_version(conn, name)
            return None if version is None else self._load_version(conn, name, version)

    def _production_version(self, conn: Connection, name: str) -> int | None:
        return conn.execute(
            select(model_versions.c.version).where(
                model_versions.c.model_name == name,
                model_versions.c.stage == Stage.PRODUCTION.value,
            )
        ).scalar()

    def _move(
        self,
        conn: Connection,
        target: ModelVersion,
        stage: Stage,
        reason: str,
        action: str,
        details: dict[str, Any],
    ) -> None:
        name = target.model_name
        if stage is Stage.PRODUCTION:
            current = self._production_version(conn, name)
            if current is not None and current != target.version:
                self._set_stage_row(conn, name, current, Stage.ARCHIVED)
                self._history(
                    conn,
                    name,
                    current,
                    action,
                    Stage.PRODUCTION.value,
                    Stage.ARCHIVED.value,
                    f"replaced by v{target.version}",
                )
        try:
            self._set_stage_row(conn, name, target.version, stage)
        except IntegrityError:
            raise Conflict(
                f"another version of {name!r} entered PRODUCTION at the same time"
            ) from None
        self._history(
            conn,
            name,
            target.version,
            action,
            target.stage.value,
            stage.value,
            reason,
            details,
        )

    def _set_stage_row(self, conn: Connection, name: str, version: int, stage: Stage) -> None:
        conn.execute(
            update(model_versions)
            .where(model_versions.c.model_name == name, model_versions.c.version == version)
            .values(stage=stage.value)
        )
