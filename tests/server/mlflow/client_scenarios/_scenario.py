"""Helpers of the scenario scripts (run with the official mlflow client, not with Plinth).

Each scenario asserts as it goes: ``check`` and ``expect_error`` exit with a message naming
what the server answered. The last stdout line is a JSON object of the ids the pytest side
then looks up with Plinth's own client.
"""

from __future__ import annotations

import json
import os
import sys
import uuid
from collections.abc import Callable
from typing import Any

from mlflow.exceptions import MlflowException

TRACKING_URI = os.environ["MLFLOW_TRACKING_URI"]
# one suffix per script run: the scenarios may run twice against the same server
SUFFIX = uuid.uuid4().hex[:8]


def unique(name: str) -> str:
    return f"e2e-{name}-{SUFFIX}"


def check(condition: object, what: str) -> None:
    if not condition:
        sys.exit(f"scenario failed: {what}")


def equal(actual: object, expected: object, what: str) -> None:
    if actual != expected:
        sys.exit(f"scenario failed: {what}: expected {expected!r}, got {actual!r}")


def expect_error(
    code: str | tuple[str, ...], call: Callable[..., Any], *args: Any, **kwargs: Any
) -> str:
    """Calls ``call`` and checks that it raises an MlflowException with ``code`` (or one of
    them, where MLflow's own server answers another code than the natural one); returns its
    message."""
    codes = (code,) if isinstance(code, str) else code
    try:
        result = call(*args, **kwargs)
    except MlflowException as exc:
        if exc.error_code not in codes:
            sys.exit(
                f"scenario failed: {call.__name__}{args!r}: expected {' or '.join(codes)}, "
                f"got {exc.error_code}: {exc.message}"
            )
        return exc.message
    sys.exit(f"scenario failed: {call.__name__}{args!r} returned {result!r}, expected {code}")


def report(facts: dict[str, Any]) -> None:
    print(json.dumps(facts), flush=True)
