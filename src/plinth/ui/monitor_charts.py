"""The monitoring pages' charts, drawn on the server as inline SVG.

Unlike the uPlot charts of ``charts.py`` (JSON that ``plinth.js`` draws), these need no
script: the same markup shows on a page and in the self-contained file of ``plinth
monitors report``, which opens offline. Each chart is one ``<svg role="img">`` whose
``aria-label`` is its text alternative; the pages show the same figures in tables.

- ``line_chart``: lines over x (time by default) with optional interval bands, dashed
  lines (estimated values) and horizontal rules (thresholds, a validation metric).
- ``histogram_chart``: a reference and a current histogram on shared edges (the reference
  as bars, the current as a step outline), each as shares of its rows.
- ``category_chart``: the same for categories (bars side by side).
- ``status_strip``: one mark per evaluation, coloured by its status.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from markupsafe import Markup, escape

WIDTH = 640
HEIGHT = 260
_LEFT, _RIGHT, _TOP, _BOTTOM = 62, 16, 34, 42
PALETTE = ("#1f5fbf", "#c2410c", "#15803d", "#7c3aed", "#b91c1c", "#0e7490", "#a16207", "#be185d")
RULE_COLOUR = "#5a6472"
STATUS_COLOURS = {"ok": "#1b6e3a", "breach": "#a3261b", "skipped": "#8a96a3", "error": "#8a5a00"}
LOG_FLOOR = 1e-16  # p-values below this are drawn at it


@dataclass(frozen=True)
class Line:
    """One series: ``y`` (None: a gap) at ``x``; ``lower``/``upper`` an interval drawn as a
    band; ``dashed`` for estimated values; ``marked`` fills the points that are flagged
    (e.g. drifted) and leaves the others hollow."""

    label: str
    x: Sequence[float]
    y: Sequence[float | None]
    lower: Sequence[float | None] | None = None
    upper: Sequence[float | None] | None = None
    dashed: bool = False
    marked: Sequence[bool] | None = None
    colour: str = ""

    def __post_init__(self) -> None:
        for name in ("y", "lower", "upper", "marked"):
            values = getattr(self, name)
            if values is not None and len(values) != len(self.x):
                raise ValueError(
                    f"line {self.label!r}: {len(self.x)} x values but {name} has {len(values)}"
                )


@dataclass(frozen=True)
class Rule:
    """A horizontal line across the chart, e.g. a threshold."""

    label: str
    y: float
    colour: str = RULE_COLOUR


# -- scales ------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Scale:
    lo: float
    hi: float
    start: float  # pixels
    end: float
    log: bool = False

    def __call__(self, value: float) -> float:
        v = math.log10(max(value, LOG_FLOOR)) if self.log else value
        lo, hi = (math.log10(self.lo), math.log10(self.hi)) if self.log else (self.lo, self.hi)
        share = 0.5 if hi == lo else (v - lo) / (hi - lo)
        return round(self.start + share * (self.end - self.start), 2)


def nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """Round values from about ``lo`` to ``hi`` (1, 2 or 5 times a power of ten apart)."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return []
    if hi <= lo:
        return [lo]
    raw = (hi - lo) / max(count, 1)
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    first = math.ceil(lo / step - 1e-9)
    ticks = []
    k = first
    while k * step <= hi + step * 1e-9:
        ticks.append(round(k * step, 12))
        k += 1
    return ticks


def _padded(values: list[float], *, zero: bool = False) -> tuple[float, float]:
    lo, hi = min(values), max(values)
    if zero:
        lo, hi = min(lo, 0.0), max(hi, 0.0)
    if hi == lo:
        pad = abs(hi) * 0.1 or 1.0
        return lo - pad, hi + pad
    pad = (hi - lo) * 0.06
    return (lo if zero and lo == 0 else lo - pad), hi + pad


def _log_range(values: list[float]) -> tuple[float, float]:
    positive = [max(v, LOG_FLOOR) for v in values]
    lo = 10 ** math.floor(math.log10(min(positive)))
    hi = 10 ** math.ceil(math.log10(max(positive)))
    return (lo, hi * 10) if hi == lo else (lo, hi)


