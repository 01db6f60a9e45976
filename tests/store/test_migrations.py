"""Migrations that carry data forward."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import create_engine, insert, select

from plinth.store.migrate import upgrade
from plinth.store.schema import experiments, grants, registered_models


def test_0009_keeps_existing_resources_readable_and_owned(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'old.db'}")
    with engine.connect() as conn:
        upgrade(conn, "0008")
        conn.execute(
            insert(experiments),
            [
                {
                    "id": "e1",
                    "name": "churn",
                    "description": "",
                    "owner": "alice",
                    "created_at": 1,
                    "next_run_number": 1,
                },
                {
                    "id": "e2",
                    "name": "nobody's",
                    "description": "",
                    "owner": "",
                    "created_at": 1,
                    "next_run_number": 1,
                },
            ],
        )
        conn.execute(
            insert(registered_models),
            [
                {
                    "name": "m",
                    "description": "",
                    "owner": "bob",
                    "tags": "{}",
                    "gates": "[]",
                    "created_at": 1,
                    "updated_at": 1,
                    "next_version": 1,
                }
            ],
        )
        conn.commit()
        upgrade(conn, "0009")
        found = {
            (r.kind, r.resource, r.grantee_type, r.grantee, r.level)
            for r in conn.execute(select(grants))
        }
    engine.dispose()
    assert found == {
        ("experiment", "e1", "everyone", "*", 1),
        ("experiment", "e1", "user", "alice", 4),
        ("experiment", "e2", "everyone", "*", 1),
        ("model", "m", "everyone", "*", 1),
        ("model", "m", "user", "bob", 4),
    }
