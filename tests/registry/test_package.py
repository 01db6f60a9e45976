from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import platform
from collections.abc import Callable
from datetime import UTC
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from plinth import __version__
from plinth.errors import AlreadyExists, InvalidArgument, NotFound, PermissionDenied
from plinth.registry.package import load_package, read_manifest, save_package, verify_package
from plinth.registry.predictor import Predictor
from plinth.registry.types import ColumnSpec, Signature

pytestmark = [
    # torch, on first import, asks numpy about a deprecated alias
    pytest.mark.filterwarnings("ignore::DeprecationWarning:torch.*"),
]

# one thread: with XGBoost and LightGBM both loaded on two cores, their OpenMP pools make
# a fit on 48 rows take most of a second
RNG = np.random.default_rng(7)
X = pd.DataFrame({"age": RNG.integers(18, 80, 48), "income": RNG.normal(50.0, 10.0, 48)})
Y = (X["income"] + X["age"] / 10 > 55).astype(np.int64)
INPUTS = [ColumnSpec("age", "int64"), ColumnSpec("income", "float64")]


class Doubler:
    """A pyfunc model defined in this test module."""

    def predict(self, frame: pd.DataFrame) -> np.ndarray[Any, Any]:
        return frame["income"].to_numpy() * 2


@functools.cache  # fitting takes a fifth of a second; saving does not change the model
def _sklearn() -> object:
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression().fit(X, Y)


def _sklearn_pipeline_with_a_lambda() -> object:
    from sklearn.linear_model import LinearRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer

    # plain pickle refuses the lambda: the flavor must not
    return make_pipeline(FunctionTransformer(lambda f: f * 2), LinearRegression()).fit(X, Y)


def _xgb_classifier() -> object:
    xgboost = pytest.importorskip("xgboost")
    return xgboost.XGBClassifier(n_estimators=4, max_depth=2, n_jobs=1).fit(X, Y)


def _xgb_regressor_on_an_array() -> object:
    xgboost = pytest.importorskip("xgboost")
    return xgboost.XGBRegressor(n_estimators=4, max_depth=2, n_jobs=1).fit(X.to_numpy(), Y)


def _xgb_booster() -> object:
    xgboost = pytest.importorskip("xgboost")
    return xgboost.train({"max_depth": 2, "nthread": 1}, xgboost.DMatrix(X, Y), num_boost_round=4)


def _lgbm_classifier() -> object:
    lightgbm = pytest.importorskip("lightgbm")
    return lightgbm.LGBMClassifier(n_estimators=4, min_child_samples=5, verbose=-1, n_jobs=1).fit(
        X, Y
    )


def _lgbm_booster() -> object:
    lightgbm = pytest.importorskip("lightgbm")
    params = {"min_data_in_leaf": 5, "verbose": -1, "num_threads": 1}
    return lightgbm.train(params, lightgbm.Dataset(X, Y), num_boost_round=4)


def _torch_module() -> object:
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.ReLU(), torch.nn.Linear(3, 1))


MODELS: dict[str, tuple[str, Callable[[], object]]] = {
    "sklearn": ("sklearn", _sklearn),
    "sklearn-pipeline": ("sklearn", _sklearn_pipeline_with_a_lambda),
    "xgboost-classifier": ("xgboost", _xgb_classifier),
    "xgboost-array": ("xgboost", _xgb_regressor_on_an_array),
    "xgboost-booster": ("xgboost", _xgb_booster),
    "lightgbm-classifier": ("lightgbm", _lgbm_classifier),
    "lightgbm-booster": ("lightgbm", _lgbm_booster),
    "pytorch": ("pytorch", _torch_module),
    "pyfunc": ("pyfunc", Doubler),
}
# no safe format holds arbitrary Python: a lambda in a pipeline, a pyfunc model
PICKLED = {"sklearn-pipeline", "pyfunc"}


def _direct_predictions(model: Any, flavor: str) -> Any:
    if flavor == "pytorch":
        import torch

        with torch.no_grad():
            return model(torch.tensor(X.to_numpy(), dtype=torch.float32)).numpy()
    if type(model).__name__ == "Booster" and flavor == "xgboost":
        import xgboost

        return model.predict(xgboost.DMatrix(X))
    if type(model).__name__ == "XGBRegressor":
        return model.predict(X.to_numpy())
    return model.predict(X)


