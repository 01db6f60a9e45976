"""The scale-out topology of deploy/ as processes on loopback: a migration job, two
``plinth server`` replicas on one PostgreSQL database, an S3 endpoint and Redis, behind a
round-robin proxy; concurrent clients write through the proxy while one replica is killed
with SIGKILL. Every acknowledged write must be in the stores exactly once."""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import IO, Any

import httpx
import pytest

import plinth
from plinth.client import Client
from plinth.tracking.run import ActiveRun
from tests.backends import free_port, postgres_database
from tests.deploy.load import Ledger, Plan, Retrying, work
from tests.deploy.proxy import RoundRobinProxy, round_robin
from tests.features.conftest import define, transactions

pytestmark = [pytest.mark.integration, pytest.mark.slow]


REDIS = os.environ.get("PLINTH_TEST_SCALEOUT_REDIS", "redis://127.0.0.1:6379")
REDIS_DATABASES = range(10, 16)  # other tests flush 9; Redis has 16 by default
CLAIM = "plinth-scale-out:claimed-by"  # the key that makes a database one test run's own
CLAIM_SECONDS = 1800  # a crashed run's claim lapses


WORKERS = 6
RUNS = 8  # per worker
KILL_AFTER = 10  # runs acknowledged before a replica is killed
PLAN = Plan(
    experiment="scale-out",
    model_name="churn",
    runs=RUNS,
    steps=40,
    artifact_bytes=96 * 1024,
    register_every=3,
    feature="customer_stats:orders_30d",
    expected_feature={1: 5, 2: 1},  # the latest values of tests.features.conftest.transactions
)


@dataclass
class Replica:
    """One ``plinth server`` process; ``start`` again after a kill (as a pod is restarted)."""

    port: int
    env: dict[str, str]
    log: IO[bytes]
    proc: subprocess.Popen[bytes] | None = None
    logged_from: int = 0  # where this start's output begins in the log

    def start(self) -> None:
        self.logged_from = self.log.seek(0, os.SEEK_END)
        self.proc = subprocess.Popen(
            plinth_command("server", "--port", str(self.port)),
            env=self.env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def tail(self) -> str:
        self.log.seek(self.logged_from)
        return self.log.read().decode(errors="replace")[-3000:]

    def lost_its_port(self) -> bool:
        """It exited because another process took the port free_port() had found."""
        return not self.alive() and "address already in use" in self.tail().lower()


@dataclass
class Topology:
    env: dict[str, str]  # the settings every service of deploy/compose.yaml gets
    replicas: list[Replica]

    def all_up(self) -> list[Replica]:
        down = [r for r in self.replicas if not r.alive()]
        for replica in down:
            replica.start()
        for replica in down:
            for _ in range(3):  # free_port() cannot hold the port until the replica binds it
                try:
                    wait_ready(replica)
                    break
                except RuntimeError:
                    if not replica.lost_its_port():
                        raise
                replica.port = free_port()
                replica.start()
            else:
                wait_ready(replica)
        return self.replicas


def plinth_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "plinth", *args]


def migrate(env: dict[str, str]) -> None:
    """The one-shot migration job every other service waits for."""
    done = subprocess.run(
        plinth_command("db", "upgrade"), env=env, capture_output=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr.decode(errors="replace")


@contextlib.contextmanager
def redis_db() -> Iterator[str]:
    """A Redis database this test run claimed (SET NX of a claim key), so that no other
    run, in this pytest or another on the same Redis, writes or flushes it meanwhile.
    Plinth's online store always uses its ``plinth`` namespace, hence a database each."""
    import redis

    owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex}"
    for db in REDIS_DATABASES:
        url = f"{REDIS}/{db}"
        client = redis.Redis.from_url(url)
        try:
            claimed = client.set(CLAIM, owner, nx=True, ex=CLAIM_SECONDS)
        except redis.ConnectionError as exc:  # pragma: no cover - depends on the machine
            client.close()
            pytest.skip(f"Redis at {url} is not available: {exc}")
        if claimed:
            break
        client.close()
    else:
        pytest.fail(f"every Redis database {REDIS}/{REDIS_DATABASES} is claimed by another run")
    try:
        _drop_online_keys(client)  # a crashed run's, whose claim lapsed
        yield url
    finally:
        _drop_online_keys(client)
        if client.get(CLAIM) == owner.encode():
            client.delete(CLAIM)
        client.close()


