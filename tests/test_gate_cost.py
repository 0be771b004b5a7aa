"""The accuracy gate costs what it must and no more (issue 16, item 1).

fp32 with a simulated candidate runs nothing at all; the reference's outputs are cached by
content; reference and candidate run in two threads; the random-input plan caps the max's batch
and still catches damaged candidates. Real onnxruntime and real TensorRT-RTX builds throughout.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

import numpy as np
import onnx
import pytest
from clitools import cli
from junitparser import JUnitXml
from models import need_rtx, overflow_chain, overflowing_fp16_spec, save, unsupported_op, without_gpu, write_samples
from onnx import TensorProto, helper, numpy_helper

from trtforge.accuracy import references
from trtforge.accuracy.gate import GateCandidate, run_gate
from trtforge.accuracy.inputs import GateShapes, random_batches, shape_sets
from trtforge.accuracy.report import IDENTICAL_PASS
from trtforge.build import build_spec
from trtforge.console import Reporter
from trtforge.environment import usable_cores
from trtforge.errors import BuildError, InvalidInputError
from trtforge.manifest import read_manifest
from trtforge.mixedprecision import FP16_STORAGE
from trtforge.model import ModelInfo, TensorDesc, inspect_model
from trtforge.runners.onnxruntime import OnnxrtRunner
from trtforge.shapes import MAX_POINT_BYTES
from trtforge.spec import ShapeRange, load_spec

tensor = helper.make_tensor_value_info
#: min 1, opt 2 at 256 px, max 16 at 512 px (16 MiB of input): the max is checked at batch 4
WIDE_PROFILE = "profiles:\n  - x: {min: [1, 1, 64, 64], opt: [2, 1, 256, 256], max: [16, 1, 512, 512]}\n"


def _conv(weight_sign: float = 1.0, zero_beyond: int | None = None) -> onnx.ModelProto:
    """A 3x3 conv over [N, 1, H, W]; ``zero_beyond``: a damaged twin whose output columns from
    that index on are zero, so it is wrong only at widths over it."""
    weight = np.random.default_rng(0).normal(0, 1, (1, 1, 3, 3)).astype(np.float32) * weight_sign
    inits = [numpy_helper.from_array(weight, "w")]
    nodes = [helper.make_node("Conv", ["x", "w"], ["y" if zero_beyond is None else "c"], pads=[1, 1, 1, 1])]
    if zero_beyond is not None:
        for name, value in (("at", zero_beyond), ("end", 1 << 30), ("zero_at", 0), ("axis", 3)):
            inits.append(numpy_helper.from_array(np.array([value], np.int64), name))
        inits.append(numpy_helper.from_array(np.array(0, np.float32), "zero"))
        nodes += [
            helper.make_node("Slice", ["c", "zero_at", "at", "axis"], ["left"]),
            helper.make_node("Slice", ["c", "at", "end", "axis"], ["right"]),
            helper.make_node("Mul", ["right", "zero"], ["nothing"]),
            helper.make_node("Concat", ["left", "nothing"], ["y"], axis=3),
        ]
    graph = helper.make_graph(
        nodes,
        "conv",
        [tensor("x", TensorProto.FLOAT, ["N", 1, "H", "W"])],
        [tensor("y", TensorProto.FLOAT, ["N", 1, "H", "W"])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def _spec(tmp_path: Path, precision: str, extra: str = "") -> Path:
    save(_conv(), tmp_path / "conv.onnx")
    spec = tmp_path / f"{precision}.yaml"
    spec.write_text(
        f"name: conv\nmodel: {tmp_path / 'conv.onnx'}\nprecision: {precision}\ntargets: ['8.6']\n{WIDE_PROFILE}{extra}"
    )
    return spec


def _report(out: Path) -> dict[str, Any]:
    (path,) = out.glob("*.accuracy.json")
    return json.loads(path.read_text())


# ---------------------------------------------------------------- the plan


def _range(low: list[int], opt: list[int], high: list[int]) -> ShapeRange:
    return ShapeRange(min=low, opt=opt, max=high)


def test_max_keeps_its_dims_but_its_batch_is_capped() -> None:
    image = ModelInfo(Path("m.onnx"), (TensorDesc("x", "float32", ("N", 3, 224, 224)),), ())
    profile = {"x": _range([1, 3, 224, 224], [16, 3, 224, 224], [32, 3, 224, 224])}
    sets = shape_sets(image, [profile])
    assert [s.shapes["x"] for s in sets] == [(1, 3, 224, 224), (16, 3, 224, 224), (4, 3, 224, 224)]
    assert "batch capped" in sets[2].label  # 32 at 224 px is 18 MiB: halved until it fits 4 MiB
    assert 4 * 3 * 224 * 224 * 4 <= MAX_POINT_BYTES < 8 * 3 * 224 * 224 * 4

    tokens = ModelInfo(
        Path("m.onnx"), (TensorDesc("ids", "int64", ("N", "S")), TensorDesc("mask", "int64", ("N", "S"))), ()
    )
    ranges = _range([1, 16], [8, 128], [512, 512])
    (_, _, largest) = shape_sets(tokens, [{"ids": ranges, "mask": ranges}])
    assert largest.shapes == {"ids": (512, 512), "mask": (512, 512)}  # 4 MiB of int64: fits
    ranges = _range([1, 16], [8, 128], [2048, 512])
    (_, _, largest) = shape_sets(tokens, [{"ids": ranges, "mask": ranges}])
    assert largest.shapes == {"ids": (512, 512), "mask": (512, 512)}  # both batches halved together; seq stays


def test_a_shape_over_the_budget_shrinks_a_named_dim_in_every_input_that_has_it() -> None:
    """image [1,3,H,W] * mask [1,1,H,W] at 6000 px: only the image's H and W were halved (mask
    still 6000x6000), a shape set the model cannot run, so a valid spec failed the gate (exit 2)."""
    seg = ModelInfo(
        Path("m.onnx"),
        (TensorDesc("image", "float32", (1, 3, "H", "W")), TensorDesc("mask", "float32", (1, 1, "H", "W"))),
        (),
    )
    profile = {
        "image": _range([1, 3, 64, 64], [1, 3, 512, 512], [1, 3, 6000, 6000]),
        "mask": _range([1, 1, 64, 64], [1, 1, 512, 512], [1, 1, 6000, 6000]),
    }
    largest = shape_sets(seg, [profile])[-1]
    assert largest.shapes["image"][2:] == largest.shapes["mask"][2:] == (3000, 3000), largest


def test_small_profiles_keep_every_point_at_full_size() -> None:
    image = ModelInfo(Path("m.onnx"), (TensorDesc("x", "float32", ("N", 1, 8, 8)),), ())
    sets = shape_sets(image, [{"x": _range([1, 1, 8, 8], [16, 1, 8, 8], [64, 1, 8, 8])}])
    assert [s.shapes["x"][0] for s in sets] == [1, 16, 64] and not any("capped" in s.label for s in sets)


def test_samples_are_counted_on_the_batched_inputs(tmp_path: Path) -> None:
    """A static [4] bias before x [N, 4] holds no samples: profile N 1/8/16 runs 25 (it said 12)."""
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "bias"], ["y"])],
        "bias_first",
        [tensor("bias", TensorProto.FLOAT, [4]), tensor("x", TensorProto.FLOAT, ["N", 4])],
        [tensor("y", TensorProto.FLOAT, ["N", 4])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text(
        f"name: bias\nmodel: {save(model, tmp_path / 'm.onnx')}\nprecision: fp16\ntargets: ['8.6']\n"
        "profiles:\n  - x: {min: [1, 4], opt: [8, 4], max: [16, 4]}\n"
    )
    spec = load_spec(spec_path)
    assert [batch.size for batch in random_batches(inspect_model(spec.model_path), spec.profiles, 0)] == [1, 8, 16]
    need_rtx()
    code, _, stderr = cli("build", spec_path, "--out", tmp_path / "out")
    assert code == 0, stderr
    assert _report(tmp_path / "out")["data"]["samples"] == 25
    (engine,) = (tmp_path / "out").glob("*.engine")
    assert read_manifest(engine).accuracy["samples"] == 25  # type: ignore[index]


@pytest.mark.parametrize(
    ("damage", "failing"),
    [
        (_conv(weight_sign=-1.0), "cosine"),  # flipped weights, as the broken FP16 conversion test has
        (_conv(zero_beyond=256), "cosine"),  # wrong only past the opt's width: the capped max still sees it
    ],
    ids=["flipped-weights", "wrong-beyond-opt-width"],
)
def test_capped_plan_still_catches_damaged_candidates(tmp_path: Path, damage: onnx.ModelProto, failing: str) -> None:
    spec = load_spec(_spec(tmp_path, "fp16"))
    damaged = save(damage, tmp_path / "damaged.onnx")
    report = run_gate(
        spec,
        inspect_model(spec.model_path),
        GateCandidate("simulated", "test", onnx_path=damaged),
        stem="conv-damaged",
        engine_file=None,
    )
    assert report.data.samples == 1 + 2 + 4  # min, opt, and the max at batch 4 (16 MiB capped to 4 MiB)
    # the report itself (not only the log) says the max was checked at a smaller batch
    (note,) = report.data.notes
    assert "checked at x=[4, 1, 512, 512] instead" in note, note
    assert not report.passed and any(failing in failure for failure in report.failures)


# ---------------------------------------------------------------- fp32: no run at all


def test_fp32_identical_runs_nothing_and_says_why(tmp_path: Path) -> None:
    need_rtx()
    out = tmp_path / "out"
    spec = _spec(tmp_path, "fp32")
    env = {**os.environ, "TRTFORGE_CACHE_DIR": str(tmp_path / "cache")}
    junit = tmp_path / "gate.xml"
    command = [sys.executable, "-X", "importtime", "-m", "trtforge", "build", str(spec), "--out", str(out)]
    done = subprocess.run([*command, "--junit", str(junit)], capture_output=True, text=True, env=env, check=False)
    assert done.returncode == 0, done.stderr
    imported = {line.split("|")[-1].strip() for line in done.stderr.splitlines() if line.startswith("import time:")}
    assert "onnxruntime" not in imported and "trtforge.accuracy.gate" in imported  # the gate, no run
    report = _report(out)
    assert report["candidate"]["kind"] == "identical" and IDENTICAL_PASS in report["candidate"]["reason"]
    assert report["data"]["batches"] == 0 and report["data"]["samples"] == 0  # no feed at all
    (output,) = report["outputs"]
    assert report["passed"] is True and output["metrics"] == {} and output["checks"] == []
    assert output["tolerance"] == {"cosine_min": 0.99999, "snr_db_min": 46.99}  # the limits it would apply
    # a build that compared nothing never reads "passed" to a person or a CI system
    assert ": not measured — candidate identical" in done.stderr and ": passed" not in done.stderr
    accuracy = read_manifest(next(out.glob("*.engine"))).accuracy
    assert accuracy is not None and (accuracy["passed"], accuracy["measured"]) == (True, False)
    (suite,) = JUnitXml.fromfile(str(junit))
    (case,) = suite
    assert suite.skipped == 1 and IDENTICAL_PASS in case.result[0].message
    code, stdout, stderr = cli("verify", spec, "--out", out, "--json")
    (row,) = json.loads(stdout)["results"]
    assert code == 0 and row["status"] == "not measured" and ": not measured — candidate identical" in stderr
    # verify built nothing ("TensorRT has just parsed and built the model" was untrue there), and the
    # candidate is identical from the gate's first line on (it said "candidate simulated")
    assert IDENTICAL_PASS in _report(out)["candidate"]["reason"] and "has just" not in IDENTICAL_PASS
    assert ": accuracy gate, candidate identical (" in stderr and "candidate simulated" not in stderr


# ---------------------------------------------------------------- the reference cache


def test_int8_build_reads_the_reference_outputs_the_fp16_build_cached(tmp_path: Path, isolated_cache: Path) -> None:
    need_rtx()
    write_samples(tmp_path / "calib", (4, 1, 64, 64), 2)
    calibration = f"calibration:\n  data: {tmp_path / 'calib'}/*.npy\n"
    code, _, stderr = cli("build", _spec(tmp_path, "fp16"), "--out", tmp_path / "out")
    assert code == 0, stderr
    assert "reference outputs read from the cache" not in stderr
    (entry,) = (isolated_cache / references.FOLDER).glob("*.npz")
    code, _, stderr = cli("build", _spec(tmp_path, "int8", calibration), "--out", tmp_path / "out")
    assert code == 0, stderr
    assert f"reference outputs read from the cache ({entry})" in stderr
    assert list((isolated_cache / references.FOLDER).glob("*.npz")) == [entry]
    int8 = json.loads(next((tmp_path / "out").glob("conv-int8-*.accuracy.json")).read_text())
    assert int8["data"]["samples"] == 7 and int8["reference"]["model_sha256"]

    save(_conv(weight_sign=-1.0), tmp_path / "conv.onnx")  # another model: another key, never the old entry
    spec = tmp_path / "fp16.yaml"
    code, _, stderr = cli("build", spec, "--out", tmp_path / "other")
    assert code == 0, stderr
    assert "reference outputs read from the cache" not in stderr
    assert len(list((isolated_cache / references.FOLDER).glob("*.npz"))) == 2


#: [N, 4] -> [N, 4], and the shape sets of two feeds (batch 4, batch 2)
ROWS = ModelInfo(Path("m.onnx"), (TensorDesc("x", "float32", ("N", 4)),), (TensorDesc("y", "float32", ("N", 4)),))
TWO_FEEDS = [GateShapes("a", {"x": (4, 4)}), GateShapes("b", {"x": (2, 4)})]


def test_outputs_over_the_size_limit_are_not_cached(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    outputs = [{"y": np.ones((4, 4), np.float32)}, {"y": np.zeros((2, 4), np.float32)}]
    path = tmp_path / "reference" / "key.npz"
    assert references.store(path, outputs, ["y"])
    (first, second) = references.load(path, ROWS, TWO_FEEDS) or []
    assert np.array_equal(first["y"], outputs[0]["y"]) and np.array_equal(second["y"], outputs[1]["y"])
    assert references.load(path, ROWS, [*TWO_FEEDS, TWO_FEEDS[0]]) is None  # another plan's feed count: a miss
    path.write_bytes(b"damaged")
    assert references.load(path, ROWS, TWO_FEEDS) is None
    monkeypatch.setattr(references, "CACHE_LIMIT_BYTES", 64)
    other = tmp_path / "reference" / "big.npz"
    assert not references.store(other, outputs, ["y"]) and not other.exists()


@pytest.mark.parametrize(
    "outputs",
    [
        [{"y": np.ones((4, 4), np.float16)}, {"y": np.ones((2, 4), np.float32)}],  # another dtype
        [{"y": np.ones((2, 4), np.float32)}, {"y": np.ones((2, 4), np.float32)}],  # another batch than the feed's
        [{"y": np.ones((4, 5), np.float32)}, {"y": np.ones((2, 4), np.float32)}],  # another static dim
        [{"y": np.ones(16, np.float32)}, {"y": np.ones((2, 4), np.float32)}],  # another rank
        [{"y": np.ones((4, 4), np.float32)}],  # another feed count
    ],
    ids=["dtype", "batch", "static-dim", "rank", "feeds"],
)
def test_an_entry_not_of_the_form_the_model_declares_is_a_miss(tmp_path: Path, outputs: references.Outputs) -> None:
    path = tmp_path / "reference" / "key.npz"
    assert references.store(path, outputs, list(outputs[0]))
    assert references.load(path, ROWS, TWO_FEEDS) is None
    right = [{"y": np.ones((4, 4), np.float32)}, {"y": np.ones((2, 4), np.float32)}]
    assert references.conforms(right, ROWS, TWO_FEEDS) and not references.conforms(outputs, ROWS, TWO_FEEDS)


@without_gpu
def test_verify_never_reads_the_reference_cache(tmp_path: Path, isolated_cache: Path) -> None:
    """An entry planted in the cache folder (the broken candidate's own outputs, in the right form)
    makes a build compare the candidate with itself: an entry saves cost and proves nothing. verify,
    which decides whether to trust the artifact, runs the reference itself and fails it."""
    need_rtx()
    spec_path, out = overflowing_fp16_spec(tmp_path), tmp_path / "out"
    code, _, stderr = cli("build", spec_path, "--out", out)
    assert code == 4, stderr
    (entry,) = (isolated_cache / references.FOLDER).glob("*.npz")
    (rejected,) = out.glob("*.rejected.accuracy.json")
    candidate = OnnxrtRunner(Path(json.loads(rejected.read_text())["candidate"]["model"]), name="candidate")
    spec = load_spec(spec_path)
    candidate.activate()
    planted = [
        candidate.infer(batch.feed) for batch in random_batches(inspect_model(spec.model_path), spec.profiles, 0)
    ]
    candidate.deactivate()
    overflown = np.concatenate([np.isinf(feed["out"]).ravel() for feed in planted])
    assert overflown.any() and not overflown.all()
    assert references.store(entry, planted, ["out"])

    code, _, stderr = cli("build", spec_path, "--out", out)
    assert code == 0 and f"reference outputs read from the cache ({entry})" in stderr, stderr
    code, _, stderr = cli("verify", spec_path, "--out", out)
    assert code == 4 and "NaN/Inf pattern differs" in stderr and "read from the cache" not in stderr, stderr
    (engine,) = out.glob("*.engine")
    assert read_manifest(engine).accuracy["passed"] is False  # type: ignore[index]
    code, _, stderr = cli("build", spec_path, "--out", tmp_path / "again")  # verify stored the true outputs
    assert code == 4 and f"reference outputs read from the cache ({entry})" in stderr, stderr


def test_a_damaged_reference_entry_is_recomputed_and_overwritten(tmp_path: Path, isolated_cache: Path) -> None:
    """An entry whose output was cut to another shape fails no good engine: it is a miss, and the
    build stores the reference's true outputs over it."""
    need_rtx()
    spec_path = _spec(tmp_path, "fp16")
    code, _, stderr = cli("build", spec_path, "--out", tmp_path / "out")
    assert code == 0, stderr
    (entry,) = (isolated_cache / references.FOLDER).glob("*.npz")
    with np.load(entry) as archive:
        arrays = dict(archive)
    arrays["0.0"] = arrays["0.0"][:1, :, :8]
    np.savez(entry, **arrays)
    code, _, stderr = cli("build", spec_path, "--out", tmp_path / "again")
    assert code == 0 and "read from the cache" not in stderr, stderr
    spec = load_spec(spec_path)
    model = inspect_model(spec.model_path)
    assert references.load(entry, model, shape_sets(model, spec.profiles)) is not None


# ---------------------------------------------------------------- reference and candidate side by side


@pytest.mark.skipif(usable_cores() < 2, reason="one core: the gate runs both sides in turn")
def test_reference_runs_in_its_own_thread_beside_the_candidate(tmp_path: Path) -> None:
    spec = load_spec(_spec(tmp_path, "fp16"))
    seen: set[tuple[str, bool]] = set()

    def profile(frame: FrameType, event: str, _arg: object) -> None:
        if event == "call" and frame.f_code.co_name in ("_run_onnx", "_candidate_out"):
            seen.add((frame.f_code.co_name, threading.current_thread() is threading.main_thread()))

    threading.setprofile(profile)  # type: ignore[arg-type]
    sys.setprofile(profile)  # type: ignore[arg-type]
    try:
        report = run_gate(
            spec,
            inspect_model(spec.model_path),
            GateCandidate("simulated", "test", onnx_path=save(_conv(), tmp_path / "copy.onnx")),
            stem="conv",
            engine_file=None,
        )
    finally:
        sys.setprofile(None)
        threading.setprofile(None)  # type: ignore[arg-type]
    assert report.passed and report.candidate.kind == "simulated" and report.data.samples == 7
    # the reference's runs happen off the main thread, the candidate's on it: both at once
    assert seen == {("_run_onnx", False), ("_candidate_out", True), ("_run_onnx", True)}


# ---------------------------------------------------------------- describing the model without onnx


def test_build_describes_the_model_from_the_protobuf_alone(tmp_path: Path) -> None:
    """``read_model_info`` gives what ``inspect_model`` gives, in a process that never imports onnx
    or numpy (the build's fixed cost, issue 16 item 2)."""
    model = save(_conv(), tmp_path / "conv.onnx")
    script = (
        "import sys; from pathlib import Path; from trtforge.model import read_model_info\n"
        f"info = read_model_info(Path({str(model)!r}))\n"
        "print(repr(info)); print(sorted(name for name in ('onnx', 'numpy') if name in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    shown, imported = done.stdout.splitlines()
    assert shown == repr(inspect_model(model)) and imported == "[]"


def _node_test_models() -> list[onnx.ModelProto]:
    """onnx's own backend node tests, generated from the installed package."""
    import warnings

    from onnx.backend.test.case.node import collect_testcases

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the generators overflow casts on purpose
        return [case.model for case in collect_testcases()]


def _embedding(path: Path, vocab: int = 3000) -> Path:
    """input_ids -> Gather from a [vocab, 64] table (well past the size whose values are kept), so the
    valid range of the ids comes from the dims of a large initializer; a one-element depth constant too."""
    table = numpy_helper.from_array(np.ones((vocab, 64), np.float32), "table")
    depth = numpy_helper.from_array(np.array([5], np.int64), "depth")
    graph = helper.make_graph(
        [helper.make_node("Gather", ["table", "ids"], ["out"])],
        "embedding",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, ["batch", 8])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["batch", 8, 64])],
        [table, depth],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.metadata_props.add(key="source", value="test")
    return save(model, path)


