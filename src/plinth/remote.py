"""The remote client: each service endpoint becomes an HTTP call with the same signature."""

from __future__ import annotations

import contextlib
import enum
import json
from collections.abc import Callable, Iterator
from typing import IO, Any
from urllib.parse import quote

import httpx

from plinth.abtests.service import AbTestService
from plinth.api import API_PREFIX, Endpoint, endpoints_of
from plinth.auth.service import AuthService
from plinth.errors import InvalidArgument, PlinthError, Unavailable, error_from_dict
from plinth.features.service import FeatureService
from plinth.monitoring.data import MonitoringData
from plinth.monitoring.service import MonitorService
from plinth.pipelines.service import PipelineService
from plinth.registry.service import RegistryService
from plinth.serving.jobs import ScoreJobService
from plinth.tracking.checks import REMOTE_CHECKS
from plinth.tracking.service import TrackingService

_CHUNK = 1024 * 1024


class Transport:
    """One keep-alive HTTP connection pool to a Plinth server; turns errors into PlinthErrors."""

    def __init__(self, base_url: str, timeout: float = 60.0, token: str | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        headers = {"authorization": f"Bearer {token}"} if token else None
        self.http = httpx.Client(
            base_url=self.base_url + API_PREFIX, timeout=timeout, headers=headers
        )

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self.http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise Unavailable(f"Plinth server {self.base_url} is unreachable: {exc}") from None
        if response.status_code >= 400:
            raise _error_of(response)
        return response

    @contextlib.contextmanager
    def stream(self, method: str, path: str, **kwargs: Any) -> Iterator[httpx.Response]:
        try:
            with self.http.stream(method, path, **kwargs) as response:
                if response.status_code >= 400:
                    response.read()
                    raise _error_of(response)
                yield response
        except httpx.TransportError as exc:
            raise Unavailable(f"Plinth server {self.base_url} is unreachable: {exc}") from None


def _error_of(response: httpx.Response) -> PlinthError:
    try:
        payload = response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        payload = {}
    if not isinstance(payload, dict) or "error_code" not in payload:
        payload = {"message": f"server answered HTTP {response.status_code}: {response.text[:200]}"}
    return error_from_dict(payload, response.status_code)


def _path_of(ep: Endpoint, arguments: dict[str, Any]) -> str:
    values = {}
    for name in ep.path_params:
        value = arguments[name]
        if isinstance(value, int) and not isinstance(value, bool) and ep.hints[name] is int:
            value = str(value)
        if not isinstance(value, str) or not value:
            raise InvalidArgument(
                f"{name} must be a non-empty {ep.hints[name].__name__}, got {value!r}"
            )
        values[name] = quote(value, safe="")
    return ep.path.format(**values)


def _query_value(value: Any) -> Any:
    return value.value if isinstance(value, enum.Enum) else value


def _make_call(ep: Endpoint, service: type) -> Callable[..., Any]:
    signature = ep.signature
    check = REMOTE_CHECKS.get(ep.name) if service is TrackingService else None

    def call(self: RemoteTracking, *args: Any, **kwargs: Any) -> Any:
        bound = signature.bind(self, *args, **kwargs)
        bound.apply_defaults()
        arguments = bound.arguments
        if check is not None:
            check(arguments)
        path = _path_of(ep, arguments)
        others = {name: arguments[name] for name in ep.other_params}
        if ep.params_in_query:
            query = {k: _query_value(v) for k, v in others.items() if v is not None}
            response = self.transport.request(ep.method, path, params=query)
        else:
            try:
                body = ep.body_model(**others).model_dump_json()
            except ValueError as exc:
                raise InvalidArgument(f"{ep.name}: {exc}") from None
            response = self.transport.request(
                ep.method, path, content=body, headers={"content-type": "application/json"}
            )
        return ep.result.validate_json(response.content)

    call.__name__ = ep.name
    call.__doc__ = getattr(service, ep.name).__doc__
    return call


class RemoteTracking:
    """TrackingService's endpoints over HTTP (methods are generated below)."""

    def __init__(self, transport: Transport) -> None:
        self.transport = transport

    def close(self) -> None:
        self.transport.http.close()

    def upload_artifact(self, run_id: str, path: str, source: IO[bytes]) -> None:
        def chunks() -> Iterator[bytes]:
            while block := source.read(_CHUNK):
                yield block

        self.transport.request(
            "PUT",
            f"/runs/{quote(run_id, safe='')}/artifacts/content",
            params={"path": path},
            content=chunks(),
        )

    def download_artifact(self, run_id: str, path: str, out: IO[bytes]) -> None:
        with self.transport.stream(
            "GET", f"/runs/{quote(run_id, safe='')}/artifacts/content", params={"path": path}
        ) as response:
            for block in response.iter_bytes(_CHUNK):
                out.write(block)


class RemoteRegistry:
    """RegistryService's endpoints over HTTP, plus model package file transfer."""

    def __init__(self, transport: Transport) -> None:
        self.transport = transport

    def upload_package_file(self, path: str, source: IO[bytes]) -> None:
        def chunks() -> Iterator[bytes]:
            while block := source.read(_CHUNK):
                yield block

        self.transport.request("PUT", "/packages/content", params={"path": path}, content=chunks())

    def download_package_file(self, name: str, version: int, path: str, out: IO[bytes]) -> None:
        route = f"/models/{quote(name, safe='')}/versions/{version}/content"
        with self.transport.stream("GET", route, params={"path": path}) as response:
            for block in response.iter_bytes(_CHUNK):
                out.write(block)


class RemoteFeatures:
    """FeatureService's endpoints over HTTP (the data moves directly, not through here)."""

    def __init__(self, transport: Transport) -> None:
        self.transport = transport


class RemoteAuth:
    """AuthService's endpoints over HTTP."""

    def __init__(self, transport: Transport) -> None:
        self.transport = transport


class RemoteScoreJobs:
    """ScoreJobService's endpoints over HTTP."""

    def __init__(self, transport: Transport) -> None:
        self.transport = transport


class RemoteAbTests:
    """AbTestService's endpoints over HTTP."""

    def __init__(self, transport: Transport) -> None:
        self.transport = transport


class RemoteMonitors:
    """MonitorService's endpoints over HTTP."""

    def __init__(self, transport: Transport) -> None:
        self.transport = transport


class RemotePipelines:
    """PipelineService's endpoints over HTTP."""

    def __init__(self, transport: Transport) -> None:
        self.transport = transport


class RemoteMonitoringData:
    """MonitoringData's endpoints over HTTP."""

    def __init__(self, transport: Transport) -> None:
        self.transport = transport


for _remote, _service in (
    (RemoteTracking, TrackingService),
    (RemoteRegistry, RegistryService),
    (RemoteFeatures, FeatureService),
    (RemoteScoreJobs, ScoreJobService),
    (RemoteAuth, AuthService),
    (RemoteAbTests, AbTestService),
    (RemoteMonitors, MonitorService),
    (RemoteMonitoringData, MonitoringData),
    (RemotePipelines, PipelineService),
):
    for _ep in endpoints_of(_service):
        setattr(_remote, _ep.name, _make_call(_ep, _service))


def remote_services(
    url: str, token: str | None = None
) -> tuple[TrackingService, RegistryService, FeatureService, ScoreJobService]:
    """Proxies with the services' methods, sharing one connection pool (and the token)."""
    transport = Transport(url, token=token)
    proxies = (RemoteTracking, RemoteRegistry, RemoteFeatures, RemoteScoreJobs)
    return tuple(proxy(transport) for proxy in proxies)  # type: ignore[return-value]
