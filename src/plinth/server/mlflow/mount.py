"""Mounting the MLflow routes on the server's app."""

from __future__ import annotations

from fastapi import FastAPI

from plinth.server.mlflow import artifacts, experiments, logged_models, registry, runs
from plinth.server.mlflow.common import Services


def mount_mlflow(app: FastAPI, services: Services) -> None:
    for module in (experiments, runs, logged_models, registry, artifacts):
        app.include_router(module.routes(services), include_in_schema=False)
