"""On-demand transformations: unpickled once, and the cache of unpickled functions bounded."""

from __future__ import annotations

from typing import Any

import pytest

from plinth.features import transform
from plinth.features.transform import transformation


def _scaled(factor: int) -> Any:
    def scaled(frame: Any) -> Any:
        return frame["x"] * factor

    return transformation(scaled, ["x"], {f"x{factor}": "float64"}, name=f"x{factor}")


def test_unpickled_functions_are_kept_for_the_latest_used_only(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(transform, "LOADED_MAX", 3)
    monkeypatch.setattr(transform, "_loaded", transform.OrderedDict())
    made = [_scaled(factor) for factor in range(5)]
    first = transform._function(made[0])
    assert transform._function(made[0]) is first  # unpickled once
    for t in made[1:]:
        transform._function(t)
        transform._function(made[0])  # used again: stays
    assert len(transform._loaded) == 3
    assert list(transform._loaded) == [made[3].code, made[4].code, made[0].code]
    assert transform._function(made[0]) is first
    assert transform._function(made[1]) is not None  # dropped, so unpickled again
    assert made[2].code not in transform._loaded
