"""Warm engine pool against cold start, on the digits example, in fresh processes.

Each trial is one ``trtforge bench MODEL --cold --json`` in its own process, so the cold
scenario is really cold (no onnxruntime environment, allocator or thread pool created yet in
that process; imports are done before timing, as a server does them at start-up). Within a
trial the baseline is measured in the same run: the warm scenario's steady-state p50 (single
requests after the burst). The table shows the median over trials of each time and each ratio.

  cold:  the pool is created (no warm-up) when the first request arrives; "1st resp" is what
         that first client waits (load + contexts + first inference)
  warm:  the pool loaded and warmed every context before ready; "1st req" is the first request
         after ready

Usage: python benchmarks/pool.py [--model PATH] [--trials 5] [--pool 2] [--concurrency 4]
       [--requests 2000] [--provider cpu|cuda] [--quick]
Prints its table on stderr and exactly one JSON document on stdout.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
DIGITS = REPO / "calibration" / "digits" / "digits_cnn.onnx"


def trial(args: argparse.Namespace) -> dict[str, Any]:
    command = [
        sys.executable, "-m", "trtforge", "bench", str(args.model),
        "--pool", str(args.pool), "--concurrency", str(args.concurrency), "--requests", str(args.requests),
        "--provider", args.provider, "--cold", "--json",
    ]  # fmt: skip
    if args.batch:
        command += ["--batch", str(args.batch)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        sys.exit(f"trtforge bench failed ({done.returncode}): {done.stderr.strip().splitlines()[-1:]}")
    return json.loads(done.stdout)


def median(values: list[float]) -> float:
    return statistics.median(values)


def summarize(trials: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Median over trials of each scenario's times (ms) and ratios (to that trial's warm p50)."""
    summary: dict[str, dict[str, float]] = {}
    for name in ("cold", "warm"):
        rows = [next(s for s in t["scenarios"] if s["name"] == name) for t in trials]
        summary[name] = {
            "startup_ms": median([r["startup_ms"] for r in rows]),
            "first_request_ms": median([r["first_request_ms"] for r in rows]),
            "first_request_to_p50": median([r["ratios"]["first_request_to_p50"] for r in rows]),
            "first_response_ms": median([r["first_response_ms"] for r in rows]),
            "first_response_to_p50": median([r["ratios"]["first_response_to_p50"] for r in rows]),
            "p50_ms": median([r["serial"]["p50"] for r in rows]),
            "burst_p50_ms": median([r["burst"]["p50"] for r in rows]),
            "burst_p99_ms": median([r["burst"]["p99"] for r in rows]),
            "burst_p99_to_p50": median([r["ratios"]["burst_p99_to_p50"] for r in rows]),
            "throughput_rps": median([r["throughput_rps"] for r in rows]),
        }
    return summary


def table(summary: dict[str, dict[str, float]]) -> str:
    header = ("", "startup", "1st req", "x p50", "1st resp", "x p50", "p50", "burst p99", "x p50", "req/s")
    lines = ["  ".join(f"{h:>9}" for h in header)]
    for name, row in summary.items():
        cells = (
            name,
            f"{row['startup_ms']:.2f}",
            f"{row['first_request_ms']:.3f}",
            f"{row['first_request_to_p50']:.1f}",
            f"{row['first_response_ms']:.2f}",
            f"{row['first_response_to_p50']:.1f}",
            f"{row['p50_ms']:.3f}",
            f"{row['burst_p99_ms']:.3f}",
            f"{row['burst_p99_to_p50']:.1f}",
            f"{row['throughput_rps']:.0f}",
        )
        lines.append("  ".join(f"{c:>9}" for c in cells))
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=DIGITS)
    parser.add_argument("--trials", type=int, default=5)
    parser.add_argument("--pool", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--provider", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--batch", type=int, default=None)
    parser.add_argument("--quick", action="store_true", help="one trial of 50 requests (a smoke test)")
    args = parser.parse_args()
    if args.quick:
        args.trials, args.requests = 1, 50
    trials = []
    for index in range(args.trials):
        print(f"trial {index + 1}/{args.trials}", file=sys.stderr, flush=True)
        trials.append(trial(args))
    summary = summarize(trials)
    first = trials[0]
    shapes = ", ".join(f"{name} {'x'.join(map(str, dims))}" for name, dims in first["shapes"].items())
    print(
        f"{Path(first['artifact']).name} on {first['backend']} ({', '.join(first['providers'])}), pool {args.pool}, "
        f"burst of {args.requests} from {args.concurrency} threads, shapes {shapes}; "
        f"median of {args.trials} fresh processes; times in ms, x p50 = ratio to the warm steady-state p50",
        file=sys.stderr,
    )
    print(table(summary), file=sys.stderr)
    document = {
        "benchmark": "pool",
        "model": str(args.model),
        "backend": first["backend"],
        "providers": first["providers"],
        "pool": args.pool,
        "concurrency": args.concurrency,
        "requests": args.requests,
        "trials": args.trials,
        "shapes": first["shapes"],
        "median": summary,
        "runs": trials,
    }
    print(json.dumps(document, indent=2))


if __name__ == "__main__":
    main()
