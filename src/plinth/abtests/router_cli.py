"""``plinth router``: the A/B router as a service (see ``plinth.abtests.router``). It reads
the experiments through the default client (a Plinth server with PLINTH_URI, else the
local store) every ``--refresh-seconds`` and writes exposures to that store's exposure log:
the local artifact root, or the server's (directly when shared, else through the server)."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    from plinth.abtests.router import ExperimentsSource, Router
    from plinth.client import Client

_CONFIG_ENV = "PLINTH_ROUTER_CONFIG"  # how worker processes get the router's config


@dataclass
class RouterConfig:
    refresh_seconds: float = 2.0
    timeout: float = 1.0
    arm_timeouts: dict[str, float] = field(default_factory=dict)
    arm_urls: dict[str, str] = field(default_factory=dict)
    exposure_capacity: int = 100_000
    forward_headers: list[str] = field(default_factory=list)
    max_body_mb: float = 16.0


def router(
    host: Annotated[str, typer.Option(help="interface to bind")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port to listen on")] = 8090,
    workers: Annotated[int, typer.Option(help="worker processes")] = 1,
    refresh_seconds: Annotated[
        float, typer.Option(help="how often to re-read the experiments (start, pause, shares)")
    ] = 2.0,
    arm_url: Annotated[
        list[str] | None,
        typer.Option(
            help="NAME=URL: the service of an arm (by arm name or model URI), e.g. "
            "challenger=http://127.0.0.1:8081 where plinth serve runs it; repeat per arm"
        ),
    ] = None,
    timeout: Annotated[
        float, typer.Option(help="seconds an arm has to answer before control does")
    ] = 1.0,
    arm_timeout: Annotated[
        list[str] | None, typer.Option(help="NAME=SECONDS: one arm's timeout; repeat per arm")
    ] = None,
    max_body_mb: Annotated[
        float,
        typer.Option(help="the largest request body and arm answer, in MB (parsed in memory)"),
    ] = 16.0,
    forward_header: Annotated[
        list[str] | None,
        typer.Option(
            help="NAME: a caller's header the arms get too (none by default, not even "
            "Authorization: arm URLs are set by experiment editors); repeat per header"
        ),
    ] = None,
) -> None:
    """Route predictions of running A/B experiments to their arms' services:
    POST /{experiment}/predict with the unit in X-Plinth-Unit; /metrics, /health, /routes."""
    import uvicorn

    if workers < 1:
        raise typer.BadParameter("--workers must be at least 1")
    if refresh_seconds <= 0 or timeout <= 0:
        raise typer.BadParameter("--refresh-seconds and --timeout must be above 0")
    if not 0 < max_body_mb <= 1024:
        raise typer.BadParameter(f"--max-body-mb: above 0 and at most 1024, got {max_body_mb}")
    from plinth.abtests.router import forwarded_header_names
    from plinth.errors import InvalidArgument

    try:
        forwarded_header_names(forward_header or [])
    except InvalidArgument as e:
        message = e.message.removeprefix("forward_headers: ")
        raise typer.BadParameter(f"--forward-header: {message}") from None
    config = RouterConfig(
        refresh_seconds=refresh_seconds,
        timeout=timeout,
        arm_timeouts={k: _seconds(k, v) for k, v in _pairs(arm_timeout, "--arm-timeout").items()},
        arm_urls=_pairs(arm_url, "--arm-url"),
        forward_headers=list(forward_header or []),
        max_body_mb=max_body_mb,
    )
    options: dict[str, Any] = {
        "host": host,
        "port": port,
        "log_level": "warning",
        "access_log": False,
        "proxy_headers": False,  # the router never reads the client's address or scheme
    }
    if workers == 1:
        uvicorn.run(create_router_service(config), **options)
        return
    from plinth.serving.metrics import metrics_shared_by_workers

    os.environ[_CONFIG_ENV] = json.dumps(asdict(config))
    with metrics_shared_by_workers():
        uvicorn.run(
            "plinth.abtests.router_cli:router_from_env", factory=True, workers=workers, **options
        )


def create_router_service(config: RouterConfig, client: Client | None = None) -> Router:
    """The router reading the experiments through ``client`` (default: the default
    client) and writing exposures to its store's exposure log (``exposures_remote``)."""
    from plinth.abtests.exposures_remote import exposure_log_for
    from plinth.abtests.router import create_router
    from plinth.client import default_client

    client = client or default_client()
    exposures = exposure_log_for(client, capacity=config.exposure_capacity)
    return create_router(
        experiments_of(client),
        exposures,
        refresh_seconds=config.refresh_seconds,
        timeout=config.timeout,
        arm_timeouts=config.arm_timeouts,
        arm_urls=config.arm_urls,
        forward_headers=config.forward_headers,
        max_body_bytes=int(config.max_body_mb * 1024 * 1024),
    )


def router_from_env() -> Router:
    """The app factory each worker process calls."""
    return create_router_service(RouterConfig(**json.loads(os.environ[_CONFIG_ENV])))


def experiments_of(client: Client) -> ExperimentsSource:
    """Every experiment the client may see, page by page: the stopped and drafts too, so
    a caller still sending their traffic gets control's answers rather than 404."""
    from plinth.abtests.types import Experiment

    service = client.abtests

    def read() -> list[Experiment]:
        found: list[Experiment] = []
        token: str | None = None
        while True:
            page = service.list_abtests(max_results=_PAGE, page_token=token)
            found.extend(page)
            token = page.next_page_token
            if token is None:
                return found

    return read


_PAGE = 1_000


def _pairs(given: list[str] | None, option: str) -> dict[str, str]:
    pairs: dict[str, str] = {}
    for item in given or []:
        name, sep, value = item.partition("=")
        if not sep or not name or not value:
            raise typer.BadParameter(f"{option} takes NAME=VALUE, got {item!r}")
        pairs[name] = value
    return pairs


def _seconds(name: str, value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        seconds = 0.0
    if seconds <= 0:
        raise typer.BadParameter(f"--arm-timeout {name}: seconds above 0, got {value!r}")
    return seconds
