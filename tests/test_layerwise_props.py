"""``trtforge diagnose``'s per-node metrics are the accuracy gate's: a node's cosine and SNR, summed
batch by batch (:class:`trtforge.accuracy.metrics.PartialSums`), are those the gate's
:mod:`trtforge.accuracy.metrics` gives on all the batches' values together, whatever their range.

Oracle: ``metrics.compare``/``cosine``/``snr_db`` on the concatenated arrays, themselves checked
against exact rational arithmetic, scipy and longdouble sums in tests/test_metric_props.py. The
streamed values differ from them only by the order of the float64 additions (batch by batch, then
across batches, where numpy sums one array): within the summation error those tests allow,
``8 (n + 4)`` ulps of 1 for a cosine and 1e-12 relative for an SNR in dB. The examples are the
defects of the diagnosis's former sums of its own, plain float64 ones that overflowed or vanished
and were neither clipped nor held to cosine 1.0 for equal values only: through a real diagnosis of
a small ONNX model run in onnxruntime.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import models
import numpy as np
import pytest
from float_pairs import FLOATS, candidate_for, elements, finite_like
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from onnx import TensorProto, helper, numpy_helper

from trtforge.accuracy import metrics
from trtforge.diagnosis.layerwise import NodeError, _Row, _Running, diagnose_layers, finish
from trtforge.model import describe, load_onnx
from trtforge.spec import load_spec

EPS = np.finfo(np.float64).eps
SPECIALS = (math.nan, math.inf, -math.inf)
#: float64 magnitudes whose squares overflow (1e200) or vanish (1e-200) in float64, and 2**-1060:
#: subnormal values, whose squares are 0
MAGNITUDES = (1.0, 1e200, 1e-200, 2.0**-1060, 1e300)

# ---------------------------------------------------------------- strategies


@st.composite
def batched_pairs(draw: st.DrawFn, specials: bool = True) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """A reference and a candidate of one float dtype (any finite value of it: subnormals, zeros of
    both signs, values near its largest; float64 ones also scaled to where squares leave float64's
    range), the candidate equal, slightly off, negated, scaled, half its signs flipped (sums that
    cancel), independent or zeros; NaN/+Inf/-Inf anywhere in either; and where batches split them
    (empty batches too)."""
    dtype = draw(st.sampled_from(FLOATS))
    size = draw(st.integers(0, 40))
    ref = draw(hnp.arrays(dtype, size, elements=elements(dtype)))
    if dtype is np.float64:
        magnitude = draw(st.sampled_from(MAGNITUDES))
        ref = finite_like(lambda: ref * magnitude, ref)
    cand = draw(candidate_for(ref))
    if specials and size:
        for array in (ref, cand):
            for index in draw(st.lists(st.integers(0, size - 1), max_size=3)):
                array[index] = draw(st.sampled_from(SPECIALS))
    cuts = sorted(draw(st.lists(st.integers(0, size), max_size=5)))
    return ref, cand, cuts


def _streamed(ref: np.ndarray, cand: np.ndarray, cuts: list[int]) -> tuple[_Running, NodeError | None]:
    """One node's running measurements over the batches, and its row as the diagnosis writes it."""
    running = _Running()
    for ref_batch, cand_batch in zip(np.split(ref, cuts), np.split(cand, cuts), strict=True):
        running.add(ref_batch, cand_batch)
    rows = finish([_Row("node", "Mul", ("x",), ("y",), (("y", "y"),))], {"node": running})
    return running, rows[0] if rows else None


def _close(value: float, oracle: float, rel: float, abs_: float = 0.0) -> bool:
    if math.isnan(oracle) or math.isinf(oracle):
        return value == oracle or (math.isnan(value) and math.isnan(oracle))
    return abs(value - oracle) <= rel * abs(oracle) + abs_


# ---------------------------------------------------------------- properties


@settings(max_examples=500)
@given(batched_pairs())
def test_a_nodes_streamed_metrics_are_the_gates_on_all_its_values(
    case: tuple[np.ndarray, np.ndarray, list[int]],
) -> None:
    """Any float16/32/64 values split into any batches: the node's cosine and SNR are the gate's
    (``metrics.compare``) on the whole arrays, within the summation order's few ulps; cosine is 1.0
    exactly when the finite values are equal, and below it otherwise; ``max_abs``, the finite value
    count and the NaN/Inf mismatches are the gate's exactly; ``max_rel`` is the gate's where the
    first batch with finite values holds the largest |reference|, and an upper bound of it always
    (its floor follows the largest |reference| seen so far: README, "Layer-wise diagnosis")."""
    ref, cand, cuts = case
    running, row = _streamed(ref, cand, cuts)
    gate = metrics.compare(ref, cand)
    both_finite = np.isfinite(ref.astype(np.float64)) & np.isfinite(cand.astype(np.float64))
    values = int(np.count_nonzero(both_finite))
    mismatch = gate.nonfinite_mismatch or 0
    assert (running.values, running.nonfinite_mismatch) == (values, mismatch)
    if row is None:  # nothing to measure: the diagnosis has no row for it
        assert values == 0 and mismatch == 0
        return
    assert row.max_abs == gate.max_abs
    assert (row.cosine == 1.0) == (gate.cosine == 1.0) == np.array_equal(ref[both_finite], cand[both_finite])
    assert -1.0 <= row.cosine <= 1.0
    assert _close(row.cosine, gate.cosine, rel=0.0, abs_=8 * (values + 4) * EPS), (row.cosine, gate.cosine)
    assert _close(row.snr_db, gate.snr_db, rel=1e-12, abs_=1e-9), (row.snr_db, gate.snr_db)
    assert row.max_rel >= gate.max_rel
    masks, refs = np.split(both_finite, cuts), np.split(ref.astype(np.float64), cuts)
    peaks = [float(np.max(np.abs(values[mask]))) for values, mask in zip(refs, masks, strict=True) if mask.any()]
    if peaks and peaks[0] == max(peaks):
        assert row.max_rel == gate.max_rel


