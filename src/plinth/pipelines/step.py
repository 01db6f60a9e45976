"""``@plinth.step``: a plain function made a pipeline step.

A step's parameters are wired by name when it is put in a ``Pipeline``: ``context`` gets
the ``StepContext``, an earlier step's name gets that step's output, a run param gets its
value, anything else its default. Light on purpose: ``import plinth`` imports this.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import json
from collections.abc import Callable
from typing import Any, overload

from plinth.errors import InvalidArgument

#: the parameter that receives the ``StepContext``
CONTEXT = "context"


class Step:
    """A function run as one step of a pipeline.

    ``cache``: reuse the output of an earlier run of the same pipeline when the step's
    code, its inputs' digests and the params it takes are the same. ``timeout_seconds``:
    how long one attempt may run; enforced by the scheduler's workers (which can kill a
    step), not by an in-process ``Pipeline.run``."""

    def __init__(
        self,
        fn: Callable[..., Any],
        *,
        name: str | None = None,
        cache: bool = False,
        timeout_seconds: float | None = None,
    ) -> None:
        if not callable(fn):
            raise InvalidArgument(f"@step decorates a function, not {type(fn).__name__}")
        self.fn = fn
        self.name: str = name if name is not None else str(getattr(fn, "__name__", ""))
        _check_name(self.name)
        if timeout_seconds is not None and not 0 < timeout_seconds < 10**9:
            raise InvalidArgument(
                f"step {self.name!r}: timeout_seconds must be a positive number of seconds, "
                f"got {timeout_seconds!r}"
            )
        self.cache = cache
        self.timeout_seconds = timeout_seconds
        self.parameters, self.defaults = _parameters(self.name, fn)
        functools.update_wrapper(self, fn)

    @functools.cached_property
    def code_version(self) -> str:
        """sha256 of the function's source, and of what it closes over (a step made by a
        factory is the factory's inner function plus the factory's arguments): changes
        when its code does."""
        return hashlib.sha256(_code_text(self.fn).encode()).hexdigest()

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.fn(*args, **kwargs)

    def __repr__(self) -> str:
        return f"<Step {self.name}>"


@overload
def step(fn: Callable[..., Any], /) -> Step: ...
@overload
def step(
    *, name: str | None = None, cache: bool = False, timeout_seconds: float | None = None
) -> Callable[[Callable[..., Any]], Step]: ...
def step(
    fn: Callable[..., Any] | None = None,
    /,
    *,
    name: str | None = None,
    cache: bool = False,
    timeout_seconds: float | None = None,
) -> Step | Callable[[Callable[..., Any]], Step]:
    """Make a function a pipeline step: ``@step`` or ``@step(name=..., cache=True,
    timeout_seconds=600.0)``. Its return value is its output, passed to later steps that
    take a parameter of its name, and stored with the run (see ``plinth.pipelines.outputs``)."""
    if fn is not None:
        return Step(fn, name=name, cache=cache, timeout_seconds=timeout_seconds)
    return lambda f: Step(f, name=name, cache=cache, timeout_seconds=timeout_seconds)


def _code_text(fn: Any, depth: int = 0) -> str:
    try:
        text = inspect.getsource(fn)
    except (OSError, TypeError):  # no source file (a REPL): the compiled code instead
        code = getattr(fn, "__code__", None)
        text = repr((code.co_code, code.co_consts)) if code else type(fn).__qualname__
    for cell in getattr(fn, "__closure__", None) or ():
        try:
            value = cell.cell_contents
        except ValueError:  # a cell not filled yet
            continue
        text += "\n" + _closed_over(value, depth)
    return text


def _closed_over(value: Any, depth: int) -> str:
    # stable across processes: no object addresses (they would make every run a cache miss)
    if isinstance(value, Step):
        value = value.fn
    if callable(value) and hasattr(value, "__code__") and depth < 3:
        return _code_text(value, depth + 1)
    try:
        return json.dumps(value, sort_keys=True)
    except (TypeError, ValueError):
        kind = type(value)
        return f"{kind.__module__}.{kind.__qualname__}"


def _check_name(name: str) -> None:
    if not name or not name.isidentifier() or name == CONTEXT:
        raise InvalidArgument(
            f"step name {name!r} must be a Python identifier (later steps take its output "
            f"as a parameter of that name), other than {CONTEXT!r}"
        )


def _parameters(name: str, fn: Callable[..., Any]) -> tuple[tuple[str, ...], dict[str, Any]]:
    names: list[str] = []
    defaults: dict[str, Any] = {}
    for parameter in inspect.signature(fn).parameters.values():
        if parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
            raise InvalidArgument(
                f"step {name!r}: parameter *{parameter.name} is not allowed; each input "
                "is a named parameter (an earlier step's name, a param, or 'context')"
            )
        if parameter.kind is parameter.POSITIONAL_ONLY:
            raise InvalidArgument(
                f"step {name!r}: parameter {parameter.name!r} is positional-only; inputs "
                "are passed by name"
            )
        names.append(parameter.name)
        if parameter.default is not parameter.empty:
            defaults[parameter.name] = parameter.default
    return tuple(names), defaults
