"""The ``plinth.Pipeline`` an entrypoint names: ``package.module:attr`` or
``path/to/file.py:attr`` (how a registered pipeline is found again by the scheduler's
workers and the CLI)."""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
import sys
from pathlib import Path
from typing import Any

from plinth.errors import InvalidArgument
from plinth.pipelines.pipeline import Pipeline


def load_pipeline(entrypoint: str) -> Pipeline:
    """The ``Pipeline`` named by ``package.module:attr`` or ``path/to/file.py:attr`` (a
    file's folder is put on ``sys.path``, so it can import its neighbours)."""
    module_name, _, attr = entrypoint.rpartition(":")
    if not module_name or not attr:
        raise InvalidArgument(
            f"pipeline entrypoint {entrypoint!r} must be 'package.module:attr' or "
            "'path/to/file.py:attr'"
        )
    try:
        if module_name.endswith(".py") or "/" in module_name or os.sep in module_name:
            found: Any = _load_file(Path(module_name), entrypoint)
        else:
            found = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        raise InvalidArgument(f"pipeline entrypoint {entrypoint!r}: {exc}") from exc
    for part in attr.split("."):
        try:
            found = getattr(found, part)
        except AttributeError:
            raise InvalidArgument(
                f"pipeline entrypoint {entrypoint!r}: {module_name} has no {attr!r}"
            ) from None
    if not isinstance(found, Pipeline):
        raise InvalidArgument(
            f"pipeline entrypoint {entrypoint!r} is a {type(found).__name__}, not a plinth.Pipeline"
        )
    return found


def _load_file(path: Path, entrypoint: str) -> Any:
    path = path.resolve()
    if not path.is_file():
        raise InvalidArgument(f"pipeline entrypoint {entrypoint!r}: there is no file {path}")
    # the same file gets the same module name in every process: pickled outputs refer to it
    name = f"plinth_pipeline_{path.stem}_{hashlib.sha256(str(path).encode()).hexdigest()[:10]}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise InvalidArgument(f"pipeline entrypoint {entrypoint!r}: {path} is not a Python file")
    module = importlib.util.module_from_spec(spec)
    if str(path.parent) not in sys.path:
        sys.path.insert(0, str(path.parent))
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
