"""Races and failures: concurrent registration and promotion, uploads that break midway."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

import plinth
from plinth.client import Client
from plinth.registry.service import RegistryService
from plinth.registry.types import Stage
from plinth.store.artifacts import ArtifactStore
from tests.backends import local_client

Data = tuple[pd.DataFrame, pd.Series]

WORKER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    import plinth
    from sklearn.dummy import DummyClassifier
    model = DummyClassifier().fit([[0], [1]], [0, 1])
    client = plinth.connect(store_uri=sys.argv[1], artifact_uri=sys.argv[2])
    go = Path(sys.argv[3])
    while not go.exists():
        time.sleep(0.005)
    print(",".join(str(client.register_model(model, name="race").version) for _ in range(5)))
    """
)


@pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.integration)]
)
def test_processes_registering_at_once_get_distinct_versions(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    store = (
        f"sqlite:///{tmp_path / 'plinth.db'}"
        if backend == "sqlite"
        else request.getfixturevalue("postgres_uri")
    )
    if backend == "postgres":
        from plinth.store.engine import open_store
        from tests.backends import empty_tables

        empty_tables(open_store(store))
    local_client(store, str(tmp_path / "artifacts"))  # migrate once, before the race
    script, go = tmp_path / "worker.py", tmp_path / "go"
    script.write_text(WORKER)
    workers = [
        subprocess.Popen(
            [sys.executable, str(script), store, str(tmp_path / "artifacts"), str(go)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    go.touch()
    outputs = [w.communicate(timeout=120) for w in workers]
    assert all(w.returncode == 0 for w in workers), [err for _, err in outputs]
    versions = sorted(int(v) for out, _ in outputs for v in out.strip().split(","))
    assert versions == list(range(1, 21))


def test_concurrent_promotions_one_wins(
    client: Client, churn_model: Any, churn_data: Data, monkeypatch: pytest.MonkeyPatch
) -> None:
    if client.remote:
        pytest.skip("the race is staged inside the service; the remote path is the same code")
    for _ in range(3):
        client.register_model(churn_model, name="churn", input_example=churn_data[0][:5])
    client.set_stage("churn", 1, "PRODUCTION")
    both_read = threading.Barrier(2)
    original = RegistryService._production

    def read_then_wait(self: RegistryService, name: str) -> Any:
        production = original(self, name)
        both_read.wait(timeout=10)  # both promotions have checked their gates against v1
        return production

    monkeypatch.setattr(RegistryService, "_production", read_then_wait)
    outcomes: list[Any] = []

    def promote(version: int) -> None:
        try:
            outcomes.append(client.set_stage("churn", version, "PRODUCTION").version)
        except plinth.Conflict as exc:
            outcomes.append(exc)

    threads = [threading.Thread(target=promote, args=(v,)) for v in (2, 3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    winners = [o for o in outcomes if isinstance(o, int)]
    losers = [o for o in outcomes if isinstance(o, plinth.Conflict)]
    assert len(winners) == 1 and len(losers) == 1 and losers[0].http_status == 409
    production = client.registry.search_model_versions(name="churn", stage=Stage.PRODUCTION)
    assert [v.version for v in production] == winners


def test_an_upload_that_fails_midway_registers_nothing(
    tmp_path: Path, churn_model: Any, churn_data: Data, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = local_client(f"sqlite:///{tmp_path / 'plinth.db'}", str(tmp_path / "artifacts"))
    client.register_model(churn_model, name="churn", input_example=churn_data[0][:5])
    original = ArtifactStore.open_write
    calls = {"n": 0}

    def failing_write(self: ArtifactStore, dest: str) -> Any:
        calls["n"] += 1
        if calls["n"] == 2:
            raise plinth.Unavailable("the object store went away")
        return original(self, dest)

    monkeypatch.setattr(ArtifactStore, "open_write", failing_write)
    with pytest.raises(plinth.Unavailable):
        client.register_model(churn_model, name="churn", input_example=churn_data[0][:5])
    monkeypatch.undo()
    assert client.registry.get_registered_model("churn").latest_version == 1
    packages = client.registry.artifacts.list("models/churn/packages")
    assert len(packages) == 1  # only v1's package: the partial upload was removed
    assert client.register_model(churn_model, name="churn").version == 2  # numbers stay contiguous


def test_a_package_missing_a_file_is_refused_by_the_service(
    tmp_path: Path, churn_model: Any, churn_data: Data
) -> None:
    from plinth.registry.package import save_package

    client = local_client(f"sqlite:///{tmp_path / 'plinth.db'}", str(tmp_path / "artifacts"))
    save_package(churn_model, tmp_path / "pkg", input_example=churn_data[0][:5])
    client.registry.artifacts.put_file(
        tmp_path / "pkg" / "plinth-model.json", "models/churn/packages/x/plinth-model.json"
    )
    with pytest.raises(plinth.InvalidArgument, match="incomplete"):
        client.registry.create_model_version("churn", "models/churn/packages/x")
    with pytest.raises(plinth.NotFound):
        client.registry.get_registered_model("churn")


def test_a_registered_package_cannot_be_swapped(
    tmp_path: Path, churn_model: Any, weak_model: Any, churn_data: Data
) -> None:
    client = local_client(f"sqlite:///{tmp_path / 'plinth.db'}", str(tmp_path / "artifacts"))
    mv = client.register_model(churn_model, name="churn", input_example=churn_data[0][:5])
    with pytest.raises(
        plinth.Conflict, match=r"models:/churn/1: a registered version.s files are read-only"
    ):
        client.registry.open_staging_writer(f"{mv.package_uri}/model/model.skops")
    other = client.register_model(weak_model, name="other", input_example=churn_data[0][:5])
    with pytest.raises(plinth.InvalidArgument, match="must be under"):
        client.registry.create_model_version("churn", other.package_uri)  # another model's package
    # a package changed behind the registry's back (manifest included) is refused on load
    from plinth.registry.package import save_package

    swapped = tmp_path / "swapped"
    save_package(weak_model, swapped, input_example=churn_data[0][:5])
    for file in swapped.rglob("*"):
        if file.is_file():
            client.registry.artifacts.put_file(
                file, f"{mv.package_uri}/{file.relative_to(swapped).as_posix()}"
            )
    with pytest.raises(
        plinth.PermissionDenied, match=r"models:/churn/1: the package.s plinth-model\.json"
    ):
        client.load_model(mv.uri)


def test_a_failed_end_keeps_the_points_for_a_retry(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from plinth.tracking.service import TrackingService

    client = local_client(f"sqlite:///{tmp_path / 'plinth.db'}", str(tmp_path / "artifacts"))
    run = client.start_run(experiment="churn")
    for step in range(100):
        run.log_metric("loss", 1.0 / (step + 1), step=step)
    with pytest.raises(plinth.InvalidArgument, match="DONE"):
        run.end("DONE")
    original = TrackingService.end_run

    def unavailable(*args: Any, **kwargs: Any) -> None:
        raise plinth.Unavailable("the store went away")

    monkeypatch.setattr(TrackingService, "end_run", unavailable)
    with pytest.raises(plinth.Unavailable):
        run.end()
    monkeypatch.setattr(TrackingService, "end_run", original)
    run.end()
    got = client.get_run(run.id)
    assert got.status.value == "FINISHED" and got.metrics["loss"].count == 100
    with pytest.raises(plinth.InvalidArgument, match="has ended"):
        run.log_metric("loss", 0.0)
    bad = client.start_run(experiment="churn")
    with pytest.raises(plinth.InvalidArgument, match="control character"):
        bad.log_metric("val\tloss", 1.0)
    bad.log_metric("loss", 1.0)
    bad.end()  # one bad name did not poison the buffer
    assert client.get_run(bad.id).metrics["loss"].count == 1
