"""A loaded model: ``predict`` checks its input against the signature, then asks the flavor."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd  # type: ignore[import-untyped]

from plinth.errors import InvalidArgument
from plinth.registry.flavors import Flavor, flavor_named
from plinth.registry.package import load_package
from plinth.registry.signature import as_frame, enforce
from plinth.registry.types import Manifest, Signature


class Predictor:
    def __init__(
        self,
        manifest: Manifest,
        native: object,
        *,
        flavor: Flavor | None = None,
        model_name: str | None = None,
        version: int | None = None,
    ) -> None:
        self.manifest = manifest
        self.native = native
        self.flavor = flavor or flavor_named(manifest.flavor)
        self.model_name = model_name
        self.version = version

    @classmethod
    def from_package(
        cls,
        folder: Path | str,
        *,
        model_name: str | None = None,
        version: int | None = None,
        trust_pickle: bool = False,
    ) -> Predictor:
        """Load a package folder; a pickled one only with ``trust_pickle`` (see load_package)."""
        manifest, native = load_package(folder, trust_pickle=trust_pickle)
        return cls(manifest, native, model_name=model_name, version=version)

    @property
    def signature(self) -> Signature | None:
        return self.manifest.signature

    def predict(self, data: object) -> Any:
        """Predictions for a DataFrame, 2-D array, dict of columns or list of row dicts: a
        numpy array, or the pandas object the model returns."""
        return _array_or_pandas(self.flavor.predict(self.native, self._frame(data)))

    def predict_proba(self, data: object) -> Any:
        """Class probabilities, for a model that has ``predict_proba``."""
        if not callable(getattr(self.native, "predict_proba", None)):
            raise InvalidArgument(
                f"{self!r} has no predict_proba(): {self.manifest.model_class} gives no class probabilities"
            )
        return _array_or_pandas(self.flavor.predict_proba(self.native, self._frame(data)))

    def _frame(self, data: object) -> pd.DataFrame:
        signature = self.signature
        frame = as_frame(data) if signature is None else enforce(signature, data)
        if len(frame) == 0:  # models disagree on empty input (most raise): one answer for all
            raise InvalidArgument(f"{self!r} was given no rows to predict: pass at least one row")
        return frame

    def __repr__(self) -> str:
        which = (
            f"{self.model_name}/{self.version}" if self.model_name else self.manifest.model_class
        )
        return f"<Predictor {which} ({self.manifest.flavor})>"


def _array_or_pandas(result: object) -> Any:
    if isinstance(result, np.ndarray | pd.DataFrame | pd.Series):
        return result
    return np.asarray(result)
