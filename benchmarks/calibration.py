"""How fast and how lean is trtforge's INT8 calibration, against onnxruntime's?

Model: a ResNet-18-sized CNN (ResNet-18 layout with BatchNorm, 3x64x64 input, 1000 classes)
built with onnx.helper and seeded random weights. Data: seeded normal samples in .npy files of
64. For each sample count (default 64, 256, 1024), runs each in its own process:

  * floor:            plain onnxruntime inference of the model over the same batches
  * floor-exposed:    the calibration proper without its statistics: BN folding, then plain
                      inference of the folded model with the tensors trtforge calibrates as extra
                      outputs (one session, default threads): what folding and streaming the
                      activations out of onnxruntime cost before any histogram (informational)
  * trtforge:         ``trtforge.calibration.calibrate`` end to end (entropy, Q/DQ mode, empty
                      cache): model check, BN folding, streaming collection, thresholds, Q/DQ
                      ONNX with FP16 elsewhere
  * trtforge-ranges:  the calibration proper only: BN folding, collection, thresholds
  * onnxruntime:      ``quantize_static(..., calibrate_method=CalibrationMethod.Entropy)`` with
                      the same Q/DQ settings, given the BN-folded model for free
                      (``quant_pre_process`` runs beforehand, outside its time)
  * onnxruntime-ranges: its calibration proper only (``create_calibrator``, ``collect_data``,
                      ``compute_data``: what quantize_static runs before writing Q/DQ)

All read the data through ``trtforge.data.iter_batches`` (batches of 16). Wall time is the
child's own measurement of the work (imports and process start excluded), beside its CPU
time (``cpu_seconds`` in the JSON: on a machine shared with other work, CPU time over the
floor's is the steadier ratio, and the one wall time tends to when every core is busy);
peak RSS is the child's own high-water mark, which it reads when done (``peak_rss_mib``: its
``ru_maxrss`` would hold this parent's peak too). A child killed for memory, or raising
MemoryError, is recorded as "out of memory" (one of trtforge's misses the goals: its peak is where it
was stopped). onnxruntime runs with its default threads.

Goals (issue 16) at the largest count: the calibration proper (trtforge-ranges) <= 1.0 x the
floor, end to end shown beside it (it adds the model check and the Q/DQ ONNX written, a fixed
cost); onnxruntime / trtforge >= 5 (calibration proper); trtforge's peak RSS flat in the number
of samples. Prints a table on stderr, then one JSON document on stdout. The MiB columns
show the end-to-end runs, or the calibration-only runs when only those ran (``--kinds``).

With ``--repeat N``, N rounds run every kind once in turn; each kind keeps its fastest run.

Usage: python benchmarks/calibration.py [--samples 64 256 1024] [--repeat N] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

BATCH = 16
FILE_SAMPLES = 64
CHANNELS = 3
QUANTIZED_OPS = ["Conv", "ConvTranspose", "Gemm", "MatMul"]


def resnet18(path: Path, size: int, seed: int = 0) -> None:
    """ResNet-18 (BasicBlock x [2, 2, 2, 2], widths 64..512) with BatchNorm, dynamic batch."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    nodes: list[onnx.NodeProto] = []
    inits: list[onnx.TensorProto] = []

    def init(name: str, array: np.ndarray) -> str:
        inits.append(numpy_helper.from_array(array.astype(np.float32), name))
        return name

    def conv_bn(x: str, name: str, cin: int, cout: int, k: int, stride: int, relu: bool) -> str:
        weight = init(f"{name}.w", rng.normal(0, np.sqrt(2 / (cin * k * k)), (cout, cin, k, k)))
        pad = k // 2
        nodes.append(
            helper.make_node(
                "Conv", [x, weight], [f"{name}.conv"], name=f"{name}/Conv",
                kernel_shape=[k, k], strides=[stride, stride], pads=[pad] * 4,
            )
        )  # fmt: skip
        bn = [
            init(f"{name}.gamma", rng.uniform(0.5, 1.0, cout)),
            init(f"{name}.beta", rng.normal(0, 0.1, cout)),
            init(f"{name}.mean", rng.normal(0, 0.1, cout)),
            init(f"{name}.var", rng.uniform(0.8, 1.2, cout)),
        ]
        nodes.append(helper.make_node("BatchNormalization", [f"{name}.conv", *bn], [f"{name}.bn"], name=f"{name}/BN"))
        if not relu:
            return f"{name}.bn"
        nodes.append(helper.make_node("Relu", [f"{name}.bn"], [f"{name}.relu"], name=f"{name}/Relu"))
        return f"{name}.relu"

    x = conv_bn("input", "stem", 3, 64, 7, 2, relu=True)
    nodes.append(
        helper.make_node(
            "MaxPool", [x], ["stem.pool"], name="stem/MaxPool",
            kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1],
        )
    )  # fmt: skip
    x, cin = "stem.pool", 64
    for stage, cout in enumerate((64, 128, 256, 512), start=1):
        for block in range(2):
            name = f"layer{stage}.{block}"
            stride = 2 if stage > 1 and block == 0 else 1
            y = conv_bn(x, f"{name}.a", cin, cout, 3, stride, relu=True)
            y = conv_bn(y, f"{name}.b", cout, cout, 3, 1, relu=False)
            shortcut = conv_bn(x, f"{name}.down", cin, cout, 1, stride, relu=False) if stride > 1 else x
            nodes.append(helper.make_node("Add", [y, shortcut], [f"{name}.add"], name=f"{name}/Add"))
            nodes.append(helper.make_node("Relu", [f"{name}.add"], [f"{name}.out"], name=f"{name}/Relu"))
            x, cin = f"{name}.out", cout
    nodes.append(helper.make_node("GlobalAveragePool", [x], ["pool"], name="head/Pool"))
    nodes.append(helper.make_node("Flatten", ["pool"], ["flat"], name="head/Flatten"))
    fc_w = init("fc.w", rng.normal(0, np.sqrt(1 / 512), (1000, 512)))
    fc_b = init("fc.b", np.zeros(1000))
    nodes.append(helper.make_node("Gemm", ["flat", fc_w, fc_b], ["logits"], name="head/Gemm", transB=1))
    graph = helper.make_graph(
        nodes,
        "resnet18",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", CHANNELS, size, size])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 1000])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def write_data(folder: Path, samples: int, size: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for index, start in enumerate(range(0, samples, FILE_SAMPLES)):
        count = min(FILE_SAMPLES, samples - start)
        np.save(
            folder / f"batch_{index:03d}.npy",
            rng.normal(0, 1, (count, CHANNELS, size, size)).astype(np.float32),
        )


def _batches(data: Path, model: Path, samples: int):
    from trtforge.data import iter_batches
    from trtforge.model import TensorDesc

    inputs = (TensorDesc("input", "float32", ("batch", CHANNELS, "height", "width")),)
    return iter_batches(sorted(data.glob("*.npy")), inputs, BATCH, samples)


def run_floor(model: Path, data: Path, samples: int, out: Path) -> None:
    import onnxruntime as ort

    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    for batch in _batches(data, model, samples):
        session.run(None, batch)


def run_floor_exposed(model: Path, data: Path, samples: int, out: Path) -> None:
    """The calibration proper without its statistics: BN folding (timed, as in trtforge-ranges),
    then the folded model with the tensors trtforge calibrates as extra outputs (added as trtforge
    adds them), run like the floor (one session, default threads)."""
    import onnx
    import onnxruntime as ort

    from trtforge.calibration.qdq import folded_file, quantized_inputs
    from trtforge.model import with_outputs

    with folded_file(model) as saved:
        folded = onnx.load(str(saved))
        graph_inputs = {tensor.name for tensor in folded.graph.input}
        exposed = [name for name in quantized_inputs(folded) if name not in graph_inputs]
        session = ort.InferenceSession(with_outputs(folded, exposed, saved), providers=["CPUExecutionProvider"])
    for batch in _batches(data, model, samples):
        session.run(None, batch)


def run_trtforge(model: Path, data: Path, samples: int, out: Path) -> None:
    from trtforge.calibration import calibrate
    from trtforge.spec import parse_spec

    text = (
        f"name: bench\nmodel: {model}\nprecision: int8\n"
        f"calibration: {{data: '{data}/*.npy', batch_size: {BATCH}, max_samples: {samples}}}\n"
    )
    spec = parse_spec(text, out / "spec.yaml")
    calibrate(spec, model, out / "cache", log=lambda message: None)


def run_trtforge_ranges(model: Path, data: Path, samples: int, out: Path) -> None:
    """What ``Calibration`` runs: fold, collect from the folded file, thresholds."""
    import onnx

    from trtforge.calibration.collect import collect
    from trtforge.calibration.histogram import compute_amaxes
    from trtforge.calibration.qdq import folded_file, quantized_inputs

    with folded_file(model) as saved:
        folded = onnx.load(str(saved))
        batches = _batches(data, model, samples)
        stats, _ = collect(folded, quantized_inputs(folded), batches, "entropy", saved=saved)
    compute_amaxes(stats, "entropy")


def _reader(data: Path, model: Path, samples: int):
    from onnxruntime.quantization import CalibrationDataReader

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = _batches(data, model, samples)

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.batches, None)

    return Reader()


