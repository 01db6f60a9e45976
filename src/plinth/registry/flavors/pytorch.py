"""PyTorch modules, saved whole (architecture and weights) with cloudpickle.

Saving the whole module rather than a ``state_dict`` means a package reloads without the
code that built the network; cloudpickle stores classes defined in ``__main__`` or a
notebook by value, and importable ones by reference.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from plinth.registry.flavors.base import Flavor

_FILE = "model.pt"


class PyTorchFlavor(Flavor):
    name = "pytorch"
    requirements = ("torch", "cloudpickle")

    def handles(self, model: object) -> bool:
        torch = sys.modules.get("torch")
        return torch is not None and isinstance(model, torch.nn.Module)

    def save(self, model: object, folder: Path) -> None:
        import cloudpickle  # type: ignore[import-untyped]
        import torch

        torch.save(model, folder / _FILE, pickle_module=cloudpickle)

    def load(self, folder: Path) -> object:
        import torch

        # weights_only would refuse the module's own classes; the package's sha256s were
        # checked before this runs. Tensors land on the CPU whatever device saved them.
        module = torch.load(folder / _FILE, map_location="cpu", weights_only=False)
        module.eval()
        return module

    def predict(self, model: Any, frame: Any) -> Any:
        import numpy as np
        import torch

        inputs = torch.from_numpy(frame.to_numpy(dtype=np.float32))
        model.eval()
        with torch.no_grad():
            outputs = model(inputs)
        return outputs.detach().cpu().numpy()
