"""The generic flavor: any object with a callable ``predict``, pickled with cloudpickle."""

from __future__ import annotations

from pathlib import Path

from plinth.registry.flavors.base import Flavor, pickle_to, unpickle_from

_FILE = "model.pkl"


class PyfuncFlavor(Flavor):
    name = "pyfunc"
    requirements = ("cloudpickle",)

    def handles(self, model: object) -> bool:
        return callable(getattr(model, "predict", None))

    def save(self, model: object, folder: Path) -> None:
        pickle_to(model, folder / _FILE)

    def load(self, folder: Path) -> object:
        return unpickle_from(folder / _FILE)
