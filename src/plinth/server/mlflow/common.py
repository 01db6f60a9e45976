"""What every MLflow module shares: the services behind the routes."""

from __future__ import annotations

from dataclasses import dataclass

from plinth.registry.service import RegistryService
from plinth.store.artifacts import ArtifactStore
from plinth.store.engine import Store
from plinth.tracking.service import TrackingService


@dataclass(frozen=True)
class Services:
    tracking: TrackingService
    registry: RegistryService
    artifacts: ArtifactStore  # the server's artifact root (the same one tracking uses)

    @property
    def store(self) -> Store:
        return self.tracking.store
