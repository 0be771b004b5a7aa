"""Calibration statistics updated in a thread of their own (issue 16, item 5): the same
histograms, ranges and scales as updating them in the caller's thread, bit for bit; an
overflow still names its tensor and samples; the chunk buffers are reused per thread; a
session made from the folded file extended in place collects what one from the model does;
the thresholds searched on several threads are those of one search after the other."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import numpy as np
import onnx
import pytest
from models import save, small_cnn

from trtforge.calibration import histogram
from trtforge.calibration.collect import all_activations, collect
from trtforge.calibration.histogram import (
    AbsHistogram,
    Algorithm,
    MaxTracker,
    TensorStats,
    _chunk_buffers,
    amax_to_scale,
    compute_amax,
    compute_amaxes,
)
from trtforge.calibration.qdq import folded_file, quantized_inputs
from trtforge.errors import InvalidInputError


def batches(count: int, size: int = 4, scale_up: int | None = None) -> list[dict[str, np.ndarray]]:
    """Seeded inputs whose range grows batch by batch, so histograms double their range midway."""
    rng = np.random.default_rng(7)
    out = []
    for index in range(count):
        data = rng.random((size, 3, 16, 16), dtype=np.float32) * (1 + index)
        if index == scale_up:
            data[0, 0, 0, 0] = np.inf
        out.append({"input": data})
    return out


@pytest.mark.parametrize("cpus", [1, 3])
def test_threaded_statistics_equal_sequential_ones(cpus: int) -> None:
    model = small_cnn()
    tensors = all_activations(model)
    threaded, seen = collect(model, tensors, batches(12), "entropy", cpus=cpus, stats_thread=True)
    sequential, seen_too = collect(model, tensors, batches(12), "entropy", cpus=cpus, stats_thread=False)
    assert seen == seen_too == 48
    assert threaded.keys() == sequential.keys() and len(threaded) > 3
    for name, stats in threaded.items():
        other = sequential[name]
        assert isinstance(stats, AbsHistogram) and isinstance(other, AbsHistogram)
        assert np.array_equal(stats.counts, other.counts) and stats.scale == other.scale and stats.amax == other.amax
        for algorithm in ("entropy", "percentile", "minmax"):
            assert amax_to_scale(compute_amax(stats, algorithm)) == amax_to_scale(compute_amax(other, algorithm))


def test_overflow_in_the_stats_thread_names_tensor_and_samples() -> None:
    model = small_cnn()
    with pytest.raises(InvalidInputError, match=r"tensor 'input' has NaN or Inf values for samples 12\.\.15"):
        collect(model, ["input"], batches(6, scale_up=3), "entropy", stats_thread=True)


def test_chunk_buffers_are_reused_within_a_thread_and_separate_across_threads() -> None:
    mine = _chunk_buffers()
    assert _chunk_buffers()[0] is mine[0] and _chunk_buffers()[1] is mine[1]
    theirs: list[tuple[np.ndarray, np.ndarray]] = []
    worker = threading.Thread(target=lambda: theirs.append(_chunk_buffers()))
    worker.start()
    worker.join()
    assert theirs[0][0] is not mine[0]
    # a histogram updated through the reused buffers equals one updated through fresh ones
    values = np.random.default_rng(3).standard_normal(200_000).astype(np.float32)
    reused, fresh = AbsHistogram(), AbsHistogram()
    for part in np.array_split(values, 5):
        reused.update(part)
    worker = threading.Thread(target=lambda: [fresh.update(part) for part in np.array_split(values, 5)])
    worker.start()
    worker.join()
    assert np.array_equal(reused.counts, fresh.counts) and reused.scale == fresh.scale


def test_collecting_from_the_extended_folded_file_equals_collecting_from_the_model(tmp_path: Path) -> None:
    with folded_file(save(small_cnn(), tmp_path / "model.onnx")) as saved:
        folded = onnx.load(str(saved))
        tensors = quantized_inputs(folded)
        from_file, seen = collect(folded, tensors, batches(8), "entropy", saved=saved)
        extended = onnx.load(str(saved))
    assert not saved.exists()  # the temporary folder is gone with the context
    from_model, seen_too = collect(folded, tensors, batches(8), "entropy")
    # the outputs were appended to the file as a message of their own; the model is untouched
    added = [name for name in tensors if name != "input"]
    assert [output.name for output in extended.graph.output] == ["logits", *added]
    assert [output.name for output in folded.graph.output] == ["logits"]
    assert seen == seen_too == 32 and from_file.keys() == from_model.keys() == set(tensors)
    for name, stats in from_file.items():
        other = from_model[name]
        assert isinstance(stats, AbsHistogram) and isinstance(other, AbsHistogram)
        assert np.array_equal(stats.counts, other.counts) and stats.scale == other.scale and stats.amax == other.amax


@pytest.mark.parametrize(("algorithm", "percentile"), [("entropy", 99.99), ("percentile", 99.9), ("minmax", 99.99)])
def test_thresholds_on_threads_equal_one_search_after_the_other(algorithm: Algorithm, percentile: float) -> None:
    model = small_cnn()
    stats, _ = collect(model, all_activations(model), batches(12), "entropy")
    tracker = MaxTracker()
    tracker.update(np.array([0.5, -3.0], dtype=np.float32))
    every: dict[str, TensorStats] = {**stats, "tracked": tracker, "empty": AbsHistogram()}
    assert len(every) > 5
    threaded = compute_amaxes(every, algorithm, percentile)
    assert list(threaded) == list(every)
    assert threaded == {name: compute_amax(values, algorithm, percentile) for name, values in every.items()}
    assert threaded["tracked"] == 3.0


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="one core: the searches run one after the other")
def test_thresholds_are_searched_on_worker_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    model = small_cnn()
    stats, _ = collect(model, all_activations(model), batches(4), "entropy")
    threads: list[str] = []
    search = histogram.compute_amax

    def recorded(values: TensorStats, algorithm: Algorithm, percentile: float = 99.99) -> float:
        threads.append(threading.current_thread().name)
        return search(values, algorithm, percentile)

    monkeypatch.setattr(histogram, "compute_amax", recorded)
    compute_amaxes(stats, "entropy")
    assert len(threads) == len(stats) and all(name.startswith("calibration-amax") for name in threads)


def test_statistics_are_created_once_per_tensor(monkeypatch: pytest.MonkeyPatch) -> None:
    """Not one 2048-bin histogram per tensor and batch (issue 16, item 5), only one per tensor."""
    from trtforge.calibration import collect as collect_module

    created: list[str] = []
    make = collect_module.new_stats

    def counted(algorithm: Algorithm, finite_only: bool = False) -> TensorStats:
        created.append(algorithm)
        return make(algorithm, finite_only)

    monkeypatch.setattr(collect_module, "new_stats", counted)
    model = small_cnn()
    stats, seen = collect(model, all_activations(model), batches(6), "entropy")
    assert seen == 24 and len(created) == len(stats) > 3


def test_folding_on_one_thread_writes_what_a_default_session_writes(tmp_path: Path) -> None:
    import onnxruntime as ort

    source = save(small_cnn(), tmp_path / "model.onnx")
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    options.optimized_model_filepath = str(tmp_path / "default.onnx")
    ort.InferenceSession(str(source), options, providers=["CPUExecutionProvider"])
    with folded_file(source) as saved:
        folded = saved.read_bytes()
    assert folded == (tmp_path / "default.onnx").read_bytes()
    assert not any(node.op_type == "BatchNormalization" for node in onnx.load_from_string(folded).graph.node)
