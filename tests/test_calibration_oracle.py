"""trtforge's entropy calibration against NVIDIA's own, which nobody on the project wrote:
``_compute_amax_entropy`` of NVIDIA Model Optimizer (pytorch-quantization's successor), vendored
in ``tests/standards/modelopt_entropy.py`` (source, commit, license and the two adaptations that
drop torch are listed there).

Both get the same histogram: trtforge's ``AbsHistogram`` counts, and bin edges ``k * width``. On
ordinary activations they pick the same number of bins, and trtforge's amax is the oracle's capped
at the largest |x| seen. Where they part, each difference is one trtforge makes on purpose (module
doc of ``trtforge/calibration/histogram.py``), and ``oracle_choices`` derives the oracle's pick from
trtforge's own divergences by exactly these rules:

- **gap**: a candidate whose last kept bin is empty but receives the clipped values has an infinite
  KL divergence for the oracle (Q = 0 where P > 0), so it never clips across empty bins: a single
  spike far from the bulk keeps the whole range. trtforge gives that bin the probability
  ``EMPTY_BIN_Q``, so clipping costs ``p log(p / EMPTY_BIN_Q)`` and isolated outliers are clipped
  (what TensorRT's EntropyCalibrator2 documentation promises: it "usually suppresses outliers").
- **nothing kept**: a candidate whose kept bins are all empty makes Q all zero; scipy's ``entropy``
  returns NaN for it and ``np.argmin`` returns the first NaN, so the oracle picks the lower edge of
  the first non-empty bin and clips every value (a constant tensor, a few distinct values far from
  0). For trtforge such a candidate is infinite and never chosen.
- **ties**: the oracle takes the last exact minimum of its float sums, trtforge the largest of the
  candidates within ``TIE_RTOL`` of it: an exact tie that rounding splits may go either way.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from standards.modelopt_entropy import _compute_amax_entropy
from test_calibration import cnn, run, spec_file  # noqa: F401  (the fixtures: the small CNN, 24 samples)
from test_calibration_histogram import DISTRIBUTIONS, _histogram, _rng

from trtforge.calibration.histogram import (
    MIN_AMAX,
    NUM_LEVELS,
    TIE_ATOL,
    TIE_RTOL,
    AbsHistogram,
    amax_to_scale,
    clipped_fraction,
    compute_amax,
    entropy_bins,
    entropy_divergences,
)


def oracle_amax(counts: np.ndarray, width: float) -> float:
    """ModelOpt's amax for INT8 (8 bits, signed: 128 levels) with its defaults (start_bin 128,
    stride 1), on bin edges ``k * width``. It writes bin 0 of what it is given: it gets a copy."""
    edges = np.arange(len(counts) + 1) * width
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # scipy's 0/0 of the "nothing kept" case
        return float(_compute_amax_entropy(counts.copy(), edges, 8, False))


def oracle_bins(counts: np.ndarray) -> int:
    """The oracle's pick as a number of bins (bin edges 0, 1, 2, ...)."""
    return round(oracle_amax(counts, 1.0))


def oracle_choices(counts: np.ndarray) -> set[int]:
    """The bin counts the oracle may pick, from trtforge's divergences and the differences of the
    module doc: nothing kept -> the oracle's NaN pick; gap -> infinite; ties -> any near-tie."""
    h = counts.astype(np.float64)
    h[0] = h[1]
    nonempty = np.flatnonzero(h)
    if nonempty.size == 0:
        return {len(h)}  # every candidate NaN: np.argmin of the reversed list gives the last one
    if nonempty[0] >= NUM_LEVELS:
        return {int(nonempty[0])}  # the largest candidate that keeps nothing
    candidates = np.arange(NUM_LEVELS, len(h) + 1)
    outliers = h.sum() - np.cumsum(h)[candidates - 1]
    gap = (h[candidates - 1] == 0) & (outliers > 0)
    divergences = np.where(gap, np.inf, entropy_divergences(counts))
    lowest = divergences.min()
    ties = np.flatnonzero(divergences <= lowest + TIE_RTOL * abs(lowest) + TIE_ATOL)
    return {NUM_LEVELS + int(tie) for tie in ties}


def clips_across_a_gap(counts: np.ndarray, kept: int) -> bool:
    """The last kept bin is empty and values lie beyond it: infinite for the oracle."""
    return bool(counts[kept - 1] == 0 and counts[kept:].sum() > 0)


SAME, GAP, NOTHING_KEPT = "same", "gap", "nothing kept"

