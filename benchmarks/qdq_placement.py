"""Where does INT8 Q/DQ land? trtforge's placement rules against the weighted-ops-only placement
it replaced, and against NVIDIA ModelOpt's ONNX PTQ, on ResNet-18-, MobileNetV2- and BERT-style
models.

Models (onnx.helper, seeded random weights, BatchNormalization left in):
  * resnet18:    benchmarks/calibration.py's ResNet-18 (BasicBlocks with identity and 1x1
                 projection shortcuts, MaxPool stem, GlobalAveragePool head)
  * mobilenetv2: inverted residual blocks (1x1 expand, 3x3 depthwise, 1x1 project, Clip as
                 ReLU6, residual Add where stride 1 and widths match), GlobalAveragePool head
  * bert:        post-LayerNorm encoder layers (QKV MatMul+bias, scaled dot-product attention
                 with Softmax, output projection, residual Add, LayerNormalization, Erf GELU
                 feed-forward) on float embeddings

Placements:
  * weighted-only: onnxruntime's QDQQuantizer on Conv/ConvTranspose/Gemm/MatMul with the
                   settings trtforge used before its placement rules (the "before" column)
  * trtforge:      ``trtforge.calibration.qdq`` as it is now (BN folded, ``quantized_inputs``,
                   ``quantize``; ranges are placeholders: placement does not depend on them)
  * modelopt:      ``modelopt.onnx.quantization.quantize(mode int8, max calibration, CPU)``
                   run by the Python of a separate virtualenv (``--modelopt-python``, default
                   /tmp/mo-venv/bin/python: ``pip install 'nvidia-modelopt[onnx]'`` there,
                   never in trtforge's own); shown as unavailable when that Python is missing

Per model and placement, each op type that has at least one activation input fed by a Q/DQ
pair is listed as ``quantized nodes/all nodes`` (BN-folded graph; weights are not counted).
Prints the table on stderr and one JSON document on stdout.

Usage: python benchmarks/qdq_placement.py [--quick] [--modelopt-python PATH] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

DEFAULT_MODELOPT_PYTHON = Path("/tmp/mo-venv/bin/python")
PLACEMENTS = ("weighted-only", "trtforge", "modelopt")

MODELOPT_SCRIPT = """
import sys, numpy as np
from modelopt.onnx.quantization import quantize
source, target, data = sys.argv[1:4]
quantize(source, quantize_mode="int8", calibration_data=np.load(data), calibration_method="max",
         calibration_eps=["cpu"], high_precision_dtype="fp32", output_path=target, log_level="ERROR")
