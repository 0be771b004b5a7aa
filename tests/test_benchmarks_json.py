"""Every benchmark prints its table on stderr and exactly one JSON document on stdout.

``make bench`` redirects each script's stdout into ``out/bench-NAME.json``; a header printed on
stdout (as benchmarks/pool.py once did) made that file invalid JSON. Each benchmark runs here in
its smallest mode, in a fresh process, and its whole stdout must parse as one JSON object.
"""

from __future__ import annotations

import json
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
BENCHMARKS = REPO / "benchmarks"

#: The quickest arguments of each benchmark ({work}: a scratch folder of the test).
QUICK: dict[str, list[str]] = {
    "build_overhead": ["--quick"],
    "calibration": ["--samples", "16", "--size", "16", "--kinds", "trtforge-ranges"],
    "check_speed": ["--quick"],
    "ci_cache": ["--quick"],
    "diagnose": ["--quick"],
    "node_corpus": ["--limit", "1", "--work", "{work}"],
    "pool": ["--quick"],
    "qdq_placement": ["--quick", "--workdir", "{work}"],
    "serve": ["--quick"],
    "trust_replay": ["-k", "test_two_specs_writing_one_artifact_are_refused"],
}

pytestmark = pytest.mark.slow  # about 40 s for all of them on two cores


def test_every_benchmark_has_a_quick_run() -> None:
    assert sorted(path.stem for path in BENCHMARKS.glob("*.py")) == sorted(QUICK)


@pytest.mark.parametrize("name", sorted(QUICK))
def test_stdout_is_exactly_one_json_document(name: str, tmp_path: Path) -> None:
    if name == "check_speed" and shutil.which("openssl") is None:
        pytest.skip("openssl is not installed: check_speed's baseline (it exits 1 without it); apt-get install openssl")
    arguments = [argument.format(work=tmp_path / "work") for argument in QUICK[name]]
    document = _run(name, arguments, timeout=120)
    assert isinstance(document, dict) and document


def _run(name: str, arguments: list[str], timeout: float) -> dict:
    """Run a benchmark script: it must exit 0, print its table on stderr and exactly one JSON
    document on stdout (``json.loads`` fails on a header line or a second document)."""
    done = subprocess.run(
        [sys.executable, str(BENCHMARKS / f"{name}.py"), *arguments],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stderr.strip(), "the table belongs on stderr"
    return json.loads(done.stdout)


def test_the_node_corpus_of_five_op_families_meets_every_goal(tmp_path: Path) -> None:
    """About 65 of the ONNX backend node-test models (softmax, conv, gather, slice, einsum),
    generated from the installed onnx: trtforge builds each one the raw TensorRT-RTX API builds,
    with the gate off and on, no crash, no exit 1, no traceback (the script exits 1 on a miss).
    ``make bench`` runs all 1884."""
    document = _run("node_corpus", ["--match", "test_(softmax|conv|gather|slice|einsum)"], timeout=600)
    assert document["models"] >= 60 and all(document["goals"].values()), document["goals"]


def test_build_overhead_records_the_samples_behind_each_median() -> None:
    """The goals are judged from the JSON: it holds every timed run (the spread), not the medians alone."""
    document = _run("build_overhead", ["--quick"], timeout=120)
    for model in document["models"].values():
        assert model["median_seconds"] == {
            name: round(statistics.median(samples), 4) for name, samples in model["samples_seconds"].items()
        }
    assert len(document["help_samples_seconds"]) == document["repeats"]
