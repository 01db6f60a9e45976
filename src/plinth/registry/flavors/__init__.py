"""The flavor registry: built-in flavors, ``register_flavor`` and ``plinth.flavors`` plug-ins.

``flavor_for`` asks the most recently registered flavor first, so a plug-in outranks the
built-ins and the generic ``pyfunc`` flavor (registered first) is the last resort. The
built-ins are registered from general to specific: XGBoost's and LightGBM's scikit-learn
wrappers are scikit-learn estimators too, and must be claimed by their own flavors first.
"""

from __future__ import annotations

import logging
from importlib.metadata import entry_points

from plinth.errors import InvalidArgument
from plinth.registry.flavors.base import Flavor
from plinth.registry.flavors.lightgbm import LightGBMFlavor
from plinth.registry.flavors.pyfunc import PyfuncFlavor
from plinth.registry.flavors.pytorch import PyTorchFlavor
from plinth.registry.flavors.sklearn import SklearnFlavor
from plinth.registry.flavors.xgboost import XGBoostFlavor

ENTRY_POINT_GROUP = "plinth.flavors"

FLAVORS: dict[str, Flavor] = {
    flavor.name: flavor
    for flavor in (
        PyfuncFlavor(),
        SklearnFlavor(),
        PyTorchFlavor(),
        LightGBMFlavor(),
        XGBoostFlavor(),
    )
}

_log = logging.getLogger(__name__)
_plugins_loaded = False


def register_flavor(flavor: Flavor) -> None:
    """Add ``flavor``, asked before every flavor registered earlier, or replace the flavor of
    the same name in its place."""
    _load_plugins()
    FLAVORS[flavor.name] = flavor


def flavor_named(name: str) -> Flavor:
    _load_plugins()
    try:
        return FLAVORS[name]
    except KeyError:
        raise InvalidArgument(
            f"unknown model flavor {name!r}; known flavors: {', '.join(sorted(FLAVORS))}"
        ) from None


def flavor_for(model: object) -> Flavor:
    """The flavor that saves ``model``: plug-ins first, the specific built-ins next, ``pyfunc`` last."""
    _load_plugins()
    for flavor in reversed(FLAVORS.values()):
        if flavor.handles(model):
            return flavor
    kind = f"{type(model).__module__}.{type(model).__qualname__}"
    raise InvalidArgument(
        f"no model flavor can save a {kind} (known flavors: {', '.join(sorted(FLAVORS))}); a model of another kind needs a predict() method"
    )


def _load_plugins() -> None:
    """Register the ``plinth.flavors`` entry points once, on first use (each names a Flavor
    subclass or instance). A broken plug-in is logged and skipped: it must not take the
    built-in flavors down with it."""
    global _plugins_loaded
    if _plugins_loaded:
        return
    _plugins_loaded = True
    for point in entry_points(group=ENTRY_POINT_GROUP):
        try:
            loaded = point.load()
            flavor = loaded() if isinstance(loaded, type) else loaded
            if not isinstance(flavor, Flavor):
                raise TypeError(f"{point.value} is not a plinth Flavor")
        except Exception:
            _log.exception("skipping model flavor plug-in %r (%s)", point.name, point.value)
            continue
        FLAVORS[flavor.name] = flavor


__all__ = [
    "ENTRY_POINT_GROUP",
    "FLAVORS",
    "Flavor",
    "flavor_for",
    "flavor_named",
    "register_flavor",
]
