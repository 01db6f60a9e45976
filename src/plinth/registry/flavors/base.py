"""The flavor contract: how one kind of model is saved, loaded and asked to predict.

A flavor is registered by name in ``FLAVORS``; third-party flavors plug in with
``register_flavor`` or the ``plinth.flavors`` entry point group, without touching the core.

Unpickling runs whatever code the pickle names, so it is code from whoever saved the
package. A flavor says, with ``pickled``, whether loading a folder's files would unpickle;
the package loader refuses such a folder before ``load`` is called unless the caller or
the store's policy trusts pickles. A flavor that does not say is assumed to unpickle.
"""

from __future__ import annotations

import pickle
from abc import ABC, abstractmethod
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from plinth.registry.types import Signature


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
        """Read back the native model object that ``save`` wrote. Called only after the
        package loader has checked ``pickled(folder)`` against the caller's trust."""

    def pickled(self, folder: Path) -> bool:
        """True when ``load(folder)`` would unpickle (run code chosen by whoever saved the
        files). Decided from the files themselves, never from what the manifest claims."""
        return True

    def save_with_signature(self, model: object, folder: Path, signature: Signature | None) -> None:
        """What ``save_package`` calls: ``save`` by default; a flavor whose format needs the
        model's input signature (PyTorch traces the model on an input of that shape)
        overrides this."""
        self.save(model, folder)

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


# -- skops: scikit-learn objects without pickle ----------------------------------------

#: modules whose types a skops file may hold and still load without trust: skops builds
#: them from their stored state, and these libraries' constructors and setstates run no
#: code the file chooses
SAFE_MODULES = ("sklearn", "numpy", "scipy")
#: single types outside those modules that are as harmless
SAFE_TYPES = frozenset({"collections.OrderedDict"})


def skops_dump(obj: object, path: Path) -> None:
    import skops.io  # type: ignore[import-untyped]

    skops.io.dump(obj, path)


def unsafe_skops_types(path: Path, modules: Iterable[str] = SAFE_MODULES) -> list[str]:
    """The types in a skops file that skops does not trust by default and that lie outside
    ``modules``: loading them runs their code, as unpickling would."""
    import skops.io

    roots = tuple(modules)
    untrusted: list[str] = skops.io.get_untrusted_types(file=path)
    return [t for t in untrusted if not _within(t, roots) and t not in SAFE_TYPES]


def skops_load(path: Path) -> object:
    """Load a skops file trusting every type it names: ``pickled`` has already refused the
    file unless its types are safe or the caller trusts it."""
    import skops.io

    return skops.io.load(path, trusted=skops.io.get_untrusted_types(file=path))


def _within(qualified: str, roots: tuple[str, ...]) -> bool:
    return any(qualified == r or qualified.startswith(f"{r}.") for r in roots)
