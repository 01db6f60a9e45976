"""The client side of the scale-out test: a worker that logs runs through a load balancer,
retries each call the way an application should (Plinth's remote client does not retry by
itself), and keeps a ledger of every write that was acknowledged.

A call that failed with ``Unavailable`` (the replica died, the connection dropped) may or
may not have committed. Retrying is safe for the calls that are idempotent as they are
(params, tags, artifact uploads, metric batches marked with their spool position, ending a
run); the two creates are made idempotent by a name the client chose: a run with a unique
name (a retry that finds the name taken looks the run up), a model version registered
from a run's package (before a retry, ``registered_from_run`` looks for the version).
"""

from __future__ import annotations

import contextlib
import hashlib
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from plinth.client import Client
from plinth.errors import AlreadyExists, Unavailable
from plinth.registry.types import ModelVersion
from plinth.tracking.run import ActiveRun
from plinth.tracking.types import Run

T = TypeVar("T")

RETRY_FOR = 30.0  # seconds a call is retried before the worker gives up
BACKOFF = (0.02, 0.05, 0.1, 0.2)  # between attempts: a client's pause, not a wait on a server


@dataclass
class RunRecord:
    """What the store must hold for one run: every write here was acknowledged."""

    name: str
    id: str = ""
    params: dict[str, Any] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    losses: list[float] = field(default_factory=list)  # step i has losses[i]
    artifacts: dict[str, str] = field(default_factory=dict)  # path -> sha256
    version: int | None = None  # the model version registered from the run
    ended: bool = False


@dataclass
class Ledger:
    runs: list[RunRecord] = field(default_factory=list)
    lookups: int = 0
    retries: Counter[str] = field(default_factory=Counter)
    resolved: Counter[str] = field(default_factory=Counter)  # ambiguous creates found committed


