"""Where a pool's contexts come from: a TensorRT engine (loaded through the runtime loader) or an
ONNX model in onnxruntime, behind one small ``ModelSource`` interface; each says which shapes
a pool warms by default (:mod:`trtforge.shapes` computes them), and which of its inputs are shape
tensors, whose values a warm-up request must get right (:class:`ShapeTensors`).
"""

from __future__ import annotations

import math
import operator
import os
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, Protocol, SupportsIndex

from trtforge.environment import usable_cores
from trtforge.errors import InvalidInputError, did_you_mean
from trtforge.manifest import ENGINE_SUFFIX, MANIFEST_SUFFIX
from trtforge.model import TensorDesc, describe, load_onnx, read_onnx
from trtforge.runners.base import Runner
from trtforge.shapes import (
    Profile,
    ProfilePoint,
    Shape,
    ShapeSet,
    accepts,
    concrete_shape,
    distinct_shapes,
    profile_points,
    static_shapes,
)

if TYPE_CHECKING:
    from trtforge.compat import Environment, LoadPolicy
    from trtforge.manifest import Manifest

ONNXRUNTIME = "onnxruntime"
PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}
#: onnxruntime execution providers that hold device memory (what ``MemoryUse`` measures for them)
GPU_PROVIDERS = frozenset({"CUDAExecutionProvider", "TensorrtExecutionProvider"})
#: most intra-op threads an onnxruntime session may get, per core this process may use. Its
#: intra-op pool splits one inference among its threads, so past the cores they only take turns
#: and gain nothing, while each costs a thread to create and a stack: ``--threads 100000`` grew
#: memory ~60 MB/s for over a minute in session creation, deaf to Ctrl-C, before any request.
#: Four per core leaves room to measure oversubscription on purpose and still refuses a typo at once.
THREADS_PER_CORE = 4


def provider_name(provider: str, flag: str = "--provider") -> str:
    """``--provider`` (cpu, cuda) as onnxruntime names it; another is exit 2 with the closest
    (``CUDA`` and ``CUDAExecutionProvider`` get ``cuda``), before anything is loaded."""
    if provider in PROVIDERS:
        return PROVIDERS[provider]
    full_name = next((short for short, name in PROVIDERS.items() if name.lower() == provider.lower()), None)
    hint = f" — did you mean '{full_name}'?" if full_name else did_you_mean(provider, PROVIDERS)
    raise InvalidInputError(f"{flag} '{provider}': use {' or '.join(PROVIDERS)}{hint}")


def check_threads(threads: object, flag: str = "threads") -> None:
    """Intra-op threads per onnxruntime session (None: the pool's default), refused (exit 2) below 1
    or above ``THREADS_PER_CORE`` per usable core, before any session is made."""
    if threads is None:
        return
    if not isinstance(threads, int) or isinstance(threads, bool) or threads < 1:
        raise InvalidInputError(f"{flag} {threads!r}: intra-op threads per session, at least 1 (None: the default)")
    cores = usable_cores()
    if threads > THREADS_PER_CORE * cores:
        raise InvalidInputError(
            f"{flag} {threads}: at most {THREADS_PER_CORE * cores} intra-op threads per session "
            f"({THREADS_PER_CORE} for each of the {cores} cores this process may use); onnxruntime gains nothing "
            f"from threads past the cores ({cores} here): pass at most {THREADS_PER_CORE * cores}, or leave it out "
            "for the default"
        )


@dataclass(frozen=True)
class MemoryUse:
    """Device memory the pool holds, and where the numbers come from.

    ``method``: ``engine`` (TensorRT's own figures: activation memory per profile plus the I/O
    buffers the runner allocated, and the plan size as the upper bound of the weights held once),
    ``measured`` (onnxruntime CUDA: this process's NVML usage after warm-up minus before start),
    ``none`` (onnxruntime on the CPU: no device memory).
    """

    per_context: int | None
    shared: int | None
    total: int | None
    method: str


