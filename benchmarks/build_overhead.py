"""What does trtforge add on top of a plain TensorRT-RTX build?

For each model and precision (fp32, fp16), each run in its own process with a cold cache folder,
`--repeats` times (median reported):
  * direct:   the same build written by hand against the TensorRT-RTX Python API (the baseline;
              the same builder settings, TF32 cleared as trtforge clears it; at fp16 it converts
              the ONNX with the converter trtforge uses, as TensorRT-RTX builds the precision the
              graph has)
  * direct + gate passes (fp16): the direct build, then one onnxruntime pass of the FP32
              reference and one of the FP16 candidate over the gate's documented input plan
              (`trtforge.accuracy.inputs.shape_sets`)
  * direct + dependencies (fp32): the direct build after importing what trtforge's named
              dependencies cost any tool built on them (typer with its pydantic adapters,
              pydantic's models and plugin loader, PyYAML, protobuf): the part of the gap that
              is theirs, not trtforge's own work (informational, no goal)
  * direct, build allocator: the direct build with the C allocator set as trtforge sets it for a
              build (``trtforge.allocator``: freed memory kept for reuse), which makes TensorRT's
              own work faster: trtforge's overhead with that gain on both sides (informational)
  * trtforge: `trtforge build` on a spec with the same model and settings, gate off and on
The runs of one model are interleaved (repeat 1 of every row, then repeat 2, ...), so load from
other processes on a shared machine falls on every row alike.
Ratios (issue 16), per model: gate off / direct at fp32 and fp16 (goal 1.3; 2.0 where that
precision's direct build takes under 0.25 s, as the digits CNN's fp32 one does: start-up dominates
there; beside it, the issue's own measure of that allowance, trtforge's fixed cost over the raw
process, gate off less direct, <= ~150 ms, judged where the direct build is that small and shown
for every row); gate on / direct at fp32 (goal 1.3: no onnxruntime run at all; on a host without a GPU
the gate's candidate is the reference graph itself, so nothing is measured and the row does what
gate off does); gate on / (direct + gate passes) at fp16 (goal 1.0). One untimed round runs
every command first (bytecode written, files in the page cache), then the timed rounds.
On a VM that reports free memory to its host (virtio-balloon free page reporting, as this one,
``page_reporting.page_reporting_order=11``), writing a new 47 MB file takes 14 ms or 130-170 ms,
as its page-cache pages are backed by the host again or not. The direct script truncates and
rewrites its file in place, reusing the pages it just freed; trtforge writes its engine into a
new file beside the old one (the commit replaces it whole), and gives the old one's page cache
back first (``fsutil.drop_cached_pages``), so it reuses those pages too. Before it did, ResNet-18's
trtforge rows were bimodal (about 0.62 s or 0.75 s) for that reason alone (py-spy: ``write_bytes``
12-27 ms against 129-148 ms, everything else alike).
Models: the digits CNN, ResNet-18 at 3x64x64 and 3x224x224 with seeded random weights
(benchmarks/calibration.py builds it), MobileNetV2 at 3x64x64 and a BERT-style encoder (4 layers,
hidden 256) with two dynamic dims, batch and sequence (benchmarks/qdq_placement.py builds both).
Also `trtforge --help` wall time (heavy imports must stay lazy). Every process runs from bytecode,
as an installed trtforge does (``check_speed.compiled_as_installed``): the direct script's own
imports are all installed packages, compiled by pip.
Prints a table (stderr), then one JSON document (stdout). ``--quick``: the digits CNN only, one
run each (a smoke test); ``--model NAME``: one model; ``--before DIR``: the trtforge builds of a
second tree (DIR holds its ``trtforge`` package) run in the same rounds, as ``(before)`` rows.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from check_speed import compiled_as_installed, figure
from qdq_placement import MODELS as QDQ_MODELS

from calibration import resnet18
from trtforge.environment import detect_gpus

REPO = Path(__file__).resolve().parent.parent
TRTFORGE = [sys.executable, "-m", "trtforge"]

DIRECT = """
import json
import sys
if "with-dependencies" in sys.argv[6:]:  # what any typer + pydantic + YAML + protobuf tool imports
    import google.protobuf.message, pydantic.plugin._loader, typer, typer._adapters, yaml
    from pydantic import BaseModel
