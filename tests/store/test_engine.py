from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import inspect, text

import plinth
from plinth.store.engine import SCHEMA_REVISION, Store
from plinth.store.migrate import head_revision
from plinth.store.schema import metadata


def test_schema_revision_constant_is_the_alembic_head() -> None:
    assert head_revision() == SCHEMA_REVISION


def test_sqlite_is_created_migrated_and_in_wal_mode(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'deep' / 'plinth.db'}")
    assert store.current_revision() == SCHEMA_REVISION
    with store.read() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    assert set(inspect(store.engine).get_table_names()) >= set(metadata.tables)
    store.upgrade()  # idempotent
    store.dispose()


@pytest.mark.integration
def test_postgres_is_migrated(postgres_uri: str) -> None:
    store = Store(postgres_uri)
    assert store.current_revision() == SCHEMA_REVISION
    assert set(inspect(store.engine).get_table_names()) >= set(metadata.tables)
    store.dispose()


def test_migrations_match_the_schema(sqlite_uri: str) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    store = Store(sqlite_uri)
    with store.read() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), metadata)
    assert diff == []
    store.dispose()


@pytest.mark.parametrize("uri", ["not a uri", "mysql://x@y/z", "oracle://a"])
def test_bad_store_uris(uri: str) -> None:
    with pytest.raises(plinth.InvalidArgument, match="store URI"):
        Store(uri)


def test_writes_are_transactions(sqlite_uri: str) -> None:
    store = Store(sqlite_uri)
    with pytest.raises(RuntimeError), store.write() as conn:
        conn.execute(text("INSERT INTO environments VALUES ('d', '3.11', 'linux', '{}')"))
        raise RuntimeError("boom")
    with store.read() as conn:
        assert conn.execute(text("SELECT count(*) FROM environments")).scalar() == 0
    store.dispose()


def test_unreachable_postgres_is_unavailable() -> None:
    with pytest.raises(plinth.Unavailable, match="unavailable"):
        Store("postgresql+psycopg://nobody@127.0.0.1:1/nothing")


@pytest.mark.integration
def test_postgres_connections_carry_the_statement_timeout(postgres_uri: str) -> None:
    store = Store(postgres_uri, statement_timeout=1.5)
    with store.read() as conn:
        assert conn.execute(text("SHOW statement_timeout")).scalar() == "1500ms"
    store.dispose()
    off = Store(postgres_uri, statement_timeout=0)
    with off.read() as conn:
        assert conn.execute(text("SHOW statement_timeout")).scalar() == "0"
    off.dispose()


@pytest.mark.integration
def test_a_postgres_that_stops_answering_mid_session_is_unavailable(postgres_uri: str) -> None:
    from sqlalchemy.engine import make_url

    from tests.faults import FreezableProxy

    url = make_url(postgres_uri)
    with FreezableProxy((url.host or "127.0.0.1", url.port or 5432)) as proxy:
        through = url.set(port=proxy.port).render_as_string(hide_password=False)
        store = Store(through, connect_timeout=2, statement_timeout=0.5)

        def select_after_freezing() -> None:
            with store.read() as conn:
                conn.execute(text("SELECT 1"))
                proxy.freeze()  # the server stops answering this session
                conn.execute(text("SELECT 1"))

        # statement_timeout is the server's and cannot fire: the client gives up
        with pytest.raises(plinth.Unavailable, match=r"did not answer within 5\.5 s"):
            in_a_daemon_thread(select_after_freezing, timeout=60)
        with pytest.raises(plinth.Unavailable, match="unavailable"):  # nor a new session
            store.current_revision()
        store.dispose()


def in_a_daemon_thread(call: Callable[[], None], timeout: float) -> None:
    """``call()``, failing the test if it has not returned after ``timeout`` seconds (the
    thread is left behind, so that a hang does not hang the test run)."""
    raised: list[BaseException] = []

    def run() -> None:
        try:
            call()
        except BaseException as exc:
            raised.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout)
    assert not thread.is_alive(), f"still waiting after {timeout} s"
    if raised:
        raise raised[0]


def test_predictions_logged_per_row_are_rewritten_per_request(tmp_path: Path) -> None:
    from sqlalchemy import create_engine

    from plinth.store.migrate import upgrade

    engine = create_engine(f"sqlite:///{tmp_path / 'old.db'}")
    with engine.connect() as conn:
        upgrade(conn, "0005")
        conn.execute(
            text(
                "INSERT INTO predictions (model_name, model_version, request_id, at, inputs,"
                " outputs, latency_ms) VALUES ('m', 1, 'r', 5, :inputs, '0.5', 1.0)"
            ),
            {"inputs": '{"age": 41, "plan": "pro"}'},
        )
        conn.commit()
        upgrade(conn)
        row = conn.execute(text("SELECT inputs, outputs, rows FROM predictions")).one()
    engine.dispose()
    assert row == ('{"age": [41], "plan": ["pro"]}', "[0.5]", 1)
