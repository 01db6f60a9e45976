"""PyTorch modules, exported with ``torch.export`` into a ``.pt2`` archive: no pickle.

Why this format: a module pickled whole (``torch.save(module)``) reloads only by
unpickling, which runs code from whoever saved it, and ``weights_only=True`` refuses the
module's own classes. A ``state_dict`` loads safely but needs the code that builds the
network, which the serving process does not have. ``torch.export`` writes the network as
a graph of ATen operators (JSON) and its weights as raw tensor bytes, so it reloads
without the user's classes and without running their code; TorchScript would too, but it
is deprecated and needs the module's source at save time. Export traces the module on an
input, which the package's signature gives (one float32 column per input, any number of
rows), in eval mode, as predictions are made.

``torch.export.load`` still unpickles parts of an archive it is given (pickled tensors,
custom objects, legacy ``data/weights/<model>.pt`` and ``data/constants/<model>.pt``
parts, sample inputs it falls back to loading with ``weights_only=False``), loads compiled
AOTInductor libraries, and evals each symbolic shape of the model's JSON with
``sympy.sympify``. So an archive counts as safe only when its part names are exactly the
ones a plain export writes (the configs, and the raw tensor files they reference, none
marked pickled), its sample inputs load with ``weights_only=True`` and its symbolic
shapes are plain shape arithmetic; anything else needs the caller's trust.

A module export cannot trace (data-dependent control flow), or one saved without a
signature or input example, is pickled whole with cloudpickle as before, and loading it
needs trust.
"""

from __future__ import annotations

import ast
import io
import json
import logging
import re
import sys
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from plinth.registry.flavors.base import Flavor

if TYPE_CHECKING:
    from plinth.registry.types import Signature

_EXPORTED = "model.pt2"
_PICKLED = "model.pt"  # modules export cannot take, and packages before export
# the parts of a plain export's archive below its root folder that hold no data
_FIXED_PARTS = frozenset(
    {"archive_format", "archive_version", "byteorder", ".data/version", ".data/serialization_id"}
)
_NAME = re.compile(r"[A-Za-z0-9_]+")  # a root folder or model name a plain export writes
# raw tensor bytes, read without unpickling when the config says use_pickle false; custom
# and opaque objects, and tensors marked use_pickle, are pickles
_RAW_WEIGHT = re.compile(r"weight_[0-9]+")
_RAW_CONSTANT = re.compile(r"tensor_[0-9]+")
# torch.export.load parses each symbolic shape (``expr_str``) of a model's JSON with
# sympy.sympify, which evals the string: only sympy's printed form of shape arithmetic
# (calls of these constructors on symbols, numbers and names) is let through
_SYMPY_CALLS = frozenset(
    {
        "Symbol", "Integer", "Rational", "Float", "Add", "Mul", "Pow", "Mod", "Max", "Min",
        "FloorDiv", "ModularIndexing", "Where", "PythonMod", "CleanDiv", "CeilToInt",
        "FloorToInt", "CeilDiv", "IntTrueDiv", "FloatTrueDiv", "ToFloat", "TruncToInt",
        "RoundToInt", "RoundDecimal", "Identity", "Eq", "Ne", "Lt", "Le", "Gt", "Ge",
        "And", "Or", "Not",
    }
)  # fmt: skip
_SYMBOL = re.compile(r"[a-z]+[0-9]+|oo")  # torch's symbol names (s77, u0) and infinity
_EXPR_NODES = (
    ast.Expression, ast.Call, ast.Name, ast.Load, ast.Constant, ast.keyword, ast.UnaryOp,
    ast.USub, ast.UAdd, ast.BinOp, ast.Add, ast.Sub, ast.Mult, ast.Div, ast.FloorDiv,
    ast.Mod, ast.Pow,
)  # fmt: skip

_log = logging.getLogger(__name__)


class PyTorchFlavor(Flavor):
    name = "pytorch"
    requirements = ("torch", "cloudpickle")

    def handles(self, model: object) -> bool:
        # torch may be half imported by another thread (sys.modules holds it from the
        # start of its import): a model of it exists only once torch.nn does
        nn = getattr(sys.modules.get("torch"), "nn", None)
        module = getattr(nn, "Module", None)
        return module is not None and isinstance(model, module)

    def save(self, model: object, folder: Path) -> None:
        import cloudpickle  # type: ignore[import-untyped]
        import torch

        torch.save(model, folder / _PICKLED, pickle_module=cloudpickle)

    def save_with_signature(self, model: object, folder: Path, signature: Signature | None) -> None:
        if signature is None or not signature.inputs:
            _log.info("pickling the module: without a signature there is no input to export on")
            return self.save(model, folder)
        try:
            _export(model, len(signature.inputs), folder / _EXPORTED)
        except Exception as exc:
            (folder / _EXPORTED).unlink(missing_ok=True)
            _log.info("pickling the module: torch.export could not trace it (%s)", exc)
            self.save(model, folder)

    def pickled(self, folder: Path) -> bool:
        exported = folder / _EXPORTED
        return not exported.is_file() or not _plain_export(exported)

    def load(self, folder: Path) -> object:
        import torch

        exported = folder / _EXPORTED
        if exported.is_file():
            return torch.export.load(exported).module()
        # Tensors land on the CPU whatever device saved them.
        module = torch.load(folder / _PICKLED, map_location="cpu", weights_only=False)
        module.eval()
        return module

    def predict(self, model: Any, frame: Any) -> Any:
        import numpy as np
        import torch

        inputs = torch.from_numpy(frame.to_numpy(dtype=np.float32))
        if not isinstance(model, torch.fx.GraphModule):  # an export is always in eval mode
            model.eval()
        with torch.no_grad():
            outputs = model(inputs)
        return outputs.detach().cpu().numpy()


