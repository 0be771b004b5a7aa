"""Build the ONNX backend node-test corpus with trtforge and with the raw TensorRT-RTX API, side by side.

The corpus is generated from the installed ``onnx`` package (``onnx.backend.test.case.node``, as
onnx's own backend-test tooling does): about 1900 one-operator models, each with the inputs of its
first data set. Every model is built three ways, in the same run:

- **raw**: the TensorRT-RTX API directly (parse, one profile at the data set's shapes — and the
  data set's values for shape-tensor inputs — build), the peer;
- **trtforge, gate off**: ``trtforge build SPEC... --json`` with ``accuracy.enabled: false``; the
  spec gives the data set's values to the inputs the peer's parser read as shape tensors (what a
  user does once trtforge names them);
- **trtforge, gate on**: the same specs with the accuracy gate (random inputs, fp32).

Specs are built many per process (``trtforge build`` takes a list), in chunks; a chunk whose
process dies without its JSON document is replayed one spec per process, so one crash costs one
model, not the chunk. Prints a table on stderr and one JSON document on stdout.

Goals (issue 13): trtforge with the gate off builds every model the raw API builds; with the gate
on only exit codes 0/2/3/4 and the gate never fails an fp32 build; no traceback; no exit 1.

    python benchmarks/node_corpus.py [--limit N] [--match SUBSTRING] [--chunk 60] [--work DIR]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
TRTFORGE = [sys.executable, "-m", "trtforge"]
NAME_LIMIT = 64


@dataclass(frozen=True)
class CorpusModel:
    case: str
    name: str  # a valid spec name
    folder: str


@dataclass(frozen=True)
class Outcome:
    status: str  # built | refused | crashed
    exit_code: int
    reason: str = ""
    traceback: bool = False


# ---------------------------------------------------------------- corpus


def spec_name(case: str, taken: set[str]) -> str:
    """A spec name from a node-test name: lowercase, ``[a-z0-9._-]``, unique, at most 64 characters."""
    text = re.sub(r"[^a-z0-9._-]+", "-", case.removeprefix("test_").lower()).strip("-.") or "model"
    if len(text) > NAME_LIMIT or text in taken:
        text = f"{text[: NAME_LIMIT - 9]}-{hashlib.sha256(case.encode()).hexdigest()[:8]}"
    taken.add(text)
    return text


def generate(work: Path, limit: int | None, match: re.Pattern[str] | None) -> list[CorpusModel]:
    """Write every node test as ``model.onnx`` and its first data set's inputs."""
    import numpy as np
    import onnx
    from onnx.backend.test.case.node import collect_testcases

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the generators overflow casts on purpose
        cases = collect_testcases()
    cases = sorted((c for c in cases if match is None or match.search(c.name)), key=lambda c: c.name)[:limit]
    taken: set[str] = set()
    corpus = []
    for case in cases:
        name = spec_name(case.name, taken)
        folder = work / "models" / name
        folder.mkdir(parents=True, exist_ok=True)
        onnx.save(case.model, str(folder / "model.onnx"))
        graph = case.model.graph
        initializers = {init.name for init in graph.initializer}
        inputs = [value.name for value in graph.input if value.name not in initializers]
        arrays = case.data_sets[0][0] if case.data_sets else []
        feeds = {}
        for input_name, array in zip(inputs, arrays, strict=False):
            if isinstance(array, np.ndarray | np.generic) and array.dtype.kind in "biuf":  # no string tensors
                feeds[input_name] = np.asarray(array)  # a NumPy scalar (CumSum's axis) as a rank-0 array
        np.savez(folder / "inputs.npz", **feeds)
        corpus.append(CorpusModel(case.name, name, str(folder)))
    return corpus