class Retrying:
    """Calls through a flaky path: ``Unavailable`` means try again (after ``resolve`` found
    nothing, for a call that is not idempotent by itself)."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger

    def call(
        self,
        what: str,
        fn: Callable[[], T],
        *,
        before_retry: Callable[[], T | None] | None = None,
        on_taken: Callable[[], T | None] | None = None,
    ) -> T:
        deadline = time.monotonic() + RETRY_FOR
        failed = False
        attempt = 0
        while True:
            if failed and before_retry is not None:
                found = self.call(f"{what} (look-up)", before_retry)
                if found is not None:
                    self.ledger.resolved[what] += 1
                    return found
            try:
                return fn()
            except Unavailable:
                if time.monotonic() > deadline:
                    raise
                failed = True
                self.ledger.retries[what] += 1
            except AlreadyExists:
                # Only a retry may find its own earlier attempt's name taken.
                if not failed or on_taken is None:
                    raise
                found = self.call(f"{what} (look-up)", on_taken)
                if found is None:
                    raise
                self.ledger.resolved[what] += 1
                return found
            time.sleep(BACKOFF[min(attempt, len(BACKOFF) - 1)])
            attempt += 1


@dataclass(frozen=True)
class Plan:
    experiment: str
    model_name: str
    runs: int  # runs per worker
    steps: int  # metric points per run
    artifact_bytes: int
    register_every: int  # every n-th run registers a model version
    feature: str  # an online feature to look up, e.g. "customer_stats:orders_30d"
    expected_feature: dict[int, Any]  # customer_id -> its online value


def artifact_of(worker: int, run: int, size: int) -> bytes:
    """Distinct, reproducible content per run (not compressible to nothing)."""
    seed = hashlib.sha256(f"{worker}-{run}".encode()).digest()
    blocks = (size + len(seed) - 1) // len(seed)
    return b"".join(hashlib.sha256(seed + i.to_bytes(4, "big")).digest() for i in range(blocks))[
        :size
    ]


def loss(worker: int, run: int, step: int) -> float:
    return 1.0 / (1 + step) + worker / 100 + run / 10_000


def work(
    worker: int,
    client: Client,
    plan: Plan,
    model: Any,
    ledger: Ledger,
    done: Callable[[], None],
    stop: threading.Event,
    where: Callable[[int], str] = lambda port: f"the connection from port {port}",
) -> None:
    """Log ``plan.runs`` runs; ``done`` is called after each acknowledged run. ``where``
    names the replica behind a client connection (by its local port) in a failure."""
    for j in range(plan.runs):
        if stop.is_set():
            return
        record = RunRecord(name=f"w{worker}-r{j}")
        ledger.runs.append(record)
        _log_run(Retrying(ledger), client, plan, model, worker, j, record, where)
        ledger.lookups += 1
        done()


def _log_run(
    r: Retrying,
    client: Client,
    plan: Plan,
    model: Any,
    worker: int,
    j: int,
    record: RunRecord,
    where: Callable[[int], str],
) -> None:
    tracking = client.tracking

    def by_name() -> Run | None:
        found = client.search_runs(f"name = '{record.name}'", experiments=[plan.experiment])
        return found.items[0] if found.items else None

    info = r.call(
        "create_run", lambda: tracking.create_run(plan.experiment, record.name), on_taken=by_name
    )
    record.id = info.id
    run = ActiveRun(client, info)

    params = {"worker": worker, "index": j, "lr": 0.01 * (j + 1)}
    r.call("log_params", lambda: tracking.log_params(run.id, params, "hyper"))
    record.params = params

    for step in range(plan.steps):
        run.log_metric("loss", loss(worker, j, step), step=step)  # spooled: acknowledged
        record.losses.append(loss(worker, j, step))

    tags = {"worker": str(worker), "phase": "load"}
    r.call("set_tags", lambda: tracking.set_tags(run.id, tags))
    record.tags = tags

    data = artifact_of(worker, j, plan.artifact_bytes)
    r.call("upload_artifact", lambda: client.upload_artifact_bytes(run.id, data, "data.bin"))
    record.artifacts["data.bin"] = hashlib.sha256(data).hexdigest()

    if j % plan.register_every == 0:
        record.version = _register(r, client, run, plan.model_name, model).version

    customer = 1 + (worker + j) % 2
    found = r.call("online lookup", lambda: _lookup(client, plan.feature, customer))
    expected = plan.expected_feature[customer]
    assert found.value == expected, (
        f"{plan.feature} of customer {customer} was {found.value!r}, not {expected!r}; "
        f"{where(found.client_port)} answered {found.body}"
    )

    r.call("end_run", run.end)
    record.ended = True


def _register(r: Retrying, client: Client, run: ActiveRun, name: str, model: Any) -> ModelVersion:
    # The package's files first (uploads are idempotent until the version makes them
    # read-only), then the version, looked up before any retry.
    r.call("log_model", lambda: run.log_model(model, "model"))
    r.call("flush", run.flush)
    package = f"{run.experiment_id}/{run.id}/artifacts/model"
    return r.call(
        "create_model_version",
        lambda: client.registry.create_model_version(name, package, run.id),
        before_retry=lambda: client.registered_from_run(name, run.id, "model"),
    )


@dataclass(frozen=True)
class Lookup:
    value: Any
    client_port: int  # the local end of the connection it came on: which replica answered
    body: str


def _lookup(client: Client, feature: str, customer: int) -> Lookup:
    transport = client.tracking.transport  # type: ignore[attr-defined]
    response = transport.request(
        "GET", "/features/online", params={"features": feature, "customer_id": customer}
    )
    port = 0  # unknown: the connection closed already (no keep-alive)
    stream = response.extensions.get("network_stream")
    with contextlib.suppress(OSError):
        port = stream.get_extra_info("client_addr")[1] if stream is not None else 0
    rows = response.json()["rows"]
    return Lookup(rows[0][feature.split(":", 1)[1]], port, response.text)