def _log_ticks(lo: float, hi: float) -> list[float]:
    low, high = round(math.log10(lo)), round(math.log10(hi))
    stride = max(1, math.ceil((high - low) / 6))
    return [10.0**e for e in range(low, high + 1, stride)]


def format_tick(value: float) -> str:
    if value == 0:
        return "0"
    if abs(value) >= 1e5 or abs(value) < 1e-3:
        return f"{value:.0e}".replace("e-0", "e-").replace("e+0", "e")
    return f"{value:.6g}"


def format_time_tick(seconds: float, step: float) -> str:
    """A time (UTC) as precise as ticks ``step`` seconds apart need."""
    at = datetime.fromtimestamp(seconds, UTC)
    if step >= 86_400:
        return at.strftime("%Y-%m-%d")
    if step >= 3_600:
        return at.strftime("%m-%d %H:%M")
    if step >= 60:
        return at.strftime("%H:%M")
    return at.strftime("%H:%M:%S")


_TIME_STEPS = (1, 5, 15, 30, 60, 300, 900, 1_800, 3_600, 3 * 3_600, 6 * 3_600, 12 * 3_600)
_DAY = 86_400


def time_ticks(lo: float, hi: float, count: int = 5) -> list[tuple[float, str]]:
    """Ticks at round times (UTC) from ``lo`` to ``hi`` (seconds), at most ``count``."""
    span = hi - lo
    steps = [*_TIME_STEPS, *(_DAY * d for d in (1, 2, 7, 14, 30, 91, 182, 365, 730))]
    step = next((s for s in steps if span / s <= count), steps[-1])
    first = math.ceil(lo / step) * step
    ticks = []
    t = float(first)
    while t <= hi:
        ticks.append((t, format_time_tick(t, step)))
        t += step
    return ticks


# -- the pieces of a chart ---------------------------------------------------------------


def _svg(alt: str, title: str, body: list[str]) -> Markup:
    return Markup(
        f'<svg class="mchart" role="img" aria-label="{escape(alt)}" viewBox="0 0 {WIDTH} '
        f'{HEIGHT}" width="100%" preserveAspectRatio="xMidYMid meet" '
        f'font-family="system-ui, sans-serif" '
        f'font-size="11">'
        f"<title>{escape(title)}</title>{''.join(body)}</svg>"
    )


def empty_chart(title: str, message: str = "No data to draw.") -> Markup:
    text = (
        f'<text x="{WIDTH / 2}" y="{HEIGHT / 2}" text-anchor="middle" fill="{RULE_COLOUR}" '
        f'font-size="13">{escape(message)}</text>'
    )
    return _svg(f"{title}: {message}", title, [text])


def _frame() -> str:
    x0, x1, y0, y1 = _LEFT, WIDTH - _RIGHT, _TOP, HEIGHT - _BOTTOM
    return (
        f'<rect x="{x0}" y="{y0}" width="{x1 - x0}" height="{y1 - y0}" fill="#fff" '
        f'stroke="#d5dbe2"/>'
    )


def _y_axis(scale: _Scale, ticks: list[float], label: str) -> list[str]:
    parts = []
    for t in ticks:
        y = scale(t)
        parts.append(
            f'<line x1="{_LEFT}" x2="{WIDTH - _RIGHT}" y1="{y}" y2="{y}" stroke="#eef1f4"/>'
            f'<text x="{_LEFT - 5}" y="{y + 4}" text-anchor="end" fill="#1d232b">'
            f"{escape(format_tick(t))}</text>"
        )
    if label:
        mid = (_TOP + HEIGHT - _BOTTOM) / 2
        parts.append(
            f'<text x="12" y="{mid}" text-anchor="middle" transform="rotate(-90 12 {mid})" '
            f'fill="#5a6472">{escape(label)}</text>'
        )
    return parts