if "build-allocator" in sys.argv[6:]:  # the C allocator as trtforge sets it for a build
    from trtforge.allocator import keep_freed_memory
    keep_freed_memory()
import tensorrt_rtx as trt
from pathlib import Path
model, out, precision = sys.argv[1:4]
profile, plan = json.loads(sys.argv[4]), json.loads(sys.argv[5])
built = model
if precision == "fp16":
    import onnx
    from onnxruntime.transformers import float16
    converted = float16.convert_float_to_float16(
        onnx.load(model), keep_io_types=True, op_block_list=list(float16.DEFAULT_OP_BLOCK_LIST)
    )
    built = out + ".fp16.onnx"
    onnx.save(converted, built)
logger = trt.Logger(trt.Logger.WARNING)
builder = trt.Builder(logger)
network = builder.create_network(0)
parser = trt.OnnxParser(network, logger)
assert parser.parse_from_file(built)
config = builder.create_builder_config()
config.clear_flag(trt.BuilderFlag.TF32)  # FP32 tensors in FP32, as trtforge builds them
optimization = builder.create_optimization_profile()
for name, (low, opt, high) in profile.items():
    optimization.set_shape(name, low, opt, high)
config.add_optimization_profile(optimization)
config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, 1 << 30)
config.builder_optimization_level = 3
config.num_compute_capabilities = 1
config.set_compute_capability(trt.ComputeCapability.SM86, 0)
engine = builder.build_serialized_network(network, config)
Path(out).write_bytes(engine)  # the buffer itself, as trtforge writes it: bytes() would copy 47 MB first
if plan:  # one reference pass and one candidate pass over the gate's plan
    import numpy as np
    import onnxruntime as ort
    rng = np.random.default_rng(0)
    for path in (model, built):
        session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
        for shapes in plan:
            session.run(None, {name: rng.random(shape, dtype=np.float32) for name, shape in shapes.items()})
"""

SPEC = """
name: overhead
model: {model}
targets: ["8.6"]
profiles:
  - {profile}
