"""`trtforge ci` on a project of 8 specs (2 with ``--quick``): first run, unchanged reruns, one-changed rerun,
at two model sizes (1 MB and 200 MB: the digits model padded with an unused initializer).

The baseline is the first (cold) run: every spec built and gated. The reruns show what the
content-addressed build cache saves; the first unchanged rerun records the files' digests and
what it saw (``trtforge.rerun``; a file written moments ago is never recorded), the steady one
(median of 3) is answered from that record by a stat per file.
The goal (issue 16): a steady unchanged rerun <= 2x ``trtforge --help`` (measured in the same
run), and flat between model sizes (ratio of the two sizes' steady reruns). Each run is a fresh
`trtforge ci` process, run from bytecode as an installed trtforge is
(``check_speed.compiled_as_installed``). Prints a table (stderr) and one JSON document (stdout). ``--quick``: 2
fp32 specs at 1 MB and 20 MB (a smoke test).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from check_speed import compiled_as_installed

REPO = Path(__file__).resolve().parent.parent
DIGITS = REPO / "calibration" / "digits"
PROFILE = "profiles:\n  - input: {min: [1, 1, 8, 8], opt: [16, 1, 8, 8], max: [64, 1, 8, 8]}\n"
VARIANTS = [
    ("fp32", ["8.6"]),
    ("fp16", ["8.6"]),
    ("fp32", ["8.9"]),
    ("fp16", ["8.9"]),
    ("fp32", ["12.0"]),
    ("fp16", ["12.0"]),
    ("int8", ["8.6"]),
    ("int8", ["8.9"]),
]


def make_project(root: Path, variants: list[tuple[str, list[str]]], model_mb: int) -> None:
    shutil.copytree(DIGITS, root / "digits")
    pad(root / "digits" / "digits_cnn.onnx", model_mb * 1_000_000)
    for index, (precision, targets) in enumerate(variants):
        text = (
            f"name: digits-{index}\nmodel: digits/digits_cnn.onnx\nprecision: {precision}\n"
            f"targets: {json.dumps(targets)}\n{PROFILE}"
            "accuracy: {data: digits/val/*.npy, labels: digits/val-labels.npy}\n"
        )
        if precision == "int8":
            text += "calibration: {data: digits/train/*.npy, batch_size: 64}\n"
        (root / f"spec{index}.yaml").write_text(text)


def pad(model_path: Path, size: int) -> None:
    """Grow the model to about ``size`` bytes with an initializer no node reads (what an unchanged
    rerun must not read in full is the file, whatever its bytes mean)."""
    import numpy as np
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(model_path))
    missing = max(0, size - model_path.stat().st_size) // 4
    if missing:
        model.graph.initializer.append(numpy_helper.from_array(np.ones(missing, np.float32), "benchmark_padding"))
        onnx.save(model, str(model_path))


def median_seconds(command: list[str], runs: int) -> float:
    """After one untimed run (which compiles the modules the command imports)."""
    subprocess.run(command, capture_output=True, check=True)
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run(command, capture_output=True, check=True)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def run_ci(root: Path, out: Path, cache: Path, jobs: int) -> tuple[float, dict[str, int]]:
    env = {**os.environ, "TRTFORGE_CACHE_DIR": str(cache)}
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "trtforge", "ci", str(root), "--out", str(out), "--jobs", str(jobs), "--json"],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    seconds = time.perf_counter() - started
    counts: dict[str, int] = {}
    for spec in json.loads(result.stdout)["results"]:
        counts[spec["status"]] = counts.get(spec["status"], 0) + 1
    return seconds, counts


def measure(variants: list[tuple[str, list[str]]], model_mb: int, jobs: int, quick: bool) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        root, out, cache = Path(tmp) / "project", Path(tmp) / "out", Path(tmp) / "cache"
        root.mkdir()
        make_project(root, variants, model_mb)
        rows = {"first run (cold)": run_ci(root, out, cache, jobs)}
        time.sleep(2.1)  # fsutil.SETTLE_NS: files written this instant are never cached
        rows["unchanged rerun, 1st"] = run_ci(root, out, cache, jobs)
        steady = [run_ci(root, out, cache, jobs) for _ in range(3)]
        rows["unchanged rerun, steady"] = (statistics.median(seconds for seconds, _ in steady), steady[0][1])
        name, old, new = ("spec1.yaml", "fp32", "fp16") if quick else ("spec3.yaml", "fp16", "fp32")
        spec = root / name
        spec.write_text(spec.read_text().replace(old, new))
        rows["one spec changed"] = run_ci(root, out, cache, jobs)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="2 fp32 specs, 1 MB and 20 MB, instead of 8 at 1 and 200")
    args = parser.parse_args()
    variants = [VARIANTS[0], VARIANTS[2]] if args.quick else VARIANTS
    sizes = (1, 20) if args.quick else (1, 200)
    with tempfile.TemporaryDirectory(prefix="trtforge-ci-bench-bytecode-") as bytecode:
        compiled_as_installed(Path(bytecode))
        help_s = median_seconds([sys.executable, "-m", "trtforge", "--help"], 5)
        by_size = {size: measure(variants, size, args.jobs, args.quick) for size in sizes}
    steady = {size: rows["unchanged rerun, steady"][0] for size, rows in by_size.items()}
    vs_help = {size: seconds / help_s for size, seconds in steady.items()}
    flatness = steady[sizes[-1]] / steady[sizes[0]]
    print(f"trtforge --help: {help_s:.3f} s (median of 5)", file=sys.stderr)
    print(f"{'model':>7} {'run':<24} {'seconds':>8} {'vs cold':>8} {'vs --help':>10}   specs", file=sys.stderr)
    for size, rows in by_size.items():
        cold = rows["first run (cold)"][0]
        for name, (seconds, counts) in rows.items():
            detail = ", ".join(f"{count} {status}" for status, count in sorted(counts.items()))
            print(
                f"{size:>5}MB {name:<24} {seconds:8.2f} {seconds / cold:7.2f}x {seconds / help_s:9.2f}x   {detail}",
                file=sys.stderr,
            )
    print(
        "steady unchanged rerun vs --help: "
        + ", ".join(f"{size} MB {ratio:.2f}x" for size, ratio in vs_help.items())
        + f" (goal <= 2x); {sizes[-1]} MB / {sizes[0]} MB: {flatness:.2f}x (goal: flat, ~1x)",
        file=sys.stderr,
    )
    json.dump(
        {
            "specs": len(variants),
            "jobs": args.jobs,
            "help_seconds": round(help_s, 3),
            "sizes_mb": {
                str(size): {
                    "runs": {
                        name: {"seconds": round(seconds, 3), "statuses": counts}
                        for name, (seconds, counts) in rows.items()
                    },
                    "steady_unchanged_vs_help": round(vs_help[size], 2),
                }
                for size, rows in by_size.items()
            },
            "flatness": round(flatness, 2),
        },
        sys.stdout,
        indent=2,
    )
    print()


if __name__ == "__main__":
    main()
