"""LightGBM boosters (native text format) and their scikit-learn wrappers."""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path
from typing import Any

from plinth.errors import InvalidArgument
from plinth.registry.flavors.base import Flavor, pickle_to, unpickle_from

_MODEL = "model.txt"
_WRAPPER = "wrapper.pkl"
_META = "lightgbm.json"
_WRAPPERS = ("LGBMClassifier", "LGBMRegressor", "LGBMRanker")


def _classes() -> dict[str, type[Any]]:
    import lightgbm

    return {"Booster": lightgbm.Booster} | {name: getattr(lightgbm, name) for name in _WRAPPERS}


class LightGBMFlavor(Flavor):
    """The trees are always written in LightGBM's native text format. A scikit-learn
    wrapper keeps fitted state the native format lacks (label encoder, classes, objective),
    so the wrapper is pickled as well, without its booster, and the two are joined on load."""

    name = "lightgbm"
    requirements = ("lightgbm", "cloudpickle")

    def handles(self, model: object) -> bool:
        return "lightgbm" in sys.modules and type(model) in _classes().values()

    def save(self, model: Any, folder: Path) -> None:
        import lightgbm

        booster = model if isinstance(model, lightgbm.Booster) else model.booster_
        booster.save_model(folder / _MODEL)
        if not isinstance(model, lightgbm.Booster):
            shell = copy.copy(model)
            shell._Booster = None
            pickle_to(shell, folder / _WRAPPER)
        meta = {"class": type(model).__name__}
        (folder / _META).write_text(json.dumps(meta), encoding="utf-8")

    def load(self, folder: Path) -> object:
        import lightgbm

        class_name = json.loads((folder / _META).read_text(encoding="utf-8"))["class"]
        if class_name not in _classes():
            raise InvalidArgument(
                f"{folder / _META} names an unknown LightGBM class {class_name!r}; expected one of {', '.join(_classes())}"
            )
        booster = lightgbm.Booster(model_file=folder / _MODEL)
        if class_name == "Booster":
            return booster
        wrapper: Any = unpickle_from(folder / _WRAPPER)
        if type(wrapper).__name__ != class_name:
            raise InvalidArgument(
                f"{folder / _WRAPPER} holds a {type(wrapper).__name__}, but {folder / _META} says {class_name}"
            )
        wrapper._Booster = booster
        return wrapper
