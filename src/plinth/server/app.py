"""The Plinth server: every service endpoint under /api/v1, errors as {"error_code", "message"}."""

from __future__ import annotations

import contextlib
import inspect
import re
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Annotated, Any

import anyio
import anyio.to_thread
from fastapi import Body, FastAPI, Path, Query, Request
from fastapi.responses import Response, StreamingResponse
from starlette.types import ASGIApp

import plinth
from plinth.abtests.service import AbTestService
from plinth.api import API_PREFIX, Endpoint, endpoints_of
from plinth.auth.context import current_principal
from plinth.auth.service import AuthService
from plinth.config import Settings, load_settings
from plinth.errors import InvalidArgument
from plinth.features.lookup import OnlineResponse
from plinth.features.service import FeatureService
from plinth.features.serving import OnlineFeatureService, online_json
from plinth.features.store import FeatureStore
from plinth.monitoring.data import MonitoringData
from plinth.monitoring.service import MonitorService
from plinth.pipelines.service import PipelineService
from plinth.registry.service import RegistryService
from plinth.server.abtest_data import mount_abtest_data
from plinth.server.errors import Redactor, install_error_handlers
from plinth.server.fastpath import FastPosts, Handler
from plinth.server.feature_data import UPLOADS as FEATURE_UPLOADS
from plinth.server.feature_data import mount_feature_data
from plinth.server.limits import BodySizeLimit
from plinth.serving.jobs import ScoreJobService
from plinth.store.locations import LocationService
from plinth.tracking.service import TrackingService

# The routes that stream raw files and Arrow bodies (uploads are limited by the stores, not
# by the JSON limit).
_FILE_UPLOADS = re.compile(
    rf"{API_PREFIX}/(runs/[^/]+/artifacts/content|packages/content)|{FEATURE_UPLOADS}"
    r"|/api/2\.0/mlflow-artifacts/artifacts/.+"  # MLflow's artifact proxy
)


