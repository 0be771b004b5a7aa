"""What does trtforge add on top of a plain TensorRT-RTX build?

For each model, each run in its own process, `--repeats` times (median reported):
  * direct:   the same build written by hand against the TensorRT-RTX Python API (the baseline)
  * trtforge: `trtforge build` on a spec with the same model and settings, accuracy gate off
              (the direct script has none); a second row shows the gate's cost
Models: the digits CNN (a ~0.1 s build: start-up dominates) and a ResNet-18 at 3x64x64 with
seeded random weights (benchmarks/calibration.py builds it).
Also `trtforge --help` wall time (heavy imports must stay lazy).
Goals: trtforge/direct <= 1.10, --help < 0.3 s.  Prints a table (stderr), then one JSON document
(stdout). ``--quick``: the digits CNN only, one run each (a smoke test).
"""

from __future__ import annotations

import argparse
import json
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
logger = trt.Logger(trt.Logger.WARNING)
builder = trt.Builder(logger)
network = builder.create_network(0)
parser = trt.OnnxParser(network, logger)
assert parser.parse_from_file(model)
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
"""

SPEC = """
name: overhead
model: {model}
targets: ["8.6"]
profiles:
  - input: {{min: [1, {c}, {h}, {w}], opt: [16, {c}, {h}, {w}], max: [32, {c}, {h}, {w}]}}
accuracy: {{enabled: {gate}}}
"""


def median_seconds(command: list[str], repeats: int) -> tuple[float, list[float]]:
    samples = []
    for _ in range(repeats):
        started = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True)
        samples.append(time.perf_counter() - started)
    return statistics.median(samples), samples


def measure_model(label: str, model: Path, shape: tuple[int, int, int], work: Path, repeats: int) -> dict:
    script = work / "direct.py"
    script.write_text(DIRECT)
    c, h, w = shape
    rows = {
        "direct TensorRT-RTX API": median_seconds(
            [sys.executable, str(script), str(model), str(work / "direct.engine"), str(c), str(h), str(w)], repeats
        )
    }
    for gate in ("false", "true"):
        spec = work / f"{label}-{gate}.yaml"
        spec.write_text(SPEC.format(model=model, c=c, h=h, w=w, gate=gate))
        name = f"trtforge build (gate {'on' if gate == 'true' else 'off'})"
        rows[name] = median_seconds([*TRTFORGE, "build", str(spec), "--out", str(work / gate)], repeats)
    return rows


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
        for label, (model, shape) in models.items():
            results[label] = measure_model(label, model, shape, work, args.repeats)
        help_seconds, help_samples = median_seconds([*TRTFORGE, "--help"], args.repeats)

    print(f"{'model':<15} {'run':<26} {'median s':>9} {'vs direct':>10}   samples", file=sys.stderr)
    summary = {}
    for label, rows in results.items():
        direct = rows["direct TensorRT-RTX API"][0]
        for name, (median, samples) in rows.items():
            print(
                f"{label:<15} {name:<26} {median:9.3f} {median / direct:9.2f}x   "
                f"{', '.join(f'{s:.2f}' for s in samples)}",
                file=sys.stderr,
            )
        summary[label] = {
            "median_seconds": {name: round(median, 4) for name, (median, _) in rows.items()},
            "ratio_trtforge_over_direct": round(rows["trtforge build (gate off)"][0] / direct, 3),
            "ratio_with_gate": round(rows["trtforge build (gate on)"][0] / direct, 3),
        }
    print(
        f"{'-':<15} {'trtforge --help':<26} {help_seconds:9.3f} {'-':>10}   "
        f"{', '.join(f'{s:.2f}' for s in help_samples)}",
        file=sys.stderr,
    )
    json.dump(
        {
            "repeats": args.repeats,
            "models": summary,
            "goal_ratio": 1.10,
            "help_seconds": round(help_seconds, 4),
            "goal_help_seconds": 0.3,
        },
        sys.stdout,
        indent=2,
    )
    print()


if __name__ == "__main__":
    main()