class ModelSource(Protocol):
    """One loaded model and the way to make contexts for it."""

    inputs: tuple[TensorDesc, ...]
    profiles: tuple[Profile, ...]
    shape_tensors: ShapeTensors

    @property
    def backend(self) -> str: ...

    def new_runner(self, name: str) -> Runner: ...
    def memory(self, runners: Sequence[Runner]) -> MemoryUse: ...
    def close(self) -> None: ...


class TensorRTSource:
    """An engine artifact deserialized once through the loader (which refuses mismatched engines)."""

    def __init__(self, artifact: Path, policy: LoadPolicy | None, environment: Environment | None) -> None:
        from trtforge.compat import LoadPolicy
        from trtforge.runtime.loader import load_engine

        loaded = load_engine(artifact, policy or LoadPolicy(), environment)
        self.engine: Any = loaded.engine
        self.trt: ModuleType = loaded.trt
        self._keep_alive: Any = loaded  # TensorRT needs the runtime (and its logger) to outlive the engine
        manifest = loaded.manifest
        self.backend = manifest.tensorrt.flavor
        self.artifact_size = manifest.artifact.size
        self.inputs = manifest_inputs(manifest)
        self.profiles: tuple[Profile, ...] = tuple(manifest.profiles)
        self.shape_tensors = ShapeTensors(self.inputs, self.profiles)

    def new_runner(self, name: str) -> Runner:
        from trtforge.runners.tensorrt import TrtRunner

        return TrtRunner(self.engine, self.trt, name=name)

    def memory(self, runners: Sequence[Runner]) -> MemoryUse:
        per_context = engine_context_bytes(self.engine) + max((runner.device_bytes for runner in runners), default=0)
        shared = self.artifact_size
        return MemoryUse(per_context, shared, shared + per_context * len(runners), "engine")

    def close(self) -> None:
        """Drop the engine before its runtime (the pool calls this after every context is freed)."""
        self.engine = None
        self._keep_alive = None


def manifest_inputs(manifest: Manifest) -> tuple[TensorDesc, ...]:
    """The engine's inputs as the manifest records them (-1 = dynamic)."""
    return tuple(
        TensorDesc(t.name, t.dtype, tuple(None if d < 0 else d for d in t.shape))
        for t in manifest.io
        if t.mode == "input"
    )


def engine_context_bytes(engine: Any) -> int:
    """Device (activation) memory one execution context needs: the largest over the profiles.

    ``*_v2`` getters exist since TensorRT 10.1; the unsuffixed ones are the older spelling.
    """
    profiles = max(int(getattr(engine, "num_optimization_profiles", 1)), 1)
    per_profile = getattr(engine, "get_device_memory_size_for_profile_v2", None) or getattr(
        engine, "get_device_memory_size_for_profile", None
    )
    if per_profile is not None:
        return max(int(per_profile(index)) for index in range(profiles))
    return int(getattr(engine, "device_memory_size_v2", None) or engine.device_memory_size)