@pytest.mark.parametrize("case", list(MODELS))
def test_round_trip(case: str, tmp_path: Path) -> None:
    flavor, make = MODELS[case]
    model = make()
    manifest = save_package(model, tmp_path, input_example=X.head(5))
    assert manifest.flavor == flavor
    assert manifest.pickled is (case in PICKLED)

    loaded_manifest, native = load_package(tmp_path, trust_pickle=case in PICKLED)
    assert loaded_manifest == manifest
    if flavor == "pytorch":  # the exported graph, not the module's own class
        assert type(native).__name__ == "GraphModule"
    else:
        assert type(native) is type(model)
    predictor = Predictor(loaded_manifest, native, model_name="churn", version=3)
    # rows in another column order, with an extra column, come back the same
    shuffled = X.assign(extra="x")[["extra", "income", "age"]]
    np.testing.assert_allclose(
        predictor.predict(shuffled), _direct_predictions(model, flavor), rtol=1e-6
    )


@pytest.mark.parametrize("case", ["sklearn", "xgboost-classifier", "lightgbm-classifier"])
def test_classifiers_keep_their_probabilities(case: str, tmp_path: Path) -> None:
    _, make = MODELS[case]
    model: Any = make()
    save_package(model, tmp_path, input_example=X.head(5))
    predictor = Predictor.from_package(tmp_path)
    np.testing.assert_allclose(predictor.predict_proba(X), model.predict_proba(X), rtol=1e-6)


def test_a_model_without_probabilities_says_so(tmp_path: Path) -> None:
    save_package(Doubler(), tmp_path)
    with pytest.raises(InvalidArgument, match="has no predict_proba"):
        Predictor.from_package(tmp_path, trust_pickle=True).predict_proba(X)


def test_manifest_contents(tmp_path: Path) -> None:
    manifest = save_package(_sklearn(), tmp_path, input_example=X.head(5))

    assert manifest.flavor == "sklearn"
    assert manifest.plinth_version == __version__
    assert manifest.python_version == platform.python_version()
    assert manifest.model_class == "sklearn.linear_model._logistic.LogisticRegression"
    assert manifest.created_at.tzinfo is UTC
    assert manifest.requirements == {
        name: version(name) for name in ("scikit-learn", "skops", "cloudpickle", "numpy", "pandas")
    }
    assert manifest.signature == Signature(inputs=INPUTS, outputs=[ColumnSpec("0", "int64")])
    assert manifest.files == {
        "model/model.skops": hashlib.sha256(
            (tmp_path / "model/model.skops").read_bytes()
        ).hexdigest()
    }
    assert manifest.pickled is False
    on_disk = json.loads((tmp_path / "plinth-model.json").read_text())
    assert on_disk["files"] == manifest.files
    assert read_manifest(tmp_path) == manifest


def test_the_flavor_lists_every_file_it_writes(tmp_path: Path) -> None:
    manifest = save_package(_lgbm_classifier(), tmp_path)
    assert sorted(manifest.files) == [
        "model/lightgbm.json",
        "model/model.txt",
        "model/wrapper.skops",
    ]
    assert manifest.requirements["lightgbm"] == version("lightgbm")


def test_without_an_example_there_is_no_signature(tmp_path: Path) -> None:
    manifest = save_package(Doubler(), tmp_path)
    assert manifest.signature is None
    # without a signature, input is passed through as a DataFrame
    predictor = Predictor.from_package(tmp_path, trust_pickle=True)
    assert predictor.predict({"income": [1.0]}).tolist() == [2.0]


def test_a_given_signature_wins_over_the_example(tmp_path: Path) -> None:
    given = Signature(inputs=[ColumnSpec("income", "float64")])
    manifest = save_package(Doubler(), tmp_path, input_example=X.head(2), signature=given)
    assert manifest.signature == given


def test_a_named_flavor_must_handle_the_model(tmp_path: Path) -> None:
    assert save_package(_sklearn(), tmp_path / "a", flavor="pyfunc").flavor == "pyfunc"
    with pytest.raises(InvalidArgument, match=r"the pytorch flavor cannot save a .*Doubler"):
        save_package(Doubler(), tmp_path / "b", flavor="pytorch")


