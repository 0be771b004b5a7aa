"""``trtforge diagnose``: layer-wise errors on real onnxruntime runs, the HTML page, streaming
memory, and ``build`` pointing at it when the gate fails."""

from __future__ import annotations

import html
import importlib.util
import json
import re
import tracemalloc
from collections.abc import Callable
from html.parser import HTMLParser
from pathlib import Path

import models
import numpy as np
import onnx
import pytest
from clitools import cli
from onnx import TensorProto, helper, numpy_helper

from trtforge.diagnosis import write_diagnosis
from trtforge.diagnosis.layerwise import diagnose_layers, plan_rows, tensor_map
from trtforge.mixedprecision import FP16_STORAGE, emulate_fp16, to_fp16
from trtforge.model import describe, load_onnx
from trtforge.precision.sensitivity import SensitivityResult
from trtforge.spec import load_spec

CONV_PROFILE = "profiles:\n  - input: {min: [1, 3, 16, 16], opt: [4, 3, 16, 16], max: [8, 3, 16, 16]}\n"


def _chain(path: Path, scale: float = 1.0, width: int = 16) -> Path:
    """x [N, width] -> relu -> mul(scale) "big" -> mul(1/scale) "small" -> add "out": a chain of
    named nodes; ``scale`` > 65504 makes "big" leave FP16's range while the output stays small."""
    consts = [
        numpy_helper.from_array(np.array(scale, np.float32), "s"),
        numpy_helper.from_array(np.array(1.0 / scale, np.float32), "inv"),
        numpy_helper.from_array(np.array(0.5, np.float32), "half"),
    ]
    nodes = [
        helper.make_node("Relu", ["x"], ["r"], name="relu"),
        helper.make_node("Mul", ["r", "s"], ["b"], name="big"),
        helper.make_node("Mul", ["b", "inv"], ["m"], name="small"),
        helper.make_node("Add", ["m", "half"], ["y"], name="out"),
    ]
    graph = helper.make_graph(
        nodes,
        "chain",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", width])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", width])],
        consts,
    )
    return models.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), path)


def _coarse_qdq_after(reference: Path, tensor: str, path: Path, scale: float = 0.25) -> Path:
    """The reference with a coarse Q->DQ pair after ``tensor``, rounded again by an FP16 Cast pair
    as the FP16-storage emulation writes it (consumers read the chain's end)."""
    model = onnx.load(str(reference))
    graph = model.graph
    for node in graph.node:
        node.input[:] = [f"{tensor}_dq" if name == tensor else name for name in node.input]
    graph.initializer.extend(
        [
            numpy_helper.from_array(np.array(scale, np.float32), "q_scale"),
            numpy_helper.from_array(np.array(0, np.int8), "q_zero"),
        ]
    )
    graph.node.extend(
        [
            helper.make_node("QuantizeLinear", [tensor, "q_scale", "q_zero"], [f"{tensor}_q"], name="q"),
            helper.make_node("DequantizeLinear", [f"{tensor}_q", "q_scale", "q_zero"], [f"{tensor}_w"], name="dq"),
            helper.make_node("Cast", [f"{tensor}_w"], [f"{tensor}_h"], name="to_fp16", to=TensorProto.FLOAT16),
            helper.make_node("Cast", [f"{tensor}_h"], [f"{tensor}_dq"], name="to_fp32", to=TensorProto.FLOAT),
        ]
    )
    return models.save(model, path)


def _chain_spec(folder: Path, model: Path, precision: str = "fp16", data: str = "", width: int = 16) -> Path:
    path = folder / f"{model.stem}.yaml"
    profile = f"profiles:\n  - x: {{min: [1, {width}], opt: [8, {width}], max: [64, {width}]}}\n"
    path.write_text(
        f"name: chain\nmodel: {model}\nprecision: {precision}\ntargets: ['8.6']\n{profile}{data}", encoding="utf-8"
    )
    return path


