"""scikit-learn estimators and pipelines, in skops' format: no pickle.

skops stores an estimator as a tree of types and their state, and loads only the types it
is told to trust; a file naming only skops' trusted types and scikit-learn, NumPy and
SciPy classes rebuilt from their state (``unsafe_skops_types``) loads without trust. An
estimator holding anything else (a transformer class of the user's own, a lambda) cannot
be rebuilt from state alone: it is pickled with cloudpickle instead, and loading it needs
the caller's trust like any pickle.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

from plinth.registry.flavors.base import (
    Flavor,
    pickle_to,
    skops_dump,
    skops_load,
    unpickle_from,
    unsafe_skops_types,
)

_SKOPS = "model.skops"
_PICKLE = "model.pkl"  # estimators skops cannot hold safely, and packages before skops

_log = logging.getLogger(__name__)


class SklearnFlavor(Flavor):
    name = "sklearn"
    requirements = ("scikit-learn", "skops", "cloudpickle")

    def handles(self, model: object) -> bool:
        # (sklearn.base may be half imported by another thread, as in pytorch.py)
        estimator = getattr(sys.modules.get("sklearn.base"), "BaseEstimator", None)
        return estimator is not None and isinstance(model, estimator)

    def save(self, model: object, folder: Path) -> None:
        path = folder / _SKOPS
        try:
            skops_dump(model, path)
            foreign = unsafe_skops_types(path)
        except Exception as exc:  # skops refuses some objects (a lambda): pickle those
            foreign = [repr(exc)]
        if not foreign:
            return
        path.unlink(missing_ok=True)
        _log.info("pickling the %s: it holds %s", type(model).__qualname__, ", ".join(foreign))
        pickle_to(model, folder / _PICKLE)

    def pickled(self, folder: Path) -> bool:
        path = folder / _SKOPS
        return not path.is_file() or bool(unsafe_skops_types(path))

    def load(self, folder: Path) -> object:
        path = folder / _SKOPS
        return skops_load(path) if path.is_file() else unpickle_from(folder / _PICKLE)

    def predict(self, model: Any, frame: Any) -> Any:
        return model.predict(_fitted_input(model, frame))

    def predict_proba(self, model: Any, frame: Any) -> Any:
        return model.predict_proba(_fitted_input(model, frame))


def _fitted_input(model: Any, frame: Any) -> Any:
    # an estimator fitted on an array warns when it is given named columns
    return frame if hasattr(model, "feature_names_in_") else frame.to_numpy()
