"""scikit-learn estimators and pipelines, pickled."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from plinth.registry.flavors.base import Flavor, pickle_to, unpickle_from

_FILE = "model.pkl"


class SklearnFlavor(Flavor):
    name = "sklearn"
    requirements = ("scikit-learn", "cloudpickle")

    def handles(self, model: object) -> bool:
        sklearn_base = sys.modules.get("sklearn.base")
        return sklearn_base is not None and isinstance(model, sklearn_base.BaseEstimator)

    def save(self, model: object, folder: Path) -> None:
        pickle_to(model, folder / _FILE)

    def load(self, folder: Path) -> object:
        return unpickle_from(folder / _FILE)

    def predict(self, model: Any, frame: Any) -> Any:
        return model.predict(_fitted_input(model, frame))

    def predict_proba(self, model: Any, frame: Any) -> Any:
        return model.predict_proba(_fitted_input(model, frame))


def _fitted_input(model: Any, frame: Any) -> Any:
    # an estimator fitted on an array warns when it is given named columns
    return frame if hasattr(model, "feature_names_in_") else frame.to_numpy()
