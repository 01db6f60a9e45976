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
import sys
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any, overload

from plinth.errors import InvalidArgument

#: the parameter that receives the ``StepContext``
CONTEXT = "context"


class Step:
    """A function run as one step of a pipeline.

    ``cache``: reuse the output of an earlier run of the same pipeline, by the same
    creator, when the step's code (with its helpers'), its inputs' digests and the params
    it takes (all of them, when it takes ``context``) are the same. ``timeout_seconds``:
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
        """sha256 of the function's source, of what it closes over (a step made by a
        factory is the factory's inner function plus the factory's arguments) and of the
        globals it uses (the helpers it calls, followed; constants; modules by name):
        changes when its code, or its own helpers' code, does."""
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


def _code_text(fn: Any) -> str:
    return _Versioner().function(fn, 0)


#: how deep the helpers a step calls are followed (a helper's helpers, ...)
_MAX_DEPTH = 5


class _Versioner:
    """The text a code version hashes: a function's source, what it closes over, and the
    globals it names (helpers by their source, followed; JSON constants by value; modules
    by name). Stable across processes: no object addresses (they would make every run a
    cache miss)."""

    def __init__(self) -> None:
        self.seen: set[int] = set()

    def function(self, fn: Any, depth: int) -> str:
        self.seen.add(id(fn))
        code = getattr(fn, "__code__", None)
        try:
            text = inspect.getsource(fn)
        except (OSError, TypeError):  # no source file (a REPL): the compiled code instead
            text = _compiled(code) if code is not None else _qualified(fn)
        for cell in getattr(fn, "__closure__", None) or ():
            try:
                value = cell.cell_contents
            except ValueError:  # a cell not filled yet
                continue
            text += "\n" + self.value(value, depth + 1)
        namespace = getattr(fn, "__globals__", None)
        if code is not None and isinstance(namespace, dict):
            for name in _global_names(code):
                if name in namespace:
                    text += f"\n{name} = {self.value(namespace[name], depth + 1)}"
        return text

    def value(self, value: Any, depth: int) -> str:
        if isinstance(value, Step):
            value = value.fn
        if isinstance(value, types.ModuleType):
            return f"module {value.__name__}"
        if isinstance(value, types.FunctionType):
            if _from_library(value):
                return f"function {_qualified(value)}"
            if id(value) in self.seen or depth > _MAX_DEPTH:  # (its module's name may not
                return f"function {value.__qualname__}"  # be stable: a file's is its path)
            return self.function(value, depth)
        if isinstance(value, type):
            if _from_library(value):
                return f"class {_qualified(value)}"
            try:
                return inspect.getsource(value)
            except (OSError, TypeError):
                return f"class {_qualified(value)}"
        if callable(value) and not hasattr(value, "__dict__"):  # a builtin function
            return f"callable {_qualified(value)}"
        try:
            return json.dumps(value, sort_keys=True)
        except (TypeError, ValueError):
            return f"a {_qualified(type(value))}"


def _global_names(code: types.CodeType) -> list[str]:
    """The names a function's code (and the code nested in it) looks up."""
    names = list(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names += _global_names(const)
    return list(dict.fromkeys(names))


def _compiled(code: types.CodeType) -> str:
    consts = [_compiled(c) if isinstance(c, types.CodeType) else repr(c) for c in code.co_consts]
    return repr((code.co_code.hex(), consts, code.co_names))


def _qualified(value: Any) -> str:
    module = getattr(value, "__module__", None) or ""
    name = getattr(value, "__qualname__", None) or type(value).__qualname__
    return f"{module}.{name}"


def _from_library(value: Any) -> bool:
    """Defined by an installed package, the standard library or Plinth: their code
    changes with their version, not with the pipeline's (and is not followed)."""
    module_name = getattr(value, "__module__", None) or ""
    top = module_name.partition(".")[0]
    if top in sys.stdlib_module_names or top in ("plinth", "builtins"):
        return True
    module = sys.modules.get(module_name)
    path = getattr(module, "__file__", None) or ""
    return any(part in ("site-packages", "dist-packages") for part in Path(path).parts)


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
