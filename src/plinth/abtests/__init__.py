"""Online experiments between models: design, assignment, routing, events, statistics.

Embedded mode (``plinth.abtests.embedded``) is here as ``assign`` and ``Predictor``; it
loads on first use, so importing this package stays cheap."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from plinth.abtests.embedded import Predictor


def assign(experiment: str, unit_id: str | int) -> str:
    """The arm of ``experiment`` that serves ``unit_id``, exactly as ``plinth router``
    assigns it (see ``plinth.abtests.embedded.assign``)."""
    from plinth.abtests.embedded import assign as embedded_assign

    return embedded_assign(experiment, unit_id)


__all__ = ["Predictor", "assign"]


def __getattr__(name: str) -> Any:
    if name == "Predictor":
        from plinth.abtests.embedded import Predictor

        return Predictor
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
