"""`trtforge ci` on a project of 8 specs (2 with ``--quick``): first run, unchanged reruns, one-changed rerun,
at two model sizes (1 MB and 200 MB: the digits model padded with an unused initializer).

The baseline is the first (cold) run: every spec built and gated. The reruns show what the
content-addressed build cache saves; the first unchanged rerun records the files' digests and
what it saw (``trtforge.rerun``; a file written moments ago is never recorded), the steady one
is answered from that record by a stat per file. Every timed unchanged rerun must report every
spec ``unchanged`` (``ci --json``): one that built or restored a spec stops the benchmark (exit 1).

The goals (issue 16), each with its verdict (met / MISSED) in the table and the JSON:
- a steady unchanged rerun <= 2x ``trtforge --help``, at each model size. Each round (7, 3 with
  ``--quick``) times ``trtforge --help`` and a steady unchanged rerun back to back, and the ratio
  is of the medians of both over the same rounds (run-to-run swings on a shared host hit both);
- flat between model sizes: the larger size's steady rerun over the 1 MB one <= 1.2x.

Each run is a fresh process, run from bytecode as an installed trtforge is
(``check_speed.compiled_as_installed``). Prints a table (stderr) and one JSON document (stdout).
``--quick``: 2 fp32 specs at 1 MB and 20 MB (a smoke test).
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


RERUN_VS_HELP = 2.0  # issue 16: a steady unchanged rerun <= 2x trtforge --help
FLATNESS = 1.2  # stated bound for "flat": the larger model's steady rerun <= 1.2x the 1 MB one's
HELP = [sys.executable, "-m", "trtforge", "--help"]
STEADY = "unchanged rerun, steady"


def seconds_of(command: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(command, capture_output=True, check=True)
    return time.perf_counter() - started


def run_ci(root: Path, out: Path, cache: Path, jobs: int) -> tuple[float, dict[str, int]]:
    env = {**os.environ, "TRTFORGE_CACHE_DIR": str(cache)}
    command = [sys.executable, "-m", "trtforge", "ci", str(root), "--out", str(out), "--jobs", str(jobs), "--json"]
    started = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"trtforge ci exited {result.returncode}: {result.stderr[-1000:]}")
    counts: dict[str, int] = {}
    for spec in json.loads(result.stdout)["results"]:
        counts[spec["status"]] = counts.get(spec["status"], 0) + 1
    return seconds, counts


def unchanged(run: tuple[float, dict[str, int]], specs: int, what: str) -> tuple[float, dict[str, int]]:
    """``run`` when it reported every spec unchanged; otherwise the benchmark stops (exit 1): a
    rerun that built or restored a spec measures something else than an unchanged rerun."""
    if run[1] != {"unchanged": specs}:
        detail = ", ".join(f"{count} {status}" for status, count in sorted(run[1].items()))
        raise SystemExit(f"{what}: expected {specs} unchanged, ci reported {detail or 'no spec'}")
    return run


def measure(
    variants: list[tuple[str, list[str]]], model_mb: int, jobs: int, rounds: int, quick: bool
) -> dict[str, Any]:
    specs = len(variants)
    with tempfile.TemporaryDirectory() as tmp:
        root, out, cache = Path(tmp) / "project", Path(tmp) / "out", Path(tmp) / "cache"
        root.mkdir()
        make_project(root, variants, model_mb)
        rows = {"first run (cold)": run_ci(root, out, cache, jobs)}
        time.sleep(2.1)  # digests.SETTLE_NS: files written this instant are never cached
        what = f"{model_mb} MB, unchanged rerun"
        rows["unchanged rerun, 1st"] = unchanged(run_ci(root, out, cache, jobs), specs, f"{what}, 1st")
        help_times, steady = [], []
        for index in range(rounds):  # back to back: a swing of the host hits both
            help_times.append(seconds_of(HELP))
            steady.append(unchanged(run_ci(root, out, cache, jobs), specs, f"{what}, steady round {index + 1}"))
        rows[STEADY] = (statistics.median(seconds for seconds, _ in steady), steady[0][1])
        name, old, new = ("spec1.yaml", "fp32", "fp16") if quick else ("spec3.yaml", "fp16", "fp32")
        spec = root / name
        spec.write_text(spec.read_text().replace(old, new))
        rows["one spec changed"] = run_ci(root, out, cache, jobs)
    return {"rows": rows, "help": help_times}


def verdict(ratio: float, bound: float) -> str:
    return "met" if ratio <= bound else "MISSED"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=None, help="rounds of --help + steady rerun (default 7, 3 quick)")
    parser.add_argument("--quick", action="store_true", help="2 fp32 specs, 1 MB and 20 MB, instead of 8 at 1 and 200")
    args = parser.parse_args()
    variants = [VARIANTS[0], VARIANTS[2]] if args.quick else VARIANTS
    sizes = (1, 20) if args.quick else (1, 200)
    rounds = args.rounds or (3 if args.quick else 7)
    with tempfile.TemporaryDirectory(prefix="trtforge-ci-bench-bytecode-") as bytecode:
        compiled_as_installed(Path(bytecode))
        subprocess.run(HELP, capture_output=True, check=True)  # untimed: compiles what --help imports
        by_size = {size: measure(variants, size, args.jobs, rounds, args.quick) for size in sizes}
    help_s = {size: statistics.median(measured["help"]) for size, measured in by_size.items()}
    steady = {size: measured["rows"][STEADY][0] for size, measured in by_size.items()}
    vs_help = {size: steady[size] / help_s[size] for size in sizes}
    flatness = steady[sizes[-1]] / steady[sizes[0]]
    all_help = statistics.median(seconds for measured in by_size.values() for seconds in measured["help"])
    print(
        "trtforge --help: "
        + ", ".join(f"{size} MB rounds {help_s[size]:.3f} s" for size in sizes)
        + f" (median of {rounds}, each round back to back with a steady unchanged rerun)",
        file=sys.stderr,
    )
    print(f"{'model':>7} {'run':<24} {'seconds':>8} {'vs cold':>8} {'vs --help':>10}   specs", file=sys.stderr)
    for size, measured in by_size.items():
        rows = measured["rows"]
        cold, help_size = rows["first run (cold)"][0], help_s[size]
        for name, (seconds, counts) in rows.items():
            detail = ", ".join(f"{count} {status}" for status, count in sorted(counts.items()))
            print(
                f"{size:>5}MB {name:<24} {seconds:8.2f} {seconds / cold:7.2f}x {seconds / help_size:9.2f}x   {detail}",
                file=sys.stderr,
            )
    for size in sizes:
        print(
            f"goal: {size} MB steady unchanged rerun / --help: {vs_help[size]:.2f}x"
            f" (goal <= {RERUN_VS_HELP:g}x): {verdict(vs_help[size], RERUN_VS_HELP)}",
            file=sys.stderr,
        )
    print(
        f"goal: flat, {sizes[-1]} MB / {sizes[0]} MB steady unchanged rerun: {flatness:.2f}x"
        f" (goal <= {FLATNESS:g}x): {verdict(flatness, FLATNESS)}"
        + ("" if sizes[-1] == 200 else f" [the goal is for 200 MB: this is {sizes[-1]} MB]"),
        file=sys.stderr,
    )
    json.dump(
        {
            "specs": len(variants),
            "jobs": args.jobs,
            "rounds": rounds,
            "help_seconds": round(all_help, 3),
            "sizes_mb": {
                str(size): {
                    "runs": {
                        name: {"seconds": round(seconds, 3), "statuses": counts}
                        for name, (seconds, counts) in measured["rows"].items()
                    },
                    "help_seconds": round(help_s[size], 3),
                    "steady_unchanged_vs_help": round(vs_help[size], 2),
                }
                for size, measured in by_size.items()
            },
            "flatness": round(flatness, 2),
            "goals": {
                "steady_unchanged_vs_help": {
                    "bound": RERUN_VS_HELP,
                    "by_size_mb": {
                        str(size): {"ratio": round(vs_help[size], 2), "verdict": verdict(vs_help[size], RERUN_VS_HELP)}
                        for size in sizes
                    },
                },
                "flatness": {
                    "what": f"steady unchanged rerun, {sizes[-1]} MB / {sizes[0]} MB",
                    "bound": FLATNESS,
                    "ratio": round(flatness, 2),
                    "verdict": verdict(flatness, FLATNESS),
                },
            },
        },
        sys.stdout,
        indent=2,
    )
    print()


if __name__ == "__main__":
    main()