"""


def _resnet18(path: Path, quick: bool) -> None:
    spec = importlib.util.spec_from_file_location("bench_calibration", REPO / "benchmarks" / "calibration.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.resnet18(path, 32 if quick else 64)


class _Graph:
    """Nodes and seeded initializers of a model under construction."""

    def __init__(self, seed: int = 0) -> None:
        import onnx

        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.count = 0

    def init(self, name: str, array: np.ndarray, dtype: type = np.float32) -> str:
        from onnx import numpy_helper

        self.inits.append(numpy_helper.from_array(np.asarray(array, dtype=dtype), name))
        return name

    def op(self, kind: str, inputs: list[str], **attrs: object) -> str:
        from onnx import helper

        self.count += 1
        name = f"{kind}_{self.count}"
        self.nodes.append(helper.make_node(kind, inputs, [f"{name}.out"], name=name, **attrs))
        return f"{name}.out"

    def save(self, path: Path, name: str, inputs: list[object], output: str, shape: list[object]) -> None:
        import onnx
        from onnx import TensorProto, helper

        self.nodes[-1].output[0] = "output"
        graph = helper.make_graph(
            self.nodes, name, inputs, [helper.make_tensor_value_info("output", TensorProto.FLOAT, shape)], self.inits
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        model.ir_version = 8
        onnx.checker.check_model(model)
        onnx.save(model, str(path))


def _mobilenetv2(path: Path, quick: bool) -> None:
    from onnx import TensorProto, helper

    g = _Graph()
    low, high = g.init("relu6.min", np.array(0.0)), g.init("relu6.max", np.array(6.0))

    def conv_bn(x: str, cin: int, cout: int, k: int, stride: int = 1, group: int = 1, relu6: bool = True) -> str:
        w = g.init(f"w{g.count}", g.rng.normal(0, np.sqrt(2 / (cin // group * k * k)), (cout, cin // group, k, k)))
        y = g.op("Conv", [x, w], kernel_shape=[k, k], strides=[stride] * 2, pads=[k // 2] * 4, group=group)
        stats = [
            g.init(f"bn{g.count}.{p}", v)
            for p, v in (
                ("gamma", g.rng.uniform(0.5, 1.0, cout)),
                ("beta", g.rng.normal(0, 0.1, cout)),
                ("mean", g.rng.normal(0, 0.1, cout)),
                ("var", g.rng.uniform(0.8, 1.2, cout)),
            )
        ]
        y = g.op("BatchNormalization", [y, *stats])
        return g.op("Clip", [y, low, high]) if relu6 else y

    settings = [
        (1, 16, 1, 1),
        (6, 24, 2, 2),
        (6, 32, 3, 2),
        (6, 64, 4, 2),
        (6, 96, 3, 1),
        (6, 160, 3, 2),
        (6, 320, 1, 1),
    ]
    if quick:
        settings = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 2, 2)]
    x, cin = conv_bn("input", 3, 32, 3, stride=2), 32
    for expand, cout, repeats, first_stride in settings:
        for index in range(repeats):
            stride = first_stride if index == 0 else 1
            hidden = cin * expand
            y = conv_bn(x, cin, hidden, 1) if expand != 1 else x
            y = conv_bn(y, hidden, hidden, 3, stride=stride, group=hidden)
            y = conv_bn(y, hidden, cout, 1, relu6=False)
            x, cin = (g.op("Add", [y, x]) if stride == 1 and cin == cout else y), cout
    x = conv_bn(x, cin, 1280, 1)
    x = g.op("Flatten", [g.op("GlobalAveragePool", [x])])
    g.op("Gemm", [x, g.init("fc.w", g.rng.normal(0, 0.03, (1000, 1280))), g.init("fc.b", np.zeros(1000))], transB=1)
    size = 32 if quick else 64
    image = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, size, size])
    g.save(path, "mobilenetv2", [image], "output", ["batch", 1000])


def _bert(path: Path, quick: bool) -> None:
    from onnx import TensorProto, helper

    g = _Graph()
    hidden, heads, seq, layers = (64, 4, 16, 1) if quick else (256, 4, 64, 4)
    head = hidden // heads

    def linear(x: str, cin: int, cout: int) -> str:
        w = g.init(f"w{g.count}", g.rng.normal(0, np.sqrt(1 / cin), (cin, cout)))
        return g.op("Add", [g.op("MatMul", [x, w]), g.init(f"b{g.count}", g.rng.normal(0, 0.02, cout))])

    def layernorm(x: str) -> str:
        scale = g.init(f"ln{g.count}.g", np.ones(hidden))
        return g.op("LayerNormalization", [x, scale, g.init(f"ln{g.count}.b", np.zeros(hidden))], axis=-1)

    split = g.init("shape.heads", np.array([0, 0, heads, head]), np.int64)
    merge = g.init("shape.merge", np.array([0, 0, hidden]), np.int64)
    root = g.init("sqrt_head", np.array(np.sqrt(head)))
    half, one, sqrt2 = (
        g.init("half", np.array(0.5)),
        g.init("one", np.array(1.0)),
        g.init("sqrt2", np.array(np.sqrt(2))),
    )
    x = layernorm("input")
    for _ in range(layers):
        q, k, v = (g.op("Reshape", [linear(x, hidden, hidden), split]) for _ in range(3))
        q = g.op("Transpose", [q], perm=[0, 2, 1, 3])
        k = g.op("Transpose", [k], perm=[0, 2, 3, 1])
        v = g.op("Transpose", [v], perm=[0, 2, 1, 3])
        scores = g.op("Softmax", [g.op("Div", [g.op("MatMul", [q, k]), root])], axis=-1)
        context = g.op("Transpose", [g.op("MatMul", [scores, v])], perm=[0, 2, 1, 3])
        attention = linear(g.op("Reshape", [context, merge]), hidden, hidden)
        x = layernorm(g.op("Add", [attention, x]))
        up = linear(x, hidden, 4 * hidden)
        gelu = g.op("Mul", [g.op("Mul", [up, half]), g.op("Add", [g.op("Erf", [g.op("Div", [up, sqrt2])]), one])])
        x = layernorm(g.op("Add", [linear(gelu, 4 * hidden, hidden), x]))
    embeddings = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", seq, hidden])
    g.save(path, "bert", [embeddings], "output", ["batch", seq, hidden])


MODELS = {"resnet18": _resnet18, "mobilenetv2": _mobilenetv2, "bert": _bert}


def _input_shape(path: Path) -> tuple[int, ...]:
    import onnx

    dims = onnx.load(str(path)).graph.input[0].type.tensor_type.shape.dim
    return tuple(d.dim_value if d.dim_value else 4 for d in dims)


def weighted_only(folded_path: Path, out: Path) -> None:
    """The placement trtforge had before its rules: onnxruntime's QDQQuantizer on weighted ops."""
    import onnx
    from onnxruntime.quantization.calibrate import CalibrationMethod, TensorData, TensorsData

    from trtforge.calibration.qdq import weighted_inputs, weighted_quantizer

    model = onnx.load(str(folded_path))
    ranges = {name: TensorData(lowest=np.float32(-4), highest=np.float32(4)) for name in weighted_inputs(model)}
    quantizer = weighted_quantizer(model, TensorsData(CalibrationMethod.MinMax, ranges), [])
    onnx.save(quantizer.quantize_model(), str(out))


