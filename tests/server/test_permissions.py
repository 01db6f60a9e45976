"""Generated from the endpoint contract: every operation of the OpenAPI document, called by
a caller without the permission it needs, is refused (401 without a token; 404 where the
resource is private, so its existence does not leak; 403 where the caller may see it but
not do this) and changes nothing in the central store or the data folders."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd  # type: ignore[import-untyped]
import pytest
from sqlalchemy import select

import plinth
from plinth.auth.service import AuthService
from plinth.auth.types import Kind, Role
from plinth.config import load_settings
from plinth.server.app import create_app
from plinth.server.auth import OPEN_PATHS
from plinth.store.engine import open_store
from plinth.store.schema import metadata

pytestmark = pytest.mark.filterwarnings(
    "ignore:Using `httpx` with `starlette.testclient` is deprecated"
)

# Operations any signed-in caller may call: each answers only about the caller, or lists
# only what the caller may see (checked below: no private name in the answer).
SELF_SERVICE = {
    ("GET", "/api/v1/auth/whoami"),
    ("GET", "/api/v1/experiments"),
    ("POST", "/api/v1/runs/search"),
    ("GET", "/api/v1/models"),
    ("GET", "/api/v1/model-versions"),
    ("GET", "/api/v1/feature-views"),
    ("GET", "/api/v1/feature-groups"),
    ("GET", "/api/v1/entities"),
    ("GET", "/api/v1/entities/{name}"),  # entities are shared definitions, not resources
    ("POST", "/api/v1/entities"),  # an editor may define one (the same again: no change)
    ("GET", "/api/v1/training-datasets"),
    ("GET", "/api/v1/score-jobs"),
    ("GET", "/api/v1/groups"),
    ("GET", "/api/v1/tokens"),
    ("POST", "/api/v1/tokens"),
    ("GET", "/api/v1/stores"),
    ("GET", "/api/v1/environments/{digest}"),
    ("GET", "/api/v1/abtests"),
    ("GET", "/api/v1/monitors"),
    ("GET", "/api/v1/alerts"),
    ("GET", "/api/v1/profiles"),
    ("GET", "/api/v1/pipelines"),
    ("GET", "/api/v1/pipeline-runs"),
    ("GET", "/api/v1/pipeline-schedules"),
    ("GET", "/api/v1/model-decisions"),  # filtered: decisions of the models one may read
}
PRIVATE_NAMES = (
    "secret-exp",
    "secret-model",
    "secret_grp",
    "secret_view",
    "secret-ab",
    "secret-mon",
    "secret-pipe",
)


class World:
    def __init__(self, home: Path) -> None:
        self.home = home
        self.settings = load_settings(home=home, auth=True, private_by_default=True)
        self.app = create_app(self.settings)  # configures the store: new resources private
        self.client = plinth.connect(
            store_uri=self.settings.resolved_store_uri,
            artifact_uri=self.settings.resolved_artifact_uri,
            home=home,
        )
        self.store = open_store(self.settings.resolved_store_uri)
        self.values: dict[str, Any] = {}

    def build(self) -> None:
        c = self.client
        with c.start_run("secret-exp", "r1", capture_environment=False) as run:
            run.log_params({"lr": 0.1})
            run.log_metric("loss", 0.5, step=0)
            run.log_text("hello", "notes/a.txt")
            run_id = run.id
        from sklearn.linear_model import LogisticRegression

        frame = pd.DataFrame({"x": [0.0, 1.0, 2.0, 3.0]})
        model = LogisticRegression().fit(frame, [0, 0, 1, 1])
        mv = c.register_model(model, "secret-model", input_example=frame)
        c.set_alias("secret-model", "champion", mv.version)
        fs = c.feature_store()
        fs.create_entity("cust", join_keys=["cust_id"])
        fs.create_feature_group(
            "secret_grp", entity="cust", event_time="ts", schema={"f1": "float64"}, online=True
        )
        fs.insert(
            "secret_grp",
            pd.DataFrame(
                {"cust_id": [1], "ts": pd.to_datetime(["2026-01-01"], utc=True), "f1": [1.0]}
            ),
        )
        fs.materialize("secret_grp")
        fs.create_feature_view("secret_view", features=["secret_grp:f1"])
        c.score_jobs.start_score_job("job", "secret-model", 1, "in.parquet", "out")
        from plinth.features.offline import OfflineStore

        snapshot = OfflineStore(self.settings.resolved_artifact_uri).snapshot_uri(
            "secret_view", "v1", "0" * 32, "rows"
        )
        BY_ROUTE[("/api/v1/feature-data/snapshots", "uri")] = snapshot
        c.abtests.create_abtest(
            "secret-ab",
            "v2 converts more",
            BY_ROUTE[("/api/v1/abtests", "primary")],
            BY_ROUTE[("/api/v1/abtests", "arms")],
            mde=0.02,
        )
        c.monitors.create_monitor("secret-mon", "input_drift", "secret-model")
        from plinth.pipelines.types import PipelineSpec, ScheduleSpec

        c.pipelines.register_pipeline(PipelineSpec("secret-pipe", "secret_flows:pipeline"))
        pipeline_run = c.pipelines.queue_run("secret-pipe").id
        schedule = c.pipelines.create_schedule("secret-pipe", ScheduleSpec(cron="0 3 * * *")).id
        for route in ("", "/logs", "/rerun", "/cancel"):
            BY_ROUTE[(f"/api/v1/pipeline-runs/{{run_id}}{route}", "run_id")] = pipeline_run
        for route in ("", "/pause", "/resume"):
            BY_ROUTE[(f"/api/v1/pipeline-schedules/{{schedule_id}}{route}", "schedule_id")] = (
                schedule
            )
        auth = AuthService(self.store)
        auth.create_user("admin1", role=Role.ADMIN)
        auth.create_user("mallory", role=Role.EDITOR)
        auth.create_user("victor", role=Role.VIEWER)
        auth.create_group("team")
        tokens = {u: auth.create_token("t", user=u) for u in ("admin1", "mallory", "victor")}
        for kind, name in (
            (Kind.EXPERIMENT, "secret-exp"),
            (Kind.MODEL, "secret-model"),
            (Kind.FEATURE_GROUP, "secret_grp"),
            (Kind.FEATURE_VIEW, "secret_view"),
            (Kind.ABTEST, "secret-ab"),
            (Kind.MONITOR, "secret-mon"),
            (Kind.PIPELINE, "secret-pipe"),
        ):
            auth.grant(kind, name, "user", "victor", "viewer")
        self.tokens = {u: t.secret for u, t in tokens.items()}
        self.values = {
            "experiment": "secret-exp",
            "run_id": run_id,
            "run_ids": [run_id],
            "version": mv.version,
            "alias": "champion",
            "model_name": "secret-model",
            "view": "secret_view",
            "entity": "cust",
            "uri": "models:/secret-model/1",
            "features": ["secret_grp:f1"],
            "token_id": tokens["admin1"].token.id,
            "user": "admin1",
            "kind": "model",
            "resource": "secret-model",
            "spool": "s",
            "digest": "d",
            "id": 1,
            "job_key": "job",
            "table": "secret_grp__v1",
            "path": "model/plinth-model.json",
            "key": "loss",
            "stage": "PRODUCTION",
            "level": "owner",
            "grantee_type": "user",
            "grantee": "mallory",
            "keys": "cust_id",
            "event_time": "ts",
        }

    def name_for(self, path: str) -> str:
        for prefix, name in (
            ("/api/v1/experiments", "secret-exp"),
            ("/api/v1/abtests", "secret-ab"),
            ("/api/v1/monitors", "secret-mon"),
            ("/api/v1/pipelines", "secret-pipe"),
            ("/api/v1/feature-groups", "secret_grp"),
            ("/api/v1/feature-views", "secret_view"),
            ("/api/v1/entities", "cust"),
            ("/api/v1/users", "admin1"),
            ("/api/v1/groups", "team"),
            ("/api/v1/models/", "secret-model"),
            ("/api/v1/feature-groups/", "secret_grp"),
            ("/api/v1/feature-data/groups/", "secret_grp"),
            ("/api/v1/feature-views/", "secret_view"),
            ("/api/v1/entities/", "cust"),
            ("/api/v1/users/", "admin1"),
            ("/api/v1/groups/", "team"),
        ):
            if path.startswith(prefix):
                return name
        return "secret-model"

    def value(self, name: str, path: str, schema: dict[str, Any]) -> Any:
        if (path, name) in BY_ROUTE:
            return BY_ROUTE[path, name]
        if name == "name":
            return self.name_for(path)
        if name in self.values:
            found = self.values[name]
            return found if schema.get("type") != "string" else str(found)
        return example(schema, self.doc)

    def snapshot(self) -> str:
        """A digest of every row of every table (but the security log and tokens' last use)
        and of every file under the home, but the SQLite database's own."""
        digest = hashlib.sha256()
        with self.store.read() as conn:
            for table in metadata.sorted_tables:
                if table.name == "security_events":
                    continue
                columns = [c for c in table.c if c.name != "last_used_at"]
                rows = conn.execute(select(*columns)).all()
                digest.update(repr((table.name, sorted(map(repr, rows)))).encode())
        for path in sorted(self.home.rglob("*")):
            # SQLite's shared-memory index changes when a database is only read
            if (
                path.is_file()
                and not path.name.startswith("plinth.db")
                and not path.name.endswith("-shm")
            ):
                digest.update(str(path.relative_to(self.home)).encode())
                digest.update(path.read_bytes())
        return digest.hexdigest()


# Values a route needs to get past its own checks of form, to the permission check.
BY_ROUTE: dict[tuple[str, str], Any] = {
    ("/api/v1/entities", "join_keys"): ["cust_id"],
    ("/api/v1/feature-groups", "features"): [{"name": "f1", "dtype": "float64"}],
    ("/api/v1/feature-groups", "entity"): "cust",
    ("/api/v1/feature-groups", "event_time"): "ts",
    ("/api/v1/feature-data/online/{table}/read", "keys"): [[1]],
    ("/api/v1/features/online", "entity_rows"): [{"cust_id": 1}],
    ("/api/v1/score-jobs/{job_key}", "status"): "FAILED",
    ("/api/v1/packages/content", "path"): "models/secret-model/packages/p1/model.bin",
    ("/api/v1/runs/{run_id}/artifacts/content", "path"): "notes/a.txt",
    ("/api/v1/models/{name}/versions/{version}/content", "path"): "plinth-model.json",
    ("/api/v1/monitors", "kind"): "input_drift",
    # "view" of a listing is which lifecycle stage it shows (not a feature view's name):
    # every one, deleted ones included
    ("/api/v1/runs/search", "view"): "all",
    ("/api/v1/experiments", "view"): "all",
    # named as the private pipeline: registering it again needs write on it (a new one,
    # or a new entrypoint, the admin role)
    ("/api/v1/pipelines", "spec"): {"name": "secret-pipe", "entrypoint": "secret_flows:pipeline"},
    ("/api/v1/abtests", "primary"): {"name": "conversion", "kind": "proportion", "event": "buy"},
    ("/api/v1/abtests", "arms"): [
        {"name": "v1", "share": 0.5, "model_uri": "models:/secret-model/1", "control": True},
        {"name": "v2", "share": 0.5, "url": "http://127.0.0.1:1/predict"},
    ],
}


def example(schema: dict[str, Any], doc: dict[str, Any]) -> Any:
    """A value of the schema's type: the smallest one FastAPI's validation accepts."""
    if "$ref" in schema:
        return example(doc["components"]["schemas"][schema["$ref"].rsplit("/", 1)[-1]], doc)
    for combined in ("anyOf", "oneOf", "allOf"):
        if combined in schema:
            options = [s for s in schema[combined] if s.get("type") != "null"]
            return example(options[0], doc) if options else None
    if schema.get("format") == "date-time":
        return "2026-01-01T00:00:00Z"
    if "enum" in schema:
        return schema["enum"][0]
    if "const" in schema:
        return schema["const"]
    kind = schema.get("type")
    if kind == "object":
        props = schema.get("properties", {})
        return {k: example(props[k], doc) for k in schema.get("required", [])}
    return {"string": "x", "integer": 1, "number": 1.0, "boolean": False, "array": []}.get(
        str(kind), "x"
    )


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    from fastapi.testclient import TestClient

    w = World(tmp_path_factory.mktemp("permissions"))
    w.build()
    w.doc = w.app.openapi()
    with TestClient(w.app) as http:
        w.http = http
        yield w
    w.client.close()


def operations() -> list[tuple[str, str]]:
    doc = create_app(load_settings(home=Path("/nonexistent-plinth-home"))).openapi()
    return [
        (method.upper(), path)
        for path, ops in doc["paths"].items()
        for method in ops
        if path not in OPEN_PATHS
    ]


def call(world: World, method: str, path: str, token: str | None) -> Any:
    op = world.doc["paths"][path][method.lower()]
    # a listing is called as plainly as it can be: a filter naming a private resource
    # would only echo the caller's own words
    plain = (method, path) in SELF_SERVICE
    params: dict[str, Any] = {}
    filled = path
    for p in op.get("parameters", []):
        value = world.value(p["name"], path, p.get("schema", {}))
        if p["in"] == "path":
            filled = filled.replace("{" + p["name"] + "}", str(value))
        elif p.get("required") or (p["name"] in world.values and not plain):
            params[p["name"]] = value
    body = op.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema")
    kwargs: dict[str, Any] = {"params": params}
    if body is not None:
        schema = body
        if "$ref" in schema:
            schema = world.doc["components"]["schemas"][schema["$ref"].rsplit("/", 1)[-1]]
        props = schema.get("properties", {})
        kwargs["json"] = {
            k: world.value(k, path, props[k])
            for k in props
            if k in schema.get("required", []) or k in world.values
        }
    elif (method, path) in RAW_BODIES:
        content_type, content = RAW_BODIES[method, path]()
        kwargs["content"] = content
        kwargs["headers"] = {"content-type": content_type}
    elif method in ("PUT",):
        kwargs["content"] = b"payload"
    headers = kwargs.pop("headers", {})
    if token is not None:
        headers["authorization"] = f"Bearer {token}"
    return world.http.request(method, filled, headers=headers, **kwargs)


def _exposures() -> tuple[str, bytes]:
    """A batch the route would store for secret-ab (arms v1, v2) but for the caller."""
    import pyarrow as pa

    from plinth.features.ipc import MEDIA_TYPE, ipc_chunks

    table = pa.table(
        {
            "at_ms": pa.array([1_767_225_600_000], pa.int64()),
            "unit": ["u1"],
            "arm": ["v2"],
            "request_id": ["r1"],
        }
    )
    return MEDIA_TYPE, b"".join(ipc_chunks(table.schema, [table]))


# Routes whose body is not JSON: a body they would accept, so that only the permission
# check stands between the caller and a change.
RAW_BODIES = {("POST", "/api/v1/abtests/{name}/exposures"): _exposures}


OPERATIONS = operations()


def test_the_document_has_every_operation() -> None:
    assert len(OPERATIONS) > 80  # a broken document would make every test below vacuous


@pytest.mark.parametrize(("method", "path"), OPERATIONS, ids=[f"{m} {p}" for m, p in OPERATIONS])
def test_a_caller_without_a_token_is_refused(world: World, method: str, path: str) -> None:
    before = world.snapshot()
    answer = call(world, method, path, None)
    assert answer.status_code == 401, answer.text
    assert answer.json()["error_code"] == "UNAUTHENTICATED"
    assert world.snapshot() == before


@pytest.mark.parametrize(("method", "path"), OPERATIONS, ids=[f"{m} {p}" for m, p in OPERATIONS])
def test_an_editor_without_grants_cannot_see_or_change_private_resources(
    world: World, method: str, path: str
) -> None:
    before = world.snapshot()
    answer = call(world, method, path, world.tokens["mallory"])
    if (method, path) in SELF_SERVICE:
        assert answer.status_code < 500, answer.text
        for name in PRIVATE_NAMES:
            assert name not in answer.text, f"{method} {path} shows {name}"
        if method == "POST" and path == "/api/v1/tokens":
            return  # a token of one's own is a change the caller may make
    elif (method, path) in CREATES:
        # an editor may create resources: named as a private one, the name is taken
        assert answer.status_code in (403, 404, 409), answer.text
    else:
        assert answer.status_code in (403, 404), answer.text
    assert world.snapshot() == before


# Creating a resource needs the editor role, not a grant: called with the name of an
# existing private resource, the answer is that the name is taken.
CREATES = {
    ("POST", "/api/v1/experiments"),
    ("POST", "/api/v1/models"),
    ("POST", "/api/v1/feature-groups"),
    ("POST", "/api/v1/feature-views"),
    ("POST", "/api/v1/abtests"),
    ("POST", "/api/v1/monitors"),
    # not POST /api/v1/pipelines: a pipeline's entrypoint is code the scheduler's workers
    # run, so registering one needs the admin role, and registering the private one again
    # (write on it) is refused as any other change of it
}


@pytest.mark.parametrize(
    ("method", "path"),
    [(m, p) for m, p in OPERATIONS if m != "GET" and (m, p) not in SELF_SERVICE],
    ids=[f"{m} {p}" for m, p in OPERATIONS if m != "GET" and (m, p) not in SELF_SERVICE],
)
def test_a_viewer_cannot_change_anything(world: World, method: str, path: str) -> None:
    before = world.snapshot()
    answer = call(world, method, path, world.tokens["victor"])
    # read-only operations sent as POST (search, lookups) answer; the rest are refused
    if answer.status_code == 200:
        assert (method, path) in READS_BY_POST, f"{method} {path} let a viewer write"
    else:
        assert answer.status_code in (403, 404), answer.text
    assert world.snapshot() == before


READS_BY_POST = {
    ("POST", "/api/v1/runs/compare"),
    ("POST", "/api/v1/features/online"),
    ("POST", "/api/v1/feature-data/online/{table}/read"),
}


def test_every_operation_declares_its_access_rule() -> None:
    from plinth.abtests.service import AbTestService
    from plinth.api import endpoints_of
    from plinth.auth.service import AuthService as Auth
    from plinth.features.service import FeatureService
    from plinth.features.serving import OnlineFeatureService
    from plinth.monitoring.service import MonitorService
    from plinth.pipelines.service import PipelineService
    from plinth.registry.service import RegistryService
    from plinth.serving.jobs import ScoreJobService
    from plinth.store.locations import LocationService
    from plinth.tracking.service import TrackingService

    services = (
        TrackingService,
        RegistryService,
        FeatureService,
        OnlineFeatureService,
        ScoreJobService,
        LocationService,
        Auth,
        AbTestService,
        MonitorService,
        PipelineService,
    )
    missing = [
        f"{service.__name__}.{ep.name}"
        for service in services
        for ep in endpoints_of(service)
        if not hasattr(getattr(service, ep.name), "__plinth_access__")
    ]
    assert sorted(missing) == [
        "AuthService.login",  # a password sign-in: before any identity
        # where the server's stores are, for any signed-in caller (the middleware refuses
        # anonymous ones): the store layer sits below auth and names no resource
        "LocationService.get_store_locations",
    ]


@pytest.mark.parametrize(
    ("hidden", "missing"),
    [
        ("/api/v1/experiments/secret-exp", "/api/v1/experiments/no-such-exp"),
        ("/api/v1/models/secret-model", "/api/v1/models/no-such-model"),
        ("/api/v1/feature-groups/secret_grp", "/api/v1/feature-groups/no_such_grp"),
        ("/api/v1/feature-views/secret_view", "/api/v1/feature-views/no_such_view"),
        ("/api/v1/grants/model/secret-model", "/api/v1/grants/model/no-such-model"),
        ("/api/v1/abtests/secret-ab", "/api/v1/abtests/no-such-ab"),
        ("/api/v1/grants/abtest/secret-ab", "/api/v1/grants/abtest/no-such-ab"),
        ("/api/v1/pipelines/secret-pipe", "/api/v1/pipelines/no-such-pipe"),
        ("/api/v1/grants/pipeline/secret-pipe", "/api/v1/grants/pipeline/no-such-pipe"),
    ],
)
def test_a_private_resource_reads_exactly_as_a_missing_one(
    world: World, hidden: str, missing: str
) -> None:
    headers = {"authorization": f"Bearer {world.tokens['mallory']}"}
    one, other = (world.http.get(path, headers=headers) for path in (hidden, missing))
    assert one.status_code == other.status_code == 404
    name = hidden.rsplit("/", 1)[1]
    assert one.json()["message"].replace(name, "?") == other.json()["message"].replace(
        missing.rsplit("/", 1)[1], "?"
    )


def test_a_private_run_reads_exactly_as_a_missing_one(world: World) -> None:
    headers = {"authorization": f"Bearer {world.tokens['mallory']}"}
    run_id = world.values["run_id"]
    one = world.http.get(f"/api/v1/runs/{run_id}", headers=headers).json()["message"]
    other = world.http.get(f"/api/v1/runs/{'0' * 32}", headers=headers).json()["message"]
    assert one.replace(run_id, "?") == other.replace("0" * 32, "?")
