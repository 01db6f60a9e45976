"""What the ready-made steps share: making a Step of a factory's body and its reads,
recording on the pipeline's tracking run, and the error of a refused validation."""

from __future__ import annotations

import hashlib
import inspect
import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from plinth.errors import Conflict, InvalidArgument
from plinth.pipelines.step import CONTEXT, Step

if TYPE_CHECKING:
    import pyarrow as pa

    from plinth.pipelines.context import StepContext


class ValidationFailed(Conflict):
    """A validation step refused what it checked (data expectations, drift, model
    gates): the step fails, so nothing after it runs. ``report`` holds every result."""

    def __init__(self, message: str, report: dict[str, Any]) -> None:
        super().__init__(message)
        self.report = report


Body = Callable[["StepContext", dict[str, Any]], Any]


def make_step(
    name: str,
    body: Body,
    reads: dict[str, Any],
    config: dict[str, Any],
    timeout_seconds: float | None = None,
) -> Step:
    """A Step called ``name`` running ``body(context, values)``; ``values`` holds each of
    ``reads`` resolved: a string is an input of that name (an earlier step's output or a
    run param), a callable is called with the context, anything else is itself."""
    wired = list(dict.fromkeys(v for v in reads.values() if isinstance(v, str)))
    for source in wired:
        if not source.isidentifier() or source == CONTEXT:
            raise InvalidArgument(
                f"step {name!r}: {source!r} names no step or run param (a Python identifier "
                f"other than {CONTEXT!r}); pass the value itself or a callable of the context"
            )

    def run(context: StepContext, **inputs: Any) -> Any:
        values = {
            role: inputs[v] if isinstance(v, str) else v(context) if _is_getter(v) else v
            for role, v in reads.items()
        }
        return body(context, values)

    kind = inspect.Parameter.POSITIONAL_OR_KEYWORD
    run.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [inspect.Parameter(p, kind) for p in (CONTEXT, *wired)]
    )
    made = Step(run, name=name, timeout_seconds=timeout_seconds)
    # the factory's body and its configuration are the code: cached outputs follow both
    text = inspect.getsource(body) + json.dumps(
        {k: _describe(v) for k, v in config.items()}, sort_keys=True
    )
    made.__dict__["code_version"] = hashlib.sha256(text.encode()).hexdigest()
    return made


def _is_getter(value: Any) -> bool:
    return callable(value) and not hasattr(value, "fit") and not isinstance(value, type)


def _describe(value: Any) -> Any:
    if callable(value) and not hasattr(value, "fit"):
        try:
            return inspect.getsource(value)
        except (OSError, TypeError):
            return getattr(value, "__qualname__", type(value).__name__)
    if isinstance(value, str | int | float | bool | type(None)):
        return value
    if isinstance(value, list | tuple):
        return [_describe(v) for v in value]
    return f"{type(value).__module__}.{type(value).__qualname__}:{value!r}"[:2000]


def record(context: StepContext, params: dict[str, Any], metrics: dict[str, float | None]) -> None:
    """Params in a group named after the step; metrics named ``<step>/<name>``."""
    if params:
        context.run.log_params(params, group=context.step)
    finite = {f"{context.step}/{k}": float(v) for k, v in metrics.items() if v is not None}
    if finite:
        context.run.log_metrics(finite)


def jsonable(value: Any) -> dict[str, Any]:
    found: dict[str, Any] = json.loads(json.dumps(value, default=_plain))
    return found


def _plain(value: Any) -> Any:
    return value.tolist() if hasattr(value, "tolist") else str(value)


def as_table(data: Any) -> pa.Table:
    """The rows of training data, an Arrow table or a DataFrame, as Arrow."""
    import pyarrow as pa

    if hasattr(data, "info") and hasattr(data, "to_arrow"):  # TrainingData
        return data.to_arrow()
    if isinstance(data, pa.Table):
        return data
    if hasattr(data, "columns") and hasattr(data, "iloc"):
        return pa.Table.from_pandas(data, preserve_index=False)
    raise InvalidArgument(
        f"expected training data, an Arrow table or a DataFrame, not {type(data).__name__}"
    )
