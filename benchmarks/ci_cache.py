"""`trtforge ci` on a project of 8 small specs (2 with ``--quick``): first run, unchanged rerun, one-changed rerun.

The baseline is the first (cold) run: every spec built and gated. The reruns show what the
content-addressed build cache saves. Each run is a fresh `trtforge ci` process.
Prints a table (stderr) and one JSON document (stdout). ``--quick``: 2 fp32 specs (a smoke test).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

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


def make_project(root: Path, variants: list[tuple[str, list[str]]]) -> None:
    shutil.copytree(DIGITS, root / "digits")
    for index, (precision, targets) in enumerate(variants):
        text = (
            f"name: digits-{index}\nmodel: digits/digits_cnn.onnx\nprecision: {precision}\n"
            f"targets: {json.dumps(targets)}\n{PROFILE}"
            "accuracy: {data: digits/val/*.npy, labels: digits/val-labels.npy}\n"
        )
        if precision == "int8":
            text += "calibration: {data: digits/train/*.npy, batch_size: 64}\n"
        (root / f"spec{index}.yaml").write_text(text)


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="2 fp32 specs instead of 8")
    args = parser.parse_args()
    variants = [VARIANTS[0], VARIANTS[2]] if args.quick else VARIANTS
    with tempfile.TemporaryDirectory() as tmp:
        root, out, cache = Path(tmp) / "project", Path(tmp) / "out", Path(tmp) / "cache"
        root.mkdir()
        make_project(root, variants)
        rows = {"first run (cold)": run_ci(root, out, cache, args.jobs)}
        rows["unchanged rerun"] = run_ci(root, out, cache, args.jobs)
        name, old, new = ("spec1.yaml", "fp32", "fp16") if args.quick else ("spec3.yaml", "fp16", "fp32")
        spec = root / name
        spec.write_text(spec.read_text().replace(old, new))
        rows["one spec changed"] = run_ci(root, out, cache, args.jobs)
    cold = rows["first run (cold)"][0]
    print(f"{'run':<20} {'seconds':>8} {'vs cold':>8}   specs", file=sys.stderr)
    for name, (seconds, counts) in rows.items():
        detail = ", ".join(f"{count} {status}" for status, count in sorted(counts.items()))
        print(f"{name:<20} {seconds:8.2f} {seconds / cold:7.2f}x   {detail}", file=sys.stderr)
    json.dump(
        {
            "specs": len(variants),
            "jobs": args.jobs,
            "runs": {
                name: {"seconds": round(seconds, 3), "statuses": counts} for name, (seconds, counts) in rows.items()
            },
        },
        sys.stdout,
        indent=2,
    )
    print()


if __name__ == "__main__":
    main()
