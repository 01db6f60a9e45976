"""The feature data routes and online lookups of a server that requires tokens: each checks
its caller as the metadata endpoints do (tests/features/test_rules.py has the rules)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pyarrow as pa
import pytest

import plinth
from plinth.auth.service import AuthService
from plinth.auth.types import Kind, Role
from plinth.config import load_settings
from plinth.features.ipc import MEDIA_TYPE, ipc_chunks
from plinth.store.engine import open_store
from tests.backends import FAST_FLUSH, running_server
from tests.features.conftest import define, transactions

API = "/api/v1"
STATS = "customer_stats"


@dataclass
class Server:
    url: str
    auth: AuthService
    tokens: dict[str, str]  # user -> token

    def headers(self, user: str) -> dict[str, str]:
        return {"authorization": f"Bearer {self.tokens[user]}"}

    def client(self, user: str) -> plinth.Client:
        return plinth.connect(self.url, token=self.tokens[user], **FAST_FLUSH)  # type: ignore[arg-type]


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    """A server with authentication on; bob (an editor) owns customer_stats, written and
    materialised; carol is a viewer."""
    home = tmp_path / "server"
    with running_server(home, auth=True) as url:
        # the test process is an admin of the server's store, as `plinth users` run there is
        auth = AuthService(open_store(load_settings(home=home).resolved_store_uri))
        tokens = {}
        for user, role in (("bob", Role.EDITOR), ("carol", Role.VIEWER)):
            auth.create_user(user, role)
            tokens[user] = auth.create_token(user=user).secret
        found = Server(url, auth, tokens)
        with found.client("bob") as bob:
            fs = bob.feature_store()
            define(fs, ttl=None).insert(transactions())  # type: ignore[arg-type, attr-defined]
            fs.materialize(STATS)
        yield found


def test_a_call_without_a_token_is_refused(server: Server) -> None:
    for path in (
        f"{API}/feature-groups",
        f"{API}/feature-data/groups/{STATS}/1/version",
        f"{API}/features/online?features={STATS}:orders_30d&customer_id=1",
    ):
        response = httpx.get(server.url + path)
        assert response.status_code == 401, (path, response.text)
    response = httpx.post(
        f"{server.url}{API}/features/online",
        json={"features": [f"{STATS}:orders_30d"], "entity_rows": [{"customer_id": 1}]},
    )
    assert response.status_code == 401  # the fast path too


def test_a_viewers_insert_is_refused_before_any_row_is_written(server: Server) -> None:
    with server.client("carol") as carol:
        fs = carol.feature_store()
        assert fs.get_feature_group(STATS).read().num_rows == 3  # it may read the rows
        with pytest.raises(plinth.PermissionDenied, match="'carol' may not write"):
            fs.insert(STATS, transactions())
        with pytest.raises(plinth.PermissionDenied):
            fs.materialize(STATS)
    # nor can it write through the data route itself, past the client's check
    table = pa.Table.from_pandas(transactions(), preserve_index=False)
    response = httpx.put(
        f"{server.url}{API}/feature-data/groups/{STATS}/1/rows",
        content=b"".join(ipc_chunks(table.schema, [table])),
        headers={**server.headers("carol"), "content-type": MEDIA_TYPE},
    )
    assert response.status_code == 403, response.text
    with server.client("bob") as bob:
        assert [c.commit_version for c in bob.features.list_commits(STATS, 1)] == [0]
        assert bob.feature_store().offline.version(bob.features.get_feature_group(STATS)) == 0


def test_a_private_group_is_not_found_through_any_route(server: Server) -> None:
    server.auth.revoke_grant(Kind.FEATURE_GROUP, STATS, "everyone", "*")
    lookup = {"features": [f"{STATS}:orders_30d"], "entity_rows": [{"customer_id": 1}]}
    answers = {}
    for user in ("bob", "carol"):
        headers = server.headers(user)
        answers[user] = [
            httpx.post(f"{server.url}{API}/features/online", json=lookup, headers=headers),
            httpx.get(
                f"{server.url}{API}/features/online",
                params={"features": f"{STATS}:orders_30d", "customer_id": "1"},
                headers=headers,
            ),
            httpx.get(f"{server.url}{API}/feature-data/groups/{STATS}/1/rows", headers=headers),
            httpx.post(
                f"{server.url}{API}/feature-data/online/{STATS}__v1/read",
                json={"keys": [[1]], "features": ["orders_30d"]},
                headers=headers,
            ),
            httpx.delete(f"{server.url}{API}/feature-data/groups/{STATS}/1", headers=headers),
        ]
    assert [r.status_code for r in answers["carol"]] == [404] * 5
    assert [r.status_code for r in answers["bob"]] == [200, 200, 200, 200, 409]
    assert answers["bob"][0].json()["rows"][0]["orders_30d"] == 5


def test_training_dataset_rows_are_their_views(server: Server) -> None:
    entities = transactions()[["customer_id", "event_time"]].rename(
        columns={"event_time": "event_timestamp"}
    )
    with server.client("bob") as bob:
        fs = bob.feature_store()
        fs.create_feature_view("churn", [f"{STATS}:orders_30d"])
        dataset = fs.create_training_dataset("churn", entities)  # rows written by the server
    snapshots = f"{server.url}{API}/feature-data/snapshots"

    def as_carol(method: str) -> int:
        found = httpx.request(
            method, snapshots, params={"uri": dataset.uri}, headers=server.headers("carol")
        )
        return found.status_code

    assert as_carol("GET") == 200  # everyone may read the view
    assert as_carol("PUT") == 403  # writing rows takes the editor role
    assert as_carol("DELETE") == 403
    server.auth.revoke_grant(Kind.FEATURE_VIEW, "churn", "everyone", "*")
    assert as_carol("GET") == 404
    kept = httpx.delete(snapshots, params={"uri": dataset.uri}, headers=server.headers("bob"))
    assert kept.status_code == 409 and f"training dataset {dataset.id}" in kept.text


def test_an_online_table_named_in_another_letter_case_is_the_same_groups(
    server: Server,
) -> None:
    server.auth.create_user("dave", Role.EDITOR)
    dave = {"authorization": f"Bearer {server.auth.create_token(user='dave').secret}"}
    server.auth.revoke_grant(Kind.FEATURE_GROUP, STATS, "everyone", "*")
    online = f"{server.url}{API}/feature-data/online"
    for table in (f"{STATS.upper()}__v1", f"{STATS}__V1", f"{STATS}__v1"):
        refused = httpx.delete(f"{online}/{table}", headers=dave)
        assert refused.status_code == 404, (table, refused.text)
    with server.client("bob") as bob:  # bob's values are all still there
        found = bob.feature_store().get_online_features(
            [f"{STATS}:orders_30d"], [{"customer_id": 1}]
        )
        assert found.rows[0]["orders_30d"] == 5
    client = plinth.connect(server.url, token=dave["authorization"][7:])
    with client, pytest.raises(plinth.AlreadyExists, match="more than letter case"):
        client.feature_store().create_feature_group(
            STATS.upper(), "customer", "event_time", {"orders_30d": "int64"}
        )


def test_only_a_training_datasets_exact_location_may_be_deleted(server: Server) -> None:
    entities = transactions()[["customer_id", "event_time"]].rename(
        columns={"event_time": "event_timestamp"}
    )
    with server.client("bob") as bob:
        fs = bob.feature_store()
        fs.create_feature_view("churn", [f"{STATS}:orders_30d"])
        dataset = fs.create_training_dataset("churn", entities)
    snapshots = f"{server.url}{API}/feature-data/snapshots"
    folder = dataset.uri.rsplit("/", 1)[0]  # VIEW/vN/ID: every file of the dataset
    for uri in (folder, folder.rsplit("/", 2)[0], f"{folder}/./rows", f"{folder}/../x/rows"):
        answer = httpx.delete(snapshots, params={"uri": uri}, headers=server.headers("bob"))
        assert answer.status_code == 422, (uri, answer.text)
    with server.client("bob") as bob:
        assert bob.feature_store().get_training_dataset(dataset.id).to_arrow().num_rows > 0