def _export(model: Any, columns: int, path: Path) -> None:
    import torch

    training = model.training
    model.eval()
    try:
        # two rows: export specialises a dimension of size 0 or 1 to that size
        example = torch.zeros(2, columns, dtype=torch.float32)
        batch = torch.export.Dim("rows")
        program = torch.export.export(model, (example,), dynamic_shapes=({0: batch},))
        torch.export.save(program, path)
    finally:
        model.train(training)


def _plain_export(path: Path) -> bool:
    """True when the archive holds exactly what a plain export writes, as the docstring
    says. An allow-list of whole names: torch reads other names than these (the legacy
    ``data/weights/<model>.pt``, which it unpickles, among them) and may read more in a
    later version, so anything unrecognised counts as pickled."""
    try:
        with zipfile.ZipFile(path) as archive:
            return _plain_archive(archive)
    except Exception:  # unreadable or malformed in any way: not shown to be safe
        return False


def _plain_archive(archive: zipfile.ZipFile) -> bool:
    names = archive.namelist()
    # a duplicated name may be read from one entry here and another by torch's reader
    if not names or len(set(names)) != len(names):
        return False
    root = names[0].split("/", 1)[0]
    if not _NAME.fullmatch(root) or not all(name.startswith(f"{root}/") for name in names):
        return False  # torch reads below one root folder; its old format reads the top
    inner = {name[len(root) + 1 :]: name for name in names}
    models = [
        part[len("models/") : -len(".json")]
        for part in inner
        if part.startswith("models/") and part.endswith(".json")
    ]
    if not models or not all(_NAME.fullmatch(model) for model in models):
        return False
    expected = set(_FIXED_PARTS & inner.keys()) | {"archive_version"}
    for model in models:
        weights = f"data/weights/{model}_weights_config.json"
        constants = f"data/constants/{model}_constants_config.json"
        sample = f"data/sample_inputs/{model}.pt"
        expected |= {f"models/{model}.json", weights, constants, sample}
        if not {weights, constants, sample} <= inner.keys():
            return False
        if not _plain_expressions(json.loads(archive.read(inner[f"models/{model}.json"]))):
            return False
        # raw parts only: the legacy data/weights/<model>.pt and data/constants/<model>.pt,
        # which torch unpickles, never match these names
        for config, folder, raw in (
            (weights, "data/weights", _RAW_WEIGHT),
            (constants, "data/constants", _RAW_CONSTANT),
        ):
            parts = _raw_parts(archive.read(inner[config]), raw)
            if parts is None:
                return False
            expected |= {f"{folder}/{part}" for part in parts}
        # torch loads sample inputs weights_only=True and, when that fails, unpickles them
        if not _loads_weights_only(archive.read(inner[sample])):
            return False
    return inner.keys() == expected


def _plain_expressions(program: object) -> bool:
    """True when every symbolic shape in a model's JSON is plain shape arithmetic."""
    stack = [program]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            expr = item.get("expr_str")
            if expr is not None and not (isinstance(expr, str) and _plain_expression(expr)):
                return False
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return True


def _plain_expression(expr: str) -> bool:
    try:
        tree = ast.parse(expr, mode="eval")
    except (SyntaxError, ValueError):
        return False
    calls = {id(node.func) for node in ast.walk(tree) if isinstance(node, ast.Call)}
    for node in ast.walk(tree):
        if not isinstance(node, _EXPR_NODES):
            return False  # attributes, subscripts, lambdas, comprehensions...
        if isinstance(node, ast.Call) and (
            not isinstance(node.func, ast.Name) or node.func.id not in _SYMPY_CALLS
        ):
            return False
        if isinstance(node, ast.Name) and id(node) not in calls and not _SYMBOL.fullmatch(node.id):
            return False
        if isinstance(node, ast.keyword) and (
            node.arg is None or not isinstance(node.value, ast.Constant)
        ):
            return False
        if isinstance(node, ast.Constant) and not (
            isinstance(node.value, (int, float))
            or (isinstance(node.value, str) and _NAME.fullmatch(node.value))
        ):
            return False
    return True


def _raw_parts(config_json: bytes, raw: re.Pattern[str]) -> set[str] | None:
    """The raw tensor files a payload config names, or None when any entry is a pickle
    or names anything but a raw tensor file."""
    config = json.loads(config_json)
    entries = config.get("config") if isinstance(config, dict) else None
    if not isinstance(entries, dict):
        return None
    parts: set[str] = set()
    for entry in entries.values():
        if not isinstance(entry, dict) or entry.get("use_pickle") is not False:
            return None
        path_name = entry.get("path_name")
        if not isinstance(path_name, str) or not raw.fullmatch(path_name):
            return None
        if not isinstance(entry.get("tensor_meta"), dict):
            return None
        parts.add(path_name)
    return parts


def _loads_weights_only(raw: bytes) -> bool:
    import torch

    try:
        torch.load(io.BytesIO(raw), weights_only=True)
    except Exception:
        return False
    return True
