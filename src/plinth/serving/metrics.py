"""A model service's Prometheus metrics, in a registry of its own (one per service)."""

from __future__ import annotations

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


class ServiceMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
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
            "plinth_model_version", "The model version served", ["model"], registry=self.registry
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

    def exposition(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


def _v2_route(path: str) -> str:
    # bounded label values: a client's made-up paths must not grow the registry
    if path.startswith("/v2/models/"):
        return "/v2/models/{name}" + ("/infer" if path.endswith("/infer") else "")
    return "/v2/health" if path.startswith("/v2/health") else "other"