def create_app(
    settings: Settings | None = None,
    tracking: TrackingService | None = None,
    registry: RegistryService | None = None,
    features: FeatureService | None = None,
    score_jobs: ScoreJobService | None = None,
    background: bool = False,
) -> FastAPI:
    """The server's app. ``background``: also run the server's background work while the
    app runs (the A/B controller, every ``settings.abtest_controller_seconds``; the monitor
    scheduler, every ``settings.monitor_loop_seconds``), as ``plinth server`` does."""
    settings = settings or load_settings()
    if tracking is None:
        from plinth.store.artifacts import ArtifactStore
        from plinth.store.engine import open_store

        tracking = TrackingService(
            open_store(settings.resolved_store_uri, **settings.store_timeouts),
            ArtifactStore(settings.resolved_artifact_uri),
        )
    app = FastAPI(
        title="Plinth",
        version=plinth.__version__,
        openapi_url=f"{API_PREFIX}/openapi.json",
        docs_url=None,  # served below from the package's own copy of Swagger UI, not a CDN
        redoc_url=None,
    )
    _mount_docs(app)
    if registry is None:
        registry = RegistryService(tracking.store, tracking.artifacts, tracking)
    if features is None:
        features = FeatureService(tracking.store, settings.resolved_artifact_uri)
    if score_jobs is None:
        score_jobs = ScoreJobService(tracking.store)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_request_bytes, exempt=_FILE_UPLOADS)
    install_error_handlers(app, _redactor(settings))

    # Liveness: the process answers. Never a thread or a dependency, so it answers while
    # every worker thread waits on a store that has stopped answering.
    @app.get("/health", tags=["health"])
    @app.get(f"{API_PREFIX}/health", tags=["health"], include_in_schema=False)
    async def health() -> dict[str, Any]:
        answer: dict[str, Any] = {"status": "ok", "version": plinth.__version__}
        loop = getattr(app.state, "abtest_controller", None)
        if loop is not None:  # the loop's own memory: no store is asked
            answer["abtest_controller"] = loop.state()
        scheduler = getattr(app.state, "monitor_scheduler", None)
        if scheduler is not None:
            answer["monitor_scheduler"] = scheduler.state()
        return answer

    # Readiness: the metadata store answers (within its timeouts), else a 503 naming it.
    @app.get("/ready", tags=["health"])
    @app.get(f"{API_PREFIX}/ready", tags=["health"], include_in_schema=False)
    async def ready() -> dict[str, str]:
        from starlette.concurrency import run_in_threadpool

        revision = await run_in_threadpool(tracking.store.current_revision)
        return {"status": "ready", "version": plinth.__version__, "schema": str(revision)}

    _mount_file_routes(app, tracking, registry)
    if getattr(tracking, "store", None) is not None:
        from plinth.server.mlflow.common import Services as MlflowServices
        from plinth.server.mlflow.mount import mount_mlflow

        mount_mlflow(app, MlflowServices(tracking, registry, tracking.artifacts))
    feature_store = _server_feature_store(settings, features)
    mount_feature_data(app, feature_store)
    serving = OnlineFeatureService(feature_store)
    locations = LocationService(
        feature_store.offline.root, settings.resolved_online_uri, settings.resolved_artifact_uri
    )
    # Online lookups wait on their own threads: a store that stops answering holds at most
    # these, never the worker threads every other route needs.
    lookups = anyio.CapacityLimiter(LOOKUP_THREADS)
    _mount_feature_server_get(app, serving, lookups)
    _install_fast_posts(app, serving, settings.max_request_bytes, lookups)
    authenticator = _install_authentication(app, settings, getattr(tracking, "store", None))
    auth = AuthService(getattr(tracking, "store", None))  # type: ignore[arg-type]
    abtests = AbTestService(
        getattr(tracking, "store", None),  # type: ignore[arg-type]
        settings.resolved_artifact_uri,
        registry,
    )
    mount_abtest_data(app, abtests)
    if background and settings.abtest_controller_seconds > 0 and abtests.store is not None:
        _run_controller(app, abtests, settings.abtest_controller_seconds)
    monitoring_data = MonitoringData(
        getattr(tracking, "store", None),  # type: ignore[arg-type]
        registry,
        features,
    )
    monitoring = MonitorService(monitoring_data.store, monitoring_data)
    if background and settings.monitor_loop_seconds > 0 and monitoring.store is not None:
        _run_monitor_scheduler(app, monitoring, settings.monitor_loop_seconds)
    pipeline_service = PipelineService(
        getattr(tracking, "store", None),  # type: ignore[arg-type]
        tracking,
    )
    services = (
        (tracking, "tracking"),
        (registry, "registry"),
        (features, "features"),
        (serving, "features"),
        (score_jobs, "serving"),
        (locations, "stores"),
        (auth, "auth"),
        (abtests, "abtests"),
        (monitoring_data, "monitoring"),
        (monitoring, "monitoring"),
        (pipeline_service, "pipelines"),
    )
    for service, tag in services:
        for ep in endpoints_of(type(service)):
            _mount(app, ep, getattr(service, ep.name), tag)
    if getattr(tracking, "store", None) is not None:  # None: an app that only describes the API
        from plinth.ui.app import mount_dashboard
        from plinth.ui.web import Services

        mount_dashboard(
            app,
            Services(
                tracking,
                registry,
                features,
                feature_store,
                score_jobs,
                auth,
                settings,
                authenticator,
            ),
        )
    return app


def _run_controller(app: FastAPI, abtests: AbTestService, seconds: float) -> None:
    """The A/B controller's thread, started and stopped with the app (``controller.py``):
    among replicas, the one holding its lease controls."""
    from plinth.abtests.controller import ControllerLoop

    loop = ControllerLoop(abtests, seconds)
    app.state.abtest_controller = loop
    _run_with_app(app, loop)


def _run_monitor_scheduler(app: FastAPI, monitoring: MonitorService, seconds: float) -> None:
    """The monitor scheduler's thread, started and stopped with the app (``loop.py``):
    among replicas, the one holding its lease evaluates."""
    from plinth.monitoring.loop import MonitorLoop

    loop = MonitorLoop(monitoring, seconds)
    app.state.monitor_scheduler = loop
    _run_with_app(app, loop)


def _run_with_app(app: FastAPI, loop: Any) -> None:
    """``loop`` (``start()``, ``stop()``) runs while the app does."""
    inner = app.router.lifespan_context

    @contextlib.asynccontextmanager
    async def lifespan(app_: Any) -> AsyncIterator[Any]:
        async with inner(app_) as state:
            loop.start()
            try:
                yield state
            finally:  # waits for a pass under way to end, off the event loop
                await anyio.to_thread.run_sync(loop.stop)

    app.router.lifespan_context = lifespan


STATIC = "/static"
_SWAGGER = f"{STATIC}/swagger-ui"