precision: {precision}
accuracy: {{enabled: {gate}}}
"""


PRECISIONS = ("fp32", "fp16")
#: gate off / direct: at most this (issue 16); a build whose raw time is ~0.15 s allows 2x (start-up
#: dominates): the goal follows each row's measured direct time, not the model (the digits CNN's raw
#: fp16 build, its conversion included, takes over twice its fp32 one)
GOAL_GATE_OFF = 1.3
GOAL_GATE_OFF_SMALL = 2.0
SMALL_BUILD_S = 0.25
GOAL_GATE_ON_FP32 = 1.3
GOAL_GATE_ON_FP16 = 1.0
#: the issue's own measure of that 2x: "trtforge's fixed cost <= ~150 ms over the raw process", shown
#: beside the ratio for every precision whose direct build is small (the digits CNN's raw fp32 build
#: takes ~0.11 s, under the issue's ~0.15 s, so 2x of it leaves less than the 150 ms)
GOAL_FIXED_COST_MS = 150.0

Profile = dict[str, tuple[list[int], list[int], list[int]]]


@dataclass(frozen=True)
class Model:
    path: Path
    profile: Profile  # input -> (min, opt, max)


def run_once(command: list[str]) -> float:
    """Wall time of one run with a cold trtforge cache folder (nothing reused between runs).

    Every run starts with nothing dirty in the page cache (``os.sync``, untimed): the direct script
    leaves its engine (47 MB for ResNet-18) to the kernel's writeback, and trtforge's fsync of its
    own files made the next run flush that too, so the row after the direct ones paid for them
    (ResNet-18 fp32 gate off 0.72 s while gate on, which runs after it, took 0.63 s)."""
    os.sync()
    with tempfile.TemporaryDirectory() as cache:
        started = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True, env={**os.environ, "TRTFORGE_CACHE_DIR": cache})
        return time.perf_counter() - started


def interleaved(commands: dict[str, list[str]], repeats: int) -> dict[str, tuple[float, list[float]]]:
    """Median and samples per row, the rows run in turn once per repeat, after one untimed round:
    the first process to import a module writes its bytecode (``compiled_as_installed``), which
    would otherwise fall on whichever row runs first."""
    for command in commands.values():
        run_once(command)
    samples: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(repeats):
        for name, command in commands.items():
            samples[name].append(run_once(command))
    return {name: (statistics.median(found), found) for name, found in samples.items()}


def gate_plan(model: Model) -> list[dict[str, list[int]]]:
    """The shapes of the gate's random-input plan for the benchmark's profile."""
    from trtforge.accuracy.inputs import shape_sets
    from trtforge.model import inspect_model
    from trtforge.spec import ShapeRange

    ranges = {name: ShapeRange(min=low, opt=opt, max=high) for name, (low, opt, high) in model.profile.items()}
    sets = shape_sets(inspect_model(model.path), [ranges])
    return [{name: list(shape) for name, shape in s.shapes.items()} for s in sets]


def _flow(shape: list[int]) -> str:
    return "[" + ", ".join(map(str, shape)) + "]"


def measure_model(label: str, model: Model, work: Path, repeats: int, before: Path | None = None) -> dict:
    script = work / "direct.py"
    script.write_text(DIRECT)
    profile = json.dumps(model.profile)
    plan = json.dumps(gate_plan(model))
    spec_profile = ", ".join(
        f"{name}: {{min: {_flow(low)}, opt: {_flow(opt)}, max: {_flow(high)}}}"
        for name, (low, opt, high) in model.profile.items()
    )
    commands = {}
    for precision in PRECISIONS:
        direct = [sys.executable, str(script), str(model.path), str(work / "direct.engine"), precision, profile]
        commands[f"{precision} direct API"] = [*direct, "[]"]
        commands[f"{precision} direct, build allocator"] = [*direct, "[]", "build-allocator"]
        if precision == "fp32":
            commands[f"{precision} direct + dependencies"] = [*direct, "[]", "with-dependencies"]
        if precision != "fp32":
            commands[f"{precision} direct + gate passes"] = [*direct, plan]
        for gate in ("false", "true"):
            spec = work / f"{label}-{precision}-{gate}.yaml"
            spec.write_text(SPEC.format(model=model.path, profile=spec_profile, gate=gate, precision=precision))
            name = f"{precision} trtforge gate {'on' if gate == 'true' else 'off'}"
            commands[name] = [*TRTFORGE, "build", str(spec), "--out", str(work / gate)]
            if before is not None:  # the same build by another trtforge tree, in the same rounds; -P: the
                # current folder (this tree, when run from it) must not come first on sys.path
                command = [sys.executable, "-P", *TRTFORGE[1:], "build", str(spec), "--out", str(work / gate)]
                commands[f"{name} (before)"] = ["env", f"PYTHONPATH={before}", *command]
    return interleaved(commands, repeats)


def ratios(rows: dict) -> dict:
    """gate off / direct per precision; gate on / direct at fp32, / (direct + gate passes) at fp16."""
    found = {}
    for precision in PRECISIONS:
        direct = rows[f"{precision} direct API"][0]
        found[f"{precision}_gate_off_over_direct"] = round(rows[f"{precision} trtforge gate off"][0] / direct, 3)
        base = rows.get(f"{precision} direct + gate passes", rows[f"{precision} direct API"])[0]
        found[f"{precision}_gate_on_over_baseline"] = round(rows[f"{precision} trtforge gate on"][0] / base, 3)
    return found


def own_over_same_allocator(rows: dict) -> dict[str, float]:
    """gate off / (direct, build allocator) per precision: trtforge's overhead with the allocator's
    gain (``trtforge.allocator``) on both sides."""
    return {
        precision: round(rows[f"{precision} trtforge gate off"][0] / rows[f"{precision} direct, build allocator"][0], 3)
        for precision in PRECISIONS
    }


def fixed_costs(rows: dict) -> dict[str, float]:
    """gate off less direct per precision, in ms: what trtforge adds to the raw process."""
    return {
        precision: round(1000 * (rows[f"{precision} trtforge gate off"][0] - rows[f"{precision} direct API"][0]), 1)
        for precision in PRECISIONS
    }


def small_builds(rows: dict) -> list[str]:
    """The precisions whose direct build took under SMALL_BUILD_S: start-up dominates there."""
    return [precision for precision in PRECISIONS if rows[f"{precision} direct API"][0] < SMALL_BUILD_S]


def goals(rows: dict) -> dict[str, float]:
    """The issue's goal for each ratio of :func:`ratios`: gate off allows 2x where that precision's
    direct build took under SMALL_BUILD_S."""

    def gate_off(precision: str) -> float:
        return GOAL_GATE_OFF_SMALL if precision in small_builds(rows) else GOAL_GATE_OFF

    return {
        "fp32_gate_off_over_direct": gate_off("fp32"),
        "fp32_gate_on_over_baseline": GOAL_GATE_ON_FP32,
        "fp16_gate_off_over_direct": gate_off("fp16"),
        "fp16_gate_on_over_baseline": GOAL_GATE_ON_FP16,
    }


#: the models ``make bench`` measures (``--model`` also takes ``resnet18-<N>px`` at any size)
MODEL_NAMES = ("digits-cnn", "resnet18-64px", "resnet18-224px", "mobilenetv2-64px", "bert-batch-seq")


def model_name(text: str) -> str:
    """``--model``'s value, refused with the valid names before any model is built."""
    size = text.removeprefix("resnet18-").removesuffix("px")
    if text in MODEL_NAMES or (text.startswith("resnet18-") and text.endswith("px") and size.isdigit()):
        return text
    raise argparse.ArgumentTypeError(f"unknown model {text!r}: one of {', '.join(MODEL_NAMES)} or resnet18-<N>px")


