"""Mixed precision in an ONNX graph: the FP16 conversion (kept nodes in FP32 islands; also the
high-precision part of an INT8 Q/DQ graph), its faithful FP16-storage emulation for the accuracy
gate, and the labels that say how a simulated candidate (FP16 storage, INT8 Q/DQ, TensorRT's own
choice) stands for the engine.

Strongly typed backends (TensorRT 11, TensorRT-RTX) take precision from the graph itself, so
FP16 is an ONNX conversion, not a builder flag. The precision step caches the graphs made here
(:mod:`trtforge.precision.graphs`); calibration converts a Q/DQ graph's unquantized layers.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import onnx

    from trtforge.model import ModelInfo

EMULATION_KEY = "trtforge.emulation"
"""Metadata key of an emulated candidate graph: how it emulates the engine (the gate reports it)."""

FP16_STORAGE = (
    "fp16 storage: Cast(FLOAT16)->Cast(FLOAT) after every tensor the engine's graph holds in FP16, "
    "FP16 weights widened, onnxruntime CPU with all graph optimizations (they keep every cast pair)"
)
"""The emulation label: onnxruntime's CPU provider runs an FP16 graph with FP32 intermediates (it
inserts and folds casts around kernels it lacks in FP16), so the converted graph itself never
overflows or rounds as TensorRT's FP16 tensors do; explicit cast pairs do. No optimization level
folds a pair or fuses across it (tests/test_fp16_emulation.py checks the level the gate uses on
Conv/BatchNormalization/Relu/Add), and the highest level runs the emulation fastest."""

INT8_QDQ = (
    "int8: the Q/DQ graph trtforge placed, QuantizeLinear/DequantizeLinear run by onnxruntime, in float "
    "or in its integer kernels where its optimizer fuses a pattern (round half to even, saturate to "
    "[-128, 127], per-channel weight scales as built); TensorRT fuses "
    "them into INT8 kernels whose accumulation order this does not model"
)
"""How an INT8 candidate stands for the engine (every report carries it beside any FP16 label)."""

FP16_SUBGRAPHS_AS_IS = (
    "inside control-flow subgraphs (If/Loop/Scan) NOT emulated: they run as the FP16 graph has them "
    "on onnxruntime's CPU provider, which may compute in FP32, so FP16 overflow and rounding there "
    "can go unseen (the tensors they read and return are rounded as above)"
)
"""Added to ``FP16_STORAGE`` for a graph with subgraphs: the reports say where the gate is weaker."""


CONVERSION_REVISION = 2
"""How :func:`to_fp16` converts, in the name of every graph made with it (cached FP16 and Q/DQ
graphs, ``ci``'s build keys): 2 keeps ``KEEP_FP32_OPS`` in FP32."""

#: How :func:`emulate_fp16` emulates, in the name of every emulated graph: 2: FP16 graph inputs stay
#: FP16 (revision 1 widened them, so the gate's FP16 feed was refused); 3: a graph with control-flow
#: subgraphs is emulated outside them (it ran unemulated); 4: subgraphs read the FP16 values the
#: emulation holds, and an If on a constant is inlined (onnxruntime folded the rounding away)
EMULATION_REVISION = 4

#: How ``calibration.qdq.quantize`` writes a Q/DQ graph's FP16 parts: 2: each weight scale is one FP16
#: holds exactly, its INT8 weights quantized again by it (a scale under FP16's normal range was
#: rounded after quantizing, and near-zero weight channels dequantized several times too large)
QDQ_REVISION = 2

#: How the TensorRT builder computes FP32 tensors: 2: in FP32, TF32 cleared (``backends.base``;
#: TensorRT allows TF32 by default, which an engine built before computed in where it could)
FP32_REVISION = 2

#: All four, for keys of what a build made with them
GRAPH_REVISIONS = (
    f"fp16 conversion {CONVERSION_REVISION}, emulation {EMULATION_REVISION}, qdq {QDQ_REVISION}, fp32 {FP32_REVISION}"
)

KEEP_FP32_OPS = ("LogSoftmax",)
"""Ops kept in FP32 beside onnxruntime's block list: TensorRT's parser splits LogSoftmax into a
Softmax and a Log with an FP16 tensor between them, where probabilities below FP16's smallest
(about e^-16.6) become 0 and their log -inf; the emulation, which rounds between ONNX nodes only,
would not see that inside the op. In FP32 the engine and the emulation agree."""


def to_fp16(model: onnx.ModelProto, keep_fp32_nodes: Sequence[str] = ()) -> onnx.ModelProto:
    """FP16 graph whose inputs and outputs stay FP32 (the caller's buffers don't change).

    onnxruntime's converter keeps its default block list (ops that are wrong or unsupported
    in FP16), ``KEEP_FP32_OPS`` and ``keep_fp32_nodes`` in FP32 and inserts the casts at the boundaries.
    ``keep_fp32_nodes`` are :func:`~trtforge.model.node_names`: an unnamed node kept gets that name
    in the graph converted (the converter finds nodes by name); ``model`` itself is left as it is.
    """
    import onnx
    from onnxruntime.transformers import float16

    from trtforge.model import name_nodes, without_weights

    # the converter's own shape inference takes the whole model through C++ and back (ResNet-18
    # 224: ~0.1 s); on the graph alone, strict so that a node needing a weight's values says so,
    # it gives the same model (the converter's then where it cannot)
    inferred = without_weights(model, lambda light: onnx.shape_inference.infer_shapes(light, strict_mode=True))
    source = model if inferred is None else inferred
    if keep_fp32_nodes and any(not node.name for node in model.graph.node):
        if source is model:
            source = onnx.ModelProto()
            source.CopyFrom(model)
        name_nodes(source.graph, frozenset(keep_fp32_nodes))
    converted = float16.convert_float_to_float16(
        source,
        keep_io_types=True,
        disable_shape_infer=inferred is not None,
        op_block_list=[*float16.DEFAULT_OP_BLOCK_LIST, *KEEP_FP32_OPS],
        node_block_list=list(keep_fp32_nodes),
    )
    return join_fp32_islands(converted) if keep_fp32_nodes else converted


def _cast_to(node: onnx.NodeProto) -> int | None:
    return next((attr.i for attr in node.attribute if attr.name == "to"), None) if node.op_type == "Cast" else None


def join_fp32_islands(model: onnx.ModelProto) -> onnx.ModelProto:
    """Drop the converter's FP32 -> FP16 -> FP32 round trips (in place).

    onnxruntime's converter casts every output of a node it keeps in FP32 to FP16, and back for
    the next node kept in FP32: a tensor passed between two kept nodes is stored in FP16 anyway,
    and overflows as if nothing were kept. Each Cast(FLOAT) of such a Cast(FLOAT16) reads the
    FP32 tensor itself instead (a Cast FP32 -> FP32 is an identity); casts left unread go.
    """
    from onnx import TensorProto

    graph = model.graph
    types = _elem_types(model)
    to_half = {
        node.output[0]: node.input[0]
        for node in graph.node
        if _cast_to(node) == TensorProto.FLOAT16 and types.get(node.input[0]) == TensorProto.FLOAT
    }
    for node in graph.node:
        if _cast_to(node) == TensorProto.FLOAT and node.input[0] in to_half:
            node.input[0] = to_half[node.input[0]]
    read = {name for node in graph.node for name in node.input} | {value.name for value in graph.output}
    unread = [node for node in graph.node if node.output and node.output[0] in to_half and node.output[0] not in read]
    for node in unread:
        graph.node.remove(node)
    return model


def _elem_types(model: onnx.ModelProto) -> dict[str, int]:
    """Element type of every tensor whose type is known (shape inference where it works).

    Types never depend on a weight's values: the inference runs on the graph without its weights
    (:func:`trtforge.model.weightless`; ResNet-18 224's FP16 graph 83 -> 9 ms), in strict mode, so
    that a node it cannot infer there (one that reads a weight held back) raises; then on the
    whole model, as before, where strict mode fails.
    """
    import onnx

    from trtforge.model import weightless

    try:
        graph = onnx.shape_inference.infer_shapes(weightless(model), strict_mode=True).graph
    except Exception:
        try:
            graph = onnx.shape_inference.infer_shapes(model).graph
        except Exception:  # custom ops, partial graphs: the converter's own value_info still says most
            graph = model.graph
    types = {init.name: init.data_type for init in graph.initializer}
    for value in (*graph.input, *graph.output, *graph.value_info):
        if value.type.HasField("tensor_type") and value.type.tensor_type.elem_type:
            types[value.name] = value.type.tensor_type.elem_type
    return types


def _widen_attributes(node: onnx.NodeProto) -> None:
    """FP16 in a node's attributes (Cast's ``to``, constant tensors, ``dtype``) becomes FP32."""
    from onnx import AttributeProto, TensorProto, numpy_helper

    for attr in node.attribute:
        if attr.type == AttributeProto.INT and attr.name in ("to", "dtype") and attr.i == TensorProto.FLOAT16:
            attr.i = TensorProto.FLOAT
        elif attr.type == AttributeProto.TENSOR and attr.t.data_type == TensorProto.FLOAT16:
            attr.t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(attr.t).astype("float32"), attr.t.name))