def _mount_docs(app: FastAPI) -> None:
    """The API's documentation page, with every asset served from this package (see
    ``static/swagger-ui/VERSION.txt``): it works without internet."""
    from fastapi.openapi.docs import get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
    from fastapi.responses import HTMLResponse
    from fastapi.staticfiles import StaticFiles

    # the dashboard's files (plinth.ui) beside the API page's
    static = StaticFiles(packages=[("plinth.server", "static"), ("plinth.ui", "static")])
    app.mount(STATIC, static, name="static")

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=f"{API_PREFIX}/openapi.json",
            title="Plinth API",
            swagger_js_url=f"{_SWAGGER}/swagger-ui-bundle.js",
            swagger_css_url=f"{_SWAGGER}/swagger-ui.css",
            swagger_favicon_url=f"{_SWAGGER}/favicon-32x32.png",
            oauth2_redirect_url="/docs/oauth2-redirect",
            # no validator badge: it would ask validator.swagger.io about the document
            swagger_ui_parameters={"validatorUrl": None},
        )

    @app.get("/docs/oauth2-redirect", include_in_schema=False)
    async def oauth2_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()


def _mount(app: FastAPI, ep: Endpoint, method: Callable[..., Any], tag: str) -> None:
    """Add one route whose parameters FastAPI reads from the endpoint's signature."""
    params = [
        inspect.Parameter(
            name, inspect.Parameter.KEYWORD_ONLY, annotation=Annotated[ep.hints[name], Path()]
        )
        for name in ep.path_params
    ]
    if ep.params_in_query:
        for name in ep.other_params:
            default = ep.signature.parameters[name].default
            params.append(
                inspect.Parameter(
                    name,
                    inspect.Parameter.KEYWORD_ONLY,
                    annotation=Annotated[ep.hints[name], Query()],
                    # no default (not `...`): FastAPI takes a `...` default as optional
                    # and would pass Ellipsis to the service
                    default=default,
                )
            )
    else:
        params.append(
            inspect.Parameter(
                "body", inspect.Parameter.KEYWORD_ONLY, annotation=Annotated[ep.body_model, Body()]
            )
        )
    result = ep.result

    def handle(**kwargs: Any) -> Response:
        current_principal()  # the caller's credential is checked here, whatever the route
        body = kwargs.pop("body", None)
        if body is not None:
            kwargs.update({name: getattr(body, name) for name in ep.other_params})
        return Response(result.dump_json(method(**kwargs)), media_type="application/json")

    handle.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    handle.__name__ = ep.name
    handle.__doc__ = inspect.getdoc(method)
    app.add_api_route(
        API_PREFIX + (ep.route or ep.path),
        handle,
        methods=[ep.method],
        tags=[tag],
        response_class=Response,
        responses={
            200: {"content": {"application/json": {"schema": _schema(result)}}},
            404: {"description": "not found"},
            409: {"description": "conflict"},
            422: {"description": "invalid argument"},
        },
    )


def _schema(adapter: Any) -> dict[str, Any]:
    try:
        schema: dict[str, Any] = adapter.json_schema(mode="serialization")
    except Exception:  # a type without a JSON schema documents as any JSON value
        return {}
    schema.pop("$defs", None)
    return schema if "$ref" not in str(schema) else {}


def _redactor(settings: Settings) -> Redactor:
    """The server's own locations, as its error messages might carry them."""
    store = settings.resolved_store_uri
    artifacts = settings.resolved_artifact_uri
    online = settings.resolved_online_uri
    places = [(uri, "<metadata store>") for uri in _shown_forms(store)]
    places += [(uri, "<online store>") for uri in _shown_forms(online)]
    places += [
        (artifacts, "<artifact store>"),
        (f"file://{artifacts}", "<artifact store>"),
        (str(settings.home.resolve()), "<server home>"),
    ]
    return Redactor(places)


def _shown_forms(uri: str) -> list[str]:
    """``uri`` and the forms messages show it in: without its password, or masked."""
    from urllib.parse import urlsplit

    parts = urlsplit(uri)
    forms = [uri]
    if parts.password is not None:
        host = parts.netloc.rsplit("@", 1)[-1]
        user = parts.username or ""
        forms += [
            parts._replace(netloc=f"{user}{mask}@{host}").geturl() for mask in (":***", ":", "")
        ]
    return forms


