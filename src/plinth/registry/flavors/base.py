"""The flavor contract: how one kind of model is saved, loaded and asked to predict.

A flavor is registered by name in ``FLAVORS``; third-party flavors plug in with
``register_flavor`` or the ``plinth.flavors`` entry point group, without touching the core.

Unpickling runs whatever code the pickle names, so it is code from whoever saved the
package. A flavor says, with ``pickled``, whether loading a folder's files would unpickle;
the package loader refuses such a folder before ``load`` is called unless the caller or
the store's policy trusts pickles. A flavor that does not say is assumed to unpickle.
"""

from __future__ import annotations

import importlib
import json
import pickle
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
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

#: packages whose classes a skops file may name beyond skops' own trusted types and still
#: load without trust, when the class is one of the kinds ``_harmless_class`` accepts
SAFE_MODULES = ("sklearn", "numpy", "scipy")
#: single types outside those kinds that are as harmless
SAFE_TYPES = frozenset({"collections.OrderedDict"})
#: scikit-learn internals that are not estimators, rebuilt from their state
_SAFE_INTERNALS = frozenset(
    {
        "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
        "sklearn.neighbors._ball_tree.BallTree",
        "sklearn.neighbors._kd_tree.KDTree",
        "sklearn.tree._tree.Tree",
    }
)
# How skops builds a node decides what the type it names may do. These build an instance
# from stored state or data (``cls.__new__`` then ``__setstate__``, ``np.load`` without
# pickle) or return the type itself, so a harmless class stays harmless.
_STATE_LOADERS = frozenset(
    {
        "ObjectNode",
        "TypeNode",
        "NdArrayNode",
        "MaskedArrayNode",
        "DTypeNode",
        "SparseMatrixNode",
        "RandomStateNode",
        "RandomGeneratorNode",
    }
)
# These call the type they name with arguments from the file (``TreeNode``: ``Tree(...)``);
# only exact names whose constructors take data are allowed through them.
# ConstructorFromReduceNode, FunctionNode, MethodNode, PartialNode and any other loader
# calls or returns a callable the file chooses (``ConstructorFromReduceNode`` naming
# ``numpy.distutils.cpuinfo.getstatusoutput`` runs a shell command), so an untrusted name
# under them is refused.
_CALLING_LOADERS = {"TreeNode": frozenset({"sklearn.tree._tree.Tree"})}
_NO_IMPORT = frozenset({"tests", "testing", "conftest"})  # modules never imported to check


def skops_dump(obj: object, path: Path) -> None:
    import skops.io  # type: ignore[import-untyped]

    skops.io.dump(obj, path)


def unsafe_skops_types(path: Path, modules: Iterable[str] = SAFE_MODULES) -> list[str]:
    """The types in a skops file that skops does not trust by default and that are not
    known to be harmless where the file uses them: loading them may run code the file
    chooses, as unpickling would. A type is harmless when it is a class from ``modules`` of
    a kind ``_harmless_class`` accepts (or in ``SAFE_TYPES``) and every node naming it is
    built from state (``_STATE_LOADERS``) or by an exact constructor (``_CALLING_LOADERS``).
    """
    import zipfile

    import skops.io

    roots = tuple(modules)
    untrusted: list[str] = skops.io.get_untrusted_types(file=path)
    if not untrusted:
        return []
    with zipfile.ZipFile(path) as archive:
        schema = json.loads(archive.read("schema.json"))
    uses: dict[str, set[tuple[str, str, str]]] = {}
    for loader, module, name in _nodes(schema):
        uses.setdefault(f"{module}.{name}", set()).add((loader, module, name))
    # a name skops reports but no node carries as module and class is not understood
    return [
        t for t in untrusted if not uses.get(t) or not all(_harmless(u, roots) for u in uses[t])
    ]


def _nodes(state: object) -> Iterator[tuple[str, str, str]]:
    """Every (loader, module, class) in a skops schema, wherever it sits: more than skops
    reads is harmless, fewer could miss one."""
    stack = [state]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            if "__loader__" in item or "__module__" in item or "__class__" in item:
                yield (
                    str(item.get("__loader__")),
                    str(item.get("__module__")),
                    str(item.get("__class__")),
                )
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def _harmless(use: tuple[str, str, str], roots: tuple[str, ...]) -> bool:
    loader, module, name = use
    qualified = f"{module}.{name}"
    if loader in _CALLING_LOADERS:
        return qualified in _CALLING_LOADERS[loader]
    if loader not in _STATE_LOADERS:
        return False
    if qualified in SAFE_TYPES:
        return loader in ("ObjectNode", "TypeNode")
    if not _within(module, roots) or _NO_IMPORT & set(module.split(".")):
        return False
    try:  # as skops resolves it: importing a module of these libraries runs only theirs
        cls = getattr(importlib.import_module(module), name)
    except Exception:
        return False
    return isinstance(cls, type) and _within(cls.__module__, roots) and _harmless_class(cls)


def _harmless_class(cls: type) -> bool:
    """Classes whose instances skops rebuilds from data without running the file's code:
    estimators and transformers (their ``__setstate__`` stores attributes), the listed
    scikit-learn internals, distance metrics, NumPy arrays, scalars and dtypes, and SciPy
    sparse matrices. Not functions, methods or other callables."""
    import numpy as np
    import scipy.sparse  # type: ignore[import-untyped]
    from sklearn.base import BaseEstimator  # type: ignore[import-untyped]
    from sklearn.metrics import DistanceMetric  # type: ignore[import-untyped]

    if f"{cls.__module__}.{cls.__qualname__}" in _SAFE_INTERNALS:
        return True
    kinds = (BaseEstimator, DistanceMetric, np.ndarray, np.generic, np.dtype)
    sparse = (scipy.sparse.spmatrix, scipy.sparse.sparray)
    return issubclass(cls, kinds + sparse)


def skops_load(path: Path) -> object:
    """Load a skops file trusting every type it names: ``pickled`` has already refused the
    file unless its types are safe or the caller trusts it."""
    import skops.io

    return skops.io.load(path, trusted=skops.io.get_untrusted_types(file=path))


def _within(qualified: str, roots: tuple[str, ...]) -> bool:
    return any(qualified == r or qualified.startswith(f"{r}.") for r in roots)
