"""`trtforge ci` on a project of 8 specs (2 with ``--quick``): first run, unchanged reruns, one-changed rerun,
at two model sizes (1 MB and 200 MB: the digits model padded with an unused initializer).

The baseline is the first (cold) run: every spec built and gated. The reruns show what the
content-addressed build cache saves; the first unchanged rerun records the files' digests and
what it saw (``trtforge.rerun``; a file written moments ago is never recorded), the steady one
is answered from that record by a stat per file. Every timed unchanged rerun must report every
spec ``unchanged`` (``ci --json``): one that built or restored a spec stops the benchmark (exit 1).

The goals (issue 16), each with its verdict (met / MISSED) in the table and the JSON:
- a steady unchanged rerun <= 2x ``trtforge --help``, at each model size. Each round (7, 3 with
  ``--quick``) times ``trtforge --help`` and a steady unchanged rerun of every size back to back
  (the sizes in turn first), and the ratio is of the medians over the same rounds (run-to-run
  swings on a shared host hit every row);
- flat between model sizes: the larger size's steady rerun over the 1 MB one <= 1.2x, judged on
  the medians, with the same ratio round by round beside it (its spread).

Each run is a fresh process, run from bytecode as an installed trtforge is
(``check_speed.compiled_as_installed``), after one untimed ``ci`` run and rerun of a project of its
own that writes that bytecode (else the first size's cold run compiled every module a build
imports). Prints a table (stderr) and one JSON document (stdout).
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

from check_speed import compiled_as_installed, figure, verdict

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
    variants: list[tuple[str, list[str]]], sizes: tuple[int, ...], jobs: int, rounds: int, quick: bool
) -> dict[str, Any]:
    """Every size's runs, the steady reruns of all sizes in the same rounds as ``--help``: the
    flatness ratio compares reruns made side by side, not minutes apart. An untimed warm-up run
    first: each process reads bytecode from ``compiled_as_installed``'s folder, which starts empty,
    so the first ``ci`` would compile every module a build imports (~0.5 s) inside the first
    size's cold run."""
    specs = len(variants)
    with tempfile.TemporaryDirectory() as tmp:
        warm_up_s = warm_up(Path(tmp) / "warm-up", variants, jobs)
        projects = {}
        rows: dict[int, dict[str, tuple[float, dict[str, int]]]] = {size: {} for size in sizes}
        for size in sizes:
            root = Path(tmp) / f"{size}mb" / "project"
            root.mkdir(parents=True)
            make_project(root, variants, size)
            projects[size] = (root, root.parent / "out", root.parent / "cache")
            rows[size]["first run (cold)"] = run_ci(*projects[size], jobs)
        time.sleep(2.1)  # digests.SETTLE_NS: files written this instant are never cached
        for size in sizes:
            rows[size]["unchanged rerun, 1st"] = unchanged(
                run_ci(*projects[size], jobs), specs, f"{size} MB, unchanged rerun, 1st"
            )
        help_times: list[float] = []
        steady: dict[int, list[float]] = {size: [] for size in sizes}
        for index in range(rounds):  # back to back: a swing of the host hits every row of the round
            help_times.append(seconds_of(HELP))
            for size in sizes if index % 2 == 0 else sizes[::-1]:  # neither size always runs first
                what = f"{size} MB, unchanged rerun, steady round {index + 1}"
                steady[size].append(unchanged(run_ci(*projects[size], jobs), specs, what)[0])
        name, old, new = ("spec1.yaml", "fp32", "fp16") if quick else ("spec3.yaml", "fp16", "fp32")
        for size in sizes:
            rows[size][STEADY] = (statistics.median(steady[size]), {"unchanged": specs})
            spec = projects[size][0] / name
            spec.write_text(spec.read_text().replace(old, new))
            rows[size]["one spec changed"] = run_ci(*projects[size], jobs)
    return {"rows": rows, "help": help_times, "steady": steady, "warm_up_s": warm_up_s}