def _drop_online_keys(client: Any) -> None:
    names = list(client.scan_iter(match="plinth:*", count=500))
    for i in range(0, len(names), 500):
        client.delete(*names[i : i + 500])


@contextlib.contextmanager
def bucket(endpoint: str) -> Iterator[str]:
    import boto3

    s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    name = f"plinth-scaleout-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=name)
    try:
        yield f"s3://{name}"
    finally:
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=name):
            keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
            if keys:
                s3.delete_objects(Bucket=name, Delete={"Objects": keys})
        s3.delete_bucket(Bucket=name)


@pytest.fixture(scope="module")
def topology(tmp_path_factory: pytest.TempPathFactory, s3_endpoint: str) -> Iterator[Topology]:
    """One database, bucket and Redis database for the module; migrated once, two replicas
    started, a feature group written and materialised to Redis through one of them."""
    folder = tmp_path_factory.mktemp("scale-out")
    with (
        redis_db() as online_uri,
        bucket(s3_endpoint) as artifact_root,
        postgres_database() as store_uri,
        contextlib.ExitStack() as logs,
    ):
        env = {k: v for k, v in os.environ.items() if k not in ("PLINTH_URI", "PLINTH_CONFIG")}
        env.update(  # the S3 endpoint and its credentials came with os.environ
            PLINTH_STORE_URI=store_uri,
            PLINTH_ARTIFACT_URI=f"{artifact_root}/plinth",
            PLINTH_ONLINE_URI=online_uri,
            PLINTH_HOME=str(folder / "job"),
        )
        migrate(env)
        replicas = []
        for i in range(2):
            log = logs.enter_context(open(folder / f"replica-{i}.log", "w+b"))
            home = str(folder / f"replica-{i}")
            replicas.append(Replica(free_port(), {**env, "PLINTH_HOME": home}, log))
        found = Topology(env, replicas)
        try:
            found.all_up()
            seed_features(replicas[0], folder / "setup")
            yield found
        finally:
            for replica in replicas:
                replica.stop()


@pytest.fixture
def replicas(topology: Topology) -> list[Replica]:
    return topology.all_up()


def wait_ready(replica: Replica, timeout: float = 60) -> None:
    url = f"http://127.0.0.1:{replica.port}/ready"
    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if not replica.alive() or time.monotonic() > deadline:
            raise RuntimeError(f"replica on {replica.port} did not become ready:\n{replica.tail()}")
        time.sleep(0.05)  # the interval between polls


def small_model() -> Any:
    from sklearn.linear_model import LogisticRegression

    x = [[0.0, 1.0], [1.0, 0.0], [0.5, 0.2], [0.1, 0.9]]
    return LogisticRegression().fit(x, [0, 1, 1, 0])


def connect_client(url: str, home: Path) -> Client:
    return plinth.connect(url, home=home, flush_interval=0.05, heartbeat_interval=0.5)


def one_request_per_connection(client: Client) -> Client:
    transport = client.tracking.transport  # type: ignore[attr-defined]
    pooled = transport.http
    transport.http = httpx.Client(
        base_url=pooled.base_url,
        timeout=pooled.timeout,
        headers=pooled.headers,
        limits=httpx.Limits(max_keepalive_connections=0),
    )
    pooled.close()
    return client


