"""Checks of values a caller sends: what the store refuses, refused before the call.

The service runs them; the remote client runs the same ones before it sends a call, so
that a value JSON would carry differently (a set as a list, a number as a string) is
refused the same way locally and over HTTP.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from plinth.errors import InvalidArgument
from plinth.tracking import metrics as metric_store
from plinth.tracking.types import check_tags, validate_key


def param_row(run_id: str, group: str, key: str, value: Any) -> dict[str, Any]:
    validate_key(key, "param name")
    if isinstance(value, bool):
        kind, num, text = "bool", float(value), str(value).lower()
    elif isinstance(value, int):
        kind, num, text = "int", float(value), None
    elif isinstance(value, float):
        kind, num, text = "float", value, None
    elif isinstance(value, str):
        kind, num, text = "str", None, value
    else:
        kind, num, text = "json", None, None
    try:
        encoded = json.dumps(value, sort_keys=True, allow_nan=False)
    except (TypeError, ValueError):
        raise InvalidArgument(
            f"param {group}.{key}: {value!r:.80} is not a JSON value; use int, float, str, "
            "bool, list or dict (params are configuration: NaN and infinities are refused)"
        ) from None
    return {
        "run_id": run_id,
        "group": group,
        "key": key,
        "value_type": kind,
        "value": encoded,
        "value_num": num,
        "value_str": text,
    }


def _check_params(arguments: dict[str, Any]) -> None:
    group = arguments.get("group", "default")
    for key, value in (arguments.get("params") or {}).items():
        param_row("", group, key, value)


def _check_batch(name: str) -> Callable[[dict[str, Any]], None]:
    def check(arguments: dict[str, Any]) -> None:
        if arguments.get(name) is not None:
            metric_store.validate_batch(arguments[name])

    return check


REMOTE_CHECKS: dict[str, Callable[[dict[str, Any]], None]] = {
    "log_params": _check_params,
    "log_metric_batch": _check_batch("batch"),
    "end_run": _check_batch("last_metrics"),
    "set_tags": lambda arguments: check_tags(arguments.get("tags")),
    "create_run": lambda arguments: check_tags(arguments.get("tags")),
    "create_experiment": lambda arguments: check_tags(arguments.get("tags")),
    "set_experiment_tags": lambda arguments: check_tags(arguments.get("tags")),
}
