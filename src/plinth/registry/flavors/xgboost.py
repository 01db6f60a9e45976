"""XGBoost boosters and their scikit-learn wrappers, in XGBoost's own UBJSON format: no
pickle (a wrapper is rebuilt from its class, named from a fixed table, and the file)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from plinth.errors import InvalidArgument
from plinth.registry.flavors.base import Flavor

_MODEL = "model.ubj"
_META = "xgboost.json"
_WRAPPERS = ("XGBClassifier", "XGBRegressor", "XGBRanker", "XGBRFClassifier", "XGBRFRegressor")


def _classes() -> dict[str, type[Any]]:
    """The classes this flavor restores, by the name it writes: an explicit table, so a
    package can only ever name one of these."""
    import xgboost

    return {"Booster": xgboost.Booster} | {name: getattr(xgboost, name) for name in _WRAPPERS}


class XGBoostFlavor(Flavor):
    name = "xgboost"
    # the CPU-only wheel installs the same module under another distribution name
    requirements = ("xgboost", "xgboost-cpu")

    def handles(self, model: object) -> bool:
        # exact classes only: a user's subclass would reload as its base class here, so it
        # falls through to the sklearn flavor, which pickles it whole
        return "xgboost" in sys.modules and type(model) in _classes().values()

    def save(self, model: Any, folder: Path) -> None:
        model.save_model(folder / _MODEL)
        meta = {"class": type(model).__name__}
        (folder / _META).write_text(json.dumps(meta), encoding="utf-8")

    def pickled(self, folder: Path) -> bool:
        return False  # the native format holds trees and parameters, never Python objects

    def load(self, folder: Path) -> object:
        class_name = json.loads((folder / _META).read_text(encoding="utf-8"))["class"]
        cls = _classes().get(class_name)
        if cls is None:
            raise InvalidArgument(
                f"{folder / _META} names an unknown XGBoost class {class_name!r}; expected one of {', '.join(_classes())}"
            )
        model = cls()
        model.load_model(folder / _MODEL)
        return model

    def predict(self, model: Any, frame: Any) -> Any:
        import xgboost

        if isinstance(model, xgboost.Booster):
            return model.predict(xgboost.DMatrix(_fitted_input(model, frame)))
        return model.predict(_fitted_input(model.get_booster(), frame))

    def predict_proba(self, model: Any, frame: Any) -> Any:
        return model.predict_proba(_fitted_input(model.get_booster(), frame))


def _fitted_input(booster: Any, frame: Any) -> Any:
    # a model fitted on an array has no feature names and may refuse named columns
    return frame if booster.feature_names is not None else frame.to_numpy()
