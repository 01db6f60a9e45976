"""MLflow's registry routes (to be written)."""

from __future__ import annotations

from fastapi import APIRouter

from plinth.server.mlflow.common import Services


def routes(services: Services) -> APIRouter:
    return APIRouter()
