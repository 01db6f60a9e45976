"""The generic flavor: any object with a callable ``predict``, pickled with cloudpickle.

Arbitrary Python has no safe format: loading a pyfunc package always runs code from
whoever saved it, so it loads only when the caller or the store's policy trusts pickles.
"""

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
