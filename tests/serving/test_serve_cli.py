"""``plinth serve`` as people run it: a process per model, stopped with SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from plinth.client import connect
from tests.backends import free_port
from tests.serving.conftest import EXAMPLE, Rule, logistic


@pytest.fixture
def home(tmp_path: Path) -> Path:
    with connect(
        store_uri=f"sqlite:///{tmp_path / 'plinth.db'}", artifact_uri=str(tmp_path / "artifacts")
    ) as client:
        version = client.register_model(logistic(), "churn", input_example=EXAMPLE)
        client.set_alias("churn", "live", version.version)
    return tmp_path


def plinth(home: Path, *args: str, tmp: Path | None = None) -> subprocess.Popen[str]:
    env = {**os.environ, "PLINTH_HOME": str(home)}
    if tmp is not None:  # the process's own temporary folder (other tests share the system's)
        env["TMPDIR"] = str(tmp)
    for name in ("PLINTH_STORE_URI", "PLINTH_ARTIFACT_URI", "PLINTH_URI"):
        env.pop(name, None)
    return subprocess.Popen(
        [sys.executable, "-m", "plinth", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def wait_ready(url: str, process: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"plinth serve exited: {process.communicate()[1]}")
        try:
            if httpx.get(f"{url}/ready", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    raise AssertionError("plinth serve did not become ready")


@pytest.mark.parametrize("workers", ["1", "2"])
def test_serve_a_model(home: Path, workers: str) -> None:
    port = free_port()
    process = plinth(home, "serve", "models:/churn@live", "--port", str(port), "--workers", workers)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_ready(url, process)
        answer = httpx.post(f"{url}/predict", json=[{"age": 41, "spend": 2.5}])
        assert answer.json()["predictions"] == [1] and answer.json()["model_version"] == 1
        assert 'plinth_model_version{model="churn"} 1.0' in httpx.get(f"{url}/metrics").text
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.communicate(timeout=30)


def _predictions_counted(metrics: str) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    return sum(
        sample.value
        for family in text_string_to_metric_families(metrics)
        for sample in family.samples
        if sample.name == "plinth_requests_total" and sample.labels["route"] == "/predict"
    )


def test_metrics_add_up_every_workers_requests(home: Path) -> None:
    tmp = home / "tmp"
    tmp.mkdir()
    port = free_port()
    args = ("serve", "models:/churn@live", "--port", str(port), "--workers", "2")
    process = plinth(home, *args, tmp=tmp)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_ready(url, process)
        sent = 40
        for _ in range(sent):  # a connection each: the workers take turns accepting them
            answer = httpx.post(f"{url}/predict", json=[{"age": 41, "spend": 2.5}])
            assert answer.status_code == 200
        for _ in range(4):  # whichever worker answers the scrape
            assert _predictions_counted(httpx.get(f"{url}/metrics").text) == sent
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.communicate(timeout=30)
    # the workers' files go with the folder plinth serve made for them
    assert list(tmp.glob("plinth-serve-metrics-*")) == []


def test_a_model_that_does_not_resolve(home: Path) -> None:
    process = plinth(home, "serve", "models:/churn@nope", "--port", str(free_port()))
    _, err = process.communicate(timeout=60)
    assert process.returncode == 1
    assert "error: models:/churn@nope: model 'churn' has no version at @nope" in err


def test_a_pickled_model_is_served_only_with_trust_pickle(tmp_path: Path) -> None:
    marker = tmp_path / "unpickled"
    with connect(
        store_uri=f"sqlite:///{tmp_path / 'plinth.db'}", artifact_uri=str(tmp_path / "artifacts")
    ) as client:
        client.register_model(Rule(str(marker)), "rule", input_example=EXAMPLE)
    refused = plinth(tmp_path, "serve", "models:/rule/1", "--port", str(free_port()))
    _, err = refused.communicate(timeout=60)
    assert refused.returncode == 1
    assert "error: models:/rule/1 is a pickled model package (pyfunc flavor" in err
    assert "--trust-pickle" in err and "PLINTH_TRUST_PICKLE" in err
    assert not marker.exists()  # refused before anything was unpickled
    port = free_port()
    process = plinth(tmp_path, "serve", "models:/rule/1", "--port", str(port), "--trust-pickle")
    try:
        url = f"http://127.0.0.1:{port}"
        wait_ready(url, process)
        answer = httpx.post(f"{url}/predict", json=[{"age": 41, "spend": 2.5}])
        assert answer.json()["predictions"] == [1]
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.communicate(timeout=30)
    assert marker.exists()
