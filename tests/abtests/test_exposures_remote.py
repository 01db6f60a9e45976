"""Exposures of a router or ``Predictor`` whose client is remote land in the server's
exposure log (its results count them), never in the client's own folder: through the
server when its artifact store is its own disk (``POST /abtests/{name}/exposures``, WRITE
on the experiment, a batch checked whole), directly when the store is shared (S3). A batch
the server refuses, or a server that is gone, is counted as failed; routing goes on."""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pyarrow as pa
import pytest
from deltalake import DeltaTable

import plinth
from plinth.abtests.embedded import Predictor
from plinth.abtests.exposures_remote import ServerExposures, exposure_log_for
from plinth.abtests.router_cli import RouterConfig, create_router_service
from plinth.abtests.traffic import (
    SCHEMA,
    DeltaExposures,
    Exposure,
    check_batch,
    exposures_uri,
)
from plinth.abtests.types import Arm, Experiment, Kpi, KpiKind
from plinth.auth.service import AuthService
from plinth.auth.types import Kind, Role
from plinth.client import Client
from plinth.config import load_settings
from plinth.errors import InvalidArgument
from plinth.features.ipc import MEDIA_TYPE, ipc_chunks
from plinth.store.engine import open_store
from tests.abtests.test_router import ArmService, ask, experiment, serving, units_of
from tests.backends import FAST_FLUSH, running_server
from tests.serving.conftest import EXAMPLE, constant
from tests.test_remote_data import files_under

CONVERSION = Kpi("conversion", KpiKind.PROPORTION, "purchase")
NOW_MS = 1_767_225_600_000  # 2026-01-01


@contextlib.contextmanager
def arm_services() -> Iterator[dict[str, str]]:
    with contextlib.ExitStack() as stack:
        yield {
            s.name: stack.enter_context(serving(s.app()))[0]
            for s in (ArmService("champion", 1), ArmService("challenger", 2))
        }


def started(client: Client, urls: dict[str, str], name: str = "churn") -> Experiment:
    client.abtests.create_abtest(
        name,
        hypothesis="v2 keeps more customers",
        primary=CONVERSION,
        arms=[
            Arm("champion", 0.5, url=urls["champion"], control=True),
            Arm("challenger", 0.5, url=urls["challenger"]),
        ],
        mde=0.02,
    )
    return client.abtests.start_abtest(name)


def test_a_remote_routers_exposures_land_in_the_servers_results(tmp_path: Path) -> None:
    client_home = tmp_path / "client"
    with (
        arm_services() as urls,
        running_server(tmp_path / "server") as url,
        plinth.connect(url, home=client_home, **FAST_FLUSH) as remote,
    ):
        exp = started(remote, urls)
        app = create_router_service(RouterConfig(), remote)
        log = app.exposure_log
        assert isinstance(log.sink, ServerExposures)
        units = units_of(exp, "champion", 3) + units_of(exp, "challenger", 4)
        with serving(app) as (router, _):  # closing the router writes its exposures
            answers = [ask(router, unit) for unit in units]
        assert [a.json()["arm"] for a in answers] == ["champion"] * 3 + ["challenger"] * 4
        assert log.sink.direct is None  # the server's store is its own folder
        assert (log.written, log.dropped, log.failed) == (7, 0, 0)
        results = remote.abtests.abtest_results("churn")
        assert results.units_by_arm == {"champion": 3, "challenger": 4}
        rows = DeltaTable(exposures_uri(str(tmp_path / "server" / "artifacts"), "churn"))
        assert sorted(rows.to_pyarrow_table()["unit"].to_pylist()) == sorted(units)
    assert files_under(client_home) == []  # nothing on the client's disk


def test_a_remote_predictors_exposures_land_in_the_servers_results(tmp_path: Path) -> None:
    client_home = tmp_path / "client"
    with (
        running_server(tmp_path / "server") as url,
        plinth.connect(url, home=client_home, **FAST_FLUSH) as remote,
    ):
        remote.register_model(constant(0), "churn", input_example=EXAMPLE)
        remote.register_model(constant(1), "churn", input_example=EXAMPLE)
        remote.abtests.create_abtest(
            "exp",
            hypothesis="v2 converts more",
            primary=CONVERSION,
            arms=[
                Arm("control", 0.5, model_uri="models:/churn/1", control=True),
                Arm("b", 0.5, model_uri="models:/churn/2"),
            ],
            mde=0.02,
        )
        exp = remote.abtests.start_abtest("exp")
        units = units_of(exp, "b", 2) + units_of(exp, "control", 3)
        with Predictor("exp", client=remote, poll_seconds=0) as predictor:
            arms = [predictor.predict(u, [{"age": 41, "spend": 2.5}]).arm for u in units]
            log = predictor.exposures
        assert arms == ["b"] * 2 + ["control"] * 3
        assert (log.written, log.failed) == (5, 0)
        assert remote.abtests.abtest_results("exp").units_by_arm == {"control": 3, "b": 2}
    assert files_under(client_home) == []  # model packages aside (a cache), nothing here