@pytest.mark.slow
def test_the_description_without_weights_is_the_full_one(tmp_path: Path) -> None:
    """``read_model_info`` leaves large initializers' values unread (issue 16 item 2), and describes
    every onnx backend node-test model, a large embedding table's index range and a model with
    external data exactly as the full load does."""
    from trtforge.model import describe, read_model_info

    def outcome(read: Callable[[Path], Any], path: Path) -> Any:
        try:
            return read(path)
        except InvalidInputError as exc:  # a sequence input, an untyped tensor: the same error
            return str(exc)

    models = _node_test_models()
    assert len(models) > 1000
    for index, model in enumerate(models):
        path = tmp_path / f"node{index}.onnx"
        onnx.save(model, str(path))
        full = outcome(lambda p: describe(onnx.load(str(p)), p), path)
        assert outcome(read_model_info, path) == full, model.graph.name
    onehot = helper.make_graph(  # a one-element depth whose TensorProto is large by its doc_string alone
        [helper.make_node("OneHot", ["ids", "depth", "values"], ["out"])],
        "onehot",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, [4])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [4, 10])],
        [
            helper.make_tensor("depth", TensorProto.INT64, [], [10]),
            numpy_helper.from_array(np.array([0, 1], np.float32), "values"),
        ],
    )
    onehot.initializer[0].doc_string = "d" * 1100
    path = save(helper.make_model(onehot, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "onehot.onnx")
    assert read_model_info(path) == describe(onnx.load(str(path)), path)
    assert read_model_info(path).input("ids") == TensorDesc("ids", "int64", (4,), (0, 10))
    embedding = _embedding(tmp_path / "embedding.onnx")
    described = read_model_info(embedding)
    assert described == inspect_model(embedding)
    assert described.input("ids") == TensorDesc("ids", "int64", ("batch", 8), (0, 3000))
    assert described.metadata == (("source", "test"),)
    external = tmp_path / "external"
    external.mkdir()
    onnx.save(onnx.load(str(embedding)), str(external / "m.onnx"), save_as_external_data=True, location="w.bin")
    assert read_model_info(external / "m.onnx") == inspect_model(external / "m.onnx")


def test_the_weights_are_not_read(tmp_path: Path) -> None:
    """A table of 3 million floats (12 MB) is left unread: what protobuf parses is a few hundred bytes."""
    from trtforge.model import _without_weights

    embedding = _embedding(tmp_path / "embedding.onnx", vocab=50_000)
    assert embedding.stat().st_size > 12_000_000
    assert len(_without_weights(embedding)) < 1000


def test_ctrl_c_while_the_model_is_read_is_the_interrupt(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Ctrl-C while the model's protobuf is walked: the views of the mapped file in the walk's
    frames (kept alive by the interrupt's traceback) made closing the map raise BufferError ("cannot
    close exported pointers exist"), which replaced the interrupt: "internal error", exit 1."""
    from trtforge import model
    from trtforge.model import read_model_info

    def interrupted(data: memoryview) -> bytes:
        kept = [data[:1]]  # as _skim keeps the fields it walked
        raise KeyboardInterrupt(kept)

    monkeypatch.setattr(model, "_skim", interrupted)
    with pytest.raises(KeyboardInterrupt):
        read_model_info(_embedding(tmp_path / "embedding.onnx"))


@pytest.mark.parametrize("cut", [1, 7, 1000, -5])
def test_a_truncated_model_is_still_named_for_what_it_is(tmp_path: Path, cut: int) -> None:
    """Bytes that do not walk as protobuf go to protobuf's parser whole: the one-line error, exit 2."""
    from trtforge.model import read_model_info

    whole = _embedding(tmp_path / "embedding.onnx").read_bytes()
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(whole[:cut])
    with pytest.raises(InvalidInputError, match="not an ONNX model") as raised:
        read_model_info(broken)
    assert raised.value.exit_code == 2


# ---------------------------------------------------------------- the passes beside the build


@without_gpu
@pytest.mark.parametrize(
    ("write", "extra", "code"),
    [
        (lambda folder: save(_conv(), folder / "conv.onnx"), WIDE_PROFILE, 0),
        (
            lambda folder: overflow_chain(folder / "over.onnx"),
            "profiles:\n  - input: {min: [1, 16], opt: [4, 16], max: [8, 16]}\nfp16:\n  keep_fp32: []\n",
            4,
        ),
    ],
    ids=["conv-passes", "overflow-fails"],
)
def test_passes_beside_the_build_give_the_gates_own_verdict_and_metrics(
    tmp_path: Path, isolated_cache: Path, write: Callable[[Path], Path], extra: str, code: int
) -> None:
    """On this GPU-less host the reference runs from the build's start and the simulated candidate
    beside the TensorRT build; the gate run alone (no passes, no cache) on the same candidate graph
    measures exactly what the build's report says (the overflow model still fails, exit 4)."""
    need_rtx()
    model = write(tmp_path)
    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text(f"name: m\nmodel: {model}\nprecision: fp16\ntargets: ['8.6']\n{extra}")
    out = tmp_path / "out"
    got, _, stderr = cli("build", spec_path, "--out", out)
    assert got == code, stderr
    assert "the reference ran beside the build" in stderr and "the simulated candidate ran beside the build" in stderr
    (path,) = out.glob("*.accuracy.json")
    built = json.loads(path.read_text())
    assert built["candidate"]["emulation"] == FP16_STORAGE

    spec = load_spec(spec_path)
    alone = run_gate(
        spec,
        inspect_model(spec.model_path),
        GateCandidate("simulated", "test", onnx_path=Path(built["candidate"]["model"]), emulation=FP16_STORAGE),
        stem="alone",
        engine_file=None,
    )
    assert alone.passed == built["passed"] and alone.failures == built["failures"]
    assert [out.metrics for out in alone.outputs] == [out["metrics"] for out in built["outputs"]]
    assert alone.data.samples == built["data"]["samples"]


def test_a_failed_build_stops_the_passes_and_keeps_its_own_error(tmp_path: Path) -> None:
    """The reference's pass cannot load the model either; the build's error (exit 3) is the one
    raised, and no pass is left running."""
    need_rtx()
    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text(
        f"name: bad\nmodel: {unsupported_op(tmp_path / 'bad.onnx')}\nprecision: fp16\ntargets: ['8.6']\n"
    )
    with pytest.raises(BuildError):
        build_spec(load_spec(spec_path), tmp_path / "out", Reporter(), cache_dir=tmp_path / "cache")
    assert not [thread for thread in threading.enumerate() if thread.name == "trtforge-gate-pass"]
