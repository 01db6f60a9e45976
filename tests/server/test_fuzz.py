"""Fuzz every operation of the API from its own OpenAPI document: no input may cause a 5xx.

Bug classes it found once are pinned by regression tests at the end.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from schemathesis import HookContext
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Ok

from plinth.config import Settings, load_settings
from plinth.features.service import FeatureService
from plinth.registry.service import RegistryService
from plinth.server.app import create_app
from plinth.serving.jobs import ScoreJobService
from plinth.store.artifacts import ArtifactStore
from plinth.store.engine import open_store
from plinth.tracking.service import TrackingService
from plinth.tracking.types import MetricBatch

# about 15 s in all at 30 examples per operation: under the 20 s that earns the slow marker
pytestmark = pytest.mark.filterwarnings(
    "ignore:Using `httpx` with `starlette.testclient` is deprecated"
)

FUZZ = settings(
    max_examples=int(os.environ.get("PLINTH_FUZZ_EXAMPLES", "30")),
    deadline=None,
    suppress_health_check=list(HealthCheck),
    database=None,
)

# Ids of the objects seeded in the store; a hook swaps them into some generated requests
# so the fuzzer reaches the code behind "not found" too.
SEEDED: dict[str, str] = {}


def _seed(tracking: TrackingService) -> None:
    experiment = tracking.create_experiment("fuzz", "seeded", {"team": "qa"})
    run = tracking.create_run(experiment.name, "seeded-run", tags={"stage": "dev"})
    tracking.log_params(run.id, {"lr": 0.1, "depth": 6})
    tracking.log_metric_batch(
        run.id, MetricBatch(["loss"], [0.5], [0], [1_700_000_000_000], [True])
    )
    with tracking.open_artifact_writer(run.id, "model/weights.bin") as out:
        out.write(b"weights")
    SEEDED.update(experiment=experiment.name, run_id=run.id)


def _document_only_app() -> FastAPI:
    # The schema loads at import time, before any fixture: this app only serves the OpenAPI
    # document (its service has no store) and cases are sent to `seeded_app`. The lazy
    # `schemathesis.pytest.from_fixture` loader would avoid this, but it fails on pytest 9.
    # model_construct: no environment or config file is read while collecting tests
    return create_app(
        Settings.model_construct(),
        TrackingService.__new__(TrackingService),
        RegistryService.__new__(RegistryService),
        FeatureService(None, ""),  # type: ignore[arg-type]  # never called: serves the document
        ScoreJobService(None),  # type: ignore[arg-type]
    )


# Arrow IPC bodies (A/B exposures) are sent as the bytes generated for them: any bytes
# that are not a valid batch must be refused as the client's error.
schemathesis.serializer.alias("application/vnd.apache.arrow.stream", "application/octet-stream")

schema = schemathesis.openapi.from_asgi("/api/v1/openapi.json", _document_only_app())


@schema.hook
def flatmap_path_parameters(context: HookContext, path_parameters: dict[str, Any] | None) -> Any:
    if not path_parameters:
        return st.just(path_parameters)
    seeded = {name: SEEDED[name] for name in path_parameters if name in SEEDED}
    return st.sampled_from([path_parameters, {**path_parameters, **seeded}])


# -- the fuzzing -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def seeded_app(tmp_path_factory: pytest.TempPathFactory) -> FastAPI:
    home = tmp_path_factory.mktemp("fuzz-home")
    with pytest.MonkeyPatch.context() as env:  # conftest's isolation is per test, not per module
        for name in ("PLINTH_URI", "PLINTH_STORE_URI", "PLINTH_ARTIFACT_URI", "PLINTH_CONFIG"):
            env.delenv(name, raising=False)
        env.setenv("PLINTH_HOME", str(home))
        config = load_settings(home=home, max_request_bytes=64 * 1024)
    tracking = TrackingService(
        open_store(config.resolved_store_uri), ArtifactStore(config.resolved_artifact_uri)
    )
    _seed(tracking)
    return create_app(config, tracking)


@schema.parametrize()
@FUZZ
def test_no_server_errors(case: schemathesis.Case[Any], seeded_app: FastAPI) -> None:
    case.call_and_validate(app=seeded_app, checks=[not_a_server_error])


def test_the_fuzzer_covers_every_operation() -> None:
    operations = set()
    for result in schema.get_all_operations():
        assert isinstance(result, Ok), result  # an operation the fuzzer cannot read is skipped
        operations.add((result.ok().method.upper(), result.ok().path))
    assert ("GET", "/api/v1/runs/{run_id}") in operations
    assert ("PUT", "/api/v1/runs/{run_id}/artifacts/content") in operations
    assert len(operations) >= 20


# -- bugs the fuzzer found once, kept as regression tests ---------------------------


@pytest.fixture
def api(seeded_app: FastAPI) -> Iterator[Any]:
    from fastapi.testclient import TestClient

    with TestClient(seeded_app, raise_server_exceptions=False) as client:
        yield client


KNOWN_OVERFLOWS: list[tuple[str, dict[str, Any]]] = [
    ("/runs/close-stale", {"timeout_seconds": 1e20}),
    ("/runs/{run_id}/seed", {"seed": 2**63}),
    (
        "/runs/{run_id}/metrics",
        {
            "batch": {
                "keys": ["m"],
                "values": [1.0],
                "steps": [2**63],
                "timestamps": [0],
                "is_best": [False],
            }
        },
    ),
    (
        "/runs/{run_id}/metrics",
        {
            "batch": {
                "keys": ["m"],
                "values": [1.0],
                "steps": [0],
                "timestamps": [2**63],
                "is_best": [False],
            }
        },
    ),
    ("/runs/{run_id}/inputs", {"dataset": {"name": "d", "uri": "s3://d", "rows": 2**63}}),
    ("/runs", {"experiment": "fuzz", "lineage": {"seed": 2**63}}),
    ("/runs/search", {"page_token": "eyJvZmZzZXQiOiAxMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDB9"}),
]


@pytest.mark.parametrize(
    ("path", "body"), KNOWN_OVERFLOWS, ids=[f"{p} {next(iter(b))}" for p, b in KNOWN_OVERFLOWS]
)
def test_numbers_beyond_64_bits_are_422(api: Any, path: str, body: dict[str, Any]) -> None:
    response = api.post("/api/v1" + path.format(run_id=SEEDED["run_id"]), json=body)
    assert response.status_code == 422, response.text


def test_a_huge_number_in_a_filter_compares_as_a_float(api: Any) -> None:
    response = api.post("/api/v1/runs/search", json={"filter": "number > 99999999999999999999"})
    assert response.status_code == 200 and response.json()["items"] == []


@pytest.mark.parametrize("timeout", ["NaN", "Infinity"])
def test_a_non_finite_stale_timeout_is_422(api: Any, timeout: str) -> None:
    response = api.post("/api/v1/runs/close-stale", json={"timeout_seconds": timeout})
    assert response.status_code == 422, response.text


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/experiments", b'{"name": "\\ud800"}'),
        ("/runs/{run_id}/tags", b'{"tags": {"k": "\\ud800"}}'),
    ],
)
def test_a_lone_surrogate_is_422(api: Any, path: str, body: bytes) -> None:
    response = api.post(
        "/api/v1" + path.format(run_id=SEEDED["run_id"]),
        content=body,
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 422, response.text
