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
    label: str,
    x: Sequence[float],
    y: Sequence[float | None],
    style: Style = "line",
    *,
    lower: Sequence[float | None] | None = None,
    upper: Sequence[float | None] | None = None,
) -> dict[str, Any]:
    """``lower``/``upper``: an interval around each y, drawn as error bars on ``points``
    and as a shaded band along a ``line``."""
    if len(x) != len(y):
        raise ValueError(f"series {label!r}: {len(x)} x values but {len(y)} y values")
    drawn: dict[str, Any] = {"label": label, "x": list(x), "y": _finite(y), "style": style}
    if (lower is None) != (upper is None):
        raise ValueError(f"series {label!r}: give both lower and upper, or neither")
    if lower is not None and upper is not None:
        if not len(lower) == len(upper) == len(x):
            raise ValueError(f"series {label!r}: lower, upper and x differ in length")
        drawn.update(lower=_finite(lower), upper=_finite(upper))
    return drawn


def _finite(values: Sequence[float | None]) -> list[float | None]:
    return [v if v is None or math.isfinite(v) else None for v in values]  # gaps, not errors


def chart(
    drawn: list[dict[str, Any]],
    x_label: str = "",
    y_label: str = "",
    *,
    x_time: bool = False,
    empty: str = "No data to draw.",
) -> JSONResponse:
    """The answer of a chart's route. ``x_time``: x is seconds since the epoch."""
    found = spec(drawn, x_label, y_label, x_time=x_time, empty=empty)
    return JSONResponse(found, headers={"cache-control": "no-store"})


def spec(
    drawn: list[dict[str, Any]],
    x_label: str = "",
    y_label: str = "",
    *,
    x_time: bool = False,
    empty: str = "No data to draw.",
    x_names: dict[float, str] | None = None,
    zero: bool = False,
) -> dict[str, Any]:
    """A chart's spec, as ``chart`` serves it or a page embeds it. ``x_names``: x values
    are categories (ticks named, e.g. arms); ``zero``: a dashed line at y = 0 ("no
    effect") that the y range always includes."""
    found = {"x_label": x_label, "y_label": y_label, "x_time": x_time, "series": drawn}
    if x_names:
        found["x_names"] = [[x, name] for x, name in sorted(x_names.items())]
    if zero:
        found["zero"] = True
    return found | {"empty": empty}