def _server_feature_store(settings: Settings, features: FeatureService) -> FeatureStore:
    from plinth.features.offline import OfflineStore
    from plinth.features.online import online_store_for

    offline = OfflineStore(settings.resolved_artifact_uri)
    online = online_store_for(settings.resolved_online_uri, timeout=settings.online_timeout)
    return FeatureStore(features, offline, online, spark_master=settings.spark_master)


def _install_fast_posts(
    app: FastAPI, serving: OnlineFeatureService, max_bytes: int, lookups: anyio.CapacityLimiter
) -> None:
    """Answer the feature server's POST ahead of the middleware stack (see ``fastpath``);
    the generic route of the same endpoint documents it."""
    routes = {f"{API_PREFIX}/features/online": _online_handler(serving, lookups)}
    build = app.build_middleware_stack

    def build_with_fast_posts() -> ASGIApp:
        return FastPosts(build(), routes, max_bytes, app.exception_handlers)

    app.build_middleware_stack = build_with_fast_posts  # type: ignore[method-assign]


def _install_authentication(app: FastAPI, settings: Settings, store: Any) -> Any:
    """Check the caller of every request ahead of everything else, the fast paths too."""
    from plinth.auth.access import configure_access
    from plinth.server.auth import Authenticate

    authenticator = None
    if store is not None:  # None: an app that only serves the API's description
        # a decision kept for a second: grant checks cost a query per second per caller
        # and resource, not one per request
        access = configure_access(
            store, private_by_default=settings.private_by_default, decision_seconds=1.0
        )
        authenticator = authenticator_for(settings, access) if settings.auth else None
    build = app.build_middleware_stack

    def build_authenticated() -> ASGIApp:
        return Authenticate(build(), authenticator)

    app.build_middleware_stack = build_authenticated  # type: ignore[method-assign]
    return authenticator


def authenticator_for(settings: Settings, access: Any) -> Any:
    from plinth.auth.identity import Authenticator
    from plinth.auth.types import Role

    if settings.oidc_jwks is None:
        return Authenticator(access)
    from plinth.auth.oidc import OidcConfig, OidcVerifier

    if not settings.oidc_issuer or not settings.oidc_audience:
        raise InvalidArgument("PLINTH_OIDC_JWKS needs PLINTH_OIDC_ISSUER and PLINTH_OIDC_AUDIENCE")
    verifier = OidcVerifier(
        OidcConfig(
            jwks=settings.oidc_jwks,
            issuer=settings.oidc_issuer,
            audience=settings.oidc_audience,
            username_claim=settings.oidc_username_claim,
            groups_claim=settings.oidc_groups_claim,
        )
    )
    roles = {g: Role.EDITOR for g in settings.oidc_editor_groups}
    roles.update({g: Role.ADMIN for g in settings.oidc_admin_groups})
    return Authenticator(access, verifier, roles)


def _online_handler(serving: OnlineFeatureService, lookups: anyio.CapacityLimiter) -> Handler:
    # No thread hop for a lookup of up to 100 rows that waits on nothing: a local SQLite
    # online store, definitions already cached and an admin caller (anyone else's grants
    # are a metadata query). Anything that may wait on the network (Redis, a metadata
    # query) runs on a worker thread, so that a dependency that stops answering never
    # stalls the event loop.
    from plinth.features.online.sqlite import SqliteOnlineStore

    store = serving.features
    local = isinstance(store.online, SqliteOnlineStore)

    async def online(body: bytes) -> bytes:

        features, rows = _online_request(body)
        if local and len(rows) <= 100 and store.plan_is_cached(features):
            found = serving.lookup(features, rows)
        else:
            found = await _off_the_loop(lookups, serving.lookup, features, rows)
        return online_json(found)

    return online


def _online_request(body: bytes) -> tuple[list[str], list[dict[str, Any]]]:
    import json

    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError) as e:
        raise InvalidArgument(f"the request body is not valid JSON: {e}") from None
    except RecursionError:
        raise InvalidArgument("the request body nests arrays or objects too deeply") from None
    features = payload.get("features") if isinstance(payload, dict) else None
    rows = payload.get("entity_rows") if isinstance(payload, dict) else None
    if not isinstance(features, list) or not all(isinstance(f, str) for f in features):
        raise InvalidArgument('give "features": a list of references such as "group:feature"')
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise InvalidArgument('give "entity_rows": a list of objects such as {"customer_id": 1}')
    return features, rows


