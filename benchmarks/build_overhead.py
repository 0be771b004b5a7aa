"""What does trtforge add on top of a plain TensorRT-RTX build?

Runs, each in its own process and 5 times (median reported):
  * direct:   the same build written against the TensorRT-RTX Python API by hand
  * trtforge: `trtforge build` on a spec with the same model and settings (accuracy gate off,
              since the direct script has none; a second row shows the gate's cost)
  * help:     `trtforge --help` wall time (heavy imports must stay lazy)
Goals: trtforge/direct <= 1.10, help < 0.3 s.  Prints a table, then one JSON document.
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

REPO = Path(__file__).resolve().parent.parent
MODEL = REPO / "calibration" / "digits" / "digits_cnn.onnx"
TRTFORGE = [sys.executable, "-m", "trtforge"]

DIRECT = f"""
import tensorrt_rtx as trt
from pathlib import Path
logger = trt.Logger(trt.Logger.WARNING)
builder = trt.Builder(logger)
network = builder.create_network(0)
parser = trt.OnnxParser(network, logger)
assert parser.parse_from_file({str(MODEL)!r})
config = builder.create_builder_config()
profile = builder.create_optimization_profile()
profile.set_shape("input", (1, 1, 8, 8), (16, 1, 8, 8), (64, 1, 8, 8))
config.add_optimization_profile(profile)
config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, 1 << 30)
config.builder_optimization_level = 3
config.num_compute_capabilities = 1
config.set_compute_capability(trt.ComputeCapability.SM86, 0)
engine = builder.build_serialized_network(network, config)
Path(__import__("sys").argv[1]).write_bytes(bytes(engine))
"""

SPEC = f"""
name: overhead
model: {MODEL}
targets: ["8.6"]
profiles:
  - input: {{min: [1, 1, 8, 8], opt: [16, 1, 8, 8], max: [64, 1, 8, 8]}}
accuracy: {{enabled: {{gate}}}}
"""


def timed(command: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True)
    return time.perf_counter() - started


def median_of(command: list[str], repeats: int) -> tuple[float, list[float]]:
    samples = [timed(command) for _ in range(repeats)]
    return statistics.median(samples), samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        script = work / "direct.py"
        script.write_text(DIRECT)
        specs = {}
        for gate in ("false", "true"):
            specs[gate] = work / f"spec-{gate}.yaml"
            specs[gate].write_text(SPEC.replace("{gate}", gate))
        rows = {
            "direct TensorRT-RTX API": median_of(
                [sys.executable, str(script), str(work / "direct.engine")], args.repeats
            ),
            "trtforge build (gate off)": median_of(
                [*TRTFORGE, "build", str(specs["false"]), "--out", str(work / "a")], args.repeats
            ),
            "trtforge build (gate on)": median_of(
                [*TRTFORGE, "build", str(specs["true"]), "--out", str(work / "b")], args.repeats
            ),
            "trtforge --help": median_of([*TRTFORGE, "--help"], args.repeats),
        }
    direct = rows["direct TensorRT-RTX API"][0]
    print(f"{'run':<28} {'median s':>9} {'vs direct':>10}   samples", file=sys.stderr)
    for name, (median, samples) in rows.items():
        ratio = f"{median / direct:.2f}x" if "build" in name or "direct" in name else "-"
        print(f"{name:<28} {median:9.3f} {ratio:>10}   {', '.join(f'{s:.2f}' for s in samples)}", file=sys.stderr)
    overhead = rows["trtforge build (gate off)"][0] / direct
    help_seconds = rows["trtforge --help"][0]
    print(
        f"ratio trtforge/direct = {overhead:.2f} (goal <= 1.10); --help {help_seconds:.3f} s (goal < 0.3 s)",
        file=sys.stderr,
    )
    json.dump(
        {
            "model": str(MODEL.relative_to(REPO)),
            "repeats": args.repeats,
            "median_seconds": {name: round(median, 4) for name, (median, _) in rows.items()},
            "ratio_trtforge_over_direct": round(overhead, 3),
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
