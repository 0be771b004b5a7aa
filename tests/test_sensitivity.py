"""INT8 sensitivity search, ``exclude: auto`` and ``algorithm: auto``: real onnxruntime, real
TensorRT-RTX builds (SM 8.6, CPU-only) of small generated models."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx
import pytest
from clitools import cli
from models import need_rtx
from onnx import TensorProto, helper, numpy_helper

from trtforge.deadline import Deadline
from trtforge.mixedprecision import FP16_STORAGE, INT8_QDQ
from trtforge.model import inspect_model
from trtforge.precision.sensitivity import (
    GateProbe,
    Measurement,
    rank_nodes,
    search_spec,
    smallest_passing,
)
from trtforge.spec import load_spec

CULPRIT = "layer3/MatMul"


def outlier_chain(path: Path, layers: int = 6, culprit: int = 3, width: int = 32, gain: float = 500.0) -> Path:
    """input [N, 4, width] -> (MatMul, Relu) x layers -> out. The layer before ``culprit`` makes
    channel 0 ``gain`` times larger and ``culprit`` scales it back down: that channel's outliers
    set the INT8 scale of ``culprit``'s input, which rounds every other channel to zero."""
    rng = np.random.default_rng(0)
    inits, nodes, x = [], [], "input"
    for i in range(layers):
        w = rng.normal(0, 1 / np.sqrt(width), (width, width)).astype(np.float32)
        if i == culprit - 1:
            w[:, 0] *= gain
        if i == culprit:
            w[0, :] /= gain
        inits.append(numpy_helper.from_array(w, f"w{i}"))
        last = i == layers - 1
        nodes.append(helper.make_node("MatMul", [x, f"w{i}"], ["out" if last else f"mm{i}"], name=f"layer{i}/MatMul"))
        if not last:
            nodes.append(helper.make_node("Relu", [f"mm{i}"], [f"r{i}"], name=f"layer{i}/Relu"))
            x = f"r{i}"
    return _save(path, nodes, inits, [width], [width])


def spiky_mlp(path: Path) -> Path:
    """input [N, 4, 64] -> MatMul -> Relu -> MatMul -> out [N, 4, 16]; fed with spiky data
    (``spiky``) whose rare large values carry the signal, so entropy's clipping hurts."""
    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(rng.normal(0, 0.2, (64, 64)).astype(np.float32), "w1"),
        numpy_helper.from_array(rng.normal(0, 0.2, (64, 16)).astype(np.float32), "w2"),
    ]
    nodes = [
        helper.make_node("MatMul", ["input", "w1"], ["h"], name="fc1"),
        helper.make_node("Relu", ["h"], ["r"], name="relu"),
        helper.make_node("MatMul", ["r", "w2"], ["out"], name="fc2"),
    ]
    return _save(path, nodes, inits, [64], [16])


def _save(path: Path, nodes: list, inits: list, inner: list[int], outer: list[int]) -> Path:
    graph = helper.make_graph(
        nodes,
        path.stem,
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 4, *inner])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["N", 4, *outer])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def spiky(count: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 0.05, (count, 4, 64))
    mask = rng.random(x.shape) < 0.002
    x[mask] = rng.uniform(5, 20, mask.sum()) * rng.choice([-1, 1], mask.sum())
    return x.astype(np.float32)


def write_spec(folder: Path, model: str, calibration: dict[str, str]) -> Path:
    width = 64 if model == "spiky.onnx" else 32
    lines = [
        "name: sens",
        f"model: {model}",
        "precision: int8",
        "targets: ['8.6']",
        "profiles:",
        f"  - input: {{min: [1, 4, {width}], opt: [16, 4, {width}], max: [16, 4, {width}]}}",
        "calibration:",
        "  data: cal/*.npy",
        *(f"  {key}: {value}" for key, value in calibration.items()),
        "accuracy:",
        "  data: acc/*.npy",
    ]
    path = folder / "spec.yaml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def outliers(tmp_path: Path) -> Path:
    outlier_chain(tmp_path / "chain.onnx")
    rng = np.random.default_rng(1)
    for folder in ("cal", "acc"):
        (tmp_path / folder).mkdir()
        for index in range(4):
            np.save(tmp_path / folder / f"b{index}.npy", rng.normal(0, 1, (16, 4, 32)).astype(np.float32))
    return tmp_path


def _manifest(out: Path) -> dict:
    (path,) = out.glob("*.manifest.json")
    return json.loads(path.read_text())


