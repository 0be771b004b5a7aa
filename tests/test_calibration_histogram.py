"""Histogram and threshold rules against a plain, slow reference of TensorRT's algorithm."""

from __future__ import annotations

import numpy as np
import pytest

from trtforge.calibration.histogram import (
    EMPTY_BIN_Q,
    MIN_AMAX,
    MIN_SCALE,
    NUM_BINS,
    NUM_LEVELS,
    TIE_ATOL,
    TIE_RTOL,
    AbsHistogram,
    MaxTracker,
    NonFiniteError,
    amax_to_scale,
    clipped_fraction,
    compute_amax,
    entropy_bins,
    entropy_divergences,
    percentile_bins,
)


def reference_histogram(values: np.ndarray, scale: np.float32, nbins: int = NUM_BINS) -> np.ndarray:
    """One pass, one value at a time: bin = floor(|x| * scale) in float32."""
    counts = np.zeros(nbins, dtype=np.int64)
    for value in np.abs(values.astype(np.float32)).ravel():
        counts[int(np.float32(value) * scale)] += 1
    return counts


def reference_divergences(counts: np.ndarray) -> np.ndarray:
    """EntropyCalibration2 as written in the GTC 2017 talk, one candidate at a time.

    P: the first i bins, outliers added to the last. Q: those i bins quantized into 128
    groups (bin j -> group j * 128 // i), each group's count spread evenly over its non-empty
    bins. KL(P || Q) of the normalized distributions, where an empty bin that P needs (the
    last, holding outliers) gets probability EMPTY_BIN_Q. Bin 0 takes bin 1's count first.
    """
    h = counts.astype(np.float64).copy()
    h[0] = h[1]
    divergences = []
    for i in range(NUM_LEVELS, len(h) + 1):
        p = h[:i].copy()
        p[i - 1] += h[i:].sum()
        group = np.arange(i) * NUM_LEVELS // i
        group_sum = np.bincount(group, weights=h[:i], minlength=NUM_LEVELS)
        group_nonempty = np.bincount(group, weights=h[:i] > 0, minlength=NUM_LEVELS)
        q = np.where(h[:i] > 0, group_sum[group] / np.maximum(group_nonempty[group], 1), 0.0)
        if q.sum() == 0:
            divergences.append(np.inf)
            continue
        p, q = p / p.sum(), q / q.sum()
        q[(p > 0) & (q == 0)] = EMPTY_BIN_Q
        support = p > 0
        divergences.append(float(np.sum(p[support] * np.log(p[support] / q[support]))))
    return np.array(divergences)


def reference_bins(counts: np.ndarray) -> int:
    divergences = reference_divergences(counts)
    lowest = divergences[np.isfinite(divergences)].min()
    ties = np.flatnonzero(divergences <= lowest + TIE_RTOL * abs(lowest) + TIE_ATOL)
    return NUM_LEVELS + int(ties[-1])


def _rng() -> np.random.Generator:
    return np.random.default_rng(1234)


DISTRIBUTIONS = {
    "gaussian": lambda rng: rng.normal(0, 1, 60_000),
    "laplace": lambda rng: rng.laplace(0, 1, 60_000),
    "bimodal": lambda rng: np.concatenate([rng.normal(-3, 0.5, 30_000), rng.normal(4, 1, 30_000)]),
    "one_spike": lambda rng: np.concatenate([rng.normal(0, 1, 60_000), [250.0]]),
    "spike_first": lambda rng: np.concatenate([[250.0], rng.normal(0, 1, 60_000)]),
    "negative_only": lambda rng: -rng.exponential(2.0, 60_000),
    "relu": lambda rng: np.maximum(rng.normal(0, 1, 60_000), 0),
}


def _histogram(values: np.ndarray, batches: int = 6) -> AbsHistogram:
    histogram = AbsHistogram()
    for part in np.array_split(values.astype(np.float32), batches):
        histogram.update(part)
    return histogram


@pytest.mark.parametrize("name", sorted(DISTRIBUTIONS))
def test_entropy_threshold_equals_reference(name: str) -> None:
    values = DISTRIBUTIONS[name](_rng())
    histogram = _histogram(values)
    expected = reference_divergences(histogram.counts)
    got = entropy_divergences(histogram.counts)
    assert np.array_equal(np.isinf(got), np.isinf(expected))
    finite = np.isfinite(expected)
    np.testing.assert_allclose(got[finite], expected[finite], rtol=1e-9, atol=1e-12)
    kept = reference_bins(histogram.counts)
    assert entropy_bins(histogram.counts) == kept
    amax = compute_amax(histogram, "entropy")
    assert amax == max(min(kept * histogram.width, histogram.amax), MIN_AMAX)
    assert 0 < amax <= np.abs(values.astype(np.float32)).max()


@pytest.mark.parametrize("name", ["one_spike", "spike_first"])
def test_entropy_clips_a_single_outlier(name: str) -> None:
    histogram = _histogram(DISTRIBUTIONS[name](_rng()))
    assert compute_amax(histogram, "minmax") == pytest.approx(250.0)
    # The range is 256+ wide, so even the smallest candidate (128 bins) is about 16; entropy
    # clips the spike down to about that.
    assert compute_amax(histogram, "entropy") < 0.1 * 250.0