def run_onnxruntime(model: Path, data: Path, samples: int, out: Path) -> None:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    quantize_static(
        str(model.with_suffix(".folded.onnx")),
        str(out / "ort_qdq.onnx"),
        _reader(data, model, samples),
        quant_format=QuantFormat.QDQ,
        op_types_to_quantize=QUANTIZED_OPS,
        per_channel=True,
        activation_type=QuantType.QInt8,
        weight_type=QuantType.QInt8,
        calibrate_method=CalibrationMethod.Entropy,
        extra_options={
            "ActivationSymmetric": True,
            "WeightSymmetric": True,
            "QuantizeBias": False,
            "DedicatedQDQPair": True,
            "OpTypesToExcludeOutputQuantization": QUANTIZED_OPS,
        },
    )


def run_onnxruntime_ranges(model: Path, data: Path, samples: int, out: Path) -> None:
    from onnxruntime.quantization.calibrate import CalibrationMethod, create_calibrator

    calibrator = create_calibrator(
        model.with_suffix(".folded.onnx"),
        QUANTIZED_OPS,
        augmented_model_path=str(out / "augmented.onnx"),
        calibrate_method=CalibrationMethod.Entropy,
    )
    calibrator.collect_data(_reader(data, model, samples))
    calibrator.compute_data()