def _x_axis(scale: _Scale, ticks: list[tuple[float, str]], label: str) -> list[str]:
    base = HEIGHT - _BOTTOM
    parts = []
    for v, name in ticks:
        x = scale(v)
        # a label near the right edge ends at its tick instead of running off the chart
        anchor = "end" if x + 3.2 * len(name) > WIDTH - 2 else "middle"
        parts.append(
            f'<line x1="{x}" x2="{x}" y1="{base}" y2="{base + 4}" stroke="#5a6472"/>'
            f'<text x="{x}" y="{base + 16}" text-anchor="{anchor}" fill="#1d232b">'
            f"{escape(name)}</text>"
        )
    if label:
        parts.append(
            f'<text x="{(_LEFT + WIDTH - _RIGHT) / 2}" y="{HEIGHT - 6}" text-anchor="middle" '
            f'fill="#5a6472">{escape(label)}</text>'
        )
    return parts


def _legend(items: list[tuple[str, str, bool, bool]]) -> list[str]:
    """(label, colour, dashed, as a filled box) per item, in a row above the plot."""
    parts: list[str] = []
    x = float(_LEFT)
    for label, colour, dashed, box in items:
        if box:
            sample = (
                f'<rect x="{x}" y="9" width="16" height="10" fill="{colour}" '
                f'fill-opacity="0.45" stroke="{colour}"/>'
            )
        else:
            dash = ' stroke-dasharray="5 3"' if dashed else ""
            sample = (
                f'<line x1="{x}" x2="{x + 16}" y1="14" y2="14" stroke="{colour}" '
                f'stroke-width="2"{dash}/>'
            )
        shown = label if len(label) <= 28 else label[:27] + "…"
        parts.append(
            f'<g class="legend-item">{sample}<text x="{x + 20}" y="18" fill="#1d232b">'
            f"{escape(shown)}</text></g>"
        )
        x += 28 + 6.2 * len(shown)
        if x > WIDTH - 60:
            break  # the rest are named in the text alternative and the tables
    return parts


def _runs(points: list[tuple[float, float | None]]) -> list[list[tuple[float, float]]]:
    """The unbroken runs of points (None breaks a line)."""
    runs: list[list[tuple[float, float]]] = [[]]
    for x, y in points:
        if y is None or not math.isfinite(y):
            if runs[-1]:
                runs.append([])
        else:
            runs[-1].append((x, y))
    return [r for r in runs if r]


def _finite(values: Sequence[float | None] | None) -> list[float]:
    return [v for v in values or () if v is not None and math.isfinite(v)]


# -- charts ------------------------------------------------------------------------------


def line_chart(
    lines: Sequence[Line],
    *,
    title: str,
    x_label: str = "",
    y_label: str = "",
    rules: Sequence[Rule] = (),
    x_time: bool = True,
    log_y: bool = False,
    zero: bool = False,
    empty: str = "No data to draw.",
) -> Markup:
    """Lines over x (seconds since the epoch when ``x_time``), each with its band; rules
    across. ``log_y`` for p-values; ``zero`` keeps 0 in the y range."""
    xs = [float(x) for line in lines for x, y in zip(line.x, line.y, strict=True) if y is not None]
    ys = [
        v for line in lines for v in (*_finite(line.y), *_finite(line.lower), *_finite(line.upper))
    ]
    if not xs or not ys:
        return empty_chart(title, empty)
    ys += [r.y for r in rules if math.isfinite(r.y)]
    if log_y:
        y_lo, y_hi = _log_range(ys)
    else:
        y_lo, y_hi = _padded(ys, zero=zero)
    x_lo, x_hi = min(xs), max(xs)
    if x_lo == x_hi:
        x_lo, x_hi = x_lo - 1, x_hi + 1
    x_scale = _Scale(x_lo, x_hi, _LEFT + 8, WIDTH - _RIGHT - 8)
    y_scale = _Scale(y_lo, y_hi, HEIGHT - _BOTTOM, _TOP, log=log_y)
    y_ticks = _log_ticks(y_lo, y_hi) if log_y else nice_ticks(y_lo, y_hi)
    y_ticks = [t for t in y_ticks if y_lo <= t <= y_hi]
    if x_time:
        x_ticks = time_ticks(x_lo, x_hi) or [(x_lo, format_time_tick(x_lo, 1))]
    else:
        x_ticks = [(t, format_tick(t)) for t in nice_ticks(x_lo, x_hi, 6) if x_lo <= t <= x_hi]
    body = [_frame(), *_y_axis(y_scale, y_ticks, y_label), *_x_axis(x_scale, x_ticks, x_label)]
    legend: list[tuple[str, str, bool, bool]] = []
    for i, line in enumerate(lines):
        colour = line.colour or PALETTE[i % len(PALETTE)]
        body += _band(line, colour, x_scale, y_scale)
        body += _path(line, colour, x_scale, y_scale)
        legend.append((line.label, colour, line.dashed, False))
    for rule in rules:
        if not math.isfinite(rule.y):
            continue
        y = y_scale(rule.y)
        body.append(
            f'<line class="rule" x1="{_LEFT}" x2="{WIDTH - _RIGHT}" y1="{y}" y2="{y}" '
            f'stroke="{rule.colour}" stroke-width="1.5" stroke-dasharray="2 3"/>'
        )
        legend.append((rule.label, rule.colour, True, False))
    body += _legend(legend)
    return _svg(_line_alt(title, lines, rules), title, body)