def test_a_client_without_write_on_the_experiment_gets_its_batches_refused(
    tmp_path: Path,
) -> None:
    home = tmp_path / "server"
    with arm_services() as urls, running_server(home, auth=True) as url:
        auth = AuthService(open_store(load_settings(home=home).resolved_store_uri))
        tokens = {}
        for user, role in (("ann", Role.EDITOR), ("vic", Role.VIEWER)):
            auth.create_user(user, role)
            tokens[user] = auth.create_token(user=user).secret
        with plinth.connect(url, home=tmp_path / "ann", token=tokens["ann"]) as ann:
            exp = started(ann, urls)
            auth.grant(Kind.ABTEST, "churn", "user", "vic", "viewer")  # vic may read it
            with plinth.connect(url, home=tmp_path / "vic", token=tokens["vic"]) as vic:
                app = create_router_service(RouterConfig(), vic)
                units = units_of(exp, "challenger", 3)
                with serving(app) as (router, _):
                    answers = [ask(router, unit) for unit in units]
                    app.exposure_log.flush()
            # the router kept answering; the server refused every batch, and said so
            assert [a.json()["arm"] for a in answers] == ["challenger"] * 3
            assert (app.exposure_log.written, app.exposure_log.failed) == (0, 3)
            assert ann.abtests.abtest_results("churn").units_by_arm.get("challenger", 0) == 0
            # ann may write: her batch lands
            log = exposure_log_for(ann, flush_seconds=0.05)
            log.record(Exposure("churn", "challenger", units[0], "r1", None, NOW_MS))
            log.close()
            assert (log.written, log.failed) == (1, 0)
            assert ann.abtests.abtest_results("churn").units_by_arm["challenger"] == 1


def arrow(table: pa.Table) -> bytes:
    return b"".join(ipc_chunks(table.schema, [table]))


def compressed(table: pa.Table) -> bytes:
    sink = io.BytesIO()
    options = pa.ipc.IpcWriteOptions(compression="zstd")
    with pa.ipc.new_stream(sink, table.schema, options=options) as writer:
        writer.write_table(table)
    return sink.getvalue()


def batch(**columns: Any) -> pa.Table:
    good: dict[str, Any] = {
        "at_ms": pa.array([NOW_MS, NOW_MS + 1], pa.int64()),
        "unit": ["u1", "u2"],
        "arm": ["champion", "challenger"],
        "request_id": ["r1", "r2"],
    }
    good.update(columns)
    return pa.table({k: v for k, v in good.items() if v is not None})


def test_bad_batches_are_refused_naming_the_field(tmp_path: Path) -> None:
    with arm_services() as urls, running_server(tmp_path / "server") as url:
        with plinth.connect(url, home=tmp_path / "client") as remote:
            started(remote, urls)
        route = f"{url}/api/v1/abtests/churn/exposures"
        headers = {"content-type": MEDIA_TYPE}

        def refusal(body: bytes) -> str:
            answer = httpx.post(route, content=body, headers=headers)
            assert answer.status_code == 422, answer.text
            assert answer.json()["error_code"] == "INVALID_ARGUMENT"
            return str(answer.json()["message"])

        assert "exposures[1].arm: 'nope': not an arm of 'churn'" in refusal(
            arrow(batch(arm=["champion", "nope"]))
        )
        assert refusal(arrow(batch(at_ms=["1", "2"]))).startswith(
            "exposures.at_ms: must be int64, got string"
        )
        assert refusal(arrow(batch(unit=None))).startswith("exposures.unit: missing")
        assert refusal(arrow(batch(extra=[1, 2]))).startswith(
            "exposures.extra: not a column of the exposure log"
        )
        future = pa.array([NOW_MS, 4_000_000_000_000], pa.int64())
        assert refusal(arrow(batch(at_ms=future))).startswith("exposures[1].at_ms:")
        assert "not an Arrow IPC stream" in refusal(b'[{"unit": "u1"}]')
        # a few KB of zstd that decode to 20 MB: refused before a batch is decoded
        huge = batch(unit=["x" * 10_000_000, "y" * 10_000_000])
        zstd = compressed(huge)
        assert len(zstd) < 100_000
        assert refusal(zstd).startswith("exposures: compressed Arrow IPC batches are not")
        # sent plain, the same batch is refused naming the column
        assert refusal(arrow(huge)).startswith("exposures[0].unit: at most 500 characters")
        # nothing of any refused batch was stored
        uri = exposures_uri(str(tmp_path / "server" / "artifacts"), "churn")
        assert not DeltaTable.is_deltatable(uri)
        answer = httpx.post(route, content=arrow(batch()), headers=headers)
        assert answer.json() == {"written": 2}
        table = DeltaTable(uri).to_pyarrow_table()
        assert table.schema == SCHEMA
        assert table["outcome"].to_pylist() == ["ok", "ok"]  # the default of a missing column
        missing = httpx.post(
            f"{url}/api/v1/abtests/nope/exposures", content=arrow(batch()), headers=headers
        )
        assert missing.status_code == 404