def test_sign_does_not_matter() -> None:
    values = DISTRIBUTIONS["negative_only"](_rng()).astype(np.float32)
    negative, positive = _histogram(values), _histogram(-values)
    assert np.array_equal(negative.counts, positive.counts)
    for algorithm in ("entropy", "minmax", "percentile"):
        assert compute_amax(negative, algorithm) == compute_amax(positive, algorithm)


def test_all_zeros_get_the_documented_minimum_scale() -> None:
    histogram = AbsHistogram()
    tracker = MaxTracker()
    for _ in range(3):
        histogram.update(np.zeros((4, 8), dtype=np.float32))
        tracker.update(np.zeros((4, 8), dtype=np.float32))
    assert histogram.counts[0] == 96 and histogram.scale is None
    for algorithm in ("entropy", "percentile"):
        assert compute_amax(histogram, algorithm) == MIN_AMAX
    assert compute_amax(tracker, "minmax") == MIN_AMAX
    scale = amax_to_scale(MIN_AMAX)
    assert scale == MIN_SCALE == 2.0**-14
    assert np.isfinite(np.float16(scale)) and np.float16(scale) > 0


def test_zeros_before_data_stay_in_bin_zero() -> None:
    histogram = AbsHistogram()
    histogram.update(np.zeros(10, dtype=np.float32))
    histogram.update(np.array([0.5, 1.0], dtype=np.float32))
    assert histogram.counts[0] == 10 and histogram.counts.sum() == 12
    assert histogram.range > 1.0 and histogram.range == pytest.approx(1.0, rel=1e-6)


def test_merging_batch_by_batch_equals_one_pass_over_the_final_range() -> None:
    rng = _rng()
    # Each batch is wider than the last, so the range doubles several times (9x at the end).
    batches = [rng.normal(0, 1, 5_000).astype(np.float32) * factor for factor in (1, 2, 3, 9)]
    merged = AbsHistogram()
    for batch in batches:
        merged.update(batch)
    assert merged.range >= 8 * np.abs(batches[0]).max()  # it doubled at least three times
    everything = np.concatenate(batches)
    one_pass = AbsHistogram(scale=float(merged.scale))
    one_pass.update(everything)
    assert np.array_equal(merged.counts, one_pass.counts)
    assert np.array_equal(merged.counts, reference_histogram(everything, merged.scale))
    assert merged.counts.sum() == everything.size
    for algorithm in ("entropy", "percentile", "minmax"):
        assert compute_amax(merged, algorithm) == compute_amax(one_pass, algorithm)


def test_non_negative_batches_and_negative_zeros_bin_like_the_reference() -> None:
    """A batch without negative values (after a ReLU) skips |x|; -0.0 still lands in bin 0,
    and the counts are accumulated in place (no histogram allocated per update)."""
    rng = _rng()
    relu = np.maximum(rng.normal(0, 1, 70_000), 0).astype(np.float32)  # more than one chunk
    relu[::5] = -0.0
    mixed = rng.normal(0, 1, 70_000).astype(np.float32)
    histogram = AbsHistogram(scale=NUM_BINS / 8.0)  # [0, 8) holds every value: no doubling
    counts = histogram.counts
    for part in (relu, mixed, relu):
        histogram.update(part)
    assert histogram.counts is counts
    expected = reference_histogram(np.concatenate([relu, mixed, relu]), histogram.scale)
    assert np.array_equal(counts, expected) and counts[0] >= 2 * (70_000 // 5)


def test_memory_does_not_grow_with_samples() -> None:
    histogram = AbsHistogram()
    rng = _rng()
    for step in range(200):
        histogram.update(rng.normal(0, 1 + step, 256).astype(np.float32))
    assert histogram.counts.shape == (NUM_BINS,)
    assert histogram.counts.sum() == 200 * 256


def test_percentile_is_within_one_bin_of_numpy() -> None:
    values = np.abs(DISTRIBUTIONS["laplace"](_rng())).astype(np.float32)
    histogram = _histogram(values)
    amax = compute_amax(histogram, "percentile", 99.0)
    assert abs(amax - np.percentile(values, 99.0)) <= histogram.width
    assert percentile_bins(histogram.counts, 100.0) == np.flatnonzero(histogram.counts)[-1] + 1


def test_minmax_is_the_largest_magnitude() -> None:
    tracker = MaxTracker()
    tracker.update(np.array([[-7.5, 2.0]], dtype=np.float32))
    tracker.update(np.array([3.0], dtype=np.float32))
    assert compute_amax(tracker, "minmax") == 7.5
    assert amax_to_scale(7.5) == float(np.float32(7.5 / 127))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_values_are_refused(bad: float) -> None:
    for stats in (AbsHistogram(), MaxTracker()):
        with pytest.raises(NonFiniteError):
            stats.update(np.array([1.0, bad], dtype=np.float32))


def test_the_clipped_share_counts_every_bin_past_the_threshold() -> None:
    """The first bin past an entropy threshold was left out of the share the warning reports."""
    histogram = AbsHistogram(num_bins=8, scale=1.0)  # bins [0,1), [1,2), ... [7,8)
    histogram.update(np.array([0.5, 1.5, 2.5, 3.5, 4.5, 5.5, 6.5, 7.5], dtype=np.float32))
    assert clipped_fraction(histogram, 4 * histogram.width) == 0.5  # bins 4..7 clipped
    assert clipped_fraction(histogram, compute_amax(histogram, "minmax")) == 0.0  # the largest value seen
    assert clipped_fraction(histogram, 4 * histogram.width * (1 - 1e-7)) == 0.5  # an edge, rounded down
