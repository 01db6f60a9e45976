"""A/B experiments with known results for the dashboard's tests: designs made through
``AbTestService``, exposures through the router's writer (``traffic.ExposureLog``) and
outcome events through ``log_events``, as in production."""

from __future__ import annotations

import time
from typing import Any

from plinth.abtests.events import Event
from plinth.abtests.service import AbTestService
from plinth.abtests.traffic import Exposure, ExposureLog
from plinth.abtests.types import Arm, Experiment, Guardrail, Kpi, KpiKind

CONVERSION = Kpi("conversion", KpiKind.PROPORTION, "buy")


def arms(
    control: str = "control", treatment: str = "b", targets: dict[str, str] | None = None
) -> list[Arm]:
    """Two arms of equal shares; ``targets`` give an arm a ``model_uri`` (default: a URL)."""

    def arm(name: str, is_control: bool) -> Arm:
        uri = (targets or {}).get(name)
        where = {"model_uri": uri} if uri else {"url": f"http://127.0.0.1:9/{name}"}
        return Arm(name, 0.5, control=is_control, **where)

    return [arm(control, True), arm(treatment, False)]


def design(service: AbTestService, name: str = "churn", **kw: Any) -> Experiment:
    spec: dict[str, Any] = {
        "hypothesis": "the new model sells more",
        "primary": CONVERSION,
        "arms": arms(),
        "mde": 0.02,
        **kw,
    }
    return service.create_abtest(name, **spec)


def traffic(
    service: AbTestService,
    name: str,
    units: dict[str, int],
    buyers: dict[str, int],
    revenue: dict[str, float] | None = None,
    earlier: dict[str, int] | None = None,
) -> None:
    """``units[arm]`` units exposed to each arm over the last ten minutes; the first
    ``buyers[arm]`` of them buy once; with ``revenue``, unit i of an arm spends
    ``revenue[arm] + i % 5`` (a ``revenue`` event each); the first ``earlier[arm]`` bought
    once a minute before their exposure (not counted: a pre-experiment covariate)."""
    root = service.root_uri
    assert root is not None
    start = int(time.time() * 1000) - 600_000
    log = ExposureLog(root, flush_seconds=0.05)
    events: list[Event] = []
    at = start
    for arm, count in units.items():
        for i in range(count):
            unit, at = f"{arm}-{i}", at + 100
            log.record(Exposure(name, arm, unit, f"req-{unit}", None, at))
            if i < (earlier or {}).get(arm, 0):
                events.append(Event(name, "buy", f"before-{unit}", at - 60_000, unit=unit))
            if i < buyers.get(arm, 0):
                events.append(Event(name, "buy", f"buy-{unit}", at + 10, unit=unit))
            if revenue is not None:
                value = revenue[arm] + i % 5
                events.append(Event(name, "revenue", f"rev-{unit}", at + 20, value, unit=unit))
    log.close()
    assert (log.written, log.dropped, log.failed) == (sum(units.values()), 0, 0)
    service.log_events(name, events)


def guarded(metric: str = "revenue", max_drop: float = 0.05) -> list[Guardrail]:
    return [Guardrail(metric, max_drop=max_drop)]