def test_exclude_auto_finds_the_outlier_layer_and_the_rebuilt_engine_passes(outliers: Path) -> None:
    need_rtx()
    plain = write_spec(outliers, "chain.onnx", {})
    code, _, stderr = cli("build", plain, "--out", outliers / "plain")
    assert code == 4, stderr  # plain entropy INT8 fails the gate

    auto = write_spec(outliers, "chain.onnx", {"exclude": "auto"})
    code, _, stderr = cli("build", auto, "--out", outliers / "auto")
    assert code == 0, stderr
    calibration = _manifest(outliers / "auto")["calibration"]
    assert calibration["exclude"] == [CULPRIT]
    found = calibration["exclude_auto"]
    assert [entry["node"] for entry in found["chosen"]] == [CULPRIT]
    assert found["ranking"][0]["node"] == CULPRIT and found["chosen"][0]["score"] > 0
    assert found["before"]["passed"] is False and found["after"]["passed"] is True
    assert found["after"]["cosine"] > found["before"]["cosine"]
    assert f"exclude: [{CULPRIT}]" in stderr  # the YAML to pin it
    assert f"sensitivity: exclude ['{CULPRIT}']: simulated gate fail (cosine" in stderr


def test_search_ranks_every_node_and_prints_the_yaml(outliers: Path) -> None:
    spec = load_spec(write_spec(outliers, "chain.onnx", {}))
    found = search_spec(spec, inspect_model(spec.model_path), outliers / "cache", budget_s=60)
    assert found.complete and len(found.ranking) == 6
    assert found.ranking[0].node == CULPRIT and found.exclude == (CULPRIT,)
    assert found.yaml == f"calibration:\n  exclude: [{CULPRIT}]\n"
    report = found.report()
    assert report.excluded == (CULPRIT,) and report.ranking[0][0] == CULPRIT


def test_the_yaml_to_paste_keeps_the_specs_own_exclusions(outliers: Path) -> None:
    """The search judges graphs with the spec's ``exclude`` list left out of INT8 and names only its
    additions; the lines to paste replace that list, so they repeat it (they named the additions
    alone: pasted, the spec lost its own exclusions and the gate the search passed could fail)."""
    own = "layer0/MatMul"
    spec = load_spec(write_spec(outliers, "chain.onnx", {"exclude": f"[{own}]"}))
    found = search_spec(spec, inspect_model(spec.model_path), outliers / "cache", budget_s=60)
    assert found.exclude == (CULPRIT,) and found.after.passed
    assert found.yaml == f"calibration:\n  exclude: [{own}, {CULPRIT}]\n"
    assert found.report().excluded == (own, CULPRIT)


@pytest.mark.parametrize("name", ["106", "mm #3", "true"])
def test_the_yaml_to_paste_reads_back_as_the_node_names(outliers: Path, name: str) -> None:
    """A node name YAML reads otherwise is quoted in the lines to paste: bare, ``106`` was a number
    (the spec was refused), ``mm #3`` held a comment (malformed YAML)."""
    model = onnx.load(str(outliers / "chain.onnx"))
    (culprit,) = (node for node in model.graph.node if node.name == CULPRIT)
    culprit.name = name
    onnx.save(model, str(outliers / "chain.onnx"))
    spec = load_spec(write_spec(outliers, "chain.onnx", {}))
    found = search_spec(spec, inspect_model(spec.model_path), outliers / "cache", budget_s=60)
    assert found.exclude == (name,)
    pasted = found.yaml.splitlines()[1].removeprefix("  exclude: ")
    assert load_spec(write_spec(outliers, "chain.onnx", {"exclude": pasted})).calibration.exclude == [name]


def test_an_unbounded_search_budget_is_written_as_valid_json(outliers: Path) -> None:
    """``trtforge diagnose --budget inf`` (or ``search_budget: .inf``): the record held a bare
    Infinity, which is no JSON."""
    spec = load_spec(write_spec(outliers, "chain.onnx", {}))
    found = search_spec(spec, inspect_model(spec.model_path), outliers / "cache", budget_s=math.inf)
    assert json.loads(json.dumps(found.as_dict(), allow_nan=False))["budget_s"] == "inf"