def _band(line: Line, colour: str, xs: _Scale, ys: _Scale) -> list[str]:
    if line.lower is None or line.upper is None:
        return []
    parts = []
    run: list[tuple[float, float, float]] = []
    triples = zip(line.x, line.lower, line.upper, strict=True)
    for x, lo, hi in [*triples, (math.nan, None, None)]:
        if lo is not None and hi is not None and math.isfinite(lo) and math.isfinite(hi):
            run.append((float(x), lo, hi))
            continue
        if run:
            if len(run) == 1:  # one window: an error bar
                x1, lo1, hi1 = run[0]
                parts.append(
                    f'<line class="band" x1="{xs(x1)}" x2="{xs(x1)}" y1="{ys(lo1)}" '
                    f'y2="{ys(hi1)}" stroke="{colour}" stroke-width="6" stroke-opacity="0.25"/>'
                )
            else:
                upper = " ".join(f"{xs(x)},{ys(hi)}" for x, _, hi in run)
                lower = " ".join(f"{xs(x)},{ys(lo)}" for x, lo, _ in reversed(run))
                parts.append(
                    f'<polygon class="band" points="{upper} {lower}" fill="{colour}" '
                    f'fill-opacity="0.16" stroke="none"/>'
                )
            run = []
    return parts


def _path(line: Line, colour: str, xs: _Scale, ys: _Scale) -> list[str]:
    dash = ' stroke-dasharray="6 4"' if line.dashed else ""
    parts = []
    for run in _runs([(float(x), y) for x, y in zip(line.x, line.y, strict=True)]):
        if len(run) > 1:
            points = " ".join(f"{xs(x)},{ys(y)}" for x, y in run)
            parts.append(
                f'<polyline class="series" points="{points}" fill="none" stroke="{colour}" '
                f'stroke-width="2"{dash}/>'
            )
    marked = line.marked or [False] * len(line.x)
    for x, y, flagged in zip(line.x, line.y, marked, strict=True):
        if y is None or not math.isfinite(y):
            continue
        fill = colour if flagged or not line.marked else "#fff"
        parts.append(
            f'<circle cx="{xs(float(x))}" cy="{ys(y)}" r="{3.5 if flagged else 2.5}" '
            f'fill="{fill}" stroke="{colour}" stroke-width="1.5"/>'
        )
    return parts


def _line_alt(title: str, lines: Sequence[Line], rules: Sequence[Rule]) -> str:
    described = []
    for line in lines:
        values = _finite(line.y)
        if not values:
            continue
        kind = " (estimated)" if line.dashed else ""
        described.append(
            f"{line.label}{kind}: {len(values)} points from {format_tick(min(values))} "
            f"to {format_tick(max(values))}, last {format_tick(values[-1])}"
        )
    described += [f"{r.label} at {format_tick(r.y)}" for r in rules if math.isfinite(r.y)]
    return f"{title}. " + "; ".join(described)