#: name -> (values, the difference expected on its histogram): tests/test_calibration_histogram.py's
#: distributions, then realistic activations: mostly dead ReLUs, heavy tails (Student's t with 2
#: degrees of freedom, log-normal), one value everywhere (a single spike), a few distinct values.
CASES: dict[str, tuple[Callable[[np.random.Generator], np.ndarray], str]] = {
    **{name: (values, GAP if "spike" in name else SAME) for name, values in DISTRIBUTIONS.items()},
    "relu_mostly_zero": (lambda rng: np.maximum(rng.normal(-2.5, 1, 60_000), 0), SAME),
    "student_t": (lambda rng: rng.standard_t(2, 60_000), SAME),
    "lognormal": (lambda rng: rng.lognormal(0, 1, 60_000), SAME),
    "constant": (lambda rng: np.full(4_000, 3.0), NOTHING_KEPT),
    "few_values": (lambda rng: rng.choice([0.0, 0.5, 1.0, 2.0], 5_000), NOTHING_KEPT),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_entropy_amax_against_modelopt(name: str) -> None:
    values, difference = CASES[name]
    histogram = _histogram(values(_rng()))
    counts, width = histogram.counts, histogram.width
    kept = entropy_bins(counts)
    oracle = oracle_amax(counts, width)
    picked = round(oracle / width)
    assert picked in oracle_choices(counts)  # the oracle's pick, explained by the documented rules alone
    amax = compute_amax(histogram, "entropy")
    if difference == SAME:
        assert kept == picked
        assert amax == max(min(oracle, histogram.amax), MIN_AMAX)
    elif difference == GAP:
        assert clips_across_a_gap(counts, kept) and not clips_across_a_gap(counts, picked)
        assert oracle >= 250.0 > 10 * amax  # the oracle keeps the spike; trtforge clips it
        assert clipped_fraction(histogram, amax) == pytest.approx(1 / 60_001)
    else:
        first = np.flatnonzero(counts[1:])[0] + 1
        assert picked == first and counts[1:first].sum() == 0  # below every non-zero value: all clipped
        assert amax > oracle and np.isfinite(entropy_divergences(counts)[kept - NUM_LEVELS])


DECAY = {k: int(1000 * np.exp(-k / 40)) for k in range(200)}  # every bin of 0..199 non-empty


@pytest.mark.parametrize(
    ("counts", "expected"),
    [
        pytest.param({0: 1000}, 256, id="all values in bin 0"),
        pytest.param({0: 900, 10: 5}, 256, id="zeros and one bin"),
        pytest.param({3: 7, 200: 1}, 256, id="two bins past a gap"),
        pytest.param({**DECAY, 240: 1}, 200, id="a spike clipped into the last non-empty bin"),
    ],
)
def test_sparse_histograms_against_modelopt(counts: dict[int, int], expected: int) -> None:
    """Hand-made histograms of 256 bins (the oracle takes any bin count): the same pick. All
    the mass in bin 0 (which takes bin 1's count) leaves nothing to compare: both keep every bin."""
    histogram = np.zeros(256, dtype=np.int64)
    for index, count in counts.items():
        histogram[index] = count
    assert entropy_bins(histogram) == oracle_bins(histogram) == expected


def _activations(model: onnx.ModelProto, names: list[str], x: np.ndarray) -> dict[str, np.ndarray]:
    """The named tensors of ``model`` on ``x``, computed here with onnxruntime, not by trtforge."""
    model = onnx.shape_inference.infer_shapes(model)
    model.graph.output.extend(info for info in model.graph.value_info if info.name in names)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    outputs = [output.name for output in session.get_outputs() if output.name in names]
    return dict(zip(outputs, session.run(outputs, {"input": x}), strict=True))


@pytest.mark.parametrize(
    ("batch_size", "names"),
    [(24, ["stem_relu", "pool"]), (4, ["block_bn"])],  # ReLU, 192 pooled values; BatchNorm
)
def test_calibrated_scales_against_modelopt(
    spec_file: Callable[..., Path],  # noqa: F811
    cnn: Path,  # noqa: F811
    batch_size: int,
    names: list[str],
) -> None:
    """``trtforge.calibration`` end to end (native mode: a scale per activation of the model) on
    the small CNN and its 24 samples, against the oracle on the same activations.

    One batch of 24: trtforge's range is just above max |x|, as in ModelOpt's collector on one
    batch (``histc`` over ``[0, max |x|]``), so the oracle gets its own histogram, made with
    numpy. Batches of 4: trtforge's range doubles (bins merge in pairs) where ModelOpt's collector
    would add bins, so the histograms differ and the oracle gets the one trtforge builds batch by
    batch; the scale still depends on the batching (the accuracy gate judges it).
    """
    scales = run(spec_file(batch_size=batch_size, mode="native"), cnn / "cache").scales
    x = np.concatenate([np.load(path) for path in sorted((cnn / "data").glob("*.npy"))])
    activations = _activations(onnx.load(str(cnn / "cnn.onnx")), names, x)
    assert sorted(activations) == sorted(names)
    for name, values in activations.items():
        if batch_size == len(x):
            magnitudes = np.abs(values.ravel())
            counts, edges = np.histogram(magnitudes, bins=2048, range=(0.0, float(magnitudes.max())))
            width, largest = float(edges[1]), float(magnitudes.max())
        else:
            histogram = AbsHistogram()
            for start in range(0, len(values), batch_size):
                histogram.update(values[start : start + batch_size])
            counts, width, largest = histogram.counts, histogram.width, histogram.amax
        oracle = oracle_amax(counts, width)
        if name == "pool":  # 192 values, the first of them 270 bins up: nothing kept
            assert round(oracle / width) == np.flatnonzero(counts[1:])[0] + 1 == entropy_bins(counts) - 1
            assert scales[name] == pytest.approx(amax_to_scale(oracle + width), rel=1e-6)
        else:
            assert scales[name] == pytest.approx(amax_to_scale(min(oracle, largest)), rel=1e-6), name
