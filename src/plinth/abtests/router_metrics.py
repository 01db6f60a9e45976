"""The router's Prometheus metrics, in a registry of its own; with several workers
(``plinth router --workers N``) each writes to ``$PROMETHEUS_MULTIPROC_DIR`` and a scrape
of any of them adds up every worker's counts, as for ``plinth serve``."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from plinth.serving.metrics import WorkerMetrics

_SHADOW_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)


class RouterMetrics(WorkerMetrics):
    def __init__(self) -> None:
        super().__init__()
        self.requests = Counter(
            "plinth_router_requests",
            "Requests answered, by experiment, the arm that answered and its status",
            ["experiment", "arm", "status"],
            registry=self.registry,
        )
        self.fallbacks = Counter(
            "plinth_router_fallbacks",
            "Requests sent to control because their arm failed (timeout, unreachable, "
            "server_error, client_error)",
            ["experiment", "arm", "reason"],
            registry=self.registry,
        )
        self.shadow_calls = Counter(
            "plinth_router_shadow_calls",
            "Mirrored requests to shadow arms, by outcome (ok, timeout, unreachable, "
            "server_error, client_error, skipped)",
            ["experiment", "arm", "outcome"],
            registry=self.registry,
        )
        self.shadow_latency = Histogram(
            "plinth_router_shadow_latency_seconds",
            "Time a shadow arm took to answer a mirrored request",
            ["experiment", "arm"],
            buckets=_SHADOW_BUCKETS,
            registry=self.registry,
        )
        self.exposure_rows = Gauge(
            "plinth_router_exposures",
            "Exposures of this process's log: written, dropped (log full), failed (store)",
            ["state"],
            registry=self.registry,
            multiprocess_mode="livesum",
        )

    def shadow(self, experiment: str, arm: str, outcome: str, seconds: float | None) -> None:
        self.shadow_calls.labels(experiment, arm, outcome).inc()
        if seconds is not None and outcome == "ok":
            self.shadow_latency.labels(experiment, arm).observe(seconds)

    def exposures(self, written: int, dropped: int, failed: int) -> None:
        for state, count in (("written", written), ("dropped", dropped), ("failed", failed)):
            self.exposure_rows.labels(state).set(count)
