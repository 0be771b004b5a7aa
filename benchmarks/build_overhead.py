"""What does trtforge add on top of a plain TensorRT-RTX build?

For each model and precision (fp32, fp16), each run in its own process with a cold cache folder,
`--repeats` times (median reported):
  * direct:   the same build written by hand against the TensorRT-RTX Python API (the baseline;
              at fp16 it converts the ONNX with the converter trtforge uses, as TensorRT-RTX
              builds the precision the graph has)
  * direct + gate passes (fp16): the direct build, then one onnxruntime pass of the FP32
              reference and one of the FP16 candidate over the gate's documented input plan
              (`trtforge.accuracy.inputs.shape_sets`)
  * trtforge: `trtforge build` on a spec with the same model and settings, gate off and on
Ratios: gate off / direct; gate on / direct at fp32 (goal 1.3); gate on / (direct + gate passes)
at fp16 (goal 1.0).
Models: the digits CNN (a ~0.1 s build: start-up dominates) and ResNet-18 at 3x64x64 and
3x224x224 with seeded random weights (benchmarks/calibration.py builds it).
Also `trtforge --help` wall time (heavy imports must stay lazy).
Goals: trtforge/direct <= 1.10, --help < 0.3 s.  Prints a table (stderr), then one JSON document
(stdout). ``--quick``: the digits CNN only, one run each (a smoke test).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from calibration import resnet18

REPO = Path(__file__).resolve().parent.parent
TRTFORGE = [sys.executable, "-m", "trtforge"]

DIRECT = """
import sys
import tensorrt_rtx as trt
from pathlib import Path
model, out, c, h, w = sys.argv[1], sys.argv[2], *map(int, sys.argv[3:6])
precision, batches = sys.argv[6], [int(b) for b in sys.argv[7].split(",") if b]
built = model
if precision == "fp16":
    import onnx
    from onnxruntime.transformers import float16
    converted = float16.convert_float_to_float16(
        onnx.load(model), keep_io_types=True, op_block_list=list(float16.DEFAULT_OP_BLOCK_LIST)
    )
    built = out + ".fp16.onnx"
    onnx.save(converted, built)
logger = trt.Logger(trt.Logger.WARNING)
builder = trt.Builder(logger)
network = builder.create_network(0)
parser = trt.OnnxParser(network, logger)
assert parser.parse_from_file(built)
config = builder.create_builder_config()
profile = builder.create_optimization_profile()
profile.set_shape("input", (1, c, h, w), (16, c, h, w), (32, c, h, w))
config.add_optimization_profile(profile)
config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, 1 << 30)
config.builder_optimization_level = 3
config.num_compute_capabilities = 1
config.set_compute_capability(trt.ComputeCapability.SM86, 0)
engine = builder.build_serialized_network(network, config)
Path(out).write_bytes(bytes(engine))
if batches:  # one reference pass and one candidate pass over the gate's plan
    import numpy as np
    import onnxruntime as ort
    rng = np.random.default_rng(0)
    for path in (model, built):
        session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
        for batch in batches:
            session.run(None, {"input": rng.random((batch, c, h, w), dtype=np.float32)})
"""

SPEC = """
name: overhead
model: {model}
targets: ["8.6"]
profiles:
  - input: {{min: [1, {c}, {h}, {w}], opt: [16, {c}, {h}, {w}], max: [32, {c}, {h}, {w}]}}