class OnnxrtSource:
    """An ONNX model, checked once and kept as bytes: every context is a session over the same graph."""

    backend = ONNXRUNTIME

    def __init__(self, model: Path, providers: Sequence[str], threads: int) -> None:
        import onnxruntime as ort

        proto = load_onnx(model)
        self.inputs = describe(proto, model).inputs
        self.profiles: tuple[Profile, ...] = ()
        self.shape_tensors = ShapeTensors(self.inputs, graph=onnx_shape_inputs(proto.graph, self.inputs))
        available = ort.get_available_providers()
        for provider in providers:
            if provider not in available:
                hint = " (pip install onnxruntime-gpu on a CUDA host)" if provider == PROVIDERS["cuda"] else ""
                raise InvalidInputError(
                    f"execution provider {provider} is not available in this onnxruntime "
                    f"(it has {', '.join(available)}){hint}"
                )
        self.providers = tuple(providers)
        self.threads = threads
        self._bytes = proto.SerializeToString()  # the sessions never see a file that changed meanwhile
        self._gpu_before = _process_gpu_memory() if self.uses_gpu else None

    @property
    def uses_gpu(self) -> bool:
        return any(provider in GPU_PROVIDERS for provider in self.providers)

    def new_runner(self, name: str) -> Runner:
        from trtforge.runners.onnxruntime import OnnxrtRunner

        return OnnxrtRunner(self._bytes, providers=self.providers, name=name, intra_op_threads=self.threads)

    def memory(self, runners: Sequence[Runner]) -> MemoryUse:
        if not self.uses_gpu:
            return MemoryUse(None, None, None, "none")
        after = _process_gpu_memory()
        if after is None or self._gpu_before is None:
            return MemoryUse(None, None, None, "unknown")
        # onnxruntime reports no per-session figure; the process-level growth is what we can honestly say
        return MemoryUse(None, None, max(after - self._gpu_before, 0), "measured")

    def close(self) -> None:
        self._bytes = b""


def _process_gpu_memory() -> int | None:
    """GPU memory this process holds on every device (NVML), or None where NVML cannot tell."""
    from trtforge.environment import nvml

    with nvml() as pynvml:
        if pynvml is None:
            return None
        try:
            total = 0
            for index in range(pynvml.nvmlDeviceGetCount()):
                handle = pynvml.nvmlDeviceGetHandleByIndex(index)
                for process in pynvml.nvmlDeviceGetComputeRunningProcesses(handle):
                    if process.pid == os.getpid() and process.usedGpuMemory is not None:
                        total += int(process.usedGpuMemory)
            return total
        except pynvml.NVMLError:
            return None


def backend_of(artifact: Path) -> str:
    """``tensorrt`` for an engine artifact (or its manifest), ``onnxruntime`` for an ONNX model."""
    name = artifact.name
    if name.endswith(ENGINE_SUFFIX) or name.endswith(MANIFEST_SUFFIX):
        return "tensorrt"
    if name.endswith(".onnx"):
        return ONNXRUNTIME
    raise InvalidInputError(
        f"{artifact}: not an engine artifact (.engine) or an ONNX model (.onnx); "
        "pass the .engine built by trtforge build, or the .onnx to serve it with onnxruntime"
    )


# ---------------------------------------------------------------- shape tensors and warm-up values

#: op -> the operands whose values set a shape, an axis or a count, by position: an int32/int64 graph
#: input of rank 0 or 1 whose values reach one is a shape tensor (TensorRT computes it on the host)
SHAPE_OPERANDS: Mapping[str, Mapping[int, str]] = {
    "Reshape": {1: "shape"},
    "Expand": {1: "shape"},
    "Tile": {1: "repeats"},
    "Slice": {1: "starts", 2: "ends", 3: "axes", 4: "steps"},
    "TopK": {1: "k"},
    "Resize": {3: "sizes"},
    "Split": {1: "split"},
    "ConstantOfShape": {0: "shape"},
    "Range": {0: "start", 1: "limit", 2: "delta"},
    "OneHot": {1: "depth"},
    "Pad": {1: "pads", 3: "axes"},
    "CenterCropPad": {1: "shape"},
    "Col2Im": {1: "image_shape", 2: "block_shape"},
    "Squeeze": {1: "axes"},
    "Unsqueeze": {1: "axes"},
    "CumSum": {1: "axis"},
    "NonMaxSuppression": {2: "max_output_boxes_per_class"},
    **{
        f"Reduce{kind}": {1: "axes"}
        for kind in ("Sum", "Mean", "Max", "Min", "Prod", "L1", "L2", "LogSum", "LogSumExp", "SumSquare")
    },
}
#: ops whose outputs follow from their input's shape alone: values do not flow through them
_SHAPE_ONLY = frozenset({"Shape", "Size"})