def histogram_chart(
    edges: Sequence[float],
    reference: Sequence[float],
    current: Sequence[float],
    *,
    title: str,
    x_label: str = "",
    names: tuple[str, str] = ("reference", "current"),
    x_time: bool = False,
) -> Markup:
    """Two histograms on the same ``edges`` (``len(edges) == len(counts) + 1``), each as
    shares of its total: the reference as bars, the current as a step outline over them."""
    if len(edges) != len(reference) + 1 or len(reference) != len(current):
        raise ValueError(
            f"histogram {title!r}: {len(edges)} edges for {len(reference)} and "
            f"{len(current)} counts (give one edge more than counts)"
        )
    ref, cur = _shares(reference), _shares(current)
    if not edges or (not any(ref) and not any(cur)):
        return empty_chart(title, "No values to draw.")
    x_scale = _Scale(float(edges[0]), float(edges[-1]), _LEFT + 4, WIDTH - _RIGHT - 4)
    top = max(max(ref, default=0.0), max(cur, default=0.0))
    y_scale = _Scale(0.0, top * 1.08 or 1.0, HEIGHT - _BOTTOM, _TOP)
    y_ticks = [t for t in nice_ticks(0.0, top * 1.08 or 1.0, 4)]
    if x_time:
        x_ticks = time_ticks(float(edges[0]), float(edges[-1]))
    else:
        x_ticks = [
            (t, format_tick(t))
            for t in nice_ticks(float(edges[0]), float(edges[-1]), 6)
            if edges[0] <= t <= edges[-1]
        ]
    body = [
        _frame(),
        *_y_axis(y_scale, y_ticks, "share of rows"),
        *_x_axis(x_scale, x_ticks, x_label),
    ]
    ref_colour, cur_colour = PALETTE[0], PALETTE[1]
    base = y_scale(0.0)
    for lo, hi, share in zip(edges[:-1], edges[1:], ref, strict=True):
        if share <= 0:
            continue
        x0, x1, y = x_scale(float(lo)), x_scale(float(hi)), y_scale(share)
        body.append(
            f'<rect class="ref-bar" x="{x0}" y="{y}" width="{max(x1 - x0, 0.5):.2f}" '
            f'height="{base - y:.2f}" fill="{ref_colour}" fill-opacity="0.45" '
            f'stroke="{ref_colour}" stroke-width="0.5"/>'
        )
    steps = [f"{x_scale(float(edges[0]))},{base}"]
    for lo, hi, share in zip(edges[:-1], edges[1:], cur, strict=True):
        y = y_scale(share)
        steps += [f"{x_scale(float(lo))},{y}", f"{x_scale(float(hi))},{y}"]
    steps.append(f"{x_scale(float(edges[-1]))},{base}")
    body.append(
        f'<polyline class="cur-step" points="{" ".join(steps)}" fill="none" '
        f'stroke="{cur_colour}" stroke-width="2"/>'
    )
    body += _legend([(names[0], ref_colour, False, True), (names[1], cur_colour, False, False)])
    alt = (
        f"{title}. {len(reference)} bins from {format_tick(float(edges[0]))} to "
        f"{format_tick(float(edges[-1]))}; {_mode_text(names[0], edges, ref)}; "
        f"{_mode_text(names[1], edges, cur)}"
    )
    return _svg(alt, title, body)


def _shares(counts: Sequence[float]) -> list[float]:
    total = float(sum(counts))
    return [float(c) / total if total > 0 else 0.0 for c in counts]


def _mode_text(name: str, edges: Sequence[float], shares: list[float]) -> str:
    if not any(shares):
        return f"{name}: no values"
    k = max(range(len(shares)), key=lambda i: shares[i])
    return (
        f"{name} peaks at [{format_tick(float(edges[k]))}, {format_tick(float(edges[k + 1]))}) "
        f"with {shares[k]:.1%} of its rows"
    )


