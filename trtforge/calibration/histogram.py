"""Streaming per-tensor statistics and the rules that turn them into INT8 ranges (amax).

Entropy follows TensorRT's EntropyCalibration2 as NVIDIA describes it (GTC 2017 talk S7310
"8-bit inference with TensorRT") and re-implements it in pytorch-quantization/ModelOpt:
a 2048-bin histogram of |x|, and the amax whose 128-level quantization loses the least
information (KL divergence). Details that the talk leaves open are fixed here, the same way
in the fast code and in the slow reference of the tests; tests/test_calibration_oracle.py
checks the amax against ModelOpt's own ``_compute_amax_entropy`` and bounds each difference:

- Bins are half-open, ``[k * width, (k + 1) * width)``. The first non-zero batch sets the range
  (just above its max |x|); a later batch that exceeds it doubles the range, as often as needed,
  merging adjacent bins in pairs. Bin indices are computed as ``floor(|x| * scale)`` in float32
  with ``scale = bins / range``; halving ``scale`` is exact, so a merged histogram equals a
  one-pass histogram over the same final range bit for bit.
- Candidates are ``i = 128 .. 2048`` bins. P is ``h[:i]`` with the outliers ``sum(h[i:])`` added
  to its last bin. Q quantizes ``h[:i]`` into 128 groups (bin ``j`` goes to group
  ``j * 128 // i``) and spreads each group's count evenly over the group's non-empty bins.
  Like pytorch-quantization, bin 0 is replaced by bin 1 first so that exact zeros (after
  ReLU, padding) do not dominate the choice.
- The only bin where P > 0 and Q = 0 is possible is the last one, when it is empty but
  receives outliers. Strictly, KL is infinite there, and then no candidate may clip an
  isolated outlier, however rare: entropy would never "suppress outliers", its purpose.
  Q gets the probability ``EMPTY_BIN_Q`` (1e-10) in that bin instead, so clipping costs
  ``p log(p / 1e-10)`` for an outlier mass ``p``. (ModelOpt keeps it infinite: it never clips
  across empty bins, and keeps the whole range for one far spike.) A Q that is empty
  everywhere (all mass beyond the candidate) stays infinite (ModelOpt's is NaN, which its
  argmin takes: it then clips every value).
- Among (near-)equal minima the largest candidate wins (``TIE_RTOL``; pytorch-quantization
  takes the last exact minimum); the amax is the upper edge of the last kept bin, ``i * width``, capped
  at the observed max |x|.

``percentile`` uses the same histogram: the upper edge of the bin where the cumulative count
of |x| reaches the percentile, capped at max |x|. ``minmax`` is max |x| (no histogram kept).

Every amax is at least ``MIN_AMAX``: an all-zero tensor would otherwise get a scale of 0
(TensorRT rejects it) and FP16 graphs store the scale in FP16, whose smallest normal number is
2**-14. So the smallest scale trtforge writes is 2**-14 (amax = 127 * 2**-14, about 0.0078).
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Literal, Protocol

import numpy as np

from trtforge.environment import usable_cores

NUM_BINS = 2048
NUM_LEVELS = 128
MIN_SCALE = 2.0**-14
MIN_AMAX = 127 * MIN_SCALE
EMPTY_BIN_Q = 1e-10
TIE_RTOL = 1e-9
TIE_ATOL = 1e-12
_MIN_RANGE = 2.0**-64  # keeps ``bins / range`` a finite float32 for denormal-sized data
_CHUNK = 1 << 16  # values binned at a time: 256 KiB of float32 and 512 KiB of indices
_AMAX_THREADS = 4  # threshold searches at a time (one per core, up to this)

Algorithm = Literal["entropy", "minmax", "percentile"]
_scratch = threading.local()


def _chunk_buffers() -> tuple[np.ndarray, np.ndarray]:
    """This thread's reusable (magnitudes, bin indices) buffers of ``_CHUNK`` values.

    Fresh ones per update were 768 KiB, above malloc's mmap threshold: every call mapped and
    page-faulted them anew. Per thread, so that statistics may be updated from several threads.
    """
    buffers = getattr(_scratch, "buffers", None)
    if buffers is None:
        buffers = _scratch.buffers = (np.empty(_CHUNK, np.float32), np.empty(_CHUNK, np.intp))
    return buffers


class NonFiniteError(ValueError):
    """A tensor held NaN or Inf; the caller names the tensor and the data."""


class TensorStats(Protocol):
    amax: float

    def update(self, x: np.ndarray) -> None: ...


class MaxTracker:
    """Running max |x|: all that minmax needs, without the cost of a histogram.

    ``finite_only``: NaN/Inf values are passed over instead of refused, for the FP16 overflow
    guard, where a legitimate -inf (an attention mask) says nothing about the finite values' range."""

    __slots__ = ("amax", "finite_only")

    def __init__(self, finite_only: bool = False) -> None:
        self.amax = 0.0
        self.finite_only = finite_only

    def update(self, x: np.ndarray) -> None:
        if x.size == 0:
            return
        amax = finite_peak(x) if self.finite_only else float(max(x.max(), -x.min()))
        if not np.isfinite(amax):
            raise NonFiniteError("NaN or Inf values")
        self.amax = max(self.amax, amax)