@dataclass(frozen=True)
class WarmupSet:
    """One warm-up request: a shape per input, and the values of each shape tensor (an input whose
    values set shapes: a Reshape's shape, Slice's starts, TopK's k), whose shape follows from them.
    ``guessed``: the shape tensors whose values came from the ONNX graph (:meth:`ShapeTensors.complete`)."""

    shapes: Mapping[str, Shape]
    values: Mapping[str, tuple[int, ...]] = field(default_factory=dict)
    guessed: tuple[str, ...] = field(default=(), compare=False)


def as_warmup_set(entry: WarmupSet | ShapeSet) -> WarmupSet:
    """A warm-up entry as given to the pool (a mapping of input shapes, or a :class:`WarmupSet`),
    checked here: a shape that is no sequence of ints >= 0 would otherwise fail inside numpy, as a
    ValueError or TypeError that names neither the input nor the fix."""
    if isinstance(entry, WarmupSet):
        shapes, values = entry.shapes, entry.values
    elif isinstance(entry, Mapping):
        shapes, values = entry, {}
    else:
        raise InvalidInputError(
            f"warm-up set {entry!r}: a mapping of input name to shape, e.g. {{'input': (1, 3, 224, 224)}}, "
            "or a WarmupSet"
        )
    return WarmupSet(
        {name: _ints(name, "shape", shape, least=0) for name, shape in shapes.items()},
        {name: _ints(name, "values", given) for name, given in values.items()},
    )


def as_warmup_sets(option: str, entries: Iterable[WarmupSet | ShapeSet]) -> list[WarmupSet]:
    """``warmup_shapes``/``warmup_also`` as the pool takes them: a list of sets, from any iterable of
    them (a tuple, a generator, ``dict.values()``). One set given alone (a mapping) would be read as
    its input names."""
    if isinstance(entries, (Mapping, WarmupSet, str, bytes)) or not isinstance(entries, Iterable):
        raise InvalidInputError(
            f"{option} {entries!r}: a list of warm-up sets, e.g. {option}=[{{'input': (1, 3, 224, 224)}}]"
        )
    return [as_warmup_set(entry) for entry in entries]


def _ints(name: str, what: str, given: object, least: int | None = None) -> tuple[int, ...]:
    """A warm-up shape (dims >= ``least``) or a shape tensor's values, as a tuple of ints (numpy's
    too; no bool, no float: ``8.0`` is refused, not truncated)."""
    items = tuple(given) if isinstance(given, Iterable) and not isinstance(given, (str, bytes, Mapping)) else None
    if items is None or not all(isinstance(v, SupportsIndex) and not isinstance(v, bool) for v in items):
        parsed = None
    else:
        parsed = tuple(operator.index(v) for v in items)
    if parsed is None or (least is not None and any(value < least for value in parsed)):
        rule, example = ("ints >= 0", "(1, 3, 224, 224)") if least is not None else ("ints", "(2, 3, 4)")
        raise InvalidInputError(f"warm-up {what} of input '{name}' {given!r}: a sequence of {rule}, e.g. {example}")
    return parsed


@dataclass(frozen=True)
class ReshapeUse:
    """A Reshape that reads a shape-tensor input as its shape: enough of the graph around it to
    tell values it takes for certain."""

    node: str
    data: str  # its data operand
    declared: tuple[int | str | None, ...] | None  # its output's dims as the graph declares them
    final: bool  # its output is a graph output that no node reads: any values it takes do
    allowzero: bool


