"""Plinth: one foundation for a model's whole life.

The module-level functions act on the default client: the server named by ``PLINTH_URI``,
else the embedded store under ``PLINTH_HOME`` (``./.plinth``). Heavy libraries load on
first use, so ``import plinth`` stays cheap.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, Concatenate, ParamSpec, TypeVar

from plinth.client import Client, connect, default_client, set_default_client
from plinth.errors import (
    AlreadyExists,
    Conflict,
    GateFailed,
    InvalidArgument,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    PermissionDenied,
    PlinthError,
    RateLimited,
    Unauthenticated,
    Unavailable,
)
from plinth.pipelines.pipeline import Pipeline
from plinth.pipelines.step import step
from plinth.tracking.run import ActiveRun, active_run, require_active_run

__version__ = "0.1.0"

P = ParamSpec("P")
R = TypeVar("R")
S = TypeVar("S")


def _on(target: Callable[[], S]) -> Callable[[Callable[Concatenate[S, P], R]], Callable[P, R]]:
    """Module functions that call a method on an object found at call time."""

    def forward(method: Callable[Concatenate[S, P], R]) -> Callable[P, R]:
        @functools.wraps(method)
        def call(*args: P.args, **kwargs: P.kwargs) -> R:
            return method(target(), *args, **kwargs)

        return call

    return forward


_on_default_client = _on(default_client)
_on_active_run = _on(require_active_run)

start_run = _on_default_client(Client.start_run)
attach_run = _on_default_client(Client.attach_run)
recover_runs = _on_default_client(Client.recover_runs)
get_run = _on_default_client(Client.get_run)
get_metric_history = _on_default_client(Client.get_metric_history)
search_runs = _on_default_client(Client.search_runs)
compare_runs = _on_default_client(Client.compare_runs)
close_stale_runs = _on_default_client(Client.close_stale_runs)
rename_run = _on_default_client(Client.rename_run)
delete_run = _on_default_client(Client.delete_run)
restore_run = _on_default_client(Client.restore_run)
create_experiment = _on_default_client(Client.create_experiment)
get_experiment = _on_default_client(Client.get_experiment)
list_experiments = _on_default_client(Client.list_experiments)
rename_experiment = _on_default_client(Client.rename_experiment)
delete_experiment = _on_default_client(Client.delete_experiment)
restore_experiment = _on_default_client(Client.restore_experiment)
list_artifacts = _on_default_client(Client.list_artifacts)
download_artifact = _on_default_client(Client.download_artifact)
register_model = _on_default_client(Client.register_model)
get_model_version = _on_default_client(Client.get_model_version)
load_model = _on_default_client(Client.load_model)
read_predictions = _on_default_client(Client.read_predictions)
set_stage = _on_default_client(Client.set_stage)
set_alias = _on_default_client(Client.set_alias)
rollback = _on_default_client(Client.rollback)
model_history = _on_default_client(Client.model_history)
register_best = _on_default_client(Client.register_best)
feature_store = _on_default_client(Client.feature_store)
log_event = _on_default_client(Client.log_event)
log_labels = _on_default_client(Client.log_labels)


# MLflow-style fluent logging: to the run this process started last and has not ended.
log_metric = _on_active_run(ActiveRun.log_metric)
log_metrics = _on_active_run(ActiveRun.log_metrics)
log_param = _on_active_run(ActiveRun.log_param)
log_params = _on_active_run(ActiveRun.log_params)
set_tag = _on_active_run(ActiveRun.set_tag)
set_tags = _on_active_run(ActiveRun.set_tags)
log_artifact = _on_active_run(ActiveRun.log_artifact)
log_input = _on_active_run(ActiveRun.log_input)
log_model = _on_active_run(ActiveRun.log_model)


def end_run(status: str = "FINISHED") -> None:
    """End the active run (if any) with a final status."""
    run = active_run()
    if run is not None:
        run.end(status)


def on_demand(inputs: Any, outputs: Any, name: str | None = None) -> Any:
    """Decorator making a function an on-demand transformation of a feature view:
    ``@plinth.on_demand(inputs=["amount", "avg_spend"], outputs={"ratio": "float64"})``.
    The function gets a pandas DataFrame of its inputs and returns a Series (one output) or
    a DataFrame / dict of its outputs; the same code runs offline and online."""
    from plinth.features.transform import on_demand as make

    return make(inputs, outputs, name)


def seed_everything(seed: int) -> int:
    """Seed ``random``, NumPy and PyTorch (where installed); returns the seed."""
    from plinth.tracking.lineage import seed_everything as seed_all

    return seed_all(seed)


__all__ = [
    "ActiveRun",
    "AlreadyExists",
    "Client",
    "Conflict",
    "GateFailed",
    "InvalidArgument",
    "MethodNotAllowed",
    "NotFound",
    "PayloadTooLarge",
    "PermissionDenied",
    "Pipeline",
    "PlinthError",
    "RateLimited",
    "Unauthenticated",
    "Unavailable",
    "active_run",
    "attach_run",
    "close_stale_runs",
    "compare_runs",
    "connect",
    "create_experiment",
    "default_client",
    "delete_experiment",
    "delete_run",
    "download_artifact",
    "end_run",
    "feature_store",
    "get_experiment",
    "get_metric_history",
    "get_model_version",
    "get_run",
    "list_artifacts",
    "list_experiments",
    "load_model",
    "log_artifact",
    "log_event",
    "log_input",
    "log_labels",
    "log_metric",
    "log_metrics",
    "log_model",
    "log_param",
    "log_params",
    "model_history",
    "on_demand",
    "read_predictions",
    "recover_runs",
    "register_best",
    "register_model",
    "rename_experiment",
    "rename_run",
    "restore_experiment",
    "restore_run",
    "rollback",
    "search_runs",
    "seed_everything",
    "set_alias",
    "set_default_client",
    "set_stage",
    "set_tag",
    "set_tags",
    "start_run",
    "step",
]
