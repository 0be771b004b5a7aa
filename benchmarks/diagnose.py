"""What do the layer-wise diagnosis and the INT8 sensitivity search cost, and what do they buy?

Per model (a ResNet-18 with BatchNorm, benchmarks/calibration.py builds it; a BERT-style encoder:
self-attention, LayerNormalization, GELU FFN, built here with onnx.helper), each phase in its own
process (wall time and peak RSS):
  * gate:      one plain accuracy gate run of the entropy INT8 Q/DQ candidate (the baseline)
  * diagnosis: the layer-wise diagnosis of that candidate (every node against the FP32 reference)
  * search:    the sensitivity search (ranking + smallest passing exclusion set), ``--budget`` s
Then the outcome: nodes excluded and the final worst-output cosine, against plain entropy and
plain minmax (no exclusions). Calibration is done once per model before the phases (cached).
Prints a table (stderr), then one JSON document (stdout). ``--quick``: smaller models, a short
budget (a smoke test).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from calibration import peak_rss_mib, resnet18, write_data

CALIBRATION_SAMPLES = 64
GATE_SAMPLES = 32
PHASES = ("gate", "diagnosis", "search")


def bert(path: Path, layers: int, hidden: int, seq: int, heads: int = 4, seed: int = 0) -> None:
    """A BERT-style encoder on float embeddings [batch, seq, hidden]: per layer QKV MatMuls,
    scaled dot-product attention (Softmax), output projection + residual + LayerNormalization,
    GELU (Erf) FFN of 4x width + residual + LayerNormalization."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    nodes: list[onnx.NodeProto] = []
    inits: list[onnx.TensorProto] = []
    head = hidden // heads

    def init(name: str, array: np.ndarray, dtype: type = np.float32) -> str:
        inits.append(numpy_helper.from_array(np.asarray(array, dtype=dtype), name))
        return name

    def node(op: str, inputs: list[str], name: str, **attrs: object) -> str:
        nodes.append(helper.make_node(op, inputs, [name], name=name, **attrs))
        return name

    def linear(x: str, name: str, cin: int, cout: int) -> str:
        w = init(f"{name}.w", rng.normal(0, np.sqrt(1 / cin), (cin, cout)))
        b = init(f"{name}.b", rng.normal(0, 0.02, cout))
        return node("Add", [node("MatMul", [x, w], f"{name}/MatMul"), b], f"{name}/Add")

    def layer_norm(x: str, name: str) -> str:
        scale, bias = init(f"{name}.g", np.ones(hidden)), init(f"{name}.b", np.zeros(hidden))
        return node("LayerNormalization", [x, scale, bias], f"{name}/LayerNorm", axis=-1, epsilon=1e-5)

    split_shape = init("split_shape", [0, seq, heads, head], np.int64)
    merge_shape = init("merge_shape", [0, seq, hidden], np.int64)
    sqrt_half, one, half = init("sqrt_half", np.sqrt(0.5)), init("one", 1.0), init("half", 0.5)
    scale = init("attn_scale", 1 / np.sqrt(head))
    x = "hidden"
    for index in range(layers):
        p = f"layer{index}"

        def heads_of(t: str, name: str, perm: list[int]) -> str:
            return node("Transpose", [node("Reshape", [t, split_shape], f"{name}/Reshape")], f"{name}/T", perm=perm)

        q = heads_of(linear(x, f"{p}.q", hidden, hidden), f"{p}.qh", [0, 2, 1, 3])
        k = heads_of(linear(x, f"{p}.k", hidden, hidden), f"{p}.kh", [0, 2, 3, 1])
        v = heads_of(linear(x, f"{p}.v", hidden, hidden), f"{p}.vh", [0, 2, 1, 3])
        scores = node("Mul", [node("MatMul", [q, k], f"{p}.scores/MatMul"), scale], f"{p}.scores/Mul")
        context = node("MatMul", [node("Softmax", [scores], f"{p}/Softmax", axis=-1), v], f"{p}.context/MatMul")
        merged = node(
            "Reshape", [node("Transpose", [context], f"{p}.merge/T", perm=[0, 2, 1, 3]), merge_shape], f"{p}.merge"
        )
        attention = layer_norm(node("Add", [linear(merged, f"{p}.o", hidden, hidden), x], f"{p}.res1"), f"{p}.ln1")
        up = linear(attention, f"{p}.ffn1", hidden, 4 * hidden)
        erf = node("Erf", [node("Mul", [up, sqrt_half], f"{p}.gelu/Scale")], f"{p}.gelu/Erf")
        cdf = node("Add", [erf, one], f"{p}.gelu/Add")
        gelu = node("Mul", [node("Mul", [up, cdf], f"{p}.gelu/Mul"), half], f"{p}.gelu")
        down = linear(gelu, f"{p}.ffn2", 4 * hidden, hidden)
        x = layer_norm(node("Add", [down, attention], f"{p}.res2"), f"{p}.ln2")
    nodes[-1].output[0] = "encoded"
    graph = helper.make_graph(
        nodes,
        "bert",
        [helper.make_tensor_value_info("hidden", TensorProto.FLOAT, ["batch", seq, hidden])],
        [helper.make_tensor_value_info("encoded", TensorProto.FLOAT, ["batch", seq, hidden])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def prepare(work: Path, name: str, quick: bool) -> Path:
    """Model, calibration and accuracy data, and an int8 spec in ``work/name``; the spec's path."""
    folder = work / name
    folder.mkdir(parents=True, exist_ok=True)
    if name == "resnet18":
        size = 32 if quick else 64
        resnet18(folder / "model.onnx", size)
        write_data(folder / "cal", CALIBRATION_SAMPLES, size, seed=1)
        write_data(folder / "acc", GATE_SAMPLES, size, seed=2)
        shape, input_name = [3, size, size], "input"
    else:
        layers, hidden, seq = (1, 64, 16) if quick else (4, 128, 64)
        bert(folder / "model.onnx", layers, hidden, seq)
        rng = np.random.default_rng(1)
        for sub, count in (("cal", CALIBRATION_SAMPLES), ("acc", GATE_SAMPLES)):
            (folder / sub).mkdir(exist_ok=True)
            np.save(folder / sub / "batch_000.npy", rng.normal(0, 1, (count, seq, hidden)).astype(np.float32))
        shape, input_name = [seq, hidden], "hidden"
    dims = lambda batch: [batch, *shape]  # noqa: E731
    for algorithm in ("entropy", "minmax"):
        (folder / f"{algorithm}.yaml").write_text(
            f"name: {name}\nmodel: model.onnx\nprecision: int8\ntargets: ['8.6']\n"
            f"profiles:\n  - {input_name}: {{min: {dims(1)}, opt: {dims(16)}, max: {dims(16)}}}\n"
            f"calibration: {{data: cal/*.npy, batch_size: 16, algorithm: {algorithm}}}\n"
            f"accuracy: {{data: acc/*.npy, max_samples: {GATE_SAMPLES}}}\n",
            encoding="utf-8",
        )
    return folder / "entropy.yaml"


def child(phase: str, spec_path: Path, cache: Path, budget: float) -> dict:
    """One phase, in this (fresh) process; its result and the process's peak RSS."""
    from trtforge.accuracy.gate import run_gate, simulated
    from trtforge.calibration import Calibration
    from trtforge.diagnosis.layerwise import diagnose_layers
    from trtforge.graphfiles import save_model
    from trtforge.model import inspect_model
    from trtforge.precision.sensitivity import GateProbe, gate_graph, search_spec
    from trtforge.spec import load_spec

    spec = load_spec(spec_path)
    info = inspect_model(spec.model_path)
    started = time.perf_counter()
    result: dict = {}
    if phase == "prepare":
        calibration = Calibration(spec, info, cache, log=lambda _m: None)
        candidate = spec_path.parent / "entropy.candidate.onnx"
        save_model(gate_graph(calibration, calibration.scale_sets[0], []), candidate)
        other = Calibration(load_spec(spec_path.with_name("minmax.yaml")), info, cache, log=lambda _m: None)
        measured = GateProbe(spec, info).measure(gate_graph(other, other.scale_sets[0], []))
        result = {"minmax": measured.as_dict()}
    elif phase == "gate":
        candidate = simulated(spec_path.parent / "entropy.candidate.onnx", "benchmark")
        report = run_gate(spec, info, candidate, stem="b", engine_file=None)
        result = {"passed": report.passed}
    elif phase == "diagnosis":
        diagnosis = diagnose_layers(spec, info, spec_path.parent / "entropy.candidate.onnx", stem="b", budget_s=600)
        result = {"nodes": len(diagnosis.nodes), "first_jump": diagnosis.first_jump}
    else:
        found = search_spec(spec, info, cache, budget_s=budget)
        result = {
            "excluded": list(found.exclude),
            "quantized_nodes": len(found.ranking),
            "complete": found.complete,
            "evaluations": found.evaluations,
            "entropy": found.before.as_dict(),
            "final": found.after.as_dict(),
        }
    result["seconds"] = round(time.perf_counter() - started, 3)
    result["peak_rss_mib"] = peak_rss_mib()  # this process's own: ru_maxrss holds the parent's peak too
    return result


def run_phase(phase: str, spec: Path, cache: Path, budget: float) -> dict:
    done = subprocess.run(
        [sys.executable, __file__, "--child", phase, str(spec), str(cache), str(budget)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"{phase} on {spec.parent.name} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        phase, spec, cache, budget = sys.argv[2:6]
        json.dump(child(phase, Path(spec), Path(cache), float(budget)), sys.stdout)
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small models, a 10 s search budget")
    parser.add_argument("--budget", type=float, default=None, help="search budget in seconds (default 60; quick 10)")
    parser.add_argument("--models", default="resnet18,bert", help="comma-separated: resnet18, bert")
    args = parser.parse_args()
    budget = args.budget if args.budget is not None else (10.0 if args.quick else 60.0)
    rows = []
    with tempfile.TemporaryDirectory(prefix="trtforge-bench-diagnose-") as tmp:
        work = Path(tmp)
        for name in args.models.split(","):
            spec = prepare(work, name, args.quick)
            cache = work / "cache"
            prepared = run_phase("prepare", spec, cache, budget)
            row = {"model": name, "minmax": prepared["minmax"]}
            row.update({phase: run_phase(phase, spec, cache, budget) for phase in PHASES})
            rows.append(row)
    report(rows, budget)
    json.dump({"benchmark": "diagnose", "quick": args.quick, "budget_s": budget, "models": rows}, sys.stdout, indent=1)
    print()


def report(rows: list[dict], budget: float) -> None:
    out = sys.stderr
    print(f"{'model':<10} {'phase':<10} {'seconds':>8} {'x gate':>7} {'peak MiB':>9}", file=out)
    for row in rows:
        gate = row["gate"]["seconds"]
        for phase in PHASES:
            measured = row[phase]
            ratio = measured["seconds"] / gate if gate else float("nan")
            seconds, peak = measured["seconds"], measured["peak_rss_mib"]
            print(f"{row['model']:<10} {phase:<10} {seconds:>8.2f} {ratio:>7.1f} {peak:>9.0f}", file=out)
    print(f"\noutcome (search budget {budget:g} s): worst-output cosine, gate verdict", file=out)
    print(f"{'model':<10} {'nodes':>6} {'excluded':>9} {'entropy':>18} {'minmax':>18} {'searched':>18}", file=out)
    for row in rows:
        search = row["search"]

        def verdict(measured: dict) -> str:
            return f"{measured['cosine']!s:.10} {'pass' if measured['passed'] else 'fail'}"

        print(
            f"{row['model']:<10} {search['quantized_nodes']:>6} {len(search['excluded']):>9} "
            f"{verdict(search['entropy']):>18} {verdict(row['minmax']):>18} {verdict(search['final']):>18}",
            file=out,
        )


if __name__ == "__main__":
    main()