@dataclass(frozen=True)
class GraphShapeInput:
    """An ONNX graph input that is a shape tensor: its values reach a shape operand (``uses`` says
    which, for messages). ``reshapes``: every use, when each is a Reshape reading it directly."""

    name: str
    length: int | None  # how many values it takes (1 for a rank-0 input); None where its length is dynamic
    uses: tuple[str, ...]
    reshapes: tuple[ReshapeUse, ...] = ()

    def infer(self, symbols: Mapping[str, int], shapes: Mapping[str, Shape]) -> tuple[int, ...] | None:
        """Values that certainly run, or None: every Reshape it sets agrees on them. A Reshape's
        values are its output as the graph declares it (symbols it shares with the inputs at their
        dims in ``shapes``; one dim left unknown becomes -1), where they fit its data; else, for a
        Reshape whose output is a graph output that no node reads, ``[-1, 1, ...]`` (nothing
        downstream depends on the shape it makes)."""
        found: set[tuple[int, ...]] = set()
        for use in self.reshapes:
            values = _declared_values(use, self.length, symbols, shapes)
            length = self.length or (len(use.declared) if use.declared else None)
            if values is None and use.final and length:
                values = (-1, *(1,) * (length - 1))
            if values is None:
                return None
            found.add(values)
        return found.pop() if len(found) == 1 else None


def _declared_values(
    use: ReshapeUse, length: int | None, symbols: Mapping[str, int], shapes: Mapping[str, Shape]
) -> tuple[int, ...] | None:
    """The Reshape's declared output as its shape values, when the graph tells all of it but one dim."""
    if not use.declared or (length is not None and len(use.declared) != length):
        return None
    dims: list[int | None] = []
    for dim in use.declared:
        value = symbols.get(dim) if isinstance(dim, str) else dim
        dims.append(value if value is not None and (value or use.allowzero) else None)  # 0 copies a dim
    if dims.count(None) > 1:
        return None
    values = tuple(-1 if dim is None else dim for dim in dims)
    return values if reshape_fits(values, shapes.get(use.data), use.allowzero) else None


def reshape_fits(values: Sequence[int], data: Shape | None, allowzero: bool) -> bool:
    """Whether a Reshape of data shaped ``data`` takes these shape values (True where ``data`` is
    unknown: onnxruntime will tell). Pure."""
    if data is None:
        return True
    if any(v < -1 for v in values) or list(values).count(-1) > 1:
        return False
    dims = []
    for axis, value in enumerate(values):
        if value == 0 and not allowzero:
            if axis >= len(data):
                return False
            value = data[axis]
        dims.append(value)
    count = math.prod(data)
    known = math.prod(dim for dim in dims if dim != -1)
    if -1 in dims:
        return known > 0 and count % known == 0
    return known == count


def onnx_shape_inputs(graph: Any, inputs: Sequence[TensorDesc]) -> dict[str, GraphShapeInput]:
    """The graph inputs whose values set shapes: int32/int64 of rank 0 or 1 whose values reach an
    operand of :data:`SHAPE_OPERANDS` (through any op but ``Shape``/``Size``, and not through the
    shape operand itself: a Reshape's output holds its data's values). Pure."""
    consumers: dict[str, list[tuple[Any, int]]] = defaultdict(list)
    for node in graph.node:
        for position, operand in enumerate(node.input):
            if operand:
                consumers[operand].append((node, position))
    declared: dict[str, tuple[int | str | None, ...]] = {}
    for value in (*graph.value_info, *graph.output):
        if value.type.HasField("tensor_type") and value.type.tensor_type.HasField("shape"):
            declared[value.name] = tuple(
                int(d.dim_value) if d.HasField("dim_value") else d.dim_param if d.HasField("dim_param") else None
                for d in value.type.tensor_type.shape.dim
            )
    outputs = {value.name for value in graph.output}
    found: dict[str, GraphShapeInput] = {}
    for tensor in inputs:
        if not tensor.can_be_shape_tensor:
            continue
        uses: list[tuple[Any, int, bool]] = []
        seen, pending = {tensor.name}, [tensor.name]
        while pending:
            operand = pending.pop()
            for node, position in consumers[operand]:
                role = SHAPE_OPERANDS.get(node.op_type, {}).get(position)
                if role is not None:
                    uses.append((node, position, operand == tensor.name))
                if node.op_type in _SHAPE_ONLY or (role is not None and node.op_type != "Range"):
                    continue
                fresh = [out for out in node.output if out and out not in seen]
                seen.update(fresh)
                pending.extend(fresh)
        if not uses:
            continue
        described = tuple(
            f"the {SHAPE_OPERANDS[node.op_type][position]} of {node.op_type} '{node.name or node.output[0]}'"
            + ("" if direct else " (through other nodes)")
            for node, position, direct in uses
        )
        reshapes: tuple[ReshapeUse, ...] = ()
        if all(node.op_type == "Reshape" and position == 1 and direct for node, position, direct in uses):
            reshapes = tuple(
                ReshapeUse(
                    node.name or node.output[0],
                    node.input[0],
                    declared.get(node.output[0]),
                    node.output[0] in outputs and not consumers[node.output[0]],
                    any(attr.name == "allowzero" and attr.i for attr in node.attribute),
                )
                for node, _, _ in uses
            )
        length = 1 if not tensor.shape else tensor.shape[0] if isinstance(tensor.shape[0], int) else None
        found[tensor.name] = GraphShapeInput(tensor.name, length, described, reshapes)
    return found


