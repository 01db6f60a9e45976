"""LightGBM boosters (native text format) and their scikit-learn wrappers."""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path
from typing import Any

from plinth.errors import InvalidArgument
from plinth.registry.flavors.base import (
    SAFE_MODULES,
    Flavor,
    skops_dump,
    skops_load,
    unpickle_from,
    unsafe_skops_types,
)

_MODEL = "model.txt"
_WRAPPER = "wrapper.skops"
_PICKLED_WRAPPER = "wrapper.pkl"  # packages written before skops
_META = "lightgbm.json"
_WRAPPERS = ("LGBMClassifier", "LGBMRegressor", "LGBMRanker")
_SAFE = (*SAFE_MODULES, "lightgbm")


def _classes() -> dict[str, type[Any]]:
    import lightgbm

    return {"Booster": lightgbm.Booster} | {name: getattr(lightgbm, name) for name in _WRAPPERS}


class LightGBMFlavor(Flavor):
    """The trees are always written in LightGBM's native text format. A scikit-learn
    wrapper keeps fitted state the native format lacks (label encoder, classes, objective),
    so the wrapper is written as well, without its booster, in skops' format (LightGBM's,
    scikit-learn's and NumPy's types only: no pickle), and the two are joined on load."""

    name = "lightgbm"
    requirements = ("lightgbm", "skops")

    def handles(self, model: object) -> bool:
        return "lightgbm" in sys.modules and type(model) in _classes().values()

    def save(self, model: Any, folder: Path) -> None:
        import lightgbm

        booster = model if isinstance(model, lightgbm.Booster) else model.booster_
        booster.save_model(folder / _MODEL)
        if not isinstance(model, lightgbm.Booster):
            shell = copy.copy(model)
            shell._Booster = None
            skops_dump(shell, folder / _WRAPPER)
        meta = {"class": type(model).__name__}
        (folder / _META).write_text(json.dumps(meta), encoding="utf-8")

    def pickled(self, folder: Path) -> bool:
        if (folder / _PICKLED_WRAPPER).is_file():
            return True
        wrapper = folder / _WRAPPER
        return wrapper.is_file() and bool(unsafe_skops_types(wrapper, _SAFE))

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
        wrapper: Any = (
            skops_load(folder / _WRAPPER)
            if (folder / _WRAPPER).is_file()
            else unpickle_from(folder / _PICKLED_WRAPPER)
        )
        if type(wrapper).__name__ != class_name:
            raise InvalidArgument(
                f"the wrapper in {folder} holds a {type(wrapper).__name__}, but {folder / _META} says {class_name}"
            )
        wrapper._Booster = booster
        return wrapper
