"""``plinth serve MODEL_URI``: one model service per model, so one failing model never
takes another down."""

from __future__ import annotations

import gc
import json
import os
import sys
from dataclasses import asdict
from typing import Annotated, Any

import typer

_CONFIG_ENV = "PLINTH_SERVE_CONFIG"  # how worker processes get the service's config


def serve(
    uri: Annotated[str, typer.Argument(help="the model, e.g. models:/churn@production")],
    host: Annotated[str, typer.Option(help="interface to bind")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port to listen on")] = 8080,
    workers: Annotated[int, typer.Option(help="worker processes, each with the model")] = 1,
    poll_seconds: Annotated[
        float, typer.Option(help="how often to re-resolve the URI for a hot swap; 0: never")
    ] = 2.0,
    max_rows: Annotated[int, typer.Option(help="most rows one request may hold")] = 10_000,
    batching: Annotated[
        bool, typer.Option(help="predict concurrent requests together (adaptive micro-batches)")
    ] = True,
    batch_max_rows: Annotated[int, typer.Option(help="most rows in one micro-batch")] = 1_000,
    batch_max_delay_ms: Annotated[
        float, typer.Option(help="extra wait for a micro-batch to fill (bounded latency)")
    ] = 0.0,
    log_predictions: Annotated[
        bool, typer.Option(help="record every prediction in the central store")
    ] = True,
    auth: Annotated[
        bool,
        typer.Option(
            help="callers need a token with read access to the model (the service fetches "
            "the model with its own: PLINTH_TOKEN)"
        ),
    ] = False,
    trust_pickle: Annotated[
        bool,
        typer.Option(
            "--trust-pickle",
            help="load a pickled model package (a pyfunc model): unpickling runs code from "
            "whoever registered it (default: the store's policy, PLINTH_TRUST_PICKLE)",
        ),
    ] = False,
) -> None:
    """Serve one model over HTTP: /predict, the Open Inference Protocol (/v2/...), /health,
    /ready and /metrics. The service follows an alias or stage (hot swap)."""
    import uvicorn

    from plinth.serving.app import ServeConfig, create_service

    config = ServeConfig(
        uri=uri,
        poll_seconds=poll_seconds,
        max_rows=max_rows,
        batching=batching,
        batch_max_rows=batch_max_rows,
        batch_max_delay_ms=batch_max_delay_ms,
        log_predictions=log_predictions,
        auth=auth,
        trust_pickle=trust_pickle,
    )
    if workers < 1:
        raise typer.BadParameter("--workers must be at least 1")
    options: dict[str, Any] = {
        "host": host,
        "port": port,
        "log_level": "warning",
        "access_log": False,
    }
    if workers == 1:
        app = create_service(config)  # a bad URI fails here, before binding
        _settle()
        uvicorn.run(app, **options)
        return
    from plinth.client import default_client
    from plinth.serving.metrics import metrics_shared_by_workers
    from plinth.serving.model import load_served

    # refuse a bad URI or an untrusted pickle once, not in every worker
    load_served(default_client(), uri, trust_pickle=trust_pickle)
    os.environ[_CONFIG_ENV] = json.dumps(asdict(config))
    with metrics_shared_by_workers():
        uvicorn.run(
            "plinth.serving.serve_cli:service_from_env", factory=True, workers=workers, **options
        )


def service_from_env() -> Any:
    """The app factory each worker process calls."""
    from plinth.serving.app import ServeConfig, create_service

    app = create_service(ServeConfig(**json.loads(os.environ[_CONFIG_ENV])))
    _settle()
    return app


def _settle() -> None:
    """Tune the interpreter of a service process once its model is loaded."""
    gc.freeze()  # the model and the libraries: never scanned again by the collector
    # The prediction log and the hot-swap poller share the interpreter with the model's
    # predict thread: hand the lock over after 0.5 ms rather than Python's default 5 ms,
    # so their work delays a prediction by fractions of a millisecond, not by several.
    sys.setswitchinterval(0.0005)