def test_algorithm_auto_prefers_another_rule_than_entropy_on_spiky_data(tmp_path: Path) -> None:
    need_rtx()
    spiky_mlp(tmp_path / "spiky.onnx")
    for folder, seed in (("cal", 10), ("acc", 20)):
        (tmp_path / folder).mkdir()
        for index in range(4):
            np.save(tmp_path / folder / f"b{index}.npy", spiky(16, seed + index))
    code, _, stderr = cli("build", write_spec(tmp_path, "spiky.onnx", {}), "--out", tmp_path / "entropy")
    assert code == 4, stderr
    code, _, stderr = cli(
        "build", write_spec(tmp_path, "spiky.onnx", {"algorithm": "auto"}), "--out", tmp_path / "auto"
    )
    assert code == 0, stderr
    calibration = _manifest(tmp_path / "auto")["calibration"]
    assert calibration["algorithm"] == "auto"
    assert calibration["algorithm_chosen"] != "entropy"
    tried = {entry["algorithm"]: entry for entry in calibration["candidates"]}
    expected = ["entropy", "minmax", "percentile 99.9", "percentile 99.99", "percentile 99.999"]
    assert sorted(tried) == sorted(expected)
    assert tried["entropy"]["passed"] is False and tried[calibration["algorithm_chosen"]]["passed"] is True
    assert stderr.count("calibration: 64 samples") == 1  # one statistics pass served all five
    # those verdicts ran Q/DQ graphs in onnxruntime, GPU or not: the section says so
    # the graphs judged store the layers left out of INT8 in FP16 (high_precision's default): the
    # label is the gate's whole one, as the manifest's accuracy summary has it
    assert calibration["candidate"] == "simulated" and calibration["emulation"] == f"{INT8_QDQ}; {FP16_STORAGE}"
    assert calibration["emulation"] == _manifest(tmp_path / "auto")["accuracy"]["emulation"]
    # and so does the log: its verdicts are the simulated gate's, never the engine's
    chosen = calibration["algorithm_chosen"]
    assert f"calibration: algorithm auto chose {chosen} (simulated gate: entropy fail (cosine" in stderr
    emulated = f"calibration: the simulated gate's verdicts above ran in onnxruntime; emulated: {INT8_QDQ}; "
    assert f"{emulated}{FP16_STORAGE}\n" in stderr, stderr


def test_unknown_node_in_exclude_is_exit_2_with_a_suggestion(outliers: Path) -> None:
    spec = write_spec(outliers, "chain.onnx", {"exclude": "[layer3/MatMull]"})
    code, _, stderr = cli("build", spec, "--out", outliers / "out")
    assert code == 2
    line = next(i for i, text in enumerate(spec.read_text().splitlines(), 1) if "exclude" in text)
    assert f"{spec}:{line}" in stderr and "did you mean 'layer3/MatMul'" in stderr
    assert "Traceback" not in stderr


def test_auto_needs_qdq_mode(outliers: Path) -> None:
    spec = write_spec(outliers, "chain.onnx", {"algorithm": "auto", "mode": "native"})
    code, _, stderr = cli("build", spec, "--out", outliers / "out")
    assert code == 2 and "need mode: qdq" in stderr


def _synthetic(culprits: set[str]):
    """A measure function whose error is 0.5 per culprit left quantized."""
    calls: list[tuple[str, ...]] = []

    def measure(extra: Sequence[str]) -> Measurement:
        calls.append(tuple(extra))
        left = culprits - set(extra)
        error = 0.5 * len(left)
        return Measurement(passed=not left, cosine=1 - error)

    return measure, calls


def test_group_testing_finds_the_culprits_with_fewer_evaluations_than_nodes() -> None:
    nodes = [f"n{i}" for i in range(200)]
    measure, calls = _synthetic({"n17", "n150"})
    before = measure(())
    ranked, complete = rank_nodes(nodes, before, measure, Deadline(1.0), cost=0.01)
    assert not complete  # 200 nodes x 0.01 s do not fit the ranking's 0.7 s: groups, then halves
    assert {ranked[0].node, ranked[1].node} == {"n17", "n150"} and ranked[0].group == ranked[1].group == 1
    assert len(calls) < len(nodes) / 2
    chosen, passing = smallest_passing([e.node for e in ranked], measure, Deadline(1.0), cost=0.01)
    assert set(chosen) == {"n17", "n150"} and passing is not None and passing.passed


def test_search_respects_its_budget() -> None:
    nodes = [f"n{i}" for i in range(50)]
    slow, _ = _synthetic({"n3"})

    def measure(extra: Sequence[str]) -> Measurement:
        time.sleep(0.02)
        return slow(extra)

    started = time.perf_counter()
    ranked, _ = rank_nodes(nodes, measure(()), measure, Deadline(0.3), cost=0.02)
    # one measurement (0.02 s) may end past the deadline; the rest is room for a busy CI host. Without
    # the budget, ranking 50 nodes one by one takes over 1 s.
    assert time.perf_counter() - started < 0.3 + 0.15
    assert any(entry.score is not None and not math.isnan(entry.score) for entry in ranked)