def _opt_first(point: ProfilePoint) -> tuple[int, int]:
    """Profile points in the order a set without values takes one: each profile's opt, min, max."""
    return point.profile, ("opt", "min", "max").index(point.kind)


def onnx_shape_tensors(model: Path, inputs: Sequence[TensorDesc]) -> ShapeTensors:
    """The shape tensors of the ONNX model at ``model`` (its graph read without its weights)."""
    return ShapeTensors(tuple(inputs), graph=onnx_shape_inputs(read_onnx(model).graph, inputs))


class ShapeValuesNeeded(InvalidInputError):
    """A warm-up set lacks the values of a shape tensor, and nothing tells them for certain."""


def _dims(shape: Sequence[int]) -> str:
    return "x".join(map(str, shape)) if shape else "[]"


@dataclass(frozen=True)
class ShapeTensors:
    """A model's inputs whose values set shapes (shape tensors), and how a warm-up request gets
    their values: an engine's profiles record them (the spec's min/opt/max values, in the
    manifest); for an ONNX model, the graph, where it tells them for certain
    (:meth:`GraphShapeInput.infer`); else only the caller knows them (zeros or random integers
    would fail a Reshape, a Slice, a TopK)."""

    inputs: tuple[TensorDesc, ...]
    profiles: tuple[Profile, ...] = ()
    graph: Mapping[str, GraphShapeInput] = field(default_factory=dict)

    @property
    def names(self) -> tuple[str, ...]:
        listed = {name for profile in self.profiles for name, entry in profile.items() if "min_values" in entry}
        return tuple(t.name for t in self.inputs if t.name in listed or t.name in self.graph)

    def defaults(self, flag: str | None = None, model: str | None = None) -> list[WarmupSet]:
        """What a pool warms by default: each profile's min, opt and max (shapes and values; each
        distinct one once), or the model's shape with dynamic dims 1 (:meth:`complete`d)."""
        if not self.profiles:
            return [self.complete({t.name: concrete_shape(t) for t in self.inputs}, flag, model)]
        points = distinct_shapes(profile_points(self.profiles, static_shapes(self.inputs)))
        return [WarmupSet(p.shapes, {name: tuple(values) for name, values in p.values.items()}) for p in points]

    def complete(self, entry: WarmupSet | ShapeSet, flag: str | None = None, model: str | None = None) -> WarmupSet:
        """``entry`` with values for every shape tensor: the values it gives (checked: their count,
        an engine's profile ranges, a Reshape's data), else the values of the engine's first profile
        point with its other shapes, else what the ONNX graph tells; else :class:`ShapeValuesNeeded`,
        naming ``flag`` (``--warmup-shape`` for ``model``, bench's ``--shape``) with what to pass."""
        given = as_warmup_set(entry)
        shapes, values = dict(given.shapes), dict(given.values)
        tensors = {t.name: t for t in self.inputs}
        for name, listed in values.items():
            shapes[name] = self._value_shape(tensors, name, listed)
        missing = [name for name in self.names if name not in values]
        if missing and self.profiles:
            others = {name: shape for name, shape in shapes.items() if name not in self.names}
            points = sorted(profile_points(self.profiles, static_shapes(self.inputs)), key=_opt_first)
            point = next((p for p in points if all(p.shapes.get(n) == shape for n, shape in others.items())), None)
            if point is not None:
                for name in missing:
                    values[name] = tuple(point.values[name])
                    shapes[name] = tuple(point.shapes[name])
        guessed = []
        if self.graph:
            symbols = self._symbols(shapes)
            for name in missing:
                graph_input = self.graph.get(name)
                inferred = graph_input.infer(symbols, shapes) if graph_input else None
                if inferred is not None:
                    values[name] = inferred
                    shapes[name] = () if not tensors[name].shape else (len(inferred),)
                    guessed.append(name)
        lacking = [name for name in missing if name not in values]
        if lacking:
            raise ShapeValuesNeeded(self._ask(lacking, shapes, flag, model))
        self._check(shapes, values)
        return WarmupSet(shapes, values, tuple(guessed))

    def _value_shape(self, tensors: Mapping[str, TensorDesc], name: str, values: Sequence[int]) -> Shape:
        tensor = tensors.get(name)
        if tensor is None:
            raise InvalidInputError(
                f"values given for '{name}', which is no input of the model{did_you_mean(name, tensors)} "
                f"(inputs: {', '.join(tensors)})"
            )
        if not tensor.can_be_shape_tensor:
            raise InvalidInputError(
                f"values [{', '.join(map(str, values))}] given for input '{name}' ({tensor.dtype}, rank "
                f"{len(tensor.shape)}): values are for shape tensors (int32/int64 inputs of rank 0 or 1); "
                f"give '{name}' its shape instead, NAME=DIMS"
            )
        if not tensor.shape:
            if len(values) != 1:
                raise InvalidInputError(f"input '{name}' is a scalar: give it one value, e.g. {name}=[{values[0]}]")
            return ()
        length = tensor.shape[0]
        if isinstance(length, int) and length >= 0 and len(values) != length:
            raise InvalidInputError(
                f"input '{name}' takes {length} values, got {len(values)} ([{', '.join(map(str, values))}])"
            )
        return (len(values),)

    def _symbols(self, shapes: Mapping[str, Shape]) -> dict[str, int]:
        """Each named dim of the inputs at its size in ``shapes``."""
        symbols: dict[str, int] = {}
        for tensor in self.inputs:
            shape = shapes.get(tensor.name)
            if shape is None or len(shape) != len(tensor.shape):
                continue
            for dim, size in zip(tensor.shape, shape, strict=True):
                if isinstance(dim, str):
                    symbols.setdefault(dim, int(size))
        return symbols

    def _check(self, shapes: Mapping[str, Shape], values: Mapping[str, tuple[int, ...]]) -> None:
        """Values an engine's profiles allow, and that fit the Reshapes an ONNX graph feeds them to."""
        for name, listed in values.items():
            graph_input = self.graph.get(name)
            for use in graph_input.reshapes if graph_input else ():
                data = shapes.get(use.data)
                if not reshape_fits(listed, data, use.allowzero):
                    assert data is not None
                    raise InvalidInputError(
                        f"values [{', '.join(map(str, listed))}] of '{name}' cannot reshape '{use.data}' of shape "
                        f"{_dims(data)} ({math.prod(data)} values) in Reshape '{use.node}'"
                    )
        shape_inputs = [name for name in self.names if name in values]
        if not self.profiles or not shape_inputs:
            return
        for profile in self.profiles:
            low = {name: entry["min"] for name, entry in profile.items() if name not in shape_inputs}
            high = {name: entry["max"] for name, entry in profile.items() if name not in shape_inputs}
            if accepts(low, high, shapes) and all(
                name in profile
                and len(values[name]) == len(profile[name]["min_values"])
                and all(
                    lo <= v <= hi
                    for v, lo, hi in zip(
                        values[name], profile[name]["min_values"], profile[name]["max_values"], strict=True
                    )
                )
                for name in shape_inputs
            ):
                return
        given = ", ".join(f"{name}=[{_list(values[name])}]" for name in shape_inputs)
        others = ", ".join(f"{name}={_dims(shape)}" for name, shape in shapes.items() if name not in shape_inputs)
        raise InvalidInputError(
            f"no profile of the engine takes the values {given} with {others or 'these shapes'} ({self._ranges()})"
        )

    def _ranges(self) -> str:
        """Each profile's values, min..max: what an engine's shape tensors take."""
        return "; ".join(
            f"profile {index}: "
            + ", ".join(
                f"{name} [{_list(entry['min_values'])}]..[{_list(entry['max_values'])}]"
                for name, entry in p.items()
                if "min_values" in entry
            )
            for index, p in enumerate(self.profiles)
        )

    def _ask(self, lacking: Sequence[str], shapes: Mapping[str, Shape], flag: str | None, model: str | None) -> str:
        """What to pass for the shape tensors in ``lacking``: one line, with the exact flag."""
        tensors = {t.name: t for t in self.inputs}
        parts = []
        for name in lacking:
            graph_input = self.graph.get(name)
            length = graph_input.length if graph_input else len(self._profile_values(name) or ()) or None
            if not tensors[name].shape:
                placeholder = "[v]"
            elif length is None:
                placeholder = "[v1,v2,...]"
            else:
                placeholder = "[" + ",".join(f"v{index + 1}" for index in range(length)) + "]"
            parts.append((name, placeholder, graph_input))
        what = "; ".join(
            f"input '{name}' is a shape tensor"
            + (f" ({', '.join(graph_input.uses[:2])})" if graph_input else "")
            + ": its values set shapes"
            + self._why(graph_input, shapes)
            for name, _, graph_input in parts
        )
        others = ",".join(f"{name}={_dims(shapes[name])}" for name in tensors if name not in lacking and name in shapes)
        given = ",".join(f"{name}={placeholder}" for name, placeholder, _ in parts)
        text = ",".join(part for part in (others, given) if part)
        if flag is None:
            values = ", ".join(f"'{name}': {placeholder}" for name, placeholder, _ in parts)
            how = f"give a WarmupSet(shapes, values={{{values}}}) in warmup_shapes or warmup_also"
        elif flag == "--warmup-shape":
            how = f"pass the values your requests use: --warmup-shape '{model + ':' if model else ''}{text}'"
        else:
            how = f"pass the values your requests use: {flag} '{given}'"
        fit = f" ({others} now)" if others and flag != "--warmup-shape" else ""
        return f"{what}; {how}, with the other inputs at the shapes those values need{fit}"

    def _why(self, graph_input: GraphShapeInput | None, shapes: Mapping[str, Shape]) -> str:
        if graph_input is None:
            others = ", ".join(f"{n}={_dims(s)}" for n, s in shapes.items() if n not in self.names)
            return f", and no profile point has the shapes {others} ({self._ranges()})"
        data = [
            f"'{use.data}' of {math.prod(shapes[use.data])} values"
            for use in graph_input.reshapes
            if use.data in shapes
        ]
        told = f" (they reshape {', '.join(data)})" if data else ""
        return f", which the graph does not tell for certain{told}"

    def _profile_values(self, name: str) -> Sequence[int] | None:
        return next((p[name]["min_values"] for p in self.profiles if name in p and "min_values" in p[name]), None)


def _list(values: Sequence[int]) -> str:
    return ", ".join(map(str, values))