class _Rows(HTMLParser):
    """Counts the rows of the page's node table (inside <tbody>) and collects its first cells."""

    def __init__(self) -> None:
        super().__init__()
        self.in_body = False
        self.cells: list[list[str]] = []
        self.in_cell = False
        self.svgs = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "tbody":
            self.in_body = True
        elif tag == "tr" and self.in_body:
            self.cells.append([])
        elif tag == "td" and self.in_body:
            self.in_cell = True
            self.cells[-1].append("")
        elif tag == "svg":
            self.svgs += 1
        assert tag not in ("script", "link"), "the page must be self-contained"

    def handle_endtag(self, tag: str) -> None:
        if tag == "tbody":
            self.in_body = False
        elif tag == "td":
            self.in_cell = False

    def handle_data(self, data: str) -> None:
        if self.in_cell:
            self.cells[-1][-1] += data


def test_diagnose_fp16_writes_json_and_a_page_with_one_row_per_node(
    write_spec: Callable[..., Path], model_dir: Path, tmp_path: Path, isolated_cache: Path
) -> None:
    spec = write_spec(
        f"name: conv\nmodel: {model_dir / 'conv.onnx'}\nprecision: fp16\ntargets: ['8.6']\n" + CONV_PROFILE
    )
    out = tmp_path / "diag"
    code, stdout, stderr = cli("diagnose", spec, "--out", out, "--json")
    assert code == 0, stderr
    document = json.loads(stdout)
    names = [node["node"] for node in document["nodes"]]
    assert names == ["conv", "relu", "pool", "flatten", "fc"]  # topological order, every float node
    assert all(0.999 < node["cosine"] <= 1.0 + 1e-9 for node in document["nodes"])  # FP16 rounding only
    assert document["source"] == "random" and document["samples"] > 0 and not document["truncated"]
    assert document["files"]["html"] == str(out / "conv-fp16.diagnosis.html")
    assert json.loads((out / "conv-fp16.diagnosis.json").read_text())["nodes"] == document["nodes"]
    # the candidate is emulated on onnxruntime, and every form of the report says how (as the gate's)
    assert document["emulation"] == FP16_STORAGE
    assert f"candidate emulated: {FP16_STORAGE}" in stderr
    html_text = (out / "conv-fp16.diagnosis.html").read_text(encoding="utf-8")
    assert "simulated on onnxruntime" in html_text and html.escape(FP16_STORAGE) in html_text
    page = _Rows()
    page.feed((out / "conv-fp16.diagnosis.html").read_text(encoding="utf-8"))
    page.close()
    assert [cells[0] for cells in page.cells] == names
    assert page.svgs == 1  # the error along the graph; no sensitivity section without a search


def test_qdq_pair_is_compared_under_its_input_name_and_marks_the_first_jump(tmp_path: Path) -> None:
    reference = _chain(tmp_path / "chain.onnx")
    candidate = _coarse_qdq_after(reference, "b", tmp_path / "candidate.onnx", scale=0.5)
    spec = load_spec(_chain_spec(tmp_path, reference))
    diagnosis = diagnose_layers(spec, describe(load_onnx(reference), reference), candidate, stem="chain")
    by_node = {node.node: node for node in diagnosis.nodes}
    assert list(by_node) == ["relu", "big", "small", "out"]  # q, dq and the casts are no rows of their own
    assert by_node["relu"].cosine > 1 - 1e-12 and by_node["relu"].drop < 1e-12
    assert by_node["big"].cosine < 0.99 and by_node["big"].max_abs > 0.1  # measured on the DQ output
    assert diagnosis.first_jump == "big" and diagnosis.largest_drop == "big"
    assert by_node["small"].drop < 1e-9  # inherits the error, adds none
    assert diagnosis.fp16_out_of_range == ()
    assert tensor_map(onnx.load(str(candidate)))["b"] == "b_dq"  # Q->DQ, then Cast->Cast: the chain's end


