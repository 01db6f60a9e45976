"""The flavor contract: how one kind of model is saved, loaded and asked to predict.

A flavor is registered by name in ``FLAVORS``; third-party flavors plug in with
``register_flavor`` or the ``plinth.flavors`` entry point group, without touching the core.
"""

from __future__ import annotations

import pickle
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar


class Flavor(ABC):
    name: ClassVar[str]
    #: distributions whose installed versions the package records (e.g. ["scikit-learn"]);
    #: ones that are not installed are skipped, so alternatives may both be listed
    requirements: ClassVar[tuple[str, ...]] = ()

    @abstractmethod
    def handles(self, model: object) -> bool:
        """True when this flavor knows how to save ``model`` (checked without importing
        libraries the caller has not imported)."""

    @abstractmethod
    def save(self, model: object, folder: Path) -> None:
        """Write the model's files into ``folder`` (which exists and is empty)."""

    @abstractmethod
    def load(self, folder: Path) -> object:
        """Read back the native model object that ``save`` wrote."""

    def predict(self, model: Any, frame: Any) -> Any:
        """Predictions for a pandas DataFrame whose columns match the signature."""
        return model.predict(frame)

    def predict_proba(self, model: Any, frame: Any) -> Any:
        """Class probabilities, for models that have them (``predict_proba``)."""
        return model.predict_proba(frame)


def pickle_to(obj: object, path: Path) -> None:
    """Pickle with cloudpickle: classes and functions defined in ``__main__`` or a notebook
    (a custom transformer, a lambda in a pipeline) are stored by value, so they reload in
    another process; importable ones are stored by reference as plain pickle does."""
    import cloudpickle  # type: ignore[import-untyped]

    with path.open("wb") as out:
        cloudpickle.dump(obj, out)


def unpickle_from(path: Path) -> object:
    with path.open("rb") as source:
        return pickle.load(source)
