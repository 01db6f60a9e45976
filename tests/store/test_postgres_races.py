"""Threads racing on PostgreSQL (READ COMMITTED): the same param twice, tag merges, aliases."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import plinth
from plinth.store.engine import open_store
from tests.backends import empty_tables, local_client

pytestmark = pytest.mark.integration


def race(n: int, work: Callable[[int], Any]) -> list[BaseException]:
    start = threading.Barrier(n)
    errors: list[BaseException] = []

    def run(i: int) -> None:
        start.wait(timeout=10)
        try:
            work(i)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    return errors


@pytest.fixture
def client(postgres_uri: str, tmp_path: Path) -> plinth.Client:
    empty_tables(open_store(postgres_uri))
    return local_client(postgres_uri, str(tmp_path / "artifacts"))


def test_the_same_param_from_many_threads_is_not_a_conflict(client: plinth.Client) -> None:
    run = client.start_run(experiment="race")
    assert (
        race(8, lambda i: client.tracking.log_params(run.id, {"lr": 0.1, "depth": 6}, "hyper"))
        == []
    )
    errors = race(8, lambda i: client.tracking.log_params(run.id, {"new": i}, "hyper"))
    assert len(errors) == 7 and all(isinstance(e, plinth.Conflict) for e in errors)
    run.end()
    assert client.get_run(run.id).params["hyper"]["lr"] == 0.1


def test_concurrent_tag_merges_and_aliases(client: plinth.Client) -> None:
    from sklearn.dummy import DummyClassifier

    model = DummyClassifier().fit([[0], [1]], [0, 1])
    client.register_model(model, name="race")
    assert (
        race(8, lambda i: client.registry.update_registered_model("race", tags={f"t{i}": "x"}))
        == []
    )
    assert len(client.registry.get_registered_model("race").tags) == 8
    assert (
        race(8, lambda i: client.registry.update_model_version("race", 1, tags={f"t{i}": "x"}))
        == []
    )
    assert len(client.get_model_version("race", 1).tags) == 8
    errors = race(8, lambda i: client.set_alias("race", "champion", version=1))
    assert all(isinstance(e, plinth.Conflict) for e in errors)  # 409s at worst, never a 500
    assert client.get_model_version("models:/race@champion").version == 1
