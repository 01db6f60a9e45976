"""The API contract: one decorated service method gives the route and the remote call.

``@endpoint("POST", "/runs/{run_id}/tags")`` on a service method is all it takes: the
server mounts it (path parameters from the path, the rest from the query string for GET
and DELETE, from a JSON body otherwise) and the remote client calls it with the same
signature, rebuilding the return type and the same exceptions on the other side.
"""

from __future__ import annotations

import functools
import inspect
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar, get_type_hints

from pydantic import BaseModel, ConfigDict, TypeAdapter, create_model

F = TypeVar("F", bound=Callable[..., Any])
API_PREFIX = "/api/v1"


@dataclass(frozen=True)
class Endpoint:
    method: str
    path: str
    name: str
    signature: inspect.Signature
    hints: dict[str, Any]
    # The path as declared, with Starlette converters: "/experiments/{experiment:path}"
    # takes names holding "/" (the server sees %2F decoded before routing). ``path`` is the
    # same template without them, for the remote client to fill in.
    route: str = ""

    @property
    def path_params(self) -> list[str]:
        return [p for p in self.signature.parameters if "{" + p + "}" in self.path]

    @property
    def other_params(self) -> list[str]:
        return [p for p in self.signature.parameters if p != "self" and p not in self.path_params]

    @property
    def params_in_query(self) -> bool:
        return self.method in ("GET", "DELETE")

    @functools.cached_property
    def body_model(self) -> type[BaseModel]:
        """The JSON body of a POST/PATCH/PUT endpoint: its non-path parameters."""
        fields: dict[str, Any] = {}
        for name in self.other_params:
            default = self.signature.parameters[name].default
            fields[name] = (
                self.hints[name],
                ... if default is inspect.Parameter.empty else default,
            )
        model_name = "".join(part.title() for part in self.name.split("_")) + "Request"
        return create_model(model_name, __config__=_BODY_CONFIG, **fields)

    @functools.cached_property
    def result(self) -> TypeAdapter[Any]:
        return TypeAdapter(self.hints.get("return", type(None)))


# Request bodies carry NaN and infinities as JSON's common extension tokens (NaN, Infinity),
# which the server's parser reads back as floats; the strings "NaN"/"Infinity" are accepted
# for float fields too. A string is then never mistaken for a float where any value goes.
_BODY_CONFIG = ConfigDict(extra="forbid", ser_json_inf_nan="constants")


def endpoint(method: str, path: str) -> Callable[[F], F]:
    def mark(func: F) -> F:
        func.__plinth_endpoint__ = (method, path)  # type: ignore[attr-defined]
        return func

    return mark


def endpoints_of(cls: type) -> list[Endpoint]:
    """The endpoints a service class (and its mixins) declares, in definition order."""
    found = []
    declared: dict[str, Any] = {}
    for klass in reversed(cls.__mro__):  # subclasses may override a method without re-marking it
        for name, func in vars(klass).items():
            if hasattr(func, "__plinth_endpoint__") or name not in declared:
                declared[name] = (
                    func if hasattr(func, "__plinth_endpoint__") else declared.get(name)
                )
    for name, func in declared.items():
        marked = getattr(func, "__plinth_endpoint__", None)
        if marked is None:
            continue
        method, route = marked
        path = re.sub(r"\{(\w+):\w+\}", r"{\1}", route)
        # localns lets a method annotate ``self`` with the service class it belongs to.
        hints = get_type_hints(func, localns={cls.__name__: cls})
        found.append(Endpoint(method, path, name, inspect.signature(func), hints, route))
    return found