def category_chart(
    categories: Sequence[str],
    reference: Sequence[float],
    current: Sequence[float],
    *,
    title: str,
    x_label: str = "",
    names: tuple[str, str] = ("reference", "current"),
) -> Markup:
    """The shares of each category in the reference and the current data, side by side."""
    if not len(categories) == len(reference) == len(current):
        raise ValueError(
            f"categories {title!r}: {len(categories)} names for {len(reference)} and "
            f"{len(current)} counts"
        )
    ref, cur = _shares(reference), _shares(current)
    if not categories or (not any(ref) and not any(cur)):
        return empty_chart(title, "No values to draw.")
    top = max(max(ref), max(cur)) * 1.08 or 1.0
    y_scale = _Scale(0.0, top, HEIGHT - _BOTTOM, _TOP)
    slot = (WIDTH - _RIGHT - _LEFT) / len(categories)
    base = y_scale(0.0)
    body = [_frame(), *_y_axis(y_scale, nice_ticks(0.0, top, 4), "share of rows")]
    colours = (PALETTE[0], PALETTE[1])
    for k, name in enumerate(categories):
        left = _LEFT + k * slot
        for j, share in enumerate((ref[k], cur[k])):
            y = y_scale(share)
            body.append(
                f'<rect class="{("ref", "cur")[j]}-bar" x="{left + slot * (0.1 + 0.4 * j):.2f}" '
                f'y="{y}" width="{slot * 0.4:.2f}" height="{base - y:.2f}" fill="{colours[j]}" '
                f'fill-opacity="{0.45 if j == 0 else 0.8}"/>'
            )
        shown = (
            name
            if len(name) <= max(int(slot / 6.5), 3)
            else name[: max(int(slot / 6.5), 3) - 1] + "…"
        )
        body.append(
            f'<text x="{left + slot / 2:.2f}" y="{base + 16}" text-anchor="middle" '
            f'fill="#1d232b">{escape(shown)}</text>'
        )
    if x_label:
        body += _x_axis(_Scale(0, 1, _LEFT, WIDTH - _RIGHT), [], x_label)
    body += _legend([(names[0], colours[0], False, True), (names[1], colours[1], False, True)])
    pairs = ", ".join(
        f"{c} {r:.1%} → {s:.1%}" for c, r, s in zip(categories, ref, cur, strict=True)
    )
    return _svg(f"{title}. Share of rows, {names[0]} → {names[1]}: {pairs}", title, body)


def status_strip(times: Sequence[float], statuses: Sequence[str], *, title: str) -> Markup:
    """One mark per evaluation at its time (seconds since the epoch), coloured by status."""
    if len(times) != len(statuses):
        raise ValueError(f"status strip: {len(times)} times but {len(statuses)} statuses")
    if not times:
        return empty_chart(title, "No evaluations yet.")
    height = 70
    lo, hi = min(times), max(times)
    if lo == hi:
        lo, hi = lo - 1, hi + 1
    scale = _Scale(lo, hi, _LEFT + 8, WIDTH - _RIGHT - 8)
    parts = [
        f'<line x1="{_LEFT}" x2="{WIDTH - _RIGHT}" y1="30" y2="30" stroke="#d5dbe2"/>',
    ]
    for t, status in zip(times, statuses, strict=True):
        colour = STATUS_COLOURS.get(status, RULE_COLOUR)
        parts.append(
            f'<rect class="status-mark status-{escape(status)}" x="{scale(t) - 3}" y="18" '
            f'width="6" height="24" fill="{colour}"><title>{escape(status)} at '
            f"{datetime.fromtimestamp(t, UTC):%Y-%m-%d %H:%M:%S} UTC</title></rect>"
        )
    step = 1.0 if hi - lo < 86_400 else 3_600.0
    first, last = min(times), max(times)
    # the first and last times, or one label when they would read the same
    ends = (
        [(first, "start"), (last, "end")]
        if last - first >= 60
        else [((first + last) / 2, "middle")]
    )
    for t, anchor in ends:
        parts.append(
            f'<text x="{scale(t)}" y="58" text-anchor="{anchor}" fill="#1d232b">'
            f"{escape(format_time_tick(t, step))} UTC</text>"
        )
    counts = {s: list(statuses).count(s) for s in dict.fromkeys(statuses)}
    summary = ", ".join(f"{n} {s}" for s, n in counts.items())
    alt = f"{title}: {len(times)} evaluations ({summary}); the last {statuses[-1]}"
    return Markup(
        str(_svg(alt, title, parts)).replace(f"0 0 {WIDTH} {HEIGHT}", f"0 0 {WIDTH} {height}", 1)
    )