@settings(max_examples=400)
@given(batched_pairs())
def test_partial_sums_of_any_batches_are_the_metrics_of_their_concatenation(
    case: tuple[np.ndarray, np.ndarray, list[int]],
) -> None:
    """The one streaming form the gate's metrics are written with: added batch by batch, NaN and
    Inf included (a NaN cosine or SNR, as ``metrics.cosine``/``snr_db`` give on the whole arrays;
    the gate measures finite positions only), its cosine and SNR are those of the concatenation;
    of one batch, bit for bit."""
    ref, cand, cuts = case
    sums = metrics.PartialSums()
    for ref_batch, cand_batch in zip(np.split(ref, cuts), np.split(cand, cuts), strict=True):
        sums.add(ref_batch, cand_batch)
    with np.errstate(all="ignore"):
        cosine, snr = metrics.cosine(ref, cand), metrics.snr_db(ref, cand)
    size = ref.size
    assert _close(sums.cosine(), cosine, rel=0.0, abs_=8 * (size + 4) * EPS), (sums.cosine(), cosine)
    assert _close(sums.snr_db(), snr, rel=1e-12, abs_=1e-9), (sums.snr_db(), snr)
    whole = metrics.PartialSums.of(ref, cand)
    assert whole.cosine() == cosine or (math.isnan(whole.cosine()) and math.isnan(cosine))
    assert whole.snr_db() == snr or (math.isnan(whole.snr_db()) and math.isnan(snr))


# ---------------------------------------------------------------- a real diagnosis


def _scale_model(path: Path, scale: float, dtype: Any) -> Path:
    """x [N, 8] -> Mul by ``scale`` ("scale") -> Relu ("relu"): with the reference's scale s and the
    candidate's 1.5 s, every node's candidate is 1.5x its reference (cosine 1, SNR 10 log10 4)."""
    elem = TensorProto.DOUBLE if dtype is np.float64 else TensorProto.FLOAT
    graph = helper.make_graph(
        [helper.make_node("Mul", ["x", "s"], ["y"], name="scale"), helper.make_node("Relu", ["y"], ["z"], name="relu")],
        "scale",
        [helper.make_tensor_value_info("x", elem, ["N", 8])],
        [helper.make_tensor_value_info("z", elem, ["N", 8])],
        [numpy_helper.from_array(np.array(scale, dtype), "s")],
    )
    return models.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), path)


def _diagnose(folder: Path, scale: float, factor: float, dtype: Any) -> dict[str, NodeError]:
    """The real diagnosis (onnxruntime, the gate's seeded random feeds: several batches) of the
    candidate ``factor`` times the reference."""
    reference = _scale_model(folder / "reference.onnx", scale, dtype)
    candidate = _scale_model(folder / "candidate.onnx", scale * factor, dtype)
    spec_path = folder / "spec.yaml"
    spec_path.write_text(
        f"name: scale\nmodel: {reference}\nprecision: fp16\ntargets: ['8.6']\n"
        "profiles:\n  - x: {min: [1, 8], opt: [4, 8], max: [8, 8]}\n",
        encoding="utf-8",
    )
    diagnosis = diagnose_layers(load_spec(spec_path), describe(load_onnx(reference), reference), candidate, stem="s")
    assert diagnosis.batches > 1
    return {node.node: node for node in diagnosis.nodes}


@pytest.mark.parametrize("scale", [1e200, 1e-200], ids=["1e200", "1e-200"])
def test_float64_activations_beyond_squares_range_have_the_gates_metrics(tmp_path: Path, scale: float) -> None:
    """float64 activations of 1e200 (squares overflow) gave a NaN cosine and SNR; of 1e-200 (squares
    vanish) a cosine of 1 and an SNR of inf for a candidate 1.5x off: both as the gate measures them
    now, a cosine just below 1 and 10 log10(1 / 0.5**2) = 6.02 dB."""
    for node in _diagnose(tmp_path, scale, 1.5, np.float64).values():
        assert 1.0 - 1e-12 < node.cosine <= metrics.BELOW_ONE, node
        assert node.snr_db == pytest.approx(10 * math.log10(4), abs=1e-9), node


def test_a_candidate_at_twice_the_reference_is_not_cosine_1(tmp_path: Path) -> None:
    """dot / norms of ``c = 2 r`` rounds to 1.0 exactly: the diagnosis printed cosine 1 (no error)
    for a node whose outputs are all twice the reference's, where the gate fails ``cosine_min: 1.0``."""
    nodes = _diagnose(tmp_path, 1.0, 2.0, np.float32)
    assert [node.cosine for node in nodes.values()] == [metrics.BELOW_ONE] * 2
    assert all(node.snr_db == 0.0 for node in nodes.values())
