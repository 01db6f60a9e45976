"""The demo's services on loopback: model services (``plinth serve``'s app) and the A/B
router (``plinth router``'s app), each a real uvicorn server on a free port, in a thread of
the demo's process so that none pays for Python's start-up again."""

from __future__ import annotations

import socket
import threading
import time
from types import TracebackType
from typing import Any

import httpx

from plinth.client import Client
from plinth.errors import Unavailable


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Loopback:
    """An ASGI app served by uvicorn on ``127.0.0.1:<free port>`` until ``stop``; its
    lifespan runs, so a service's prediction log and a router's exposure log are flushed
    when it stops."""

    def __init__(self, name: str, app: Any) -> None:
        import uvicorn

        self.name = name
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(
            app, host="127.0.0.1", port=self.port, log_level="warning", access_log=False
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, name=name, daemon=True)

    def start(self, ready_path: str = "/health", timeout: float = 30.0) -> Loopback:
        self._thread.start()
        deadline = time.monotonic() + timeout
        with httpx.Client(timeout=1.0) as http:
            while True:
                try:
                    if http.get(self.url + ready_path).status_code == 200:
                        return self
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline or not self._thread.is_alive():
                    raise Unavailable(f"the demo's {self.name} on {self.url} did not start")
                time.sleep(0.02)

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=30)

    def __enter__(self) -> Loopback:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def model_service(client: Client, uri: str, poll_seconds: float = 0.5) -> Loopback:
    """``plinth serve URI`` on loopback: loads the model from the registry, enriches entity
    keys from the online store, logs every prediction, follows its alias or stage."""
    from plinth.serving.app import ServeConfig, create_service

    app = create_service(ServeConfig(uri, poll_seconds=poll_seconds), client)
    return Loopback(f"model service {uri}", app).start("/ready")


def router_service(client: Client, arm_urls: dict[str, str]) -> Loopback:
    """``plinth router --arm-url NAME=URL ...`` on loopback: routes each running
    experiment's traffic by unit to its arms' services."""
    from plinth.abtests.router_cli import RouterConfig, create_router_service

    # every service of the demo shares one process (and its interpreter lock) on a machine
    # that may be busy: arms get more time than a production router's default second
    config = RouterConfig(refresh_seconds=0.5, timeout=10.0, arm_urls=arm_urls)
    app = create_router_service(config, client)
    return Loopback("A/B router", app).start("/health")
