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
custom objects, sample inputs it falls back to loading with ``weights_only=False``) and
loads compiled AOTInductor libraries. So an archive counts as safe only when it holds
nothing but the parts a plain export writes, no part is marked pickled, and every ``.pt``
part loads with ``weights_only=True``; anything else needs the caller's trust.

A module export cannot trace (data-dependent control flow), or one saved without a
signature or input example, is pickled whole with cloudpickle as before, and loading it
needs trust.
"""

from __future__ import annotations

import io
import json
import logging
import sys
import zipfile
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from plinth.registry.flavors.base import Flavor

if TYPE_CHECKING:
    from plinth.registry.types import Signature

_EXPORTED = "model.pt2"
_PICKLED = "model.pt"  # modules export cannot take, and packages before export
# the parts of a plain export's archive, below its root folder
_PLAIN_PARTS = (
    "archive_format",
    "archive_version",
    "byteorder",
    ".data/version",
    ".data/serialization_id",
)
_RAW = ("weight_", "tensor_")  # raw tensor bytes; custom and opaque objects are pickles

_log = logging.getLogger(__name__)


class PyTorchFlavor(Flavor):
    name = "pytorch"
    requirements = ("torch", "cloudpickle")

    def handles(self, model: object) -> bool:
        torch = sys.modules.get("torch")
        return torch is not None and isinstance(model, torch.nn.Module)

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
    """True when the archive holds only what a plain export writes, as the docstring says."""
    try:
        with zipfile.ZipFile(path) as archive:
            return all(_plain_part(archive, name) for name in archive.namelist())
    except (zipfile.BadZipFile, OSError, ValueError, KeyError):
        return False


def _plain_part(archive: zipfile.ZipFile, name: str) -> bool:
    parts = PurePosixPath(name).parts
    if len(parts) < 2 or ".." in parts:
        return False
    inner = "/".join(parts[1:])  # below the archive's root folder
    if inner in _PLAIN_PARTS:
        return True
    folder, _, file = inner.rpartition("/")
    if folder == "models":
        return file.endswith(".json")
    if folder == "data/sample_inputs":
        return file.endswith(".pt") and _loads_weights_only(archive.read(name))
    if folder not in ("data/weights", "data/constants"):
        return False  # AOTInductor libraries, extra files, anything new
    if file.endswith("_config.json"):
        config = json.loads(archive.read(name)).get("config", {})
        return all(
            not entry.get("use_pickle", True) and str(entry.get("path_name", "")).startswith(_RAW)
            for entry in config.values()
        )
    return file.startswith(_RAW)  # raw tensor bytes, read by the config above


def _loads_weights_only(raw: bytes) -> bool:
    import torch

    try:
        torch.load(io.BytesIO(raw), weights_only=True)
    except Exception:
        return False
    return True
