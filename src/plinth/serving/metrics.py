"""A model service's Prometheus metrics, in a registry of its own (one per service).

With several worker processes (``plinth serve --workers N``) each worker writes its values
to files in ``$PROMETHEUS_MULTIPROC_DIR`` (which ``plinth serve`` creates before starting
them) and a scrape of any worker adds up every worker's counts (prometheus_client's
multiprocess mode).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

if TYPE_CHECKING:
    from plinth.serving.model import ServedModel

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)
_ROUTES = ("/predict", "/metrics", "/health", "/ready")


MULTIPROCESS_DIR = "PROMETHEUS_MULTIPROC_DIR"


class WorkerMetrics:
    """A registry of one's own; with several workers, a scrape of any adds up them all."""

    def __init__(self) -> None:
        self.multiprocess = bool(os.environ.get(MULTIPROCESS_DIR))
        self.registry = CollectorRegistry()

    def exposition(self) -> tuple[bytes, str]:
        if not self.multiprocess:
            return generate_latest(self.registry), CONTENT_TYPE_LATEST
        from prometheus_client.multiprocess import MultiProcessCollector

        every_worker = CollectorRegistry()
        MultiProcessCollector(every_worker)  # type: ignore[no-untyped-call]
        return generate_latest(every_worker), CONTENT_TYPE_LATEST

    def close(self) -> None:
        """At a worker's exit: its gauges stop counting (its counters still add up)."""
        if self.multiprocess:
            from prometheus_client.multiprocess import mark_process_dead

            mark_process_dead(os.getpid())  # type: ignore[no-untyped-call]


class ServiceMetrics(WorkerMetrics):
    def __init__(self) -> None:
        super().__init__()
        self.requests = Counter(
            "plinth_requests", "Requests answered", ["route", "status"], registry=self.registry
        )
        self.errors = Counter(
            "plinth_request_errors",
            "Requests answered 4xx or 5xx",
            ["route"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "plinth_request_latency_seconds",
            "Time to answer a request",
            ["route"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.model_version = Gauge(
            "plinth_model_version",
            "The model version served",
            ["model"],
            registry=self.registry,
            multiprocess_mode="livemostrecent",
        )
        self.swaps = Counter("plinth_model_swaps", "Hot swaps done", registry=self.registry)
        self.batch_rows = Histogram(
            "plinth_batch_rows",
            "Rows per model call (micro-batches)",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024),
            registry=self.registry,
        )
        self.log_dropped = Gauge(
            "plinth_prediction_log_dropped_rows",
            "Prediction rows not logged (sampled out or the log was full)",
            registry=self.registry,
            multiprocess_mode="livesum",
        )
        self._served: str | None = None

    def serving(self, served: ServedModel) -> None:
        if self._served is not None:
            self.swaps.inc()
        self._served = served.name
        self.model_version.labels(served.name).set(served.version.version)

    def observe(self, path: str, status: int, seconds: float) -> None:
        route = path if path in _ROUTES else _v2_route(path)
        self.requests.labels(route, str(status)).inc()
        self.latency.labels(route).observe(seconds)
        if status >= 400:
            self.errors.labels(route).inc()


def _v2_route(path: str) -> str:
    # bounded label values: a client's made-up paths must not grow the registry
    if path.startswith("/v2/models/"):
        return "/v2/models/{name}" + ("/infer" if path.endswith("/infer") else "")
    return "/v2/health" if path.startswith("/v2/health") else "other"


@contextlib.contextmanager
def metrics_shared_by_workers() -> Iterator[None]:
    """A fresh folder for the workers' Prometheus values (multiprocess mode), removed at
    exit; one set by the caller in PROMETHEUS_MULTIPROC_DIR is used and kept."""
    if os.environ.get(MULTIPROCESS_DIR):
        yield
        return
    folder = tempfile.mkdtemp(prefix="plinth-serve-metrics-")
    os.environ[MULTIPROCESS_DIR] = folder  # read by prometheus_client as workers import it
    try:
        yield
    finally:
        del os.environ[MULTIPROCESS_DIR]
        shutil.rmtree(folder, ignore_errors=True)