def write_specs(corpus: list[CorpusModel], shape_inputs: dict[str, list[str]]) -> None:
    """Two specs per model (gate on, gate off). The inputs TensorRT's parser reads as shape tensors
    get the data set's values: what a user does once trtforge names them (exit 2 until then)."""
    import numpy as np

    for model in corpus:
        folder = Path(model.folder)
        feeds = dict(np.load(folder / "inputs.npz"))
        for gate in ("on", "off"):
            text = _spec_text(model.name, feeds, set(shape_inputs.get(model.folder, ())), gate == "on")
            (folder / f"gate-{gate}.yaml").write_text(text)


def _spec_text(name: str, feeds: dict[str, Any], shape_inputs: set[str], gate: bool) -> str:
    """A spec with one profile at the data set's shapes for every tensor input, and the data set's
    values for every shape tensor (``value:``)."""
    entries = []
    for input_name, array in feeds.items():
        if input_name in shape_inputs:
            entries.append(f"{json.dumps(input_name)}: {{value: {json.dumps(array.tolist())}}}")
        elif array.ndim > 0:
            shape = list(array.shape)
            entries.append(f"{json.dumps(input_name)}: {{min: {shape}, opt: {shape}, max: {shape}}}")
    profile = ", ".join(entries)
    lines = [f"name: {name}", "model: model.onnx", "precision: fp32", "backend: tensorrt-rtx", 'targets: ["8.6"]']
    if profile:
        lines.append(f"profiles:\n  - {{{profile}}}")
    if not gate:
        lines.append("accuracy: {enabled: false}")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- raw TensorRT-RTX API (the peer)


def raw_worker(folders: list[str], results: Path) -> None:
    """Build each model with the bare API; one JSON line per model, appended as it finishes."""
    import numpy as np
    import tensorrt_rtx as trt

    logger = trt.Logger(trt.Logger.ERROR)
    with open(results, "a", encoding="utf-8") as sink:
        for folder in folders:
            started = time.perf_counter()
            shape_inputs: list[str] = []
            try:
                status, reason = _raw_build(trt, logger, Path(folder), np, shape_inputs)
            except Exception as exc:  # the API raising is a refusal by TensorRT, not a crash
                status, reason = "refused", f"{type(exc).__name__}: {exc}"[:300]
            record = {
                "folder": folder,
                "status": status,
                "reason": reason,
                "shape_inputs": shape_inputs,
                "seconds": time.perf_counter() - started,
            }
            sink.write(json.dumps(record) + "\n")
            sink.flush()


def _raw_build(trt: Any, logger: Any, folder: Path, np: Any, shape_inputs: list[str]) -> tuple[str, str]:
    """Parse and build; ``shape_inputs`` receives the inputs the parser made shape tensors."""
    feeds = dict(np.load(folder / "inputs.npz"))
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(folder / "model.onnx")):
        errors = [parser.get_error(i).desc() for i in range(parser.num_errors)]
        return "refused", "parser: " + "; ".join(errors)[:300]
    config = builder.create_builder_config()
    config.num_compute_capabilities = 1
    config.set_compute_capability(trt.ComputeCapability.SM86, 0)
    profile = builder.create_optimization_profile()
    for index in range(network.num_inputs):
        tensor = network.get_input(index)
        array = feeds.get(tensor.name)
        if array is None:
            continue
        if tensor.is_shape_tensor:
            shape_inputs.append(tensor.name)
            values = tuple(int(v) for v in np.asarray(array).reshape(-1))
            profile.set_shape_input(tensor.name, values, values, values)
        elif array.ndim > 0:
            profile.set_shape(tensor.name, array.shape, array.shape, array.shape)
    config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    return ("built", "") if serialized is not None else ("refused", "builder returned no engine")


