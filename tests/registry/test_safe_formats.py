"""Packages in a format Plinth loads without trust (torch.export archives, skops files)
that are forged to run code on load: each must count as pickled, so it is refused without
trust before anything in it runs."""

from __future__ import annotations

import contextlib
import io
import json
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from plinth.errors import PermissionDenied
from plinth.registry.package import load_package, save_package
from tests.registry.test_package import X, Y, _reseal, _rewrite_archive, _torch_module

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:torch.*")


def _touch(path: str) -> None:
    Path(path).touch()


class Touch:
    """Unpickled, creates the file it names: a harmless stand-in for a payload."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self) -> tuple[Callable[[str], None], tuple[str]]:
        return (_touch, (self.path,))


def _refused_then_runs_when_trusted(folder: Path, marker: Path) -> None:
    with pytest.raises(PermissionDenied, match="is a pickled model package"):
        load_package(folder)
    assert not marker.exists()  # nothing ran
    # the forgery is real: trusted, torch or skops runs it (whether or not loading succeeds)
    with contextlib.suppress(Exception):
        load_package(folder, trust_pickle=True)
    assert marker.exists()


# -- torch.export archives --------------------------------------------------------------


@pytest.mark.parametrize("kind", ["weights", "constants"])
def test_a_pytorch_archive_with_legacy_pickled_parts_needs_trust(kind: str, tmp_path: Path) -> None:
    # torch.export.load reads data/<kind>/<model>.pt, when present, as a pickle it loads
    # with weights_only=False if weights_only=True fails; a model named like a raw tensor
    # file (weight_x, tensor_x) once made that part pass for raw tensor bytes
    torch = pytest.importorskip("torch")
    marker, folder = tmp_path / "ran", tmp_path / "package"
    assert not save_package(_torch_module(), folder, input_example=X.head(5)).pickled
    model = {"weights": "weight_x", "constants": "tensor_x"}[kind]
    payload = io.BytesIO()
    torch.save({"x": Touch(marker)}, payload)

    def rename(name: str, data: bytes) -> bytes | None:
        if "/data/weights/" in name or "/data/constants/" in name:
            return None  # the legacy part replaces the payload configs
        return data

    archive = folder / "model" / "model.pt2"
    root = _rewrite_archive(archive, rename)
    with zipfile.ZipFile(archive) as source:
        parts = {name: source.read(name) for name in source.namelist()}
    with zipfile.ZipFile(archive, "w") as target:
        for name, data in parts.items():
            target.writestr(name.replace("/model.", f"/{model}."), data)
        legacy = {"weights": payload.getvalue(), "constants": b""}
        if kind == "constants":
            legacy = {"weights": b"", "constants": payload.getvalue()}
        for folder_name, data in legacy.items():
            target.writestr(f"{root}/data/{folder_name}/{model}.pt", data)
    _reseal(folder)
    _refused_then_runs_when_trusted(folder, marker)


def test_a_pytorch_archive_with_code_in_a_symbolic_shape_needs_trust(tmp_path: Path) -> None:
    # torch.export.load parses each expr_str of the model's JSON with sympy.sympify,
    # which evals it; a module exported with a dynamic batch size has some
    marker, folder = tmp_path / "ran", tmp_path / "package"
    assert not save_package(_torch_module(), folder, input_example=X.head(5)).pickled
    forged = f"__import__('pathlib').Path({str(marker)!r}).touch() or "

    def inject(item: object) -> None:
        if isinstance(item, dict):
            if isinstance(item.get("expr_str"), str):
                item["expr_str"] = forged + item["expr_str"]
            for value in item.values():
                inject(value)
        elif isinstance(item, list):
            for value in item:
                inject(value)

    def rewrite(name: str, data: bytes) -> bytes:
        if not name.endswith("models/model.json"):
            return data
        program = json.loads(data)
        inject(program)
        assert forged in json.dumps(program)  # the export has a symbolic shape to forge
        return json.dumps(program).encode()

    _rewrite_archive(folder / "model" / "model.pt2", rewrite)
    _reseal(folder)
    _refused_then_runs_when_trusted(folder, marker)


def _config_change(change: Callable[[dict[str, Any]], None]) -> Callable[[str, bytes], bytes]:
    def rewrite(name: str, data: bytes) -> bytes:
        if not name.endswith("_weights_config.json"):
            return data
        config = json.loads(data)
        for entry in config["config"].values():
            change(entry)
        return json.dumps(config).encode()

    return rewrite


@pytest.mark.parametrize(
    "forge",
    [
        "unreferenced raw file",
        "path outside raw names",
        "missing constants config",
        "second root folder",
    ],
)
def test_a_pytorch_archive_is_safe_only_by_exact_names(forge: str, tmp_path: Path) -> None:
    folder = tmp_path / "package"
    assert not save_package(_torch_module(), folder, input_example=X.head(5)).pickled
    archive = folder / "model" / "model.pt2"
    if forge == "path outside raw names":
        root = _rewrite_archive(
            archive, _config_change(lambda entry: entry.update(path_name="weight_0.pt"))
        )
    elif forge == "missing constants config":
        root = _rewrite_archive(
            archive, lambda name, data: None if name.endswith("_constants_config.json") else data
        )
    else:
        root = _rewrite_archive(archive, lambda name, data: data)
    with zipfile.ZipFile(archive, "a") as target:
        if forge == "unreferenced raw file":
            target.writestr(f"{root}/data/weights/weight_99", b"\0" * 4)
        elif forge == "second root folder":
            target.writestr("other/data/weights/model.pt", b"")
    _reseal(folder)
    with pytest.raises(PermissionDenied, match=r"pickled model package \(pytorch flavor"):
        load_package(folder)


# -- skops files ------------------------------------------------------------------------


def _forged_skops(path: Path, node: dict[str, Any]) -> None:
    """Rewrite a skops file of a LinearRegression so its ``extra`` attribute is ``node``."""
    with zipfile.ZipFile(path) as source:
        parts = {name: source.read(name) for name in source.namelist()}
    schema = json.loads(parts["schema.json"])
    schema["content"]["content"]["extra"] = node
    parts["schema.json"] = json.dumps(schema).encode()
    with zipfile.ZipFile(path, "w") as target:
        for name, data in parts.items():
            target.writestr(name, data)


def _args(*values: str) -> dict[str, Any]:
    return {
        "__class__": "tuple",
        "__module__": "builtins",
        "__loader__": "TupleNode",
        "content": [
            {
                "__class__": "str",
                "__module__": "builtins",
                "__loader__": "JsonNode",
                "content": json.dumps(value),
                "is_json": True,
            }
            for value in values
        ],
    }


@pytest.mark.parametrize("loader", ["ConstructorFromReduceNode", "LossNode"])
def test_a_skops_file_calling_a_function_of_a_trusted_library_needs_trust(
    loader: str, tmp_path: Path
) -> None:
    # these loaders call the type a node names with arguments from the file: a function
    # of NumPy (numpy.save, numpy.distutils.cpuinfo.getstatusoutput...) runs as it would
    # from a pickle, though its module is one whose classes are safe
    from sklearn.linear_model import LinearRegression

    marker, folder = tmp_path / "ran.npy", tmp_path / "package"
    model = LinearRegression().fit(X, Y)
    model.extra = ("a",)
    assert not save_package(model, folder).pickled
    node: dict[str, Any] = {"__class__": "save", "__module__": "numpy", "__loader__": loader}
    if loader == "LossNode":
        node |= {"__reduce__": {"args": _args(str(marker), "x")}, "content": _args()}
    else:
        node["content"] = _args(str(marker), "x")
    _forged_skops(folder / "model" / "model.skops", node)
    _reseal(folder)
    _refused_then_runs_when_trusted(folder, marker)


def _random_forest() -> object:
    from sklearn.ensemble import RandomForestClassifier

    return RandomForestClassifier(n_estimators=3, random_state=0)


def _gradient_boosting() -> object:
    from sklearn.ensemble import GradientBoostingClassifier

    return GradientBoostingClassifier(n_estimators=3)


def _hist_gradient_boosting() -> object:
    from sklearn.ensemble import HistGradientBoostingClassifier

    return HistGradientBoostingClassifier(max_iter=3)


def _neighbours() -> object:
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer, StandardScaler

    return make_pipeline(
        FunctionTransformer(np.log1p), StandardScaler(), KNeighborsClassifier(algorithm="kd_tree")
    )


def _lightgbm() -> object:
    lightgbm = pytest.importorskip("lightgbm")
    return lightgbm.LGBMClassifier(n_estimators=3, verbose=-1)


@pytest.mark.parametrize(
    "make",
    [_random_forest, _gradient_boosting, _hist_gradient_boosting, _neighbours, _lightgbm],
)
def test_common_estimators_stay_safe(make: Callable[[], Any], tmp_path: Path) -> None:
    # the types skops does not trust itself that these hold (trees, tree predictors,
    # KD trees, distance metrics, LightGBM's wrappers) are classes built from state
    model = make()
    manifest = save_package(model.fit(X, Y), tmp_path / "package")
    assert manifest.pickled is False
    _, native = load_package(tmp_path / "package")
    np.testing.assert_array_equal(native.predict(X), model.predict(X))  # type: ignore[attr-defined]
