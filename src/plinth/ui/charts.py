"""Chart specs: what ``plinth.js`` draws (see its header), built on the server.

A page links a chart with ``ui.chart(url, alt)``; the route at ``url`` answers
``chart(...)`` of some series. Series are columns: x and y lists of one length, x
ascending (uPlot's rule; ``points`` series may share x values).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal

from fastapi.responses import JSONResponse

Style = Literal["line", "points", "bars"]


def series(
    label: str, x: Sequence[float], y: Sequence[float | None], style: Style = "line"
) -> dict[str, Any]:
    if len(x) != len(y):
        raise ValueError(f"series {label!r}: {len(x)} x values but {len(y)} y values")
    finite = [v if v is None or math.isfinite(v) else None for v in y]  # gaps, not JSON errors
    return {"label": label, "x": list(x), "y": finite, "style": style}


def chart(
    drawn: list[dict[str, Any]],
    x_label: str = "",
    y_label: str = "",
    *,
    x_time: bool = False,
    empty: str = "No data to draw.",
) -> JSONResponse:
    """The answer of a chart's route. ``x_time``: x is seconds since the epoch."""
    spec = {"x_label": x_label, "y_label": y_label, "x_time": x_time, "series": drawn}
    return JSONResponse(spec | {"empty": empty}, headers={"cache-control": "no-store"})
