"""Hot swap: the service follows its model URI. When the alias or stage it names moves to
another version, the new version is loaded (and verified) in the background and then
replaces the served one in a single assignment: requests in flight finish on the version
they started with, later ones get the new one, and none waits for the load."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from plinth.serving.model import ServedModel, load_served

if TYPE_CHECKING:
    from plinth.client import Client

log = logging.getLogger("plinth.serving")


class ModelHolder:
    def __init__(
        self,
        client: Client,
        uri: str,
        *,
        poll_seconds: float = 2.0,
        on_swap: Callable[[ServedModel], None] | None = None,
        trust_pickle: bool = False,
    ) -> None:
        self.client = client
        self.uri = uri
        self.poll_seconds = poll_seconds
        self.on_swap = on_swap
        self.trust_pickle = trust_pickle
        # a bad URI, or a pickled package without trust, fails here, loudly
        self.current: ServedModel = load_served(client, uri, trust_pickle=trust_pickle)
        self.swaps = 0
        self.errors = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if poll_seconds > 0:
            self._thread = threading.Thread(target=self._follow, name="plinth-swap", daemon=True)
            self._thread.start()

    def check(self) -> bool:
        """Look once; True when a new version was swapped in."""
        found = self.client.get_model_version(self.uri)
        served = self.current
        if (found.model_name, found.version) == (served.name, served.version.version):
            return False
        fresh = load_served(
            self.client,
            f"models:/{found.model_name}/{found.version}",
            trust_pickle=self.trust_pickle,
        )
        self.current = ServedModel(self.uri, fresh.version, fresh.predictor, fresh.view)
        self.swaps += 1
        log.info("now serving %s version %d", fresh.name, fresh.version.version)
        if self.on_swap is not None:
            self.on_swap(self.current)
        return True

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _follow(self) -> None:
        while not self._stop.wait(self.poll_seconds):
            try:
                self.check()
            except Exception as e:  # keep serving the version we have; try again later
                self.errors += 1
                log.warning("could not check or load %s: %s", self.uri, e)