RUNS = {
    "floor": run_floor,
    "floor-exposed": run_floor_exposed,
    "trtforge": run_trtforge,
    "trtforge-ranges": run_trtforge_ranges,
    "onnxruntime": run_onnxruntime,
    "onnxruntime-ranges": run_onnxruntime_ranges,
}


def peak_rss_mib() -> float:
    """This process's own peak resident set in MiB (``VmHWM``). Not ``ru_maxrss``: Linux keeps the
    peak of the process that started this one across ``exec``, so every child of a parent that had
    built a model reported at least that parent's peak (316 MiB for a ResNet-18 at 16x16)."""
    status = Path("/proc/self/status").read_text()
    return round(next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM:")) / 1024, 1)


def child(kind: str, model: Path, data: Path, samples: int, out: Path, limit_gib: int) -> None:
    """Entry point of one measured process: imports first, then the timed work."""
    if limit_gib:
        resource.setrlimit(resource.RLIMIT_AS, (limit_gib << 30, limit_gib << 30))
    import onnx  # noqa: F401  (import cost is not what is measured)
    import onnxruntime
    import onnxruntime.quantization  # noqa: F401

    import trtforge.calibration.collect
    import trtforge.calibration.histogram
    import trtforge.calibration.qdq  # noqa: F401  (trtforge's own imports, ~0.1 s: not measured either)

    out.mkdir(parents=True, exist_ok=True)
    started, cpu = time.perf_counter(), time.process_time()
    RUNS[kind](model, data, samples, out)
    seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu
    print(json.dumps({"seconds": seconds, "cpu_seconds": cpu_seconds, "peak_rss_mib": peak_rss_mib()}))


OUT_OF_MEMORY = ("MemoryError", "bad_alloc", "Failed to allocate memory", "Cannot allocate memory")


def measure(kind: str, model: Path, data: Path, samples: int, out: Path, limit_gib: int) -> dict[str, object]:
    """Run one child; its peak RSS is what it measured itself (:func:`peak_rss_mib`). A child that
    died has only its rusage (``os.wait4``), which holds this process's peak too: an upper bound."""
    command = [
        sys.executable, __file__, "--child", kind, "--model", str(model), "--data", str(data),
        "--samples", str(samples), "--workdir", str(out), "--memory-limit-gib", str(limit_gib),
    ]  # fmt: skip
    with tempfile.TemporaryFile() as stdout, tempfile.TemporaryFile() as stderr:
        process = subprocess.Popen(command, stdout=stdout, stderr=stderr)
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = code = os.waitstatus_to_exitcode(status)
        stdout.seek(0)
        stderr.seek(0)
        output, errors = stdout.read().decode(), stderr.read().decode()
    if code == -signal.SIGKILL or any(text in errors for text in OUT_OF_MEMORY):
        return {"seconds": None, "rss_mib": round(usage.ru_maxrss / 1024, 1), "result": "out of memory"}
    if code != 0:
        raise SystemExit(f"{kind} at {samples} samples failed:\n{errors[-3000:]}")
    measured = json.loads(output.strip().splitlines()[-1])
    seconds, cpu_seconds = round(measured["seconds"], 3), round(measured["cpu_seconds"], 3)
    return {"seconds": seconds, "cpu_seconds": cpu_seconds, "rss_mib": measured["peak_rss_mib"], "result": "ok"}


def best(results: list[dict[str, object]]) -> dict[str, object]:
    """The fastest of repeated runs (noise from other processes only ever adds time), with
    the largest peak RSS seen."""
    finished = [result for result in results if result["result"] == "ok"]
    fastest = min(finished, key=lambda result: result["seconds"]) if finished else results[0]
    return {**fastest, "rss_mib": max(result["rss_mib"] for result in results), "runs": len(results)}


def measure_row(model: Path, data: Path, samples: int, workdir: Path, args: argparse.Namespace) -> dict[str, object]:
    """Every kind at one sample count, ``repeat`` rounds of one run of each kind in turn: load
    from other processes that comes and goes falls on every kind alike, not on whichever kind
    happened to run its repeats during it. Each run starts from an empty output folder (no cache)."""
    results: dict[str, list[dict[str, object]]] = {kind: [] for kind in args.kinds}
    for _ in range(args.repeat):
        for kind in args.kinds:
            out = workdir / "runs" / f"{kind}-{samples}"
            shutil.rmtree(out, ignore_errors=True)
            results[kind].append(measure(kind, model, data, samples, out, args.memory_limit_gib))
    row: dict[str, object] = {"samples": samples}
    for kind in args.kinds:
        row[kind] = best(results[kind])
        print(f"{samples:5d} {kind:18s} {row[kind]}", file=sys.stderr)
    return row


def prepare(workdir: Path, largest: int, size: int) -> tuple[Path, Path]:
    """The model, its BN-folded copy (onnxruntime's input) and the data, built once."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    model = workdir / "resnet18.onnx"
    data = workdir / "data"
    if not model.is_file():
        resnet18(model, size)
    folded = model.with_suffix(".folded.onnx")
    if not folded.is_file():
        quant_pre_process(str(model), str(folded), skip_symbolic_shape=True)
    if len(list(data.glob("*.npy"))) * FILE_SAMPLES < largest:
        write_data(data, largest, size)
    return model, data


def _ratio(numerator: object, denominator: object) -> float | None:
    if isinstance(numerator, float) and isinstance(denominator, float) and denominator > 0:
        return round(numerator / denominator, 2)
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, nargs="+", default=[64, 256, 1024])
    parser.add_argument("--workdir", type=Path, help="keep model and data here (reused)")
    parser.add_argument("--repeat", type=int, default=3, help="rounds, kinds in turn: fastest time, largest RSS")
    parser.add_argument("--size", type=int, default=64, help="input height and width")
    parser.add_argument("--kinds", nargs="+", choices=list(RUNS), default=list(RUNS))
    parser.add_argument("--memory-limit-gib", type=int, default=0, help="address-space cap per run (0: none)")
    parser.add_argument("--child", choices=sorted(RUNS), help=argparse.SUPPRESS)
    parser.add_argument("--model", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.model, args.data, args.samples[0], args.workdir, args.memory_limit_gib)
        return
    with tempfile.TemporaryDirectory(prefix="trtforge-bench-") as tmp:
        workdir = (args.workdir or Path(tmp)) / f"size{args.size}"
        workdir.mkdir(parents=True, exist_ok=True)
        model, data = prepare(workdir, max(args.samples), args.size)
        rows = [measure_row(model, data, samples, workdir, args) for samples in args.samples]
    report(rows, args)


COLUMNS = (
    ("samples", "{samples}"),
    ("floor s", "{floor}"),
    ("ours s", "{trtforge}"),
    ("ours ranges s", "{trtforge-ranges}"),
    ("ort s", "{onnxruntime}"),
    ("ort ranges s", "{onnxruntime-ranges}"),
    ("ort/ours ranges", "{speedup_ranges}"),
    ("ort/ours", "{speedup}"),
    ("ranges/floor", "{ranges_over_floor}"),
    ("exposed/floor", "{exposed_over_floor}"),
    ("ours/floor", "{ours_over_floor}"),
    ("floor MiB", "{floor_mib}"),
    ("ours MiB", "{ours_mib}"),
    ("ort MiB", "{ort_mib}"),
)


def _seconds(row: dict, kind: str) -> float | str | None:
    """Seconds of a finished run, its failure ("out of memory"), or None when not run."""
    result = row.get(kind)
    if result is None:
        return None
    return result["seconds"] if result["result"] == "ok" else result["result"]


#: trtforge's runs, whose peak RSS the memory goal judges
OURS = ("trtforge", "trtforge-ranges")
FLOOR_GOAL = 1.0  # calibration time over plain onnxruntime inference of the same batches
#: peak RSS of the largest sample count over the smallest's: "flat" (issue 16) within this
MEMORY_GROWTH_GOAL = 1.1


def calibration_goals(rows: list[dict]) -> dict[str, object]:
    """The issue's goals, per sample count: the calibration proper's time over the plain-inference
    floor (end to end beside it: it adds the fixed cost of checking the model and writing the Q/DQ
    ONNX, which no floor has), peak RSS, and the growth of peak RSS from the smallest to the largest
    sample count (flat = about 1.0)."""
    ours = {row["samples"]: row.get("trtforge") or row.get("trtforge-ranges") or {} for row in rows}
    peak = {samples: result.get("rss_mib") for samples, result in ours.items()}
    counts = sorted(peak)
    largest = next(row for row in rows if row["samples"] == counts[-1])
    judged = largest["ranges_over_floor"]
    growth = _ratio(peak[counts[-1]], peak[counts[0]]) if len(counts) > 1 else None
    # a run of ours that did not finish (out of memory) misses both goals: its peak is where it was
    # stopped, which looks flat, and it has no time to compare
    failed_runs = {
        row["samples"]: [kind for kind in OURS if row.get(kind, {}).get("result", "ok") != "ok"] for row in rows
    }
    return {
        "ranges_over_floor": {row["samples"]: row["ranges_over_floor"] for row in rows},
        "ours_over_floor": {row["samples"]: row["ours_over_floor"] for row in rows},
        "exposed_over_floor": {row["samples"]: row["exposed_over_floor"] for row in rows},
        "floor_goal": FLOOR_GOAL,
        # judged at the largest count, on the calibration proper (trtforge-ranges); None: not measured
        "floor_goal_met": _judged(judged, FLOOR_GOAL, "trtforge-ranges" in failed_runs[counts[-1]]),
        "peak_mib": peak,
        # None with one sample count: flatness needs two
        "memory_growth": growth,
        "memory_growth_goal": MEMORY_GROWTH_GOAL,
        "memory_goal_met": _judged(growth, MEMORY_GROWTH_GOAL, any(failed_runs.values())),
        "failed_runs": failed_runs,
    }


def _judged(value: float | None, bound: float, failed: bool) -> bool | None:
    """``value`` within ``bound``; False where a run of ours failed, None where nothing was measured."""
    if failed:
        return False
    return None if value is None else value <= bound


def _verdict(met: object) -> str:
    return "not measured" if met is None else "met" if met else "MISSED"


def report(rows: list[dict], args: argparse.Namespace) -> None:
    """Ratios into the rows, a table on stderr, the JSON document on stdout; rows in order of
    sample count (``--samples`` may list them in any order; the RSS growth is from the smallest)."""
    rows.sort(key=lambda row: row["samples"])
    base = rows[0].get("trtforge") or rows[0].get("trtforge-ranges") or {}
    cells = []
    for row in rows:
        seconds = {kind: _seconds(row, kind) for kind in RUNS}
        row["speedup_ranges"] = _ratio(seconds["onnxruntime-ranges"], seconds["trtforge-ranges"])
        row["speedup"] = _ratio(seconds["onnxruntime"], seconds["trtforge"])
        row["ours_over_floor"] = _ratio(seconds["trtforge"], seconds["floor"])
        row["ranges_over_floor"] = _ratio(seconds["trtforge-ranges"], seconds["floor"])
        row["exposed_over_floor"] = _ratio(seconds["floor-exposed"], seconds["floor"])
        ours = row.get("trtforge") or row.get("trtforge-ranges") or {}
        row["rss_vs_smallest"] = _ratio(ours.get("rss_mib"), base.get("rss_mib"))
        values = {kind: "-" if value is None else value for kind, value in seconds.items()}
        ort = row.get("onnxruntime") or row.get("onnxruntime-ranges") or {}
        values |= {
            "floor_mib": row.get("floor", {}).get("rss_mib", "-"),
            "ours_mib": ours.get("rss_mib", "-"),
            "ort_mib": ort.get("rss_mib", "-"),
        }
        values |= {
            key: "-" if row[key] is None else row[key]
            for key in (
                "samples",
                "speedup_ranges",
                "speedup",
                "ranges_over_floor",
                "exposed_over_floor",
                "ours_over_floor",
            )
        }
        cells.append([template.format_map(values) for _, template in COLUMNS])
    widths = [max(len(title), *(len(line[i]) for line in cells)) for i, (title, _) in enumerate(COLUMNS)]
    titles = [title for title, _ in COLUMNS]
    lines = [" | ".join(text.rjust(width) for text, width in zip(line, widths, strict=True))
             for line in (titles, *cells)]  # fmt: skip
    lines.insert(1, "-+-".join("-" * width for width in widths))
    print("\n".join(lines), file=sys.stderr)
    goals = calibration_goals(rows)
    print(
        f"goals: calibration (ours ranges)/floor <= {FLOOR_GOAL}: "
        + ", ".join(f"{n}: {ratio}" for n, ratio in goals["ranges_over_floor"].items())
        + " (end to end: "
        + ", ".join(f"{n}: {ratio}" for n, ratio in goals["ours_over_floor"].items())
        + ")"
        + "; peak memory flat in the samples: "
        + ", ".join(f"{n}: {mib} MiB" for n, mib in goals["peak_mib"].items())
        + f" (largest/smallest {goals['memory_growth']})"
        + "; informational, folding and the calibrated tensors exposed as outputs, no statistics / floor: "
        + ", ".join(f"{n}: {ratio}" for n, ratio in goals["exposed_over_floor"].items()),
        file=sys.stderr,
    )
    largest = max(rows, key=lambda row: row["samples"])
    print(
        f"verdict at {largest['samples']} samples: calibration proper (ours ranges)/floor "
        f"{largest['ranges_over_floor']} <= {FLOOR_GOAL}: {_verdict(goals['floor_goal_met'])}; "
        f"peak memory largest/smallest {goals['memory_growth']} <= {MEMORY_GROWTH_GOAL}: "
        f"{_verdict(goals['memory_goal_met'])}",
        file=sys.stderr,
    )
    document = {
        "benchmark": "calibration",
        "model": f"resnet18-like, {CHANNELS}x{args.size}x{args.size}, BatchNorm, seeded weights",
        "batch_size": BATCH,
        "memory_limit_gib": args.memory_limit_gib or None,
        "machine": {
            "cpus": os.cpu_count(),
            "usable_cpus": len(os.sched_getaffinity(0)),
            "platform": platform.platform(),
        },
        "rows": rows,
        "goals": goals,
        "table": lines,
    }
    print(json.dumps(document, indent=1))


if __name__ == "__main__":
    main()
