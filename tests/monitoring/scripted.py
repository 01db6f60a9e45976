"""What the monitor tests share: a check whose answers a test scripts (through
``MonitorService``'s ``evaluator`` seam), real webhook receivers on loopback (one that
answers as scripted, one that accepts connections and never answers), and the targets
monitors watch."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from plinth.client import Client
from plinth.features.types import FeatureSpec
from plinth.monitoring.alerts import WebhookPolicy
from plinth.monitoring.service import MonitorService
from plinth.monitoring.types import Monitor

#: quick rounds for tests: real timeouts and back-off, just short
FAST = WebhookPolicy(attempts=3, backoff=0.01, timeout=2.0, budget=10.0, retry_after=60.0)


@dataclass(frozen=True)
class Outcome:
    status: str
    summary: str
    result: dict[str, Any] = field(default_factory=dict)
    reference_profile: int | None = None
    current_profile: int | None = None
    event: int | None = None


def drift(*drifted: str, of: int = 4) -> Outcome:
    """A drift check's breach naming its drifted columns (none: ok)."""
    columns = [{"column": c, "drifted": True, "test": "ks"} for c in drifted]
    columns += [{"column": f"fine{i}", "drifted": False} for i in range(of - len(drifted))]
    share = len(drifted) / of
    status = "breach" if drifted else "ok"
    summary = f"{len(drifted)} of {of} columns drifted ({share:.0%})"
    return Outcome(
        status, summary, {"columns": columns, "drifted_share": share, "preset": "plinth"}
    )


class Scripted:
    """A check answering what the test queued (or raising it), recording each call; past
    the queue it repeats its last answer."""

    def __init__(self, *answers: Outcome | Exception) -> None:
        self.answers = list(answers) or [drift()]
        self.calls: list[tuple[str, str, int]] = []
        self.events: dict[str, int | None] = {}

    def __call__(self, data: Any, monitor: Monitor, *, now_ms: int, trigger: str) -> Outcome:
        self.calls.append((monitor.name, trigger, now_ms))
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, Exception):
            raise answer
        return answer

    def newest_event(self, data: Any, monitor: Monitor) -> int | None:
        found = self.events.get(monitor.name)
        if isinstance(found, Exception):
            raise found
        return found


def service_for(client: Client, check: Scripted, policy: WebhookPolicy = FAST) -> MonitorService:
    return MonitorService(
        client.tracking.store,
        None,
        evaluator=check,
        newest_event=check.newest_event,
        webhook=policy,
    )


def make_targets(client: Client) -> None:
    """A registered model ``churn`` (version 1) and a feature group ``customers``."""
    client.registry.create_registered_model("churn")
    fs = client.features
    fs.create_entity("customer", join_keys=["customer_id"])
    fs.create_feature_group(
        "customers",
        entity="customer",
        event_time="ts",
        features=[FeatureSpec("spend", "float64"), FeatureSpec("visits", "int64")],
    )


# -- webhooks on loopback ----------------------------------------------------------------------


@dataclass
class Received:
    path: str
    body: dict[str, Any]
    headers: dict[str, str]


class Webhook:
    """A real HTTP server on loopback answering each POST with the next queued status (the
    last one again past the queue), recording what it was sent. ``during`` runs inside the
    handler, before it answers."""

    def __init__(self, *statuses: int, during: Callable[[], None] | None = None) -> None:
        self.statuses = list(statuses) or [200]
        self.received: list[Received] = []
        self.during = during
        self.failures: list[BaseException] = []
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                size = int(self.headers.get("content-length", 0))
                body = json.loads(self.rfile.read(size))
                hook.received.append(Received(self.path, body, dict(self.headers)))
                if hook.during is not None:
                    try:
                        hook.during()
                    except BaseException as exc:  # reported to the test, not swallowed
                        hook.failures.append(exc)
                status = hook.statuses.pop(0) if len(hook.statuses) > 1 else hook.statuses[0]
                text = f"status {status}".encode()
                self.send_response(status)
                self.send_header("content-length", str(len(text)))
                self.end_headers()
                self.wfile.write(text)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/plinth"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Webhook:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


@contextlib.contextmanager
def silent_webhook() -> Iterator[str]:
    """A socket that accepts connections (the kernel completes the handshake) and never
    answers: the URL of a webhook that hangs."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/hook"
    finally:
        sock.close()