def test_a_package_is_not_overwritten(tmp_path: Path) -> None:
    save_package(Doubler(), tmp_path)
    with pytest.raises(AlreadyExists, match="already holds a model package"):
        save_package(Doubler(), tmp_path)


class Unpicklable:
    def __init__(self) -> None:
        self.stream = (i for i in range(3))

    def predict(self, frame: pd.DataFrame) -> list[int]:
        return [0] * len(frame)


def test_a_failed_save_leaves_no_half_package(tmp_path: Path) -> None:
    with pytest.raises(
        InvalidArgument, match=r"the pyfunc flavor could not save the .*Unpicklable"
    ):
        save_package(Unpicklable(), tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_a_model_that_fails_on_its_example_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument, match="failed to predict on its input example"):
        save_package(Doubler(), tmp_path, input_example=pd.DataFrame({"age": [1]}))


# --- verification ----------------------------------------------------------------------


@pytest.fixture
def package(tmp_path: Path) -> Path:
    save_package(_sklearn(), tmp_path, input_example=X.head(5))
    return tmp_path


def test_a_changed_file_is_refused_by_name(package: Path) -> None:
    model_file = package / "model" / "model.skops"
    data = bytearray(model_file.read_bytes())
    data[len(data) // 2] ^= 0xFF
    model_file.write_bytes(bytes(data))
    with pytest.raises(InvalidArgument, match=r"corrupt: file 'model/model.skops' was changed"):
        load_package(package)


def test_a_truncated_file_is_refused_by_name(package: Path) -> None:
    model_file = package / "model" / "model.skops"
    model_file.write_bytes(model_file.read_bytes()[:-10])
    with pytest.raises(InvalidArgument, match=r"'model/model.skops' was changed or truncated"):
        verify_package(package)


def test_a_deleted_file_is_refused_by_name(package: Path) -> None:
    (package / "model" / "model.skops").unlink()
    with pytest.raises(InvalidArgument, match=r"corrupt: file 'model/model.skops' is missing"):
        load_package(package)


def test_files_the_manifest_does_not_list_are_refused(package: Path) -> None:
    # a flavor loads its files by name: one slipped in beside them would load unchecked
    verify_package(package)
    (package / "model" / "notes.txt").write_text("hello")
    (package / "README").write_text("hello")
    with pytest.raises(InvalidArgument, match=r"does not list: README, model/notes\.txt"):
        verify_package(package)


def test_a_manifest_naming_a_file_outside_the_package_is_refused(package: Path) -> None:
    outside = package.parent / "elsewhere.txt"
    outside.write_text("x")
    manifest = read_manifest(package)
    forged = {"../elsewhere.txt": hashlib.sha256(b"x").hexdigest()}
    tampered = dataclasses.replace(manifest, files=forged)
    with pytest.raises(InvalidArgument, match="lies outside the package"):
        verify_package(package, tampered)


def test_the_registrys_copy_of_the_manifest_catches_an_edited_one(package: Path) -> None:
    registry_copy = read_manifest(package)
    model_file = package / "model" / "model.skops"
    model_file.write_bytes(model_file.read_bytes() + b"\0")
    edited = json.loads((package / "plinth-model.json").read_text())
    edited["files"]["model/model.skops"] = hashlib.sha256(model_file.read_bytes()).hexdigest()
    (package / "plinth-model.json").write_text(json.dumps(edited))
    verify_package(package)  # consistent with itself ...
    with pytest.raises(InvalidArgument, match=r"'model/model.skops' was changed"):
        verify_package(package, registry_copy)  # ... but not with what was registered


def test_no_manifest_is_not_found(tmp_path: Path) -> None:
    with pytest.raises(NotFound, match=r"plinth-model.json is missing"):
        load_package(tmp_path)


def test_a_garbled_manifest_is_refused(package: Path) -> None:
    (package / "plinth-model.json").write_text('{"flavor": "sklearn"')
    with pytest.raises(InvalidArgument, match=r"plinth-model.json is not a valid manifest"):
        read_manifest(package)


def test_a_missing_flavor_is_named_on_load(package: Path) -> None:
    edited = json.loads((package / "plinth-model.json").read_text())
    edited["flavor"] = "catboost"
    (package / "plinth-model.json").write_text(json.dumps(edited))
    with pytest.raises(InvalidArgument, match="unknown model flavor 'catboost'; known flavors: "):
        load_package(package)


# --- predictor -------------------------------------------------------------------------


def test_the_predictor_checks_input_against_the_signature(package: Path) -> None:
    predictor = Predictor.from_package(package, model_name="churn", version=2)
    assert predictor.signature is not None
    assert predictor.signature.inputs == INPUTS
    assert (predictor.model_name, predictor.version) == ("churn", 2)
    assert type(predictor.native).__name__ == "LogisticRegression"
    assert repr(predictor) == "<Predictor churn/2 (sklearn)>"
    with pytest.raises(InvalidArgument, match="missing column 'age' \\(int64\\)"):
        predictor.predict(X[["income"]])
    with pytest.raises(InvalidArgument, match="column 'income' has dtype string"):
        predictor.predict({"age": [1], "income": ["lots"]})
    assert predictor.predict([{"income": 10.0, "age": 20}]).shape == (1,)


# --- pickles ---------------------------------------------------------------------------


def _touch(marker: str) -> Doubler:
    Path(marker).touch()
    return Doubler()


class Tripwire(Doubler):
    """A harmless payload: unpickling it creates ``marker``, so a test can see whether a
    pickle ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return _touch, (str(self.marker),)


def _reseal(folder: Path, **changes: Any) -> None:
    """Make a tampered package consistent with itself again: its manifest lists the files
    as they are now, with ``changes`` applied to its fields."""
    path = folder / "plinth-model.json"
    manifest = json.loads(path.read_text())
    manifest["files"] = {
        file.relative_to(folder).as_posix(): hashlib.sha256(file.read_bytes()).hexdigest()
        for file in sorted((folder / "model").rglob("*"))
        if file.is_file()
    }
    manifest.update(changes)
    path.write_text(json.dumps(manifest))


def test_a_pickled_package_is_refused_before_anything_is_unpickled(tmp_path: Path) -> None:
    marker, folder = tmp_path / "ran", tmp_path / "package"
    assert save_package(Tripwire(marker), folder).pickled
    for load in (load_package, Predictor.from_package):
        with pytest.raises(PermissionDenied) as refused:
            load(folder)
        assert not marker.exists()  # nothing ran
    message = refused.value.message
    assert message.startswith(f"the model package at {folder} is a pickled model package")
    for says in (
        "(pyfunc flavor, tests.registry.test_package.Tripwire)",
        "runs code chosen by whoever saved and registered it",
        "trust_pickle=True",
        "--trust-pickle",
        "PLINTH_TRUST_PICKLE=true",
    ):
        assert says in message
    load_package(folder, trust_pickle=True)  # the payload is real: trusted, it runs
    assert marker.exists()


@pytest.mark.parametrize(
    ("flavor", "file"),
    [("sklearn", "model.pkl"), ("pytorch", "model.pt"), ("lightgbm", "wrapper.pkl")],
)
def test_a_manifest_claiming_no_pickle_does_not_unlock_one(
    flavor: str, file: str, tmp_path: Path
) -> None:
    # whether a package unpickles is read from its files, never from what it says
    marker, folder = tmp_path / "ran", tmp_path / "package"
    save_package(Tripwire(marker), folder)
    (folder / "model" / "model.pkl").rename(folder / "model" / file)
    _reseal(folder, flavor=flavor, pickled=False)
    with pytest.raises(PermissionDenied, match=f"pickled model package \\({flavor} flavor"):
        load_package(folder)
    assert not marker.exists()


def test_a_manifest_from_before_the_field_counts_as_pickled(package: Path) -> None:
    path = package / "plinth-model.json"
    old = json.loads(path.read_text())
    del old["pickled"]
    path.write_text(json.dumps(old))
    assert read_manifest(package).pickled is True
    with pytest.raises(PermissionDenied, match="is a pickled model package"):
        load_package(package)
    assert load_package(package, trust_pickle=True)[0].flavor == "sklearn"


@pytest.mark.parametrize("case", [case for case in MODELS if case not in PICKLED])
def test_a_safe_package_holds_no_pickle(case: str, tmp_path: Path) -> None:
    manifest = save_package(MODELS[case][1](), tmp_path, input_example=X.head(5))
    assert manifest.pickled is False
    for name in manifest.files:
        assert not name.endswith((".pkl", ".pt")), name
        assert (tmp_path / name).read_bytes()[:1] != b"\x80", name  # a pickle's first opcode


class Loud:
    """A transformer of the user's own whose restored state creates a file."""

    def __init__(self, marker: str = "") -> None:
        self.marker = marker

    def fit(self, frame: Any, labels: Any = None) -> Loud:
        return self

    def transform(self, frame: Any) -> Any:
        return frame

    def __setstate__(self, state: dict[str, Any]) -> None:
        Path(state["marker"]).touch()
        self.__dict__.update(state)


def test_an_estimator_of_foreign_types_is_pickled_and_a_skops_file_of_them_refused(
    tmp_path: Path,
) -> None:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    marker = tmp_path / "ran"
    model = make_pipeline(Loud(str(marker)), LogisticRegression()).fit(X, Y)
    # skops cannot rebuild the user's class without running it: the flavor pickles it
    manifest = save_package(model, tmp_path / "saved")
    assert (manifest.flavor, manifest.pickled) == ("sklearn", True)
    assert list(manifest.files) == ["model/model.pkl"]
    # a skops file naming it is refused without trust like a pickle, before skops builds it
    import skops.io

    forged = tmp_path / "forged"
    save_package(_sklearn(), forged)
    skops.io.dump(model, forged / "model" / "model.skops")
    _reseal(forged)
    with pytest.raises(PermissionDenied, match="is a pickled model package"):
        load_package(forged)
    assert not marker.exists()
    _, native = load_package(forged, trust_pickle=True)  # trusted: its types are trusted
    assert marker.exists()
    np.testing.assert_array_equal(native.predict(X), model.predict(X))  # type: ignore[attr-defined]


def _rewrite_archive(archive: Path, change: Callable[[str, bytes], bytes | None]) -> str:
    """Rebuild a zip archive with each part through ``change`` (None drops it); returns
    the archive's root folder."""
    import zipfile

    with zipfile.ZipFile(archive) as source:
        parts = [(name, source.read(name)) for name in source.namelist()]
    with zipfile.ZipFile(archive, "w") as target:
        for name, data in parts:
            changed = change(name, data)
            if changed is not None:
                target.writestr(name, changed)
    return parts[0][0].split("/")[0]


def _pickled_weights(name: str, data: bytes) -> bytes:
    if not name.endswith("_weights_config.json"):
        return data
    config = json.loads(data)
    for entry in config["config"].values():
        entry["use_pickle"] = True
    return json.dumps(config).encode()


def test_a_pytorch_archive_holding_more_than_a_plain_export_needs_trust(tmp_path: Path) -> None:
    import zipfile

    first, second = tmp_path / "compiled", tmp_path / "pickled-weights"
    for folder in (first, second):
        assert not save_package(_torch_module(), folder, input_example=X.head(5)).pickled
    # a compiled library torch.export.load would load, and weights it would unpickle
    root = _rewrite_archive(first / "model" / "model.pt2", lambda name, data: data)
    with zipfile.ZipFile(first / "model" / "model.pt2", "a") as archive:
        archive.writestr(f"{root}/data/aotinductor/model/model.so", b"\x7fELF")
    _rewrite_archive(second / "model" / "model.pt2", _pickled_weights)
    for folder in (first, second):
        _reseal(folder)
        with pytest.raises(PermissionDenied, match=r"pickled model package \(pytorch flavor"):
            load_package(folder)


def test_a_pytorch_module_without_a_signature_is_pickled(tmp_path: Path) -> None:
    # export traces the module on an input of the signature's shape: without one, pickle
    manifest = save_package(_torch_module(), tmp_path)
    assert manifest.pickled and list(manifest.files) == ["model/model.pt"]
    with pytest.raises(PermissionDenied):
        load_package(tmp_path)
    assert type(load_package(tmp_path, trust_pickle=True)[1]).__name__ == "Sequential"