def finite_peak(x: np.ndarray) -> float:
    """max |x| over the finite values of a non-empty ``x`` (0.0 when none is): its max and min
    first, two passes and no temporary, which settle the common all-finite case."""
    peak = float(max(x.max(), -x.min()))
    if np.isfinite(peak):
        return peak
    finite = x[np.isfinite(x)]
    return float(np.abs(finite).max()) if finite.size else 0.0


class AbsHistogram:
    """Histogram of |x| over ``[0, range)`` with a fixed bin count and a range that doubles.

    Memory is one array of ``num_bins`` counts, whatever the number of samples.
    ``scale`` (bins per unit) may be given to start from a known range (tests compare a
    merged histogram with a one-pass one this way).
    """

    __slots__ = ("amax", "counts", "scale")

    def __init__(self, num_bins: int = NUM_BINS, scale: float | None = None) -> None:
        if num_bins < 2 or num_bins % 2:
            raise ValueError("num_bins must be even and >= 2 (bins merge in pairs)")
        self.counts = np.zeros(num_bins, dtype=np.int64)
        self.scale = None if scale is None else np.float32(scale)
        self.amax = 0.0

    @property
    def width(self) -> float:
        """Width of one bin (0 until a non-zero value has been seen)."""
        return 0.0 if self.scale is None else 1.0 / float(self.scale)

    @property
    def range(self) -> float:
        return len(self.counts) * self.width

    def update(self, x: np.ndarray) -> None:
        """Add one batch: its max |x| settles the range first, then values are binned in
        cache-sized chunks (twice as fast as whole-tensor temporaries on large activations)."""
        flat = x.reshape(-1)
        if flat.size == 0:
            return
        lowest = flat.min()
        amax = np.float32(max(flat.max(), -lowest))
        if not np.isfinite(amax):
            raise NonFiniteError("NaN or Inf values")
        self.amax = max(self.amax, float(amax))
        nbins = len(self.counts)
        if amax == 0:
            self.counts[0] += flat.size
            return
        if self.scale is None:
            self.scale = _initial_scale(amax, nbins)
        while amax * self.scale >= nbins:
            self._double_range()
        magnitudes, indices = _chunk_buffers()
        for start in range(0, flat.size, _CHUNK):
            part = flat[start : start + _CHUNK]
            values, bins = magnitudes[: part.size], indices[: part.size]
            # After a ReLU (no negative values) |x| is x itself: one pass less, and a -0.0 lands
            # in bin 0 either way. Other float types are rounded to float32 first, as before.
            if lowest < 0 or part.dtype != np.float32:
                np.abs(part, out=values)
                part = values
            np.multiply(part, self.scale, out=values)
            np.copyto(bins, values, casting="unsafe")  # truncation = floor for values >= 0
            # In place (np.bincount would allocate a histogram per chunk); as fast since numpy 1.25.
            np.add.at(self.counts, bins, 1)

    def _double_range(self) -> None:
        half = self.counts.reshape(-1, 2).sum(axis=1)
        self.counts = np.concatenate([half, np.zeros_like(half)])
        self.scale = np.float32(self.scale * np.float32(0.5))