def emulate_fp16(converted: onnx.ModelProto) -> onnx.ModelProto | None:
    """The FP32 twin of an (in part) FP16 graph that rounds and overflows where the graph stores FP16.

    Every FP16 tensor becomes FP32 followed by Cast(FLOAT16) -> Cast(FLOAT), under its own name;
    FP16 constants are widened (exactly) and FP16 weights are read through a Cast(FLOAT), which
    onnxruntime folds into an FP32 weight once, when it loads the graph (the same values: the
    cast is exact): the graph written stays the FP16 graph's size, not twice it. None when there
    is nothing to emulate (no FP16 tensor). Control-flow subgraphs stay as the FP16 graph has them
    (``FP16_SUBGRAPHS_AS_IS``): they read FP16 twins of the tensors they use, and what they return
    is widened after them, so the rest of the graph is emulated all the same.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.ModelProto()
    model.CopyFrom(converted)
    _inline_constant_ifs(model.graph)  # as onnxruntime would, folding the emulation's casts away with them
    types = _elem_types(model)
    if TensorProto.FLOAT16 not in types.values():
        return None
    graph = model.graph
    label = FP16_STORAGE
    inputs = {value.name for value in graph.input}
    weights = {init.name for init in graph.initializer}
    # an FP16 input stays FP16 (the gate feeds it as the model declares it), read through a Cast;
    # sorted: the emulated graph has the same bytes in every process
    fed_fp16 = sorted(name for name in inputs - weights if types.get(name) == TensorProto.FLOAT16)
    nodes = [
        helper.make_node("Cast", [name], [f"{name}/fp32"], name=f"{name}/widen", to=TensorProto.FLOAT)
        for name in fed_fp16
    ]
    widened_in_place: set[str] = set()  # FP16 weights that are inputs too: no FP16 twin remains
    for index, init in enumerate(graph.initializer):
        if init.data_type != TensorProto.FLOAT16:
            continue
        if init.name in inputs:  # also an input a caller may feed (IR < 4): widened where it is
            widened_in_place.add(init.name)
            graph.initializer[index].CopyFrom(
                numpy_helper.from_array(numpy_helper.to_array(init).astype("float32"), init.name)
            )
        else:
            weight = init.name
            init.name = f"{weight}/fp16"
            nodes.append(helper.make_node("Cast", [init.name], [weight], name=f"{weight}/widen", to=TensorProto.FLOAT))
    for value in (*graph.input, *graph.output, *graph.value_info):
        if value.name in fed_fp16:
            continue
        if value.type.HasField("tensor_type") and value.type.tensor_type.elem_type == TensorProto.FLOAT16:
            value.type.tensor_type.elem_type = TensorProto.FLOAT
    widened = {name for name, kind in types.items() if kind == TensorProto.FLOAT16} - set(fed_fp16)
    # a widened tensor -> its FP16 twin, for the subgraphs that read it: the rounded value the cast
    # pair (or the FP16 weight) already holds, read as it is; another Cast after the pair's would be
    # a chain onnxruntime may fold, rounding and all
    halves = {name: f"{name}/fp16" for name in widened - widened_in_place}
    for node in graph.node:
        subgraphs = _subgraphs(node)
        if subgraphs:
            label = f"{FP16_STORAGE}; {FP16_SUBGRAPHS_AS_IS}"
            read = [*node.input, *(name for sub in subgraphs for name in _outer_names(sub))]
            for name in dict.fromkeys(read):
                if name in widened_in_place and name not in halves:
                    halves[name] = f"{name}/fp16-read"
                    nodes.append(
                        helper.make_node("Cast", [name], [halves[name]], name=halves[name], to=TensorProto.FLOAT16)
                    )
            node.input[:] = [halves.get(name, name) for name in node.input]
            for sub in subgraphs:
                _rename_reads(sub, halves)
            nodes.append(node)
            for position, name in enumerate(node.output):
                if name and types.get(name) == TensorProto.FLOAT16:
                    node.output[position] = f"{name}/fp16"
                    nodes.append(
                        helper.make_node("Cast", [f"{name}/fp16"], [name], name=f"{name}/widen", to=TensorProto.FLOAT)
                    )
            continue
        _widen_attributes(node)
        for position, name in enumerate(node.input):
            if name in fed_fp16:
                node.input[position] = f"{name}/fp32"
        nodes.append(node)
        for position, name in enumerate(node.output):
            if name and types.get(name) == TensorProto.FLOAT16:
                wide, half = f"{name}/fp32", f"{name}/fp16"
                node.output[position] = wide
                stem = node.name or name
                nodes.append(helper.make_node("Cast", [wide], [half], name=f"{stem}/to_fp16", to=TensorProto.FLOAT16))
                nodes.append(helper.make_node("Cast", [half], [name], name=f"{stem}/to_fp32", to=TensorProto.FLOAT))
    del graph.node[:]
    graph.node.extend(nodes)
    helper.set_model_props(model, {**{p.key: p.value for p in model.metadata_props}, EMULATION_KEY: label})
    return model


def _inline_constant_ifs(graph: onnx.GraphProto) -> None:
    """Replace each If whose condition is a one-element constant of the graph by the branch it takes
    (its nodes, weights and value infos, and an Identity per output), until none is left.

    onnxruntime inlines such an If itself when it optimizes, and its cast elimination then removes
    the emulation's rounding at the branch's edges with the casts around its own FP16 kernels: the
    emulation must see the branch as main-graph nodes. Value names are unique across scopes in
    ONNX, so the branch's tensors keep theirs; node names are not, so an inlined node whose name is
    taken gets another (onnxruntime refuses two nodes of one name)."""
    from onnx import helper, numpy_helper

    while True:
        constants = {init.name: init for init in graph.initializer}
        for node in graph.node:
            if node.op_type == "Constant" and node.output and node.attribute and node.attribute[0].name == "value":
                constants[node.output[0]] = node.attribute[0].t
        found = next(
            (
                (index, node)
                for index, node in enumerate(graph.node)
                if node.op_type == "If"
                and node.input
                and node.input[0] in constants
                # an If on no value or several values is not valid: onnxruntime says so, as it is
                and math.prod(constants[node.input[0]].dims) == 1
            ),
            None,
        )
        if found is None:
            return
        index, node = found
        taken = "then_branch" if numpy_helper.to_array(constants[node.input[0]]).item() else "else_branch"
        branch = next(attr.g for attr in node.attribute if attr.name == taken)
        inlined = [*branch.node]
        inlined += [
            helper.make_node("Identity", [result.name], [output], name=f"{output}/inlined")
            for result, output in zip(branch.output, node.output, strict=True)
            if output
        ]
        del graph.node[index]
        names = {other.name for other in graph.node if other.name}
        for inlined_node in inlined:
            if inlined_node.name in names:
                stem, count = inlined_node.name, 1
                while f"{stem}/inlined{count}" in names:
                    count += 1
                inlined_node.name = f"{stem}/inlined{count}"
            if inlined_node.name:
                names.add(inlined_node.name)
        graph.initializer.extend(branch.initializer)
        graph.value_info.extend(branch.value_info)
        for offset, inlined_node in enumerate(inlined):
            graph.node.insert(index + offset, inlined_node)


def _subgraphs(node: onnx.NodeProto) -> list[onnx.GraphProto]:
    """The bodies of a control-flow node (If's branches, Loop's and Scan's body)."""
    from onnx import AttributeProto

    found: list[onnx.GraphProto] = []
    for attr in node.attribute:
        if attr.type == AttributeProto.GRAPH:
            found.append(attr.g)
        elif attr.type == AttributeProto.GRAPHS:
            found.extend(attr.graphs)
    return found


def _outer_names(graph: onnx.GraphProto) -> list[str]:
    """Names a subgraph (or one nested in it) reads from the scopes around it."""
    defined = {value.name for value in graph.input} | {init.name for init in graph.initializer}
    outer: list[str] = []
    for node in graph.node:
        read = [*node.input, *(name for sub in _subgraphs(node) for name in _outer_names(sub))]
        outer.extend(name for name in read if name and name not in defined)
        defined.update(node.output)
    return outer


def _rename_reads(graph: onnx.GraphProto, renamed: Mapping[str, str]) -> None:
    """Point a subgraph's reads of outer tensors at their new names (names are unique across
    scopes in ONNX, so a name the subgraph defines itself is never among them)."""
    for node in graph.node:
        node.input[:] = [renamed.get(name, name) for name in node.input]
        for sub in _subgraphs(node):
            _rename_reads(sub, renamed)


def candidate_emulation(storage: str | None, int8: bool, tensorrt_choice: str | None = None) -> str | None:
    """The whole label of a simulated candidate: how its Q/DQ nodes stand for INT8 kernels (int8),
    how it stores FP16 (``emulation_of``), and where TensorRT chooses precisions itself
    (``tensorrt_choice``); None when it is the model as is."""
    return "; ".join(label for label in (INT8_QDQ if int8 else None, storage, tensorrt_choice) if label) or None


def tensorrt_choice(flavor: str, version: str, precision: str, native_int8: bool) -> str | None:
    """What the candidate is not, where TensorRT 10.x picks layer precisions itself (the FP16 flag,
    ``mode: native`` INT8): the candidate is trtforge's graph, the engine TensorRT's choice."""
    from trtforge.compat import weakly_typed

    if not weakly_typed(flavor, version):
        return None
    if precision == "fp16":
        return (
            f"TensorRT {version} picks each layer's precision under its FP16 flag: this candidate is "
            "onnxruntime's FP16 conversion, not TensorRT's choice"
        )
    if native_int8:
        return (
            f"mode: native: TensorRT {version} places INT8 itself from the scales: this candidate is "
            "trtforge's Q/DQ placement"
        )
    return None


def emulation_of(model_path: Path, described: ModelInfo | None = None) -> str | None:
    """How ``model_path`` emulates the engine (None: it is the precision-prepared graph as is).
    ``described``: a model the caller has described already; when it is ``model_path`` (an fp32
    gate's candidate is the spec's own model), its metadata answers without a second read."""
    if described is not None and described.path.resolve() == model_path.resolve():
        return dict(described.metadata).get(EMULATION_KEY)
    from trtforge.model import read_onnx

    model = read_onnx(model_path)  # the protobuf alone: no onnx import for a gate that may run nothing
    return next((prop.value for prop in model.metadata_props if prop.key == EMULATION_KEY), None)
