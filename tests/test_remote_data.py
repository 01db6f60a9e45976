"""The data plane of remote clients: feature rows, online values, training datasets and
scores go to the server's stores (directly when every party can reach them, else through
the server), never to the client's own disk. Client and server have different homes."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pytest
from deltalake import DeltaTable

import plinth
from plinth.errors import InvalidArgument
from plinth.features.offline import OfflineStore
from plinth.remote_data import ServerOffline, ServerOnline, _with_credentials
from plinth.store.locations import public, reachable, shared
from tests.backends import running_server
from tests.features.conftest import day, define, transactions
from tests.features.test_views import churn_view, entity_rows

REDIS_URL = os.environ.get("PLINTH_TEST_REDIS", "redis://127.0.0.1:6379/9")


def files_under(home: Path) -> list[Path]:
    """Files under a home, but for its cache of downloaded model packages."""
    found = home.rglob("*") if home.exists() else iter([])
    return sorted(p for p in found if p.is_file() and "cache" not in p.relative_to(home).parts)


def late_rows() -> pd.DataFrame:
    return pd.DataFrame(
        {"customer_id": [2], "event_time": [day(20)], "orders_30d": [7], "avg_spend": [70.0]}
    )


@pytest.fixture
def homes(tmp_path: Path) -> Iterator[tuple[Path, Path, Path]]:
    server, a, b = tmp_path / "server-home", tmp_path / "client-a", tmp_path / "client-b"
    yield server, a, b
    assert files_under(a) == [] and files_under(b) == [], "a client wrote to its own home"


def test_feature_data_goes_through_the_server_when_its_stores_are_local(
    homes: tuple[Path, Path, Path],
) -> None:
    server_home, home_a, home_b = homes
    with (
        running_server(server_home) as url,
        plinth.connect(url, home=home_a) as a,
        plinth.connect(url, home=home_b) as b,
    ):
        fs = a.feature_store()
        assert isinstance(fs.offline, ServerOffline) and isinstance(fs.online, ServerOnline)
        stats = define(fs, ttl="3650d")
        stats.insert(transactions())  # type: ignore[attr-defined]
        with pytest.MonkeyPatch.context() as patch:  # the server materialises, next to its stores
            patch.setattr(fs.offline, "read", lambda *a, **k: pytest.fail("rows sent to client"))
            assert fs.materialize("customer_stats") == 2
            late = stats.insert(late_rows())  # type: ignore[attr-defined]
            assert fs.materialize_incremental("customer_stats") == 1
        view = churn_view(fs)
        dataset = view.create_training_dataset(entity_rows())

        # another machine (another home) sees the same rows, values and dataset
        other = b.feature_store()
        rows = other.get_feature_group("customer_stats").read().sort_by("event_time")
        assert rows["orders_30d"].to_pylist() == [3, 1, 5, 7]
        assert other.get_feature_group("customer_stats").read(as_of=0).num_rows == 3
        online = other.get_online_features(
            ["customer_stats:orders_30d", "customer_stats:avg_spend"],
            [{"customer_id": 1}, {"customer_id": 2}, {"customer_id": 3}],
        )
        assert online.rows == [
            {"customer_id": 1, "orders_30d": 5, "avg_spend": 25.0},
            {"customer_id": 2, "orders_30d": 7, "avg_spend": 70.0},
            {"customer_id": 3, "orders_30d": None, "avg_spend": None},
        ]
        assert [s["orders_30d"] for s in online.statuses] == ["PRESENT", "PRESENT", "NOT_FOUND"]
        assert b.features.get_materialized_until("customer_stats", 1) == late.commit_version
        again = other.get_training_dataset(dataset.id)
        assert again.to_arrow().equals(dataset.to_arrow())
        assert again.entities().to_pandas().equals(entity_rows())
        assert again.rebuild().equals(dataset.to_arrow())

        # what the server recorded points into the server's own stores
        root = str((server_home / "artifacts").resolve())
        assert dataset.uri.startswith(root) and dataset.entity_uri.startswith(root)
        assert stats.table_uri.startswith(root)  # type: ignore[attr-defined]
        assert DeltaTable(stats.table_uri).version() == late.commit_version  # type: ignore[attr-defined]
        assert (server_home / "online.db").is_file()

        # deleting the group removes its data on the server
        fs.delete_feature_group("customer_stats", force=True)
        assert not os.path.exists(stats.table_uri)  # type: ignore[attr-defined]


def test_a_large_insert_streams_through_the_server_as_one_commit(
    homes: tuple[Path, Path, Path],
) -> None:
    """Chunks stream into ONE Delta commit, past the server's JSON body limit; an error in
    a later chunk (a null key) leaves no commit at all."""
    server_home, home_a, _ = homes
    n = 3000
    frame = pd.DataFrame(
        {
            "customer_id": range(n),
            "event_time": [day(1)] * n,
            "orders_30d": range(n),
            "avg_spend": [1.5] * n,
        }
    )
    with (
        running_server(server_home, max_request_bytes=4096) as url,
        plinth.connect(url, home=home_a) as a,
    ):
        fs = a.feature_store()
        stats = define(fs)
        first = stats.insert(transactions())  # type: ignore[attr-defined]
        seen: list[int] = []
        big = stats.insert(frame, chunk_rows=500, progress=seen.append)  # type: ignore[attr-defined]
        assert seen[-1] == n and len(seen) == 6
        assert big.commit_version == first.commit_version + 1
        assert stats.read().num_rows == n + 3  # type: ignore[attr-defined]

        bad = frame.copy()
        bad.loc[2500, "event_time"] = None  # in the sixth chunk, after five were sent
        with pytest.raises(InvalidArgument, match="event_time"):
            stats.insert(bad, chunk_rows=500)  # type: ignore[attr-defined]
        assert fs.offline.version(stats.group) == big.commit_version  # type: ignore[attr-defined]
        assert [c.commit_version for c in fs.service.list_commits("customer_stats", 1)] == [0, 1]


def test_the_server_refuses_snapshot_and_online_locations_that_are_not_its_own(
    homes: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    server_home, home_a, _ = homes
    outside = tmp_path / "outside"
    with running_server(server_home) as url, plinth.connect(url, home=home_a) as a:
        fs = a.feature_store()
        define(fs)
        table = pa.table({"x": [1]})
        root = str((server_home / "artifacts").resolve())
        for uri in (str(outside), f"{root}/training-datasets/../features/x", f"{root}/features"):
            with pytest.raises(InvalidArgument, match="not a training dataset location"):
                fs.offline.write_snapshot(uri, table)
        assert not outside.exists()
        with pytest.raises(plinth.NotFound):
            fs.online.read("users", [(1,)], ["password"])
        with pytest.raises(plinth.Conflict, match="still exists"):
            fs.online.drop("customer_stats__v1")


def test_remote_scores_go_to_a_shared_table_never_to_the_clients_disk(
    homes: tuple[Path, Path, Path], tmp_path: Path, s3_bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.serving.test_batch import churn_model, entity_input

    monkeypatch.setenv("PLINTH_TRUST_PICKLE", "true")  # the model is a pyfunc (pickled) one

    server_home, home_a, _ = homes
    source = entity_input(tmp_path / "input.parquet")
    local_output = tmp_path / "client-a-scores"
    with running_server(server_home) as url, plinth.connect(url, home=home_a) as a:
        churn_model(a)
        with pytest.raises(InvalidArgument, match="on this machine's disk"):
            plinth.serving.batch.score(a, "models:/churn/1", source, str(local_output))
        assert not local_output.exists()
        assert a.score_jobs.list_score_jobs() == []

        result = plinth.serving.batch.score(a, "models:/churn/1", source, f"{s3_bucket}/scores")
        assert result.rows == 100
        job = a.score_jobs.get_score_job(result.job_key)
        assert (job.status, job.output) == ("DELIVERED", f"{s3_bucket}/scores")
        # the client's input file is recorded as one on the client's machine
        assert job.input == f"file://{socket.gethostname()}{source}"


@pytest.mark.integration
def test_a_remote_client_writes_straight_to_shared_stores(
    homes: tuple[Path, Path, Path], s3_bucket: str
) -> None:
    """A server on S3 (offline, artifacts) and Redis (online): clients use them directly."""
    import redis

    server_home, home_a, home_b = homes
    redis.Redis.from_url(REDIS_URL).flushdb()
    settings = {"artifact_uri": f"{s3_bucket}/plinth", "online_uri": REDIS_URL}
    with (
        running_server(server_home, **settings) as url,
        plinth.connect(url, home=home_a) as a,
        plinth.connect(url, home=home_b) as b,
    ):
        fs = a.feature_store()
        assert isinstance(fs.offline, OfflineStore)
        assert fs.offline.root == f"{s3_bucket}/plinth"
        assert type(fs.online).__name__ == "RedisOnlineStore"
        stats = define(fs, ttl="3650d")
        stats.insert(transactions())  # type: ignore[attr-defined]
        assert fs.materialize("customer_stats") == 2
        dataset = churn_view(fs).create_training_dataset(entity_rows())
        assert dataset.uri.startswith(f"{s3_bucket}/plinth/training-datasets/")

        other = b.feature_store()
        online = other.get_online_features(["customer_stats:orders_30d"], [{"customer_id": 1}])
        assert online.rows == [{"customer_id": 1, "orders_30d": 5}]
        assert other.get_training_dataset(dataset.id).to_arrow().equals(dataset.to_arrow())
    assert files_under(server_home / "artifacts") == []  # the server's disk holds no data


def test_shared_and_public_uris() -> None:
    assert [shared(u) for u in ("s3://b/x", "redis://h/0", "postgresql+psycopg://h/db")] == [
        True,
        True,
        True,
    ]
    assert [shared(u) for u in ("/srv/plinth", "file:///srv", "sqlite:///online.db")] == [
        False,
        False,
        False,
    ]
    assert public("redis://:s3cret@cache:6379/2") == "redis://cache:6379/2"
    assert public("redis://user:pw@[::1]:6379/0") == "redis://[::1]:6379/0"
    assert public("s3://bucket/root") == "s3://bucket/root"
    # the client's own URI with its password, when it names the store the server publishes
    assert _with_credentials("redis://cache:6379/2", "redis://:pw@cache:6379/2") == (
        "redis://:pw@cache:6379/2"
    )
    assert _with_credentials("redis://cache:6379/2", "redis://other:6379/2") == (
        "redis://cache:6379/2"
    )
    assert _with_credentials("redis://cache:6379/2", None) == "redis://cache:6379/2"


def test_a_slow_commit_through_the_server_is_waited_for(
    homes: tuple[Path, Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A client's request timeout does not cut short a commit the server is still making
    (the client would not know of it, and a retry would commit the rows twice)."""
    import time

    import httpx

    server_home, home_a, _ = homes
    write = OfflineStore.write

    def slow_write(self: OfflineStore, *args: object, **kwargs: object) -> int:
        time.sleep(1.0)
        return write(self, *args, **kwargs)  # type: ignore[arg-type]

    with running_server(server_home) as url, plinth.connect(url, home=home_a) as a:
        fs = a.feature_store()
        stats = define(fs, ttl="3650d")
        fs.offline.transport.http.timeout = httpx.Timeout(0.3)  # type: ignore[attr-defined]
        monkeypatch.setattr(OfflineStore, "write", slow_write)  # the server's store (in-process)
        commit = stats.insert(transactions())  # type: ignore[attr-defined]
        assert commit.commit_version == 0
        assert [c.commit_version for c in fs.service.list_commits("customer_stats", 1)] == [0]