def _initial_scale(amax: np.float32, nbins: int) -> np.float32:
    """Largest float32 scale that puts ``amax`` into the last bin (the range is just above it)."""
    scale = np.float32(nbins / max(float(amax), _MIN_RANGE))
    while amax * scale >= nbins:
        scale = np.nextafter(scale, np.float32(0))
    return scale


def new_stats(algorithm: Algorithm, finite_only: bool = False) -> TensorStats:
    """``finite_only`` (minmax only, see MaxTracker): NaN/Inf passed over instead of refused."""
    return MaxTracker(finite_only) if algorithm == "minmax" else AbsHistogram()


def _xlogx(values: np.ndarray) -> np.ndarray:
    positive = values > 0
    return np.where(positive, values * np.log(np.where(positive, values, 1.0)), 0.0)


@functools.lru_cache(maxsize=4)
def _group_bounds(nbins: int, levels: int) -> np.ndarray:
    """``bounds[c, k]`` = first bin of group ``k`` for candidate ``i = levels + c``.

    Bin ``j`` belongs to group ``j * levels // i``, so group ``k`` starts at
    ``ceil(k * i / levels)``. Shape (candidates, levels + 1); the last column is ``i``.
    """
    candidates = np.arange(levels, nbins + 1, dtype=np.int64)[:, None]
    k = np.arange(levels + 1, dtype=np.int64)[None, :]
    bounds = -(-(k * candidates) // levels)
    bounds.setflags(write=False)
    return bounds


def entropy_divergences(counts: np.ndarray, levels: int = NUM_LEVELS) -> np.ndarray:
    """KL(P || Q) for every candidate ``i = levels .. len(counts)``, vectorized.

    With prefix sums C (counts), N (non-empty bins) and H (h log h), each candidate costs
    O(levels) numpy work and no Python loop. With T the total, O the outliers, Z = C[i] the
    mass of Q and G = sum_k S_k log(S_k / N_k) over the groups (S: group sum, N: non-empty
    bins), KL = (sum P log P - G - O log Q[i - 1]) / T - log T + log Z; when the last bin is
    empty, its term is the outliers' own: ... + log Z (T - O) / T - (O / T) log EMPTY_BIN_Q.
    """
    h = counts.astype(np.float64)
    if len(h) > 1:
        h[0] = h[1]
    total = h.sum()
    nbins = len(h)
    candidates = np.arange(levels, nbins + 1)
    if total == 0:
        return np.full(len(candidates), np.inf)
    csum = np.concatenate([[0.0], np.cumsum(h)])
    # float64 counts of non-empty bins are exact (at most ``nbins``), and one gather of the
    # group bounds per prefix sum, differenced, is the same subtraction as two gathers.
    nonzero = np.concatenate([[0.0], np.cumsum(h > 0, dtype=np.float64)])
    hlogh = np.concatenate([[0.0], np.cumsum(_xlogx(h))])

    bounds = _group_bounds(nbins, levels)
    group_sum = np.diff(csum[bounds], axis=1)
    safe_nonzero = np.maximum(np.diff(nonzero[bounds], axis=1), 1.0)
    p_log_q = (_xlogx(group_sum) - group_sum * np.log(safe_nonzero)).sum(axis=1)

    kept = csum[candidates]
    outliers = total - kept
    last = h[candidates - 1]
    last_q = group_sum[:, -1] / safe_nonzero[:, -1]
    empty_last = (outliers > 0) & (last == 0)
    p_log_q += np.where(empty_last, 0.0, outliers * np.log(np.where(last > 0, last_q, 1.0)))
    p_log_p = hlogh[candidates - 1] + _xlogx(last + outliers)
    log_z = np.log(np.maximum(kept, 1.0))
    divergence = (p_log_p - p_log_q) / total - np.log(total) + log_z
    divergence -= np.where(empty_last, (outliers / total) * (log_z + np.log(EMPTY_BIN_Q)), 0.0)
    return np.where(kept == 0, np.inf, divergence)


def best_candidate(divergences: np.ndarray, first: int = NUM_LEVELS) -> int:
    """Bin count of the minimum divergence; the largest among near-ties (see module doc)."""
    finite = np.isfinite(divergences)
    if not finite.any():
        return first + len(divergences) - 1
    lowest = divergences[finite].min()
    ties = np.flatnonzero(divergences <= lowest + TIE_RTOL * abs(lowest) + TIE_ATOL)
    return first + int(ties[-1])


def entropy_bins(counts: np.ndarray, levels: int = NUM_LEVELS) -> int:
    """Number of leading bins that EntropyCalibration2 keeps (the threshold is its upper edge)."""
    return best_candidate(entropy_divergences(counts, levels), levels)


def percentile_bins(counts: np.ndarray, percentile: float) -> int:
    """Smallest number of leading bins that holds ``percentile`` % of all values."""
    cumulative = np.cumsum(counts)
    target = cumulative[-1] * (percentile / 100.0)
    return int(np.searchsorted(cumulative, target, side="left")) + 1


def compute_amax(stats: TensorStats, algorithm: Algorithm, percentile: float = 99.99) -> float:
    """The calibrated amax of one tensor, never below ``MIN_AMAX``."""
    if isinstance(stats, AbsHistogram) and stats.scale is not None and algorithm != "minmax":
        counts = stats.counts
        kept = entropy_bins(counts) if algorithm == "entropy" else percentile_bins(counts, percentile)
        amax = min(kept * stats.width, stats.amax)
    else:
        amax = stats.amax
    return max(amax, MIN_AMAX)


def compute_amaxes(
    stats: Mapping[str, TensorStats], algorithm: Algorithm, percentile: float = 99.99
) -> dict[str, float]:
    """``compute_amax`` of every tensor, by name, on up to ``_AMAX_THREADS`` threads.

    Each entropy search is numpy work on arrays of a quarter million values, which releases the
    GIL, and it runs after the collection, when the cores are otherwise idle: two threads take
    half the time (~35 ms of ~70 for ResNet-18). Each amax is the one ``compute_amax`` gives.
    """
    workers = min(_AMAX_THREADS, len(stats), usable_cores())
    if workers < 2:
        return {name: compute_amax(values, algorithm, percentile) for name, values in stats.items()}
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="calibration-amax") as pool:
        amax = pool.map(lambda values: compute_amax(values, algorithm, percentile), stats.values())
        return dict(zip(stats, amax, strict=True))


def clipped_fraction(stats: TensorStats, amax: float) -> float:
    """Share of the values above ``amax``: entropy on a sparse histogram (few samples, a
    pooled tensor) can clip most of them, because a point mass in the last kept bin has a KL
    divergence of 0. Worth a warning; the accuracy gate has the final word."""
    if not isinstance(stats, AbsHistogram) or stats.scale is None:
        return 0.0
    # the bins wholly under amax: amax is a bin edge (``compute_amax``: kept * width, up to float
    # rounding) or the largest value seen, inside its bin, above which nothing was seen
    kept = int(np.ceil(np.float32(amax) * stats.scale - 1e-3))
    return float(stats.counts[kept:].sum() / stats.counts.sum())


def amax_to_scale(amax: float) -> float:
    """The symmetric INT8 scale TensorRT stores, as the float32 value it will read back."""
    return float(np.float32(amax / 127.0))
