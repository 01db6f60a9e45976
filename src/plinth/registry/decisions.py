"""Stored champion/challenger decisions: the model_decisions rows and their reading."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import Connection, insert, select

from plinth.registry.types import Decision
from plinth.store.schema import model_decisions
from plinth.store.sql import to_datetime

OUTCOMES = ("promoted", "kept")


def insert_decision(conn: Connection, decision: Decision, actor: str, at: int) -> int:
    """One decision row; a duplicate ``key`` raises the database's IntegrityError."""
    row = conn.execute(
        insert(model_decisions)
        .values(
            model_name=decision.model_name,
            key=decision.key,
            outcome=decision.outcome,
            metric=decision.metric,
            direction=decision.direction,
            challenger_run_id=decision.challenger_run_id,
            challenger_version=decision.challenger_version,
            challenger_score=decision.challenger_score,
            champion_version=decision.champion_version,
            champion_score=decision.champion_score,
            pipeline_run=decision.pipeline_run,
            alert_id=decision.alert_id,
            reason=decision.reason,
            evidence=json.dumps(decision.evidence, sort_keys=True, default=str),
            actor=actor,
            at=at,
        )
        .returning(model_decisions.c.id)
    )
    return int(row.scalar_one())


def decision_of(row: Any) -> Decision:
    return Decision(
        outcome=row.outcome,
        model_name=row.model_name,
        metric=row.metric,
        direction=row.direction,
        challenger_run_id=row.challenger_run_id,
        challenger_score=row.challenger_score,
        champion_version=row.champion_version,
        champion_score=row.champion_score,
        version=row.challenger_version if row.outcome == "promoted" else None,
        reason=row.reason,
        challenger_version=row.challenger_version,
        key=row.key,
        pipeline_run=row.pipeline_run,
        alert_id=row.alert_id,
        evidence=json.loads(row.evidence),
        id=row.id,
        actor=row.actor,
        at=to_datetime(row.at),
    )


def by_key(conn: Connection, key: str) -> Any:
    return conn.execute(select(model_decisions).where(model_decisions.c.key == key)).first()


def model_of_key(conn: Connection, key: str) -> str | None:
    return conn.execute(
        select(model_decisions.c.model_name).where(model_decisions.c.key == key)
    ).scalar()
