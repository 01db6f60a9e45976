"""A histogram on a fixed, aligned grid of power-of-two width: two always merge exactly."""

from __future__ import annotations

import base64
import math
import zlib
from dataclasses import dataclass
from typing import Any

import numpy as np

MAX_BINS = 16_384  # coarser (double width) rather than more bins: heavy tails stay bounded
TARGET_BINS_PER_SPREAD = 512  # width about 1/512 of the interquartile range
_MIN_EXP, _MAX_EXP = -1074, 1023
MAX_INDEX_BITS = 52  # |value| / width < 2**52: bin indices exact in floats and int64


@dataclass
class Histogram:
    """Counts of finite values on a fixed grid: bin i covers [(offset+i)*width,
    (offset+i+1)*width); width is a power of two, so two histograms always merge exactly
    (the finer one is coarsened to the wider width)."""

    width: float
    offset: int
    counts: np.ndarray  # int64, dense from offset

    def edges(self) -> np.ndarray:
        return (self.offset + np.arange(len(self.counts) + 1, dtype=np.float64)) * self.width

    def total(self) -> int:
        return int(self.counts.sum())

    def merge(self, other: Histogram) -> Histogram:
        if not len(other.counts) or not len(self.counts):  # an empty one has no grid to keep
            return self if len(self.counts) else other
        width = max(self.width, other.width)
        low, high = self.coarsened(width), other.coarsened(width)
        first = min(low.offset, high.offset)
        last = max(low.offset + len(low.counts), high.offset + len(high.counts)) - 1
        shift = _shift_to_fit(first, last, MAX_BINS)  # before allocating: far apart is huge
        if shift:
            width *= 2.0**shift
            low, high = low.coarsened(width), high.coarsened(width)
        start = min(low.offset, high.offset)
        stop = max(low.offset + len(low.counts), high.offset + len(high.counts))
        counts = np.zeros(stop - start, dtype=np.int64)
        for part in (low, high):
            at = part.offset - start
            counts[at : at + len(part.counts)] += part.counts
        return Histogram(width, start, counts).bounded()

    def coarsened(self, width: float) -> Histogram:
        """The same counts on the grid of ``width`` (a power of two >= this width)."""
        if width == self.width:
            return self
        # exponents, not the ratio (it overflows); offsets fit 53 bits, so 62 is plenty
        shift = min(max(math.frexp(width)[1] - math.frexp(self.width)[1], 0), 62)
        first = self.offset >> shift
        index = ((self.offset + np.arange(len(self.counts), dtype=np.int64)) >> shift) - first
        counts = np.bincount(index, weights=self.counts).round().astype(np.int64)
        return Histogram(width, first, counts)

    def bounded(self, max_bins: int = MAX_BINS) -> Histogram:
        """Trimmed of empty end bins, coarsened until it has at most ``max_bins`` bins."""
        nonzero = np.flatnonzero(self.counts)
        if len(nonzero) == 0:
            return Histogram(self.width, 0, np.zeros(0, dtype=np.int64))
        first, last = int(nonzero[0]), int(nonzero[-1])
        trimmed = Histogram(self.width, self.offset + first, self.counts[first : last + 1])
        shift = _shift_to_fit(trimmed.offset, trimmed.offset + len(trimmed.counts) - 1, max_bins)
        return trimmed if shift == 0 else trimmed.coarsened(self.width * 2.0**shift)

    def mass(self, x: np.ndarray | float) -> np.ndarray:
        """Counts at or below ``x`` (linear inside a bin)."""
        position = np.asarray(x, dtype=np.float64) / self.width - self.offset
        n = len(self.counts)
        position = np.clip(np.nan_to_num(position, nan=0.0), 0.0, float(n))
        cumulative = np.concatenate([[0], np.cumsum(self.counts)]).astype(np.float64)
        index = np.minimum(np.floor(position).astype(np.int64), n)
        inside = np.append(self.counts, 0).astype(np.float64)[index]
        return cumulative[index] + (position - index) * inside

    def cdf(self, x: np.ndarray | float) -> np.ndarray:
        """Share of the counts at or below ``x`` (linear inside a bin)."""
        total = self.total()
        mass = self.mass(x)
        return mass / total if total else np.zeros_like(mass)

    def quantile(self, q: np.ndarray | float) -> np.ndarray:
        """Inverse of ``cdf``: for each q in [0, 1] the value below which that share lies."""
        share = np.clip(np.asarray(q, dtype=np.float64), 0.0, 1.0)
        total = self.total()
        if total == 0:
            return np.full(share.shape, np.nan)
        cumulative = np.cumsum(self.counts)
        target = share * total
        index = np.minimum(np.searchsorted(cumulative, target, side="left"), len(cumulative) - 1)
        below = cumulative[index] - self.counts[index]
        inside = np.where(
            self.counts[index] > 0, (target - below) / np.maximum(self.counts[index], 1), 0.0
        )
        result: np.ndarray = (self.offset + index + np.clip(inside, 0.0, 1.0)) * self.width
        return result

    def rebin(self, edges: np.ndarray, clip: bool = True) -> np.ndarray:
        """Counts (float, linear inside grid bins) in the ``len(edges) - 1`` bins of
        ``edges``; with ``clip`` the mass below ``edges[0]`` / above ``edges[-1]`` goes into
        the first / last bin."""
        edges = np.asarray(edges, dtype=np.float64)
        mass = self.mass(edges)
        counts = np.diff(mass)
        if clip and len(counts):
            counts[0] += mass[0]
            counts[-1] += self.total() - mass[-1]
        return counts

    def to_dict(self) -> dict[str, object]:
        """JSON-able; ``counts`` as base64 of zlib-compressed little-endian int64 (a third
        to a tenth of a JSON list's size). ``from_dict`` also takes a list of ints."""
        packed = zlib.compress(self.counts.astype("<i8").tobytes(), 6)
        return {
            "width": self.width,
            "offset": self.offset,
            "counts": base64.b64encode(packed).decode("ascii"),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Histogram:
        counts = data["counts"]
        if isinstance(counts, str):
            raw = zlib.decompress(base64.b64decode(counts))
            array = np.frombuffer(raw, dtype="<i8").astype(np.int64)
        else:
            array = np.asarray(counts, dtype=np.int64)
        return cls(float(data["width"]), int(data["offset"]), array)


def _shift_to_fit(first: int, last: int, max_bins: int) -> int:
    shift = 0
    while (last >> shift) - (first >> shift) + 1 > max_bins:
        shift += 1
    return shift


def choose_width(spreads: list[float], low: float, high: float, integer: bool) -> float:
    """A power-of-two width about 1/512 of the first positive spread (IQR, std, range),
    fine enough to matter at the values' magnitude, within ``MAX_BINS`` over [low, high]."""
    spread = next((s for s in spreads if s > 0 and math.isfinite(s)), 0.0)
    magnitude = max(abs(low), abs(high))
    if spread == 0.0:
        spread = magnitude if magnitude > 0 else 1.0
    # log2 before dividing: a subnormal spread / 512 is 0.0
    exponent = math.floor(math.log2(spread) - math.log2(TARGET_BINS_PER_SPREAD))
    if magnitude > 0:  # no finer than the float spacing at this magnitude
        exponent = max(exponent, math.frexp(magnitude)[1] - 53)
    if integer:
        exponent = max(exponent, 0)
    exponent = min(max(exponent, _MIN_EXP), _MAX_EXP)
    return fit_width(math.ldexp(1.0, exponent), low, high)


def fit_width(width: float, low: float, high: float) -> float:
    """``width``, doubled until [low, high] is at most ``MAX_BINS`` bins and every bin
    index (value / width) is below 2**52 in size: exact in a float, far inside int64."""
    magnitude = max(abs(low), abs(high))
    if magnitude > 0:
        width = max(width, math.ldexp(1.0, math.frexp(magnitude)[1] - MAX_INDEX_BITS))
    while math.floor(high / width) - math.floor(low / width) + 1 > MAX_BINS:
        width *= 2.0
    return width


def histogram_of(
    values: np.ndarray,
    width: float,
    low: float,
    high: float,
    work: np.ndarray | None = None,
    indices: np.ndarray | None = None,
) -> Histogram:
    """Histogram of finite ``values`` (min ``low``, max ``high``) on the grid of ``width``
    (coarsened if needed to stay within ``MAX_BINS``); ``work`` and ``indices`` are optional
    float64 / intp buffers of the values' length."""
    width = fit_width(width, low, high)
    first = math.floor(low / width)
    bins = math.floor(high / width) - first + 1
    scaled = np.empty(len(values)) if work is None else work
    index = np.empty(len(values), dtype=np.intp) if indices is None else indices
    # exact either way (a power of two); 1/width overflows for the tiniest widths
    if width >= 2.0**-1000:
        np.multiply(values, 1.0 / width, out=scaled)
    else:
        np.divide(values, width, out=scaled)
    np.floor(scaled, out=scaled)
    scaled -= first
    np.copyto(index, scaled, casting="unsafe")
    counts = np.bincount(index, minlength=bins)[:bins]
    return Histogram(width, first, counts.astype(np.int64, copy=False))


REFINE_MIN_POINTS = 20  # sample points a bin needs before they shape it


def refined_quantile(histogram: Histogram, sample: np.ndarray, q: np.ndarray) -> np.ndarray:
    """``histogram.quantile(q)``, but inside a bin holding at least ``REFINE_MIN_POINTS``
    of the (sorted, finite, uniform) ``sample`` the position comes from those points rather
    than a straight line: a heavy tail or an outlier coarsens the grid until the bulk sits
    in a few bins, and the sample still knows its shape. Always inside the same bin."""
    result = histogram.quantile(q)
    if len(sample) < REFINE_MIN_POINTS or histogram.total() == 0:
        return result
    counts = histogram.counts
    cumulative = np.cumsum(counts)
    target = np.atleast_1d(q * histogram.total())
    index = np.minimum(np.searchsorted(cumulative, target, side="left"), len(counts) - 1)
    fraction = (target - (cumulative[index] - counts[index])) / np.maximum(counts[index], 1)
    flat = np.atleast_1d(result).copy()
    for i in np.unique(index):
        points = _points_in(histogram, sample, int(i))
        if len(points) >= REFINE_MIN_POINTS:
            chosen = index == i
            flat[chosen] = np.quantile(points, np.clip(fraction[chosen], 0.0, 1.0))
    return flat.reshape(np.shape(result))


def refined_cdf(histogram: Histogram, sample: np.ndarray, x: np.ndarray) -> np.ndarray:
    """``histogram.cdf(x)`` with the share inside a well-sampled bin taken from the sample
    (see ``refined_quantile``)."""
    result = histogram.cdf(x)
    total = histogram.total()
    if len(sample) < REFINE_MIN_POINTS or total == 0:
        return result
    points = np.atleast_1d(np.asarray(x, dtype=np.float64))
    position = np.floor(points / histogram.width) - histogram.offset
    flat = np.atleast_1d(result).copy()
    cumulative = np.concatenate([[0], np.cumsum(histogram.counts)])
    # every point at once (a loop over bins cost ~1 s for 50 columns): the sample's points
    # inside each point's bin, and how many of them are at or below the point
    inside_grid = np.flatnonzero((position >= 0) & (position < len(histogram.counts)))
    bins = position[inside_grid].astype(np.int64)
    low = (histogram.offset + bins) * histogram.width
    start = np.searchsorted(sample, low, side="left")
    stop = np.searchsorted(sample, low + histogram.width, side="left")
    held = stop - start
    sampled = held >= REFINE_MIN_POINTS
    at_or_below = np.searchsorted(sample, points[inside_grid], side="right") - start
    share = np.clip(at_or_below, 0, held) / np.maximum(held, 1)
    refined = (cumulative[bins] + share * histogram.counts[bins]) / total
    flat[inside_grid[sampled]] = refined[sampled]
    return flat.reshape(np.shape(result))


def _points_in(histogram: Histogram, sample: np.ndarray, i: int) -> np.ndarray:
    low = (histogram.offset + i) * histogram.width
    high = low + histogram.width
    start, stop = np.searchsorted(sample, [low, high], side="left")
    points: np.ndarray = sample[start:stop]
    return points