def seed_features(replica: Replica, home: Path) -> None:
    """A feature group written through a replica (Delta on S3) and materialised to Redis:
    what the workers look up online through the proxy."""
    with connect_client(f"http://127.0.0.1:{replica.port}", home) as setup:
        features = setup.feature_store()
        define(features, ttl="3650d").insert(transactions())  # type: ignore[attr-defined]
        assert features.materialize("customer_stats") == 2


def test_a_write_whose_answer_was_lost_is_retried_into_one_write(
    tmp_path: Path, topology: Topology, replicas: list[Replica]
) -> None:
    """The ambiguous failure made certain: the proxy cuts the answer to the first attempt
    of every write (the replica did the work), so every create, metric batch, param, tag,
    upload and end is retried after it had been done."""
    backends = [("127.0.0.1", r.port) for r in replicas]
    plan = replace(
        PLAN, experiment="lost-answers", model_name="churn-lost", runs=4, steps=25, register_every=2
    )
    ledger = Ledger()
    with round_robin(backends, lose_answers=True) as proxy:
        client = one_request_per_connection(connect_client(proxy.url, tmp_path / "client"))
        with client:
            work(
                0, client, plan, small_model(), ledger, lambda: None, threading.Event(), proxy.route
            )
        lost = Counter(write.split("?")[0].rsplit("/", 1)[-1] for write in proxy.lost.elements())
        # every first attempt lost its answer: each run's create, params, tags, uploads and
        # end, and both registrations (metric batches travel with the end or before it)
        assert proxy.lost["POST /api/v1/runs"] == plan.runs
        assert ledger.resolved["create_run"] == plan.runs
        assert ledger.resolved["create_model_version"] == 2
        assert lost["end"] == plan.runs and lost["params"] == plan.runs
        assert lost["tags"] == plan.runs and lost["content"] >= plan.runs, lost  # uploads
        with connect_client(f"http://127.0.0.1:{replicas[1].port}", tmp_path / "check") as check:
            check_everything_once([ledger], topology.env, check, plan)


def run_load_and_kill(
    proxy: RoundRobinProxy, victim: Replica, clients: list[Client], ledgers: list[Ledger]
) -> dict[str, int]:
    model = small_model()
    acknowledged = Counter[str]()
    lock = threading.Lock()
    enough = threading.Event()
    stop = threading.Event()

    def done() -> None:
        with lock:
            acknowledged["runs"] += 1
            if acknowledged["runs"] >= KILL_AFTER:
                enough.set()

    killed: dict[str, int] = {}
    with ThreadPoolExecutor(WORKERS) as pool:
        futures = [
            pool.submit(work, i, client, PLAN, model, ledgers[i], done, stop, proxy.route)
            for i, client in enumerate(clients)
        ]
        try:
            assert enough.wait(45), "the clients did not get going"
            while not proxy.active[0] and not all(f.done() for f in futures):
                time.sleep(0.001)  # until a client's connection is open to the victim
            killed.update(
                connections=proxy.connections[0], open=proxy.active[0], refused=proxy.refused[0]
            )
            os.kill(victim.pid, signal.SIGKILL)
            assert victim.proc is not None
            victim.proc.wait(10)
            for future in futures:
                future.result(timeout=60)
        finally:
            stop.set()
    return killed


