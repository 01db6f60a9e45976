"""PostgreSQL connections that give up on a server that does not answer.

libpq bounds only connecting (``connect_timeout``); ``statement_timeout`` is enforced by
the server, so a server that has stopped answering (hung, paused, a black-holing proxy)
would hold the calling thread forever. Every wait for the server here ends after the read
timeout: the connection is then closed (its state is unknown) and the call fails with an
OperationalError, which the engine reports as the metadata store being unavailable.
"""

from __future__ import annotations

from typing import Any

import psycopg
import psycopg.errors

# psycopg raises this (an OperationalError) when a wait given a timeout expires.
_WAIT_TIMEOUT: type[BaseException] = getattr(psycopg.errors, "_WaitTimeout", TimeoutError)
# What the server gets to end a statement itself, before the client gives up on it.
READ_MARGIN_S = 5.0


class TimedConnection(psycopg.Connection[Any]):
    read_timeout: float | None = None

    def wait(self, gen: Any, *args: Any, **kwargs: Any) -> Any:
        if self.read_timeout is None or len(args) > 1 or kwargs.get("timeout") is not None:
            return super().wait(gen, *args, **kwargs)
        kwargs["timeout"] = self.read_timeout
        try:
            return super().wait(gen, *args, **kwargs)
        except _WAIT_TIMEOUT:
            self.pgconn.finish()
            raise psycopg.OperationalError(
                f"the server did not answer within {self.read_timeout:g} s"
            ) from None


def connect(
    cargs: tuple[Any, ...],
    cparams: dict[str, Any],
    connect_timeout: float,
    statement_timeout: float,
) -> TimedConnection:
    """A connection with ``connect_timeout``, the server's ``statement_timeout`` and a read
    timeout a little longer (both off when ``statement_timeout`` is 0); what the store URI
    sets itself wins."""
    cparams.setdefault("connect_timeout", max(2, round(connect_timeout)))
    options = str(cparams.get("options", ""))
    if statement_timeout and "statement_timeout" not in options:
        limit = f"-c statement_timeout={round(statement_timeout * 1000)}"
        cparams["options"] = f"{options} {limit}".strip()
    conn = TimedConnection.connect(*cargs, **cparams)
    conn.read_timeout = statement_timeout + READ_MARGIN_S if statement_timeout else None
    return conn