def run_raw(corpus: list[CorpusModel], work: Path, chunk: int) -> tuple[dict[str, Outcome], dict[str, list[str]]]:
    """The peer's outcome per model, and the inputs its parser read as shape tensors."""
    results = work / "raw.jsonl"
    results.unlink(missing_ok=True)
    pending = [model.folder for model in corpus]
    outcomes: dict[str, Outcome] = {}
    shape_inputs: dict[str, list[str]] = {}
    while pending:
        batch = pending[:chunk]
        subprocess.run(
            [sys.executable, __file__, "--raw-worker", str(results), *batch],
            cwd=REPO,
            check=False,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        done = {}
        for line in results.read_text().splitlines():
            record = json.loads(line)
            done[record["folder"]] = record
        finished = [folder for folder in batch if folder in done]
        for folder in finished:
            record = done[folder]
            shape_inputs[folder] = record["shape_inputs"]
            outcomes[folder] = Outcome(record["status"], 0 if record["status"] == "built" else 3, record["reason"])
        if len(finished) < len(batch):  # the worker died on the next model: count it, go on after it
            crashed = batch[len(finished)]
            outcomes[crashed] = Outcome("crashed", -1, "the TensorRT-RTX API crashed the process")
            pending = batch[len(finished) + 1 :] + pending[chunk:]
        else:
            pending = pending[chunk:]
    return outcomes, shape_inputs


# ---------------------------------------------------------------- trtforge


def run_trtforge(corpus: list[CorpusModel], work: Path, gate: str, chunk: int) -> dict[str, Outcome]:
    out, cache = work / f"out-gate-{gate}", work / f"cache-gate-{gate}"
    outcomes: dict[str, Outcome] = {}
    for start in range(0, len(corpus), chunk):
        batch = corpus[start : start + chunk]
        specs = [str(Path(model.folder) / f"gate-{gate}.yaml") for model in batch]
        document, stderr = _trtforge_build(specs, out, cache)
        if document is not None and len(document.get("results", [])) == len(batch):
            for model, result in zip(batch, document["results"], strict=True):
                outcomes[model.folder] = _outcome(result, "Traceback" in stderr and result["exit_code"] == 1)
            continue
        for model, spec in zip(batch, specs, strict=True):  # the batch died: one spec per process
            single, single_err = _trtforge_build([spec], out, cache)
            if single is None or not single.get("results"):
                reason = single_err.strip().splitlines()[-1][:300] if single_err.strip() else "process died"
                outcomes[model.folder] = Outcome("crashed", 1, reason, "Traceback" in single_err)
            else:
                outcomes[model.folder] = _outcome(single["results"][0], "Traceback" in single_err)
    return outcomes


def _trtforge_build(specs: list[str], out: Path, cache: Path) -> tuple[dict[str, Any] | None, str]:
    completed = subprocess.run(
        [*TRTFORGE, "build", *specs, "--out", str(out), "--cache-dir", str(cache), "--json"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    try:
        return json.loads(completed.stdout), completed.stderr
    except json.JSONDecodeError:
        return None, completed.stderr


def _outcome(result: dict[str, Any], traceback: bool) -> Outcome:
    if result.get("exit_code", 1) == 0:
        return Outcome("built", 0)
    return Outcome("refused", int(result["exit_code"]), str(result.get("error", ""))[:300], traceback)


# ---------------------------------------------------------------- report


def summarize(corpus: list[CorpusModel], runs: dict[str, dict[str, Outcome]]) -> dict[str, Any]:
    raw, off, on = runs["raw"], runs["trtforge gate off"], runs["trtforge gate on"]
    lost = [m for m in corpus if raw[m.folder].status == "built" and off[m.folder].status != "built"]
    gate_failed_fp32 = [m for m in corpus if on[m.folder].exit_code == 4]
    summary: dict[str, Any] = {}
    for label, outcomes in runs.items():
        values = list(outcomes.values())
        summary[label] = {
            "built": sum(o.status == "built" for o in values),
            "refused": sum(o.status == "refused" for o in values),
            "crashed": sum(o.status == "crashed" for o in values),
            "exit_codes": dict(sorted(Counter(o.exit_code for o in values).items())),
            "exit_1": sum(o.exit_code == 1 for o in values),
            "tracebacks": sum(o.traceback for o in values),
        }
    summary["goals"] = {
        "gate off builds every model the raw API builds": not lost,
        "gate on exits only 0/2/3/4": all(o.exit_code in (0, 2, 3, 4) for o in on.values()),
        "gate never fails an fp32 build": not gate_failed_fp32,
        "no traceback": not any(o.traceback for run in runs.values() for o in run.values()),
        "no exit 1": not any(o.exit_code == 1 for label, run in runs.items() if label != "raw" for o in run.values()),
    }
    summary["lost_by_trtforge"] = [{"case": m.case, "reason": off[m.folder].reason} for m in lost]
    summary["gate_failed_fp32"] = [{"case": m.case, "reason": on[m.folder].reason} for m in gate_failed_fp32]
    summary["refusal_reasons_gate_on"] = dict(
        Counter(_reason_kind(o.reason) for o in on.values() if o.status != "built").most_common(25)
    )
    return summary


def _reason_kind(reason: str) -> str:
    """A refusal reason without paths and names, to group them."""
    text = re.sub(r"/\S+", "PATH", reason)
    text = re.sub(r"'[^']*'", "'X'", text)
    return re.sub(r"\d+", "N", text)[:120]


def render(summary: dict[str, Any], models: int, seconds: float) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(stderr=True, width=160)
    table = Table(title=f"ONNX node-test corpus: {models} models, {seconds:.0f} s", title_justify="left")
    for column in ("run", "built", "refused", "crashed", "exit 1", "tracebacks", "exit codes"):
        table.add_column(column)
    for label in ("raw", "trtforge gate off", "trtforge gate on"):
        row = summary[label]
        table.add_row(
            label,
            str(row["built"]),
            str(row["refused"]),
            str(row["crashed"]),
            str(row["exit_1"]),
            str(row["tracebacks"]),
            json.dumps(row["exit_codes"]),
        )
    console.print(table)
    for goal, met in summary["goals"].items():
        console.print(f"{'met ' if met else 'MISSED'}  {goal}")
    for kind, count in summary["refusal_reasons_gate_on"].items():
        console.print(f"{count:5d}  {kind}")


def _pattern(text: str) -> re.Pattern[str]:
    try:
        return re.compile(text)
    except re.error as exc:
        raise argparse.ArgumentTypeError(f"not a regular expression: {exc}") from None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, help="only the first N models (sorted by name)")
    parser.add_argument("--match", type=_pattern, help="only models whose test name this regular expression finds")
    parser.add_argument("--chunk", type=int, default=60, help="specs per trtforge process")
    parser.add_argument("--work", type=Path, help="keep the corpus and outputs here (default: a temporary folder)")
    parser.add_argument("--raw-worker", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.raw_worker:
        raw_worker(args.raw_worker[1:], Path(args.raw_worker[0]))
        return 0
    work = args.work or Path(tempfile.mkdtemp(prefix="node-corpus-"))
    started = time.perf_counter()
    try:
        corpus = generate(work, args.limit, args.match)
        raw, shape_inputs = run_raw(corpus, work, args.chunk)
        write_specs(corpus, shape_inputs)
        runs = {
            "raw": raw,
            "trtforge gate off": run_trtforge(corpus, work, "off", args.chunk),
            "trtforge gate on": run_trtforge(corpus, work, "on", args.chunk),
        }
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    seconds = time.perf_counter() - started
    summary = summarize(corpus, runs)
    render(summary, len(corpus), seconds)
    per_model = [{"case": m.case, **{label: asdict(run[m.folder]) for label, run in runs.items()}} for m in corpus]
    json.dump({"models": len(corpus), "seconds": round(seconds, 1), **summary, "per_model": per_model}, sys.stdout)
    sys.stdout.write("\n")
    return 0 if all(summary["goals"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