def image(size: int, channels: int = 3) -> Profile:
    return {"input": ([1, channels, size, size], [16, channels, size, size], [32, channels, size, size])}


def models(work: Path, quick: bool, only: str | None = None) -> dict[str, Model]:
    """The benchmark's models, built into ``work`` (the digits CNN only with ``quick``; the one
    named ``only`` when given)."""
    found = {"digits-cnn": Model(REPO / "calibration" / "digits" / "digits_cnn.onnx", image(8, 1))}
    if quick or only == "digits-cnn":
        return found
    if only is not None and only.startswith("resnet18-"):  # built alone: the others take a while
        size = int(only.removeprefix("resnet18-").removesuffix("px"))
        path = work / f"{only}.onnx"
        resnet18(path, size)
        return {only: Model(path, image(size))}
    for size in (64, 224):
        path = work / f"resnet18-{size}.onnx"
        resnet18(path, size)
        found[f"resnet18-{size}px"] = Model(path, image(size))
    mobilenet = work / "mobilenetv2.onnx"
    QDQ_MODELS["mobilenetv2"](mobilenet, False)
    found["mobilenetv2-64px"] = Model(mobilenet, image(64))
    bert = work / "bert.onnx"
    QDQ_MODELS["bert"](bert, False)
    hidden = two_dynamic_dims(bert)
    profile = {"input": ([1, 16, hidden], [8, 64, hidden], [16, 128, hidden])}
    found["bert-batch-seq"] = Model(bert, profile)
    return found