precision: {precision}
accuracy: {{enabled: {gate}}}
"""


PRECISIONS = ("fp32", "fp16")


def median_seconds(command: list[str], repeats: int) -> tuple[float, list[float]]:
    """Median wall time; each run gets a cold trtforge cache folder (nothing reused between runs)."""
    samples = []
    for _ in range(repeats):
        with tempfile.TemporaryDirectory() as cache:
            started = time.perf_counter()
            subprocess.run(command, check=True, capture_output=True, env={**os.environ, "TRTFORGE_CACHE_DIR": cache})
            samples.append(time.perf_counter() - started)
    return statistics.median(samples), samples


def gate_batches(model: Path, shape: tuple[int, int, int]) -> list[int]:
    """The batches of the gate's random-input plan for the benchmark's profile."""
    from trtforge.accuracy.inputs import shape_sets
    from trtforge.model import inspect_model
    from trtforge.spec import ShapeRange

    c, h, w = shape
    profile = {"input": ShapeRange(min=[1, c, h, w], opt=[16, c, h, w], max=[32, c, h, w])}
    return [s.shapes["input"][0] for s in shape_sets(inspect_model(model), [profile])]


def measure_model(label: str, model: Path, shape: tuple[int, int, int], work: Path, repeats: int) -> dict:
    script = work / "direct.py"
    script.write_text(DIRECT)
    c, h, w = shape
    plan = ",".join(map(str, gate_batches(model, shape)))
    rows = {}
    for precision in PRECISIONS:
        direct = [sys.executable, str(script), str(model), str(work / "direct.engine"), str(c), str(h), str(w)]
        rows[f"{precision} direct API"] = median_seconds([*direct, precision, ""], repeats)
        if precision != "fp32":
            rows[f"{precision} direct + gate passes"] = median_seconds([*direct, precision, plan], repeats)
        for gate in ("false", "true"):
            spec = work / f"{label}-{precision}-{gate}.yaml"
            spec.write_text(SPEC.format(model=model, c=c, h=h, w=w, gate=gate, precision=precision))
            name = f"{precision} trtforge gate {'on' if gate == 'true' else 'off'}"
            rows[name] = median_seconds([*TRTFORGE, "build", str(spec), "--out", str(work / gate)], repeats)
    return rows


def ratios(rows: dict) -> dict:
    """gate off / direct per precision; gate on / direct at fp32, / (direct + gate passes) at fp16."""
    found = {}
    for precision in PRECISIONS:
        direct = rows[f"{precision} direct API"][0]
        found[f"{precision}_gate_off_over_direct"] = round(rows[f"{precision} trtforge gate off"][0] / direct, 3)
        base = rows.get(f"{precision} direct + gate passes", rows[f"{precision} direct API"])[0]
        found[f"{precision}_gate_on_over_baseline"] = round(rows[f"{precision} trtforge gate on"][0] / base, 3)
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="the digits CNN only, one run each")
    args = parser.parse_args()
    if args.quick:
        args.repeats = 1
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        models = {"digits-cnn": (REPO / "calibration" / "digits" / "digits_cnn.onnx", (1, 8, 8))}
        if not args.quick:
            resnet = work / "resnet18.onnx"
            resnet18(resnet, 64)
            models["resnet18-64px"] = (resnet, (3, 64, 64))
            resnet224 = work / "resnet18-224.onnx"
            resnet18(resnet224, 224)
            models["resnet18-224px"] = (resnet224, (3, 224, 224))
        for label, (model, shape) in models.items():
            results[label] = measure_model(label, model, shape, work, args.repeats)
        help_seconds, help_samples = median_seconds([*TRTFORGE, "--help"], args.repeats)

    print(f"{'model':<15} {'run':<28} {'median s':>9} {'vs direct':>10}   samples", file=sys.stderr)
    summary = {}
    for label, rows in results.items():
        for name, (median, samples) in rows.items():
            direct = rows[f"{name.split()[0]} direct API"][0]
            print(
                f"{label:<15} {name:<28} {median:9.3f} {median / direct:9.2f}x   "
                f"{', '.join(f'{s:.2f}' for s in samples)}",
                file=sys.stderr,
            )
        found = ratios(rows)
        print(f"{label:<15} ratios: " + ", ".join(f"{k} {v:.2f}" for k, v in found.items()), file=sys.stderr)
        summary[label] = {
            "median_seconds": {name: round(median, 4) for name, (median, _) in rows.items()},
            "ratio_trtforge_over_direct": found["fp32_gate_off_over_direct"],
            "ratio_with_gate": found["fp32_gate_on_over_baseline"],
            **found,
        }
    print(
        f"{'-':<15} {'trtforge --help':<28} {help_seconds:9.3f} {'-':>10}   "
        f"{', '.join(f'{s:.2f}' for s in help_samples)}",
        file=sys.stderr,
    )
    json.dump(
        {
            "repeats": args.repeats,
            "models": summary,
            "goal_ratio": 1.10,
            "goal_gate_on_fp32_over_direct": 1.3,
            "goal_gate_on_fp16_over_direct_plus_gate_passes": 1.0,
            "help_seconds": round(help_seconds, 4),
            "goal_help_seconds": 0.3,
        },
        sys.stdout,
        indent=2,
    )
    print()


if __name__ == "__main__":
    main()