def test_training_dataset_rows_on_the_server_refuse_what_would_lose_or_misreport_them(
    homes: tuple[Path, Path, Path],
) -> None:
    server_home, home_a, _ = homes
    with running_server(server_home) as url, plinth.connect(url, home=home_a) as a:
        fs = a.feature_store()
        define(fs, ttl="3650d").insert(transactions())  # type: ignore[attr-defined]
        dataset = churn_view(fs).create_training_dataset(entity_rows())
        offline = fs.offline
        rows = pa.table({"x": [1]})
        with pytest.raises(InvalidArgument, match="too long"):  # the caller's name: a 4xx
            offline.write_snapshot(offline.snapshot_uri("n" * 300, "v1", "0" * 32, "rows"), rows)
        with pytest.raises(InvalidArgument, match="not a training dataset location"):
            offline.write_snapshot(offline.snapshot_uri("churn", "rows"), rows)
        with pytest.raises(plinth.AlreadyExists, match="exists already"):
            offline.write_snapshot(dataset.uri, rows)
        with pytest.raises(plinth.Conflict, match=f"training dataset {dataset.id} keeps"):
            offline.delete_snapshot(dataset.uri)
        assert a.feature_store().get_training_dataset(dataset.id).to_arrow().num_rows > 0


def test_a_store_on_the_servers_loopback_is_reachable_only_from_its_machine() -> None:
    server, elsewhere = "http://127.0.0.1:5151", "http://plinth.internal:5151"
    assert reachable("redis://127.0.0.1:6379/0", True, server)
    assert reachable("redis://localhost/0", True, "http://localhost:5151")
    assert not reachable("redis://127.0.0.1:6379/0", True, elsewhere)
    assert not reachable("redis://localhost/0", True, elsewhere)
    assert not reachable("redis://[::1]:6379/0", True, elsewhere)
    assert reachable("redis://cache.internal:6379/0", True, elsewhere)
    assert reachable("s3://bucket/root", True, elsewhere)
    assert not reachable("sqlite:////srv/online.db", False, server)


