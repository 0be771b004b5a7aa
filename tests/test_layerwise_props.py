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
from onnx import TensorProto, helper, numpy_helper

from trtforge.accuracy import metrics
from trtforge.diagnosis.layerwise import NodeError, diagnose_layers
from trtforge.model import describe, load_onnx
from trtforge.spec import load_spec

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