def test_diagnose_writes_the_ranking_and_the_exclusions_in_json_and_html(outliers: Path) -> None:
    need_rtx()
    spec = write_spec(outliers, "chain.onnx", {})
    code, stdout, stderr = cli("diagnose", spec, "--out", outliers / "diag", "--json")
    assert code == 0, stderr
    document = json.loads(stdout)
    sensitivity = document["sensitivity"]
    assert sensitivity["excluded"] == [CULPRIT] and sensitivity["ranking"][0]["node"] == CULPRIT
    assert sensitivity["details"]["yaml"] == f"calibration:\n  exclude: [{CULPRIT}]\n"
    assert sensitivity["details"]["after"]["passed"] is True
    (page,) = (outliers / "diag").glob("*.diagnosis.html")
    assert CULPRIT in page.read_text()


def test_diagnose_budget_bounds_the_search_too(outliers: Path) -> None:
    """``--budget`` is the whole diagnosis's: the sensitivity search gets what the layer-wise pass
    left of it, not the whole budget again (which made a diagnosis take up to twice the budget)."""
    need_rtx()
    spec = write_spec(outliers, "chain.onnx", {})
    code, stdout, stderr = cli("diagnose", spec, "--out", outliers / "budget", "--json", "--budget", "30")
    assert code == 0, stderr
    document = json.loads(stdout)
    layerwise, search_budget = document["seconds"], document["sensitivity"]["details"]["budget_s"]
    assert layerwise > 0 and 0 < search_budget <= 30 - layerwise


def _left_out_of_int8(candidate: str) -> list[str]:
    """The MatMuls of a diagnosed candidate whose activation input is no DequantizeLinear's output
    (looked for through the FP16-storage emulation's Cast pairs): the exclusions it was built with."""
    graph = onnx.load(candidate).graph
    producer = {output: node for node in graph.node for output in node.output}

    def source(node: onnx.NodeProto) -> str:
        before = producer.get(node.input[0])
        while before is not None and before.op_type == "Cast":
            before = producer.get(before.input[0])
        return before.op_type if before is not None else ""

    return [node.name for node in graph.node if node.op_type == "MatMul" and source(node) != "DequantizeLinear"]


@pytest.mark.parametrize(("gain", "chosen"), [(500.0, [CULPRIT]), (1.0, [])])
def test_diagnose_of_exclude_auto_reports_the_search_that_built_the_candidate(
    outliers: Path, gain: float, chosen: list[str]
) -> None:
    """``exclude: auto``: the report is the preparation's search, not a second one that could choose
    other nodes than the candidate was built with; a graph that passes is ranked all the same."""
    need_rtx()
    outlier_chain(outliers / "chain.onnx", gain=gain)
    spec = write_spec(outliers, "chain.onnx", {"exclude": "auto"})
    code, stdout, stderr = cli("diagnose", spec, "--out", outliers / "diag", "--json")
    assert code == 0, stderr
    document = json.loads(stdout)
    assert stderr.count("sensitivity: 6 quantized nodes") == 1
    assert document["sensitivity"]["excluded"] == chosen == _left_out_of_int8(document["candidate"])
    assert len(document["sensitivity"]["ranking"]) == 6 and document["sensitivity"]["details"]["complete"]


def test_diagnose_budget_bounds_the_exclude_auto_search(outliers: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``--budget`` bounds the preparation's ``exclude: auto`` search too: it ran under
    ``search_budget`` alone (here 8 evaluations of 1 s), then the diagnosis searched again with
    nothing left and reported another exclusion set than the candidate's."""
    need_rtx()
    measure = GateProbe.measure

    def slow(probe: GateProbe, candidate: onnx.ModelProto) -> Measurement:
        time.sleep(1.0)
        return measure(probe, candidate)

    monkeypatch.setattr(GateProbe, "measure", slow)
    spec = write_spec(outliers, "chain.onnx", {"exclude": "auto", "search_budget": "60"})
    started = time.perf_counter()
    code, stdout, stderr = cli("diagnose", spec, "--out", outliers / "diag", "--json", "--budget", "1")
    # the search's first evaluation (1 s) may end past the budget; the rest is room for a busy CI host
    # (unbounded, the search's 8 evaluations alone took 8 s)
    assert time.perf_counter() - started < 1 + 1 + 4, stderr
    assert code == 0, stderr
    document = json.loads(stdout)
    assert document["sensitivity"]["details"]["budget_s"] <= 1
    assert document["sensitivity"]["excluded"] == _left_out_of_int8(document["candidate"])