def test_a_cast_pair_of_the_models_own_is_not_taken_for_inserted_rounding() -> None:
    """``rf = Cast(Cast(r, INT32), FLOAT)`` is the model's truncation: ``r`` is compared as ``r``
    (it was compared as ``rf``, and the truncation blamed on the Relu: cosine 0, first jump)."""
    helper = onnx.helper
    graph = helper.make_graph(
        [
            helper.make_node("Relu", ["x"], ["r"], name="relu"),
            helper.make_node("Cast", ["r"], ["ri"], name="to_int", to=onnx.TensorProto.INT32),
            helper.make_node("Cast", ["ri"], ["rf"], name="to_float", to=onnx.TensorProto.FLOAT),
            helper.make_node("Add", ["rf", "r"], ["y"], name="add"),
        ],
        "truncation",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["N", 4])],
    )
    model = helper.make_model(graph)
    assert tensor_map(model, model)["r"] == "r"
    assert tensor_map(model)["r"] == "rf"  # without the reference every Cast pair is rounding


def test_fp16_range_lists_the_node_whose_activations_overflow(tmp_path: Path) -> None:
    reference = _chain(tmp_path / "overflow.onnx", scale=1e6)
    spec = load_spec(_chain_spec(tmp_path, reference))
    diagnosis = diagnose_layers(spec, describe(load_onnx(reference), reference), reference, stem="overflow")
    assert diagnosis.fp16_out_of_range == ("big",)
    big = next(node for node in diagnosis.nodes if node.node == "big")
    assert big.fp16_overflow > 0 and big.ref_absmax > 65504


def test_a_node_whose_candidate_overflows_is_not_printed_as_cosine_1(tmp_path: Path) -> None:
    """Half of 'blowup''s FP16 values are inf: its cosine over the finite ones is 1, and the
    terminal said 'cosine 1, drop 1' without the mismatches that make the drop."""
    spec = models.overflowing_fp16_spec(tmp_path)
    code, _, stderr = cli("diagnose", spec, "--out", tmp_path / "out")
    assert code == 0, stderr
    (line,) = (line for line in stderr.splitlines() if "blowup (MatMul)" in line)
    assert "NaN/Inf mismatches: counted as 0), drop 1" in line


def test_sensitivity_section_shows_ranking_and_exclusions(tmp_path: Path) -> None:
    from dataclasses import replace

    reference = _chain(tmp_path / "chain.onnx")
    spec = load_spec(_chain_spec(tmp_path, reference))
    diagnosis = diagnose_layers(spec, describe(load_onnx(reference), reference), reference, stem="chain")
    result = SensitivityResult(ranking=(("big", 0.2), ("relu", 0.01)), excluded=("big",), method="leave-one-out")
    files = write_diagnosis(replace(diagnosis, sensitivity=result), tmp_path / "out")
    text = files.html.read_text(encoding="utf-8")
    page = _Rows()
    page.feed(text)
    assert page.svgs == 2 and "exclude: [big]" in text
    saved = json.loads(files.json.read_text())
    assert saved["sensitivity"]["ranking"] == [{"node": "big", "score": 0.2}, {"node": "relu", "score": 0.01}]
    assert saved["sensitivity"]["excluded"] == ["big"]


def _peak_bytes(tmp_path: Path, samples: int) -> tuple[int, int]:
    folder = tmp_path / f"n{samples}"
    folder.mkdir()
    reference = _chain(folder / "wide.onnx", width=512)
    candidate = _coarse_qdq_after(reference, "b", folder / "candidate.onnx")
    np.save(folder / "x.npy", np.random.default_rng(0).normal(0, 1, (samples, 512)).astype(np.float32))
    spec = load_spec(
        _chain_spec(folder, reference, "fp32", "accuracy:\n  data: [x.npy]\n  max_samples: 4096\n", width=512)
    )
    info = describe(load_onnx(reference), reference)
    tracemalloc.start()
    try:
        diagnosis = diagnose_layers(spec, info, candidate, stem="wide")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak, diagnosis.samples


def test_memory_stays_flat_from_64_to_1024_samples(tmp_path: Path) -> None:
    small, small_samples = _peak_bytes(tmp_path, 64)
    large, large_samples = _peak_bytes(tmp_path, 1024)
    assert (small_samples, large_samples) == (64, 1024)
    # keeping the intermediates would add ~960 samples x 512 values x 4 tensors x 8 bytes (~15 MiB);
    # streaming adds only the data file's extra rows (~2 MiB, the loader reads one file at a time)
    assert large < small + 4 * 2**20, (small, large)