def _mount_feature_server_get(
    app: FastAPI, serving: OnlineFeatureService, lookups: anyio.CapacityLimiter
) -> None:
    @app.get(f"{API_PREFIX}/features/online", tags=["features"])
    async def get_online_features_for_one(
        request: Request, features: Annotated[list[str], Query()]
    ) -> Response:
        """One entity's latest values: ``?features=customer_stats:orders_30d&customer_id=1001``."""
        query = {k: v for k, v in request.query_params.items() if k != "features"}

        def lookup() -> OnlineResponse:
            return serving.lookup(features, [serving.keys_from_query(features, query)])

        found = await _off_the_loop(lookups, lookup)
        return Response(online_json(found), media_type="application/json")


LOOKUP_THREADS = 16


async def _off_the_loop(
    limiter: anyio.CapacityLimiter, call: Callable[..., Any], *args: Any
) -> Any:
    return await anyio.to_thread.run_sync(call, *args, limiter=limiter)


def _mount_file_routes(app: FastAPI, tracking: TrackingService, registry: RegistryService) -> None:
    """Raw file transfer (run artifacts, model packages): streamed, outside the JSON API."""
    artifacts = f"{API_PREFIX}/runs/{{run_id}}/artifacts/content"

    @app.put(artifacts, tags=["tracking"], status_code=204)
    async def upload_artifact(
        run_id: str, path: Annotated[str, Query()], request: Request
    ) -> Response:
        return await _receive(request, tracking.open_artifact_writer, run_id, path)

    @app.get(artifacts, tags=["tracking"], response_class=StreamingResponse)
    def download_artifact(run_id: str, path: Annotated[str, Query()]) -> StreamingResponse:
        return _send(tracking.open_artifact_reader(run_id, path))

    @app.put(f"{API_PREFIX}/packages/content", tags=["registry"], status_code=204)
    async def upload_package_file(path: Annotated[str, Query()], request: Request) -> Response:
        """Stage a model package file under models/NAME/packages/ID/ before registering it."""
        return await _receive(request, registry.open_staging_writer, path)

    @app.get(
        f"{API_PREFIX}/models/{{name}}/versions/{{version}}/content",
        tags=["registry"],
        response_class=StreamingResponse,
    )
    def download_package_file(
        name: str, version: int, path: Annotated[str, Query()]
    ) -> StreamingResponse:
        return _send(registry.open_package_file(name, version, path))


async def _receive(request: Request, open_writer: Callable[..., Any], *args: Any) -> Response:
    # The stores' writers are blocking: stream the body to them from worker threads.
    from starlette.concurrency import run_in_threadpool

    writer = await run_in_threadpool(open_writer, *args)
    try:
        async for chunk in request.stream():
            await run_in_threadpool(writer.write, chunk)
    except BaseException:
        await run_in_threadpool(_abort, writer)
        raise
    await run_in_threadpool(writer.close)
    return Response(status_code=204)


def _send(reader: Any) -> StreamingResponse:
    def chunks() -> Iterator[bytes]:
        with reader:
            while block := reader.read(1024 * 1024):
                yield block

    return StreamingResponse(chunks(), media_type="application/octet-stream")


def _abort(writer: Any) -> None:
    discard = getattr(writer, "discard", None)
    if discard is not None:
        discard()
    else:
        writer.close()


def log_config() -> dict[str, Any]:
    """uvicorn's logging, with Plinth's own loggers (``plinth.*``, INFO and up: the A/B
    controller's actions, its errors as warnings) on the same console."""
    import copy

    from uvicorn.config import LOGGING_CONFIG

    config: dict[str, Any] = copy.deepcopy(LOGGING_CONFIG)
    config["formatters"]["plinth"] = {
        "()": "uvicorn.logging.DefaultFormatter",
        "fmt": "%(levelprefix)s %(name)s: %(message)s",
        "use_colors": None,
    }
    config["handlers"]["plinth"] = {
        "formatter": "plinth",
        "class": "logging.StreamHandler",
        "stream": "ext://sys.stderr",
    }
    config["loggers"]["plinth"] = {"handlers": ["plinth"], "level": "INFO", "propagate": False}
    return config


def serve(settings: Settings) -> None:
    import uvicorn

    # no access log: a line per request costs more than a feature lookup
    uvicorn.run(
        create_app(settings, background=True),
        host=settings.host,
        port=settings.port,
        log_level="info",
        log_config=log_config(),
        access_log=False,
    )