def test_check_batch_judges_every_column() -> None:
    exp = experiment({"champion": "http://a", "challenger": "http://b"})

    def fault(table: pa.Table) -> str:
        with pytest.raises(InvalidArgument) as caught:
            check_batch(exp, table, now_ms=NOW_MS)
        return caught.value.message

    checked = check_batch(exp, batch(latency_ms=[1.5, None]), now_ms=NOW_MS)
    assert checked.schema == SCHEMA
    assert checked["latency_ms"].to_pylist() == [1.5, None]
    assert checked["model_version"].to_pylist() == [None, None]
    assert fault(batch(latency_ms=[1.0, -2.0])).startswith("exposures[1].latency_ms:")
    assert fault(batch(latency_ms=[float("nan"), 1.0])).startswith("exposures[0].latency_ms:")
    assert fault(batch(outcome=["ok", "fallback:whatever"])).startswith(
        "exposures[1].outcome: 'fallback:whatever': must be one of ok, fallback:timeout"
    )
    assert fault(batch(request_id=["r1", None])) == "exposures[1].request_id: missing (null)"
    assert fault(batch(unit=["", "u2"])) == "exposures[0].unit: must not be empty"
    assert fault(batch(unit=["u1", "u" * 501])) == "exposures[1].unit: at most 500 characters"
    assert check_batch(exp, batch(unit=["u" * 500, "u2"]), now_ms=NOW_MS)
    assert fault(batch(request_id=["r1", ""])) == "exposures[1].request_id: must not be empty"
    assert fault(batch(request_id=["r" * 501, "r2"])) == (
        "exposures[0].request_id: at most 500 characters"
    )
    assert fault(batch(model_version=[None, "v" * 101])) == (
        "exposures[1].model_version: at most 100 characters"
    )
    assert check_batch(exp, batch(model_version=[None, "v" * 100]), now_ms=NOW_MS)
    client_error = batch(outcome=["ok", "fallback:client_error"])
    assert check_batch(exp, client_error, now_ms=NOW_MS)["outcome"][1].as_py() == (
        "fallback:client_error"
    )
    assert fault(batch(at_ms=pa.array([-1, 0], pa.int64()))).startswith(
        "exposures[0].at_ms: before 1970"
    )
    assert fault(batch().slice(0, 0)) == "exposures: the batch is empty"
    assert check_batch(exp, batch(at_ms=pa.array([NOW_MS + 60_000] * 2)), now_ms=NOW_MS)


def test_a_server_that_is_gone_costs_the_batches_not_the_caller(tmp_path: Path) -> None:
    with running_server(tmp_path / "server") as url:
        remote = plinth.connect(url, home=tmp_path / "client")
    log = exposure_log_for(remote, flush_seconds=0.05)
    assert all(log.record(Exposure("churn", "a", f"u{n}", f"r{n}", None, NOW_MS)) for n in range(5))
    log.close()
    assert (log.written, log.failed) == (0, 5)
    remote.close()


@pytest.mark.integration
def test_a_shared_artifact_store_is_written_directly(tmp_path: Path, s3_bucket: str) -> None:
    root = f"{s3_bucket}/plinth"
    with (
        arm_services() as urls,
        running_server(tmp_path / "server", artifact_uri=root) as url,
        plinth.connect(url, home=tmp_path / "client") as remote,
    ):
        exp = started(remote, urls)
        log = exposure_log_for(remote, flush_seconds=0.05)
        unit = units_of(exp, "challenger", 1)[0]
        log.record(Exposure("churn", "challenger", unit, "r1", "2", NOW_MS))
        log.close()
        assert (log.written, log.failed) == (1, 0)
        sink = log.sink
        assert isinstance(sink, ServerExposures) and isinstance(sink.direct, DeltaExposures)
        assert sink.direct.root_uri == root  # the server's store, not through the server
        assert remote.abtests.abtest_results("churn").units_by_arm["challenger"] == 1
    assert files_under(tmp_path / "client") == []