def test_failed_fp16_gate_points_at_diagnose(write_spec: Callable[..., Path], model_dir: Path, tmp_path: Path) -> None:
    models.need_rtx()
    spec = write_spec(
        f"name: conv\nmodel: {model_dir / 'conv.onnx'}\nprecision: fp16\ntargets: ['8.6']\n"
        + CONV_PROFILE
        + "accuracy:\n  tolerances:\n    logits: {max_abs: 1.0e-12}\n"
    )
    code, _, stderr = cli("build", spec, "--out", tmp_path / "out")
    assert code == 4, stderr
    line = stderr.strip().splitlines()[-1]
    assert line.startswith("error: accuracy gate failed for conv-fp16-")
    assert line.endswith(f"run `trtforge diagnose {spec}` to see which layers are to blame")


def test_an_unusable_out_is_refused_before_any_diagnosis(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("a file, not a folder")
    spec = Path(__file__).resolve().parent.parent / "configs" / "digits-int8.yaml"
    code, _, stderr = cli("diagnose", spec, "--out", blocker)
    assert code == 2 and f"output directory {blocker} is a file" in stderr and "calibration" not in stderr


def test_a_backend_flag_that_is_not_installed_is_named_with_its_extra(tmp_path: Path) -> None:
    """``--backend tensorrt`` without tensorrt: the error blamed the spec's name line and gave no pip extra."""
    if importlib.util.find_spec("tensorrt") is not None:
        pytest.skip("tensorrt is installed here: nothing to refuse")
    spec = Path(__file__).resolve().parent.parent / "configs" / "digits-int8.yaml"
    code, _, stderr = cli("diagnose", spec, "--backend", "tensorrt", "--out", tmp_path / "out")
    assert code == 2 and "error: --backend tensorrt: tensorrt is not installed here" in stderr, stderr
    assert "pip install 'trtforge[tensorrt]'" in stderr and str(spec) not in stderr


def test_an_fp32_spec_has_no_candidate_to_diagnose(tmp_path: Path) -> None:
    """It compared the model with itself and reported "first jump: none", exit 0."""
    spec = Path(__file__).parent.parent / "configs" / "digits-fp32.yaml"
    code, _, stderr = cli("diagnose", spec, "--out", tmp_path / "out")
    assert code == 2 and stderr.count("\n") == 1, stderr
    assert f"{spec}:4: precision fp32 has no candidate to diagnose" in stderr
    assert not (tmp_path / "out").exists()


def _unnamed(path: Path) -> Path:
    """``path`` saved again with every node's name cleared (``NodeProto.name`` is optional)."""
    model = onnx.load(str(path))
    for node in model.graph.node:
        node.name = ""
    return models.save(model, path)


def test_unnamed_fp16_nodes_diagnose_names_are_the_ones_keep_fp32_takes(tmp_path: Path) -> None:
    """Nodes without names: diagnose called them ``MatMul_1``, which keep_fp32 refused (exit 2),
    and the overflow guard kept node "" (every unnamed node: the whole graph in FP32)."""
    models.need_rtx()
    spec = models.overflowing_fp16_spec(tmp_path)  # the guard off: the FP16 engine overflows
    _unnamed(tmp_path / "over.onnx")
    code, stdout, stderr = cli("diagnose", spec, "--out", tmp_path / "diag", "--json")
    assert code == 0, stderr
    document = json.loads(stdout)
    assert [node["node"] for node in document["nodes"]] == ["Mul_0", "MatMul_1", "Mul_2"]
    assert document["fp16_out_of_range"] == ["MatMul_1"]
    broken = [node["node"] for node in document["nodes"] if node["nonfinite_mismatch"]]
    assert broken == ["MatMul_1", "Mul_2"]  # the node that overflows and the one reading its output
    code, _, stderr = cli("build", spec, "--out", tmp_path / "out")
    assert code == 4, stderr
    text = spec.read_text(encoding="utf-8")
    spec.write_text(text.replace("keep_fp32: []", f"keep_fp32: [{', '.join(broken)}]"), encoding="utf-8")
    code, _, stderr = cli("build", spec, "--out", tmp_path / "out")
    assert code == 0 and "2 node(s) kept in FP32 by the spec: MatMul_1, Mul_2" in stderr, stderr
    # the overflow guard keeps those two by the same names, not "" for all of them
    spec.write_text(text.replace("fp16:\n  keep_fp32: []\n", ""), encoding="utf-8")
    code, _, stderr = cli("build", spec, "--out", tmp_path / "guarded")
    assert code == 0, stderr
    manifest = json.loads(next((tmp_path / "guarded").glob("*.manifest.json")).read_text())
    assert manifest["fp16"]["keep_fp32"] == broken and manifest["fp16"]["chosen_by"] == "overflow guard"


def test_unnamed_int8_nodes_exclusions_to_paste_make_the_gate_pass(tmp_path: Path) -> None:
    """Nodes without names: the Q/DQ placement took them all for one node "" (onnxruntime could not
    load the graph), and no exclusion could name one."""
    models.need_rtx()
    model = _unnamed(models.conv_net(tmp_path / "conv.onnx"))
    models.write_samples(tmp_path / "calib", (8, 3, 16, 16), files=4)
    spec = tmp_path / "int8.yaml"
    spec.write_text(
        f"name: conv\nmodel: {model}\nprecision: int8\ntargets: ['8.6']\n{CONV_PROFILE}"
        "calibration:\n  data: [calib/*.npy]\n  exclude: auto\n"
        "accuracy:\n  tolerances:\n    logits: {cosine_min: 0.9999}\n",
        encoding="utf-8",
    )
    code, stdout, stderr = cli("diagnose", spec, "--out", tmp_path / "diag", "--json")
    assert code == 0, stderr
    document = json.loads(stdout)
    assert [node["node"] for node in document["nodes"]] == [
        "Conv_0",
        "Relu_1",
        "GlobalAveragePool_2",
        "Flatten_3",
        "Gemm_4",
    ]
    assert document["sensitivity"]["excluded"] == ["Gemm_4"]
    pasted = re.search(r"^calibration:\n(  exclude: .*)$", stderr, re.MULTILINE)
    assert pasted is not None and pasted[1] == "  exclude: [Gemm_4]", stderr
    spec.write_text(spec.read_text(encoding="utf-8").replace("  exclude: auto", pasted[1]), encoding="utf-8")
    code, _, stderr = cli("build", spec, "--out", tmp_path / "out")
    assert code == 0 and "accuracy conv int8: passed" in stderr, stderr


def test_fp16_diagnosis_gives_the_keep_fp32_lines_that_make_the_gate_pass(tmp_path: Path) -> None:
    """At fp16 diagnose listed the node "outside FP16's range" and nothing to paste; keeping that
    node alone still fails the gate (its reader gets inf): the lines keep both, as the guard does."""
    models.need_rtx()
    spec = models.overflowing_fp16_spec(tmp_path)  # keep_fp32: [] (the guard off): the gate fails
    code, _, stderr = cli("build", spec, "--out", tmp_path / "out")
    assert code == 4, stderr
    code, _, stderr = cli("diagnose", spec, "--out", tmp_path / "diag")
    assert code == 0, stderr
    pasted = re.search(r"^fp16:\n  keep_fp32: .*$", stderr, re.MULTILINE)
    assert pasted is not None and pasted[0] == "fp16:\n  keep_fp32: [blowup, shrink]", stderr
    assert "output 'big' reaches" in stderr and "input 'big' reaches" in stderr  # why each is kept
    saved = json.loads((tmp_path / "diag" / "over-fp16.diagnosis.json").read_text())
    assert saved["fp16_keep_fp32"] == ["blowup", "shrink"] and saved["fp16_keep_fp32_yaml"] == pasted[0] + "\n"
    assert html.escape(pasted[0]) in (tmp_path / "diag" / "over-fp16.diagnosis.html").read_text(encoding="utf-8")
    text = spec.read_text(encoding="utf-8")
    spec.write_text(text.replace("fp16:\n  keep_fp32: []\n", pasted[0] + "\n"), encoding="utf-8")
    code, _, stderr = cli("build", spec, "--out", tmp_path / "out")
    assert code == 0 and "2 node(s) kept in FP32 by the spec: blowup, shrink" in stderr, stderr
    code, stdout, stderr = cli("diagnose", spec, "--out", tmp_path / "diag", "--json")
    assert code == 0 and "keep_fp32:" not in stderr, stderr  # nothing left to keep
    assert json.loads(stdout)["fp16_keep_fp32"] == [] and json.loads(stdout)["fp16_keep_fp32_yaml"] is None


def test_fp16_keep_fp32_lines_say_to_remove_the_calibration_section_they_leave_unread(tmp_path: Path) -> None:
    """With the guard on, its calibration data may miss what the gate's inputs reach: the pasted
    keep_fp32 list turns the guard off, and a spec with both is refused, so the lines say to remove
    the section; so pasted, the build passes."""
    models.need_rtx()
    spec = models.overflowing_fp16_spec(tmp_path)
    np.save(tmp_path / "quiet.npy", np.full((8, 16), 1e-3, dtype=np.float32))  # nothing near FP16's range
    text = spec.read_text(encoding="utf-8").replace("fp16:\n  keep_fp32: []\n", "calibration:\n  data: quiet.npy\n")
    spec.write_text(text, encoding="utf-8")
    code, _, stderr = cli("build", spec, "--out", tmp_path / "out")
    assert code == 4, stderr  # the guard saw nothing on its data
    code, _, stderr = cli("diagnose", spec, "--out", tmp_path / "diag")
    assert code == 0 and "remove its calibration: section with them" in stderr, stderr
    pasted = re.search(r"^fp16:\n  keep_fp32: .*$", stderr, re.MULTILINE)
    assert pasted is not None, stderr
    spec.write_text(text.replace("calibration:\n  data: quiet.npy\n", pasted[0] + "\n"), encoding="utf-8")
    code, _, stderr = cli("build", spec, "--out", tmp_path / "out")
    assert code == 0, stderr


def test_fp16_keep_fp32_lines_repeat_the_candidates_own_list_and_quote_names(tmp_path: Path) -> None:
    """The pasted list replaces the spec's: it names the nodes the candidate keeps already, then the
    guard's, each as YAML reads it back (``106`` quoted, not a number)."""
    import yaml

    reference = _chain(tmp_path / "overflow.onnx", scale=1e6)
    model = onnx.load(str(reference))
    model.graph.node[1].name = "106"  # the Mul whose output leaves FP16's range
    models.save(model, reference)
    spec = load_spec(_chain_spec(tmp_path, reference))
    info = describe(load_onnx(reference), reference)
    diagnosis = diagnose_layers(spec, info, reference, stem="overflow", keep_fp32=["relu"])
    assert diagnosis.fp16_keep_fp32 == ("relu", "106", "small")
    assert diagnosis.fp16_keep_fp32_yaml == 'fp16:\n  keep_fp32: [relu, "106", small]\n'
    assert yaml.safe_load(diagnosis.fp16_keep_fp32_yaml) == {"fp16": {"keep_fp32": ["relu", "106", "small"]}}
    kept = diagnose_layers(spec, info, reference, stem="overflow", keep_fp32=["106", "small"])
    assert kept.fp16_keep_fp32 == () and kept.fp16_keep_fp32_yaml is None  # nothing to add
    assert diagnose_layers(spec, info, reference, stem="overflow").fp16_keep_fp32 == ()  # no keep list applies


def test_nodes_kept_in_fp32_have_their_rows(tmp_path: Path) -> None:
    """The FP16 converter renames a kept node's output (``big`` -> ``big_cast_to_fp16``): diagnose
    matched by name and gave 'blowup' no row."""
    spec = models.overflowing_fp16_spec(tmp_path)
    text = spec.read_text(encoding="utf-8")
    spec.write_text(text.replace("keep_fp32: []", "keep_fp32: [blowup, shrink]"), encoding="utf-8")
    code, stdout, stderr = cli("diagnose", spec, "--out", tmp_path / "diag", "--json")
    assert code == 0, stderr
    nodes = json.loads(stdout)["nodes"]
    assert [(node["node"], node["outputs"]) for node in nodes] == [
        ("scale", ["scaled"]),
        ("blowup", ["big"]),
        ("shrink", ["out"]),
    ]
    assert all(node["cosine"] > 0.999 and not node["nonfinite_mismatch"] for node in nodes), nodes


def test_a_folded_nodes_output_is_not_taken_for_a_renamed_one() -> None:
    """A Conv that now holds its BatchNorm's output (the folded graph) is not compared with the
    reference Conv's: the BatchNorm's row gets the tensor, the Conv none."""
    conv = helper.make_node("Conv", ["x", "w"], ["c"], name="conv")
    bn = helper.make_node("BatchNormalization", ["c", "g", "b", "m", "v"], ["y"], name="bn")
    value = [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, 4, 4])]
    out = [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 1, 4, 4])]
    reference = helper.make_model(helper.make_graph([conv, bn], "ref", value, out))
    folded = helper.make_node("Conv", ["x", "w2"], ["y"], name="conv")
    candidate = helper.make_model(helper.make_graph([folded], "cand", value, out))
    assert [row.pairs for row in plan_rows(reference, candidate)] == [(), (("y", "y"),)]