def check_everything_once(
    ledgers: list[Ledger], env: dict[str, str], remote: Client, plan: Plan = PLAN
) -> None:
    records = [record for ledger in ledgers for record in ledger.runs]
    assert len(records) == len(ledgers) * plan.runs and all(r.ended for r in records)
    direct = plinth.connect(
        store_uri=env["PLINTH_STORE_URI"], artifact_uri=env["PLINTH_ARTIFACT_URI"]
    )
    try:
        stored = direct.search_runs(experiments=[plan.experiment], max_results=1000).items
        # every run once, and no other: a retried create that had committed made no second run
        assert sorted(r.name for r in stored) == sorted(r.name for r in records)
        by_name = {r.name: r for r in stored}
        for record in records:
            run = by_name[record.name]
            assert run.id == record.id
            assert run.status.value == "FINISHED"
            assert run.params == {"hyper": record.params}
            assert run.tags == record.tags
            history = direct.get_metric_history(run.id, "loss")
            # every acknowledged point once: no step twice, none missing
            assert [(p.step, p.value) for p in history] == list(enumerate(record.losses))
            assert run.metrics["loss"].count == len(record.losses)
            for path, digest in record.artifacts.items():
                assert hashlib.sha256(direct.read_artifact(run.id, path)).hexdigest() == digest
                assert hashlib.sha256(remote.read_artifact(run.id, path)).hexdigest() == digest
        versions = direct.registry.search_model_versions(name=plan.model_name, max_results=1000)
        registered = {r.id: r.version for r in records if r.version is not None}
        # one version per registering run, the one its client was told
        assert sorted((v.run_id, v.version) for v in versions) == sorted(registered.items())
        assert len(registered) == len(ledgers) * len(range(0, plan.runs, plan.register_every))
    finally:
        direct.close()


def test_metric_points_are_written_once_when_the_client_has_no_spool(
    tmp_path: Path, topology: Topology, replicas: list[Replica]
) -> None:
    unwritable = tmp_path / "a-file"
    unwritable.write_text("")  # a home under a file: the spool cannot be made
    backends = [("127.0.0.1", r.port) for r in replicas]
    with round_robin(backends, lose_answers=True) as proxy:
        client = one_request_per_connection(connect_client(proxy.url, unwritable / "home"))
        with client:
            retrying = Retrying(Ledger())
            run = retrying.call(
                "create_run",
                lambda: client.tracking.create_run("no-spool", "r0"),
                on_taken=lambda: client.search_runs("name = 'r0'", experiments=["no-spool"]).items[
                    0
                ],
            )
            active = ActiveRun(client, run)
            assert active._spool is None
            for step in range(10):
                active.log_metric("loss", 1.0 / (step + 1), step=step)
            retrying.call("flush", active.flush)  # the first answer is cut, the retry goes through
            retrying.call("end_run", active.end)
        assert proxy.lost["POST /api/v1/runs/" + run.id + "/metrics"] == 1
        with connect_client(f"http://127.0.0.1:{replicas[1].port}", tmp_path / "check") as check:
            steps = [p.step for p in check.get_metric_history(run.id, "loss")]
    assert steps == list(range(10))


# Last: it kills a replica (a test after it would wait for the restart).
def test_killing_a_replica_mid_load_costs_no_acknowledged_write(
    tmp_path: Path, topology: Topology, replicas: list[Replica]
) -> None:
    backends = [("127.0.0.1", r.port) for r in replicas]
    with round_robin(backends) as proxy:
        ledgers = [Ledger() for _ in range(WORKERS)]
        clients = [connect_client(proxy.url, tmp_path / f"client-{i}") for i in range(WORKERS)]
        killed = run_load_and_kill(proxy, replicas[0], clients, ledgers)
        for client in clients:
            client.close()

        # The killed replica had served part of the load and had clients' connections open
        # when it died; the clients saw it (their calls failed and were retried, and new
        # connections to it were refused), and the proxy moved on to the other one.
        assert replicas[0].proc is not None and replicas[0].proc.returncode == -signal.SIGKILL
        assert killed["connections"] > 0 and killed["open"] > 0, killed
        retries = sum((ledger.retries for ledger in ledgers), Counter[str]())
        refused = proxy.refused[0] - killed["refused"]
        assert sum(retries.values()) > 0 and refused > 0, (killed, retries, proxy.refused)
        assert proxy.connections[1] > 0 and proxy.unserved == 0, proxy.errors
        with connect_client(proxy.url, tmp_path / "check") as through_proxy:
            check_everything_once(ledgers, topology.env, through_proxy)