def trtforge_placement(folded_path: Path, out: Path) -> None:
    import onnx

    from trtforge.calibration.qdq import quantize, quantized_inputs

    folded = onnx.load(str(folded_path))
    onnx.save(quantize(folded, dict.fromkeys(quantized_inputs(folded), 4.0), [], "fp32"), str(out))


def modelopt_placement(python: Path, source: Path, out: Path, data: Path) -> str | None:
    """ModelOpt's Q/DQ graph of ``source``, or why there is none."""
    if not python.is_file():
        return f"no ModelOpt Python at {python}"
    done = subprocess.run(
        [str(python), "-c", MODELOPT_SCRIPT, str(source), str(out), str(data)],
        capture_output=True,
        text=True,
        timeout=1200,
        check=False,
    )
    if done.returncode != 0 or not out.is_file():
        return f"ModelOpt failed: {(done.stderr.strip().splitlines() or ['no output'])[-1]}"
    return None


def quantized_op_types(path: Path) -> dict[str, int]:
    """Op type -> number of nodes with at least one activation input fed by a Q/DQ pair."""
    import onnx

    model = onnx.load(str(path))
    producers = {out: node for node in model.graph.node for out in node.output}
    constants = {init.name for init in model.graph.initializer}
    counts: Counter[str] = Counter()
    for node in model.graph.node:
        if node.op_type in ("QuantizeLinear", "DequantizeLinear"):
            continue
        for name in node.input:
            dq = producers.get(name)
            q = producers.get(dq.input[0]) if dq is not None and dq.op_type == "DequantizeLinear" else None
            if q is not None and q.op_type == "QuantizeLinear" and q.input[0] not in constants:
                source = producers.get(q.input[0])
                if source is None or source.op_type not in ("Constant", "Cast"):  # ModelOpt casts FP16 weights
                    counts[node.op_type] += 1
                    break
    return dict(counts)


def op_totals(path: Path) -> dict[str, int]:
    import onnx

    return dict(Counter(node.op_type for node in onnx.load(str(path)).graph.node))


def run(quick: bool, modelopt_python: Path, workdir: Path) -> dict[str, object]:
    from trtforge.calibration.qdq import fold_batchnorm
    from trtforge.graphfiles import save_model

    results: dict[str, object] = {}
    for name, make in MODELS.items():
        source, folded_path = workdir / f"{name}.onnx", workdir / f"{name}.folded.onnx"
        make(source, quick)
        save_model(fold_batchnorm(source), folded_path)
        data = workdir / f"{name}.calib.npy"
        np.save(data, np.random.default_rng(0).normal(0, 1, (8, *_input_shape(source)[1:])).astype(np.float32))
        outputs = {placement: workdir / f"{name}.{placement}.onnx" for placement in PLACEMENTS}
        weighted_only(folded_path, outputs["weighted-only"])
        trtforge_placement(folded_path, outputs["trtforge"])
        problems = {"modelopt": modelopt_placement(modelopt_python, source, outputs["modelopt"], data)}
        results[name] = {
            "nodes": op_totals(folded_path),
            "placements": {
                placement: {"unavailable": problems[placement]} if problems.get(placement) else quantized_op_types(path)
                for placement, path in outputs.items()
            },
        }
    return results


def table(results: dict[str, object]) -> str:
    lines = [f"{'model':<12} {'op type':<20} " + " ".join(f"{p:>14}" for p in PLACEMENTS)]
    for name, result in results.items():
        assert isinstance(result, dict)
        totals, placements = result["nodes"], result["placements"]
        types = sorted({op for counts in placements.values() for op in counts if op != "unavailable"})
        for op in types:
            cells = []
            for placement in PLACEMENTS:
                counts = placements[placement]
                cell = "n/a" if "unavailable" in counts else f"{counts.get(op, 0)}/{totals.get(op, '?')}"
                cells.append(f"{cell:>14}")
            lines.append(f"{name:<12} {op:<20} " + " ".join(cells))
        for placement, counts in placements.items():
            if "unavailable" in counts:
                lines.append(f"{name:<12} {placement}: {counts['unavailable']}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller models (the tests' run)")
    parser.add_argument("--modelopt-python", type=Path, default=DEFAULT_MODELOPT_PYTHON)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="qdq-placement-") as tmp:
        workdir = args.workdir or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        results = run(args.quick, args.modelopt_python, workdir)
    print(table(results), file=sys.stderr)
    print(json.dumps({"quick": args.quick, "models": results}))


if __name__ == "__main__":
    main()
