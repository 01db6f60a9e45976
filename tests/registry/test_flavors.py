from __future__ import annotations

import json
import logging
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from importlib.metadata import EntryPoint
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from plinth.errors import InvalidArgument
from plinth.registry import flavors
from plinth.registry.flavors import FLAVORS, Flavor, flavor_for, flavor_named, register_flavor
from plinth.registry.package import load_package, save_package
from plinth.registry.predictor import Predictor

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:torch.*")

X = pd.DataFrame({"a": np.arange(24, dtype=np.float64), "b": np.arange(24) % 3})
Y = (X["a"] > 11).astype(np.int64)


@pytest.fixture(autouse=True)
def _restore_flavors() -> Iterator[None]:
    saved = dict(FLAVORS)
    yield
    FLAVORS.clear()
    FLAVORS.update(saved)


class Thresholder:
    """A pyfunc model defined in this test module."""

    def __init__(self, cut: float) -> None:
        self.cut = cut

    def predict(self, frame: pd.DataFrame) -> np.ndarray[Any, Any]:
        return (frame["a"].to_numpy() > self.cut).astype(np.int64)


class NoPredict:
    def score(self, frame: pd.DataFrame) -> int:
        return 0


# --- picking a flavor ------------------------------------------------------------------


def test_sklearn_estimators_and_pipelines() -> None:
    from sklearn.linear_model import LinearRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    assert flavor_for(LinearRegression()).name == "sklearn"
    assert flavor_for(make_pipeline(StandardScaler(), LinearRegression())).name == "sklearn"


def test_xgboost_models_and_their_wrappers() -> None:
    xgboost = pytest.importorskip("xgboost")
    booster = xgboost.train({"nthread": 1}, xgboost.DMatrix(X, Y), num_boost_round=1)
    assert flavor_for(booster).name == "xgboost"
    assert flavor_for(xgboost.XGBClassifier()).name == "xgboost"
    assert flavor_for(xgboost.XGBRegressor()).name == "xgboost"

    class Tuned(xgboost.XGBRegressor):
        pass

    # a subclass would reload as its base class from the native format: pickled instead
    assert flavor_for(Tuned()).name == "sklearn"


def test_lightgbm_models_and_their_wrappers() -> None:
    lightgbm = pytest.importorskip("lightgbm")
    params = {"verbose": -1, "num_threads": 1, "min_data_in_leaf": 3}
    booster = lightgbm.train(params, lightgbm.Dataset(X, Y), num_boost_round=1)
    assert flavor_for(booster).name == "lightgbm"
    assert flavor_for(lightgbm.LGBMClassifier()).name == "lightgbm"
    assert flavor_for(lightgbm.LGBMRegressor()).name == "lightgbm"


def test_torch_modules() -> None:
    torch = pytest.importorskip("torch")
    assert flavor_for(torch.nn.Linear(2, 1)).name == "pytorch"