@pytest.mark.parametrize("form", ["emulated", "emulated-graph-output", "quantized-graph-output"])
def test_a_folded_nodes_output_is_not_taken_for_a_renamed_one_under_the_fp16_emulation(form: str) -> None:
    """An int8 candidate with ``high_precision: fp16`` (the default) is FP16-emulated: its folded
    Conv writes ``y/fp32`` and a Cast pair gives ``y``, the BatchNorm's. The Conv's row compared its
    pre-BatchNorm output with that, so every folded Conv of a ResNet jumped and the first was
    blamed as the first jump. A graph output quantized after it (``y_QuantizeLinear_Input``) alike."""
    weights = [numpy_helper.from_array(np.ones((1, 1, 1, 1), np.float32), "w")]
    bn_weights = [numpy_helper.from_array(np.ones(1, np.float32), name) for name in ("g", "b", "m", "v")]
    shape = ["N", 1, 4, 4]
    last = form.endswith("graph-output")
    tail = [] if last else [helper.make_node("Relu", ["y"], ["r"], name="relu")]
    out = [helper.make_tensor_value_info("y" if last else "r", TensorProto.FLOAT, shape)]
    value = [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)]
    opset = [helper.make_opsetid("", 17)]
    conv = helper.make_node("Conv", ["x", "w"], ["c"], name="conv")
    bn = helper.make_node("BatchNormalization", ["c", "g", "b", "m", "v"], ["y"], name="bn")
    reference = helper.make_model(
        helper.make_graph([conv, bn, *tail], "ref", value, out, weights + bn_weights), opset_imports=opset
    )
    if form == "quantized-graph-output":
        scale = [numpy_helper.from_array(np.array(0.1, np.float32), "s")]
        nodes = [
            helper.make_node("Conv", ["x", "w"], ["y_QuantizeLinear_Input"], name="conv"),
            helper.make_node("QuantizeLinear", ["y_QuantizeLinear_Input", "s"], ["q"], name="y_q"),
            helper.make_node("DequantizeLinear", ["q", "s"], ["y"], name="y_dq"),
        ]
        graph = helper.make_graph(nodes, "cand", value, out, weights + scale)
        candidate = helper.make_model(graph, opset_imports=opset)
    else:
        folded = helper.make_node("Conv", ["x", "w"], ["y"], name="conv")
        graph = helper.make_graph([folded, *tail], "cand", value, out, weights)
        emulated = emulate_fp16(to_fp16(helper.make_model(graph, opset_imports=opset)))
        assert emulated is not None
        candidate = emulated
    rows = {row.node: row.pairs for row in plan_rows(reference, candidate)}
    assert rows["conv"] == () and [ref for ref, _ in rows["bn"]] == ["y"], rows