def test_plinth_score_against_a_remote_server_refuses_a_local_output(
    homes: tuple[Path, Path, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from plinth.cli import main
    from plinth.client import default_client
    from tests.serving.test_batch import churn_model, entity_input

    monkeypatch.setenv("PLINTH_TRUST_PICKLE", "true")  # the model is a pyfunc (pickled) one

    server_home, home_a, _ = homes
    source = entity_input(tmp_path / "input.parquet")
    (tmp_path / "incoming").mkdir()
    with running_server(server_home) as url:
        with plinth.connect(url, home=home_a) as a:
            churn_model(a)
        monkeypatch.setenv("PLINTH_URI", url)
        monkeypatch.setenv("PLINTH_HOME", str(home_a))
        try:
            for given in (["--input", source], ["--follow", str(tmp_path / "incoming"), "--once"]):
                out = str(tmp_path / "scores")
                argv = ["plinth", "score", "models:/churn/1", *given, "-o", out]
                monkeypatch.setattr("sys.argv", argv)
                with pytest.raises(SystemExit) as exited:
                    main()
                assert exited.value.code == 1
                assert "on this machine's disk" in capsys.readouterr().err
                assert not os.path.exists(out)
        finally:
            default_client().close()  # the CLI's client


def test_one_server_one_spool_target_whatever_the_trailing_slash(tmp_path: Path) -> None:
    with (
        running_server(tmp_path / "server") as url,
        plinth.connect(url + "/", home=tmp_path / "a") as slash,
        plinth.connect(url, home=tmp_path / "a") as plain,
    ):
        assert slash.target == plain.target == url