def two_dynamic_dims(path: Path) -> int:
    """Make the BERT-style encoder's sequence axis dynamic too (its reshapes copy dims with 0, so
    the graph allows it); returns its hidden size."""
    import onnx

    model = onnx.load(str(path))
    for value in (*model.graph.input, *model.graph.output):
        value.type.tensor_type.shape.dim[1].dim_param = "seq"
    del model.graph.value_info[:]
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return int(model.graph.input[0].type.tensor_type.shape.dim[2].dim_value)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="the digits CNN only, one run each")
    parser.add_argument("--model", type=model_name, help=f"one model only: {', '.join(MODEL_NAMES)}")
    parser.add_argument(
        "--before", type=Path, help="a folder holding another trtforge package: its builds run beside, '(before)' rows"
    )
    args = parser.parse_args()
    if args.quick:
        args.repeats = 1
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        compiled_as_installed(work / "bytecode")
        built = models(work, args.quick, args.model)
        if args.model is not None:
            built = {args.model: built[args.model]}
        for label, model in built.items():
            results[label] = measure_model(label, model, work, args.repeats, args.before)
        ((help_seconds, help_samples),) = interleaved({"help": [*TRTFORGE, "--help"]}, args.repeats).values()

    print(f"{'model':<16} {'run':<28} {'median s':>9} {'vs direct':>10}   samples", file=sys.stderr)
    summary = {}
    for label, rows in results.items():
        for name, (median, samples) in rows.items():
            direct = rows[f"{name.split()[0]} direct API"][0]
            print(
                f"{label:<16} {name:<28} {median:9.3f} {median / direct:9.2f}x   "
                f"{', '.join(f'{s:.2f}' for s in samples)}",
                file=sys.stderr,
            )
        found, wanted = ratios(rows), goals(rows)
        shown = (f"{k} {v:.3f} (goal {wanted[k]:g}: {'met' if v <= wanted[k] else 'MISSED'})" for k, v in found.items())
        print(f"{label:<16} ratios: " + "; ".join(shown), file=sys.stderr)
        fixed = fixed_costs(rows)
        judged = {precision: fixed[precision] <= GOAL_FIXED_COST_MS for precision in small_builds(rows)}
        print(
            f"{label:<16} fixed cost, gate off less direct: "
            + "; ".join(
                f"{precision} {figure(ms, GOAL_FIXED_COST_MS, 0)} ms"
                + (
                    f" (goal <= {GOAL_FIXED_COST_MS:.0f}: {'met' if judged[precision] else 'MISSED'})"
                    if precision in judged
                    else ""
                )
                for precision, ms in fixed.items()
            ),
            file=sys.stderr,
        )
        with_dependencies = rows["fp32 trtforge gate off"][0] / rows["fp32 direct + dependencies"][0]
        print(
            f"{label:<16} fp32 gate off / (direct + dependencies): {with_dependencies:.2f}x (informational)",
            file=sys.stderr,
        )
        same_allocator = own_over_same_allocator(rows)
        print(
            f"{label:<16} gate off / (direct, build allocator): "
            + "; ".join(f"{precision} {value:.2f}x" for precision, value in same_allocator.items())
            + " (informational)",
            file=sys.stderr,
        )
        summary[label] = {
            "median_seconds": {name: round(median, 4) for name, (median, _) in rows.items()},
            # every timed run, in the order run: the spread behind each median and ratio above
            "samples_seconds": {name: [round(s, 4) for s in samples] for name, (_, samples) in rows.items()},
            "ratio_trtforge_over_direct": found["fp32_gate_off_over_direct"],
            "ratio_with_gate": found["fp32_gate_on_over_baseline"],
            **found,
            "goals": wanted,
            "goals_met": {key: value <= wanted[key] for key, value in found.items()},
            # informational: the dependencies' share, and trtforge's own over a tool that imports them
            "fp32_dependencies_over_direct": round(
                rows["fp32 direct + dependencies"][0] / rows["fp32 direct API"][0], 3
            ),
            "fp32_gate_off_over_direct_with_dependencies": round(
                rows["fp32 trtforge gate off"][0] / rows["fp32 direct + dependencies"][0], 3
            ),
            "gate_off_over_direct_with_build_allocator": same_allocator,
            # the parenthetical for small builds: what trtforge adds to the raw process, in ms
            "gate_off_fixed_cost_ms": fixed,
            "fixed_cost_goal_met": judged,
        }
    if not detect_gpus():
        print(
            "note: no GPU here, so the fp32 gate's candidate is the reference graph itself: nothing is "
            "measured, and 'fp32 gate on' does the work 'fp32 gate off' does (a host with a GPU runs the engine)",
            file=sys.stderr,
        )
    print(
        f"{'-':<16} {'trtforge --help':<28} {help_seconds:9.3f} {'-':>10}   "
        f"{', '.join(f'{s:.2f}' for s in help_samples)}",
        file=sys.stderr,
    )
    json.dump(
        {
            "repeats": args.repeats,
            "models": summary,
            "goal_ratio": GOAL_GATE_OFF,
            "goal_ratio_small_model": GOAL_GATE_OFF_SMALL,
            "goal_fixed_cost_ms_small_model": GOAL_FIXED_COST_MS,
            "goal_gate_on_fp32_over_direct": GOAL_GATE_ON_FP32,
            "goal_gate_on_fp16_over_direct_plus_gate_passes": GOAL_GATE_ON_FP16,
            "help_seconds": round(help_seconds, 4),
            "help_samples_seconds": [round(s, 4) for s in help_samples],
            "small_build_seconds": SMALL_BUILD_S,
        },
        sys.stdout,
        indent=2,
    )
    print()


if __name__ == "__main__":
    main()