def test_a_torch_module_of_the_users_own_class_round_trips(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")

    class Scorer(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.linear = torch.nn.Linear(2, 1)
            self.dropout = torch.nn.Dropout(0.5)  # must be off when predicting

        def forward(self, x: Any) -> Any:
            return torch.sigmoid(self.dropout(self.linear(x)))

    torch.manual_seed(0)
    model = Scorer()
    model.train()
    manifest = save_package(model, tmp_path, input_example=X.head(4))
    assert manifest.model_class.endswith("<locals>.Scorer")
    assert manifest.signature is not None
    assert [c.dtype for c in manifest.signature.outputs] == ["float32"]
    assert manifest.pickled is False
    predictor = Predictor.from_package(tmp_path)  # reloads without the class: an exported graph
    first, second = predictor.predict(X[["b", "a"]]), predictor.predict(X)
    assert first.dtype == np.float32
    assert first.shape == (len(X), 1)
    np.testing.assert_array_equal(first, second)  # eval mode: no dropout
    with torch.no_grad():
        expected = model.eval()(torch.tensor(X.to_numpy(), dtype=torch.float32)).numpy()
    np.testing.assert_allclose(first, expected, rtol=1e-6)


def test_anything_with_predict_is_pyfunc() -> None:
    assert flavor_for(Thresholder(1.0)).name == "pyfunc"


def test_an_object_without_predict_is_refused() -> None:
    with pytest.raises(InvalidArgument) as caught:
        flavor_for(NoPredict())
    assert (
        "no model flavor can save a tests.registry.test_flavors.NoPredict" in caught.value.message
    )
    assert "needs a predict() method" in caught.value.message


def test_an_unknown_flavor_name_lists_the_known_ones() -> None:
    with pytest.raises(InvalidArgument) as caught:
        flavor_named("catboost")
    assert caught.value.message == (
        "unknown model flavor 'catboost'; known flavors: lightgbm, pyfunc, pytorch, sklearn, xgboost"
    )


def test_picking_a_flavor_imports_no_ml_library() -> None:
    code = textwrap.dedent(
        """
        import json, sys
        from plinth.registry.flavors import flavor_for
        class M:
            def predict(self, frame): return frame
        flavor_for(M())
        heavy = ("sklearn", "xgboost", "lightgbm", "torch", "cloudpickle")
        print(json.dumps(sorted(m for m in heavy if m in sys.modules)))
        """
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(done.stdout) == []


# --- pyfunc ----------------------------------------------------------------------------


def test_a_pyfunc_class_from_this_module_round_trips(tmp_path: Path) -> None:
    save_package(Thresholder(11.0), tmp_path, input_example=X.head(3))
    manifest, native = load_package(tmp_path, trust_pickle=True)
    assert isinstance(native, Thresholder)
    assert manifest.model_class == "tests.registry.test_flavors.Thresholder"
    assert Predictor(manifest, native).predict(X).tolist() == Y.tolist()


def test_a_pyfunc_class_from_main_reloads_in_another_process(tmp_path: Path) -> None:
    # a notebook's classes live in __main__, which the loading process does not have
    save = f"""
        import pandas as pd
        from plinth.registry.package import save_package
        class Notebook:
            def predict(self, frame):
                return frame["a"] * 10
        save_package(Notebook(), {str(tmp_path)!r}, input_example=pd.DataFrame({{"a": [1.0]}}))
    """
    load = f"""
        from plinth.registry.predictor import Predictor
        predictor = Predictor.from_package({str(tmp_path)!r}, trust_pickle=True)
        print(predictor.predict({{"a": [1.0, 2.0]}}).tolist())
    """
    for code in (save, load):
        done = subprocess.run(
            [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[10.0, 20.0]"


# --- plug-ins --------------------------------------------------------------------------


class Rules:
    """A model kind no built-in flavor knows: a list of rules and no predict()."""

    def __init__(self, rules: dict[str, float]) -> None:
        self.rules = rules


class RulesFlavor(Flavor):
    name = "rules"

    def handles(self, model: object) -> bool:
        return isinstance(model, Rules)

    def save(self, model: Any, folder: Path) -> None:
        (folder / "rules.json").write_text(json.dumps(model.rules))

    def load(self, folder: Path) -> object:
        return Rules(json.loads((folder / "rules.json").read_text()))

    def pickled(self, folder: Path) -> bool:
        return False  # JSON: a plug-in says so, or its packages need trust to load

    def predict(self, model: Any, frame: Any) -> Any:
        return sum(frame[name].to_numpy() * weight for name, weight in model.rules.items())


class ClaimsEverything(RulesFlavor):
    name = "greedy"

    def handles(self, model: object) -> bool:
        return True


def test_a_registered_flavor_saves_loads_and_predicts(tmp_path: Path) -> None:
    register_flavor(RulesFlavor())
    model = Rules({"a": 2.0, "b": -1.0})
    assert flavor_for(model).name == "rules"
    manifest = save_package(model, tmp_path, input_example=X.head(2))
    assert manifest.flavor == "rules"
    assert list(manifest.files) == ["model/rules.json"]
    predictions = Predictor.from_package(tmp_path).predict(X)
    np.testing.assert_allclose(predictions, X["a"] * 2 - X["b"])


def test_a_later_flavor_is_asked_first() -> None:
    from sklearn.linear_model import LinearRegression

    register_flavor(ClaimsEverything())
    assert flavor_for(LinearRegression()).name == "greedy"


def test_replacing_a_flavor_keeps_its_place() -> None:
    from sklearn.linear_model import LinearRegression

    class MySklearn(ClaimsEverything):
        name = "sklearn"

    register_flavor(MySklearn())
    assert isinstance(flavor_named("sklearn"), MySklearn)
    assert flavor_for(LinearRegression()).name == "sklearn"
    xgboost = pytest.importorskip("xgboost")
    assert flavor_for(xgboost.XGBRegressor()).name == "xgboost"  # still asked before it
    assert flavor_for(Thresholder(0.0)).name == "sklearn"  # but before pyfunc


def test_entry_point_plugins_load_once_and_broken_ones_are_skipped(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    group = flavors.ENTRY_POINT_GROUP
    points = [
        EntryPoint("rules", f"{__name__}:RulesFlavor", group),
        EntryPoint("broken", f"{__name__}:NoSuchFlavor", group),
        EntryPoint("not-a-flavor", f"{__name__}:Rules", group),
    ]
    asked: list[str] = []

    def entry_points(*, group: str) -> list[EntryPoint]:
        asked.append(group)
        return points

    monkeypatch.setattr(flavors, "entry_points", entry_points)
    monkeypatch.setattr(flavors, "_plugins_loaded", False)
    with caplog.at_level(logging.ERROR, logger="plinth.registry.flavors"):
        assert flavor_named("rules").name == "rules"
        assert flavor_for(Rules({})).name == "rules"
    assert asked == [group]
    assert "broken" not in FLAVORS
    assert "not-a-flavor" not in FLAVORS
    skipped = " ".join(record.getMessage() for record in caplog.records)
    assert "'broken'" in skipped
    assert "'not-a-flavor'" in skipped


def test_a_library_half_imported_by_another_thread_is_not_a_match(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """While one thread imports torch, sys.modules already holds it without ``nn``: choosing
    the flavor of a scikit-learn model in another thread must not fail on it."""
    import types

    from sklearn.linear_model import LogisticRegression  # type: ignore[import-untyped]

    from plinth.registry.flavors import flavor_for

    monkeypatch.setitem(sys.modules, "torch", types.ModuleType("torch"))  # as mid-import
    assert flavor_for(LogisticRegression()).name == "sklearn"