def warm_up(folder: Path, variants: list[tuple[str, list[str]]], jobs: int) -> float:
    """An untimed cold run and rerun of one spec per precision (every code path a timed run
    takes), in a project of its own: the timed runs find bytecode and the page cache warm."""
    root = folder / "project"
    root.mkdir(parents=True)
    one_each: dict[str, tuple[str, list[str]]] = {}
    for precision, targets in variants:
        one_each.setdefault(precision, (precision, targets))
    make_project(root, list(one_each.values()), 1)
    started = time.perf_counter()
    for _ in range(2):
        run_ci(root, folder / "out", folder / "cache", jobs)
    return time.perf_counter() - started


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
        measured = measure(variants, sizes, args.jobs, rounds, args.quick)
    help_median = statistics.median(measured["help"])
    steady = {size: measured["rows"][size][STEADY][0] for size in sizes}
    vs_help = {size: steady[size] / help_median for size in sizes}
    flatness = steady[sizes[-1]] / steady[sizes[0]]
    # the same ratio round by round (both sizes ran in it): how far one round's ratio strays
    largest, smallest = measured["steady"][sizes[-1]], measured["steady"][sizes[0]]
    per_round = [large / small for large, small in zip(largest, smallest, strict=True)]
    flatness_spread = {"min": min(per_round), "median": statistics.median(per_round), "max": max(per_round)}
    print(
        f"untimed warm-up (bytecode, page cache): {measured['warm_up_s']:.2f} s; trtforge --help: "
        f"{help_median:.3f} s (median of {rounds} rounds, each round --help then a steady unchanged rerun "
        "of every size)",
        file=sys.stderr,
    )
    print(f"{'model':>7} {'run':<24} {'seconds':>8} {'vs cold':>8} {'vs --help':>10}   specs", file=sys.stderr)
    for size in sizes:
        rows = measured["rows"][size]
        cold = rows["first run (cold)"][0]
        for name, (seconds, counts) in rows.items():
            detail = ", ".join(f"{count} {status}" for status, count in sorted(counts.items()))
            versus = f"{seconds / cold:7.2f}x {seconds / help_median:9.2f}x"
            print(
                f"{size:>5}MB {name:<24} {seconds:8.2f} {versus}   {detail}",
                file=sys.stderr,
            )
    for size in sizes:
        print(
            f"goal: {size} MB steady unchanged rerun / --help: {figure(vs_help[size], RERUN_VS_HELP)}x"
            f" (goal <= {RERUN_VS_HELP:g}x): {verdict(vs_help[size], RERUN_VS_HELP)}",
            file=sys.stderr,
        )
    print(
        f"goal: flat, {sizes[-1]} MB / {sizes[0]} MB steady unchanged rerun: {figure(flatness, FLATNESS)}x"
        f" (goal <= {FLATNESS:g}x): {verdict(flatness, FLATNESS)}; round by round "
        f"{flatness_spread['min']:.2f}..{flatness_spread['max']:.2f}x"
        + ("" if sizes[-1] == 200 else f" [the goal is for 200 MB: this is {sizes[-1]} MB]"),
        file=sys.stderr,
    )
    json.dump(
        {
            "specs": len(variants),
            "jobs": args.jobs,
            "rounds": rounds,
            "help_seconds": round(help_median, 3),
            "warm_up_seconds": round(measured["warm_up_s"], 3),
            "sizes_mb": {
                str(size): {
                    "runs": {
                        name: {"seconds": round(seconds, 3), "statuses": counts}
                        for name, (seconds, counts) in measured["rows"][size].items()
                    },
                    "steady_samples_seconds": [round(seconds, 3) for seconds in measured["steady"][size]],
                    "help_seconds": round(help_median, 3),
                    "steady_unchanged_vs_help": round(vs_help[size], 2),
                }
                for size in sizes
            },
            "help_samples_seconds": [round(seconds, 3) for seconds in measured["help"]],
            "flatness": round(flatness, 2),
            "goals": {
                "steady_unchanged_vs_help": {
                    "bound": RERUN_VS_HELP,
                    "by_size_mb": {
                        str(size): {"ratio": vs_help[size], "verdict": verdict(vs_help[size], RERUN_VS_HELP)}
                        for size in sizes
                    },
                },
                "flatness": {
                    "what": f"steady unchanged rerun, {sizes[-1]} MB / {sizes[0]} MB",
                    "bound": FLATNESS,
                    "ratio": flatness,
                    "verdict": verdict(flatness, FLATNESS),
                    "per_round_spread": {key: round(value, 2) for key, value in flatness_spread.items()},
                },
            },
        },
        sys.stdout,
        indent=2,
    )
    print()


if __name__ == "__main__":
    main()
