"""Triton ``config.pbtxt`` from trtforge manifests (pure functions).

Written and read with protobuf's own text format (``google.protobuf.text_format``, already
installed with onnx) over a subset of Triton's ``inference.ModelConfig`` schema declared below,
field names and numbers copied from triton-inference-server/common ``model_config.proto``.
Declaring the subset costs ~80 lines and spares the ``tritonclient`` dependency (grpcio and
friends) while keeping real protobuf escaping and parsing: a misspelt field or enum value fails
here, not at Triton start-up. The subset is declared proto2 only so that explicit zeros
(``max_batch_size: 0``) are written: the text format is the same for Triton's proto3 schema.

Batch handling: ``max_batch_size: 0`` and full dims with ``-1`` for dynamic dimensions. The
engines are explicit-batch with their own optimization profiles; with ``max_batch_size > 0``
Triton would add a batch dimension of its own and send shapes the profiles may not cover. The
cost: Triton's dynamic batcher is off (set ``max_batch_size`` to the profiles' max batch and
drop the first dim from every input and output to turn it on).

Inputs whose profiles give values (``min_values``...) are shape tensors, marked ``is_shape_tensor``
as Triton's TensorRT backend requires. A rank-0 tensor is refused (``check_triton_io``): Triton
refuses a tensor without dims, and takes its ``dims: [1]`` + empty ``reshape`` spelling of a scalar
only in a batching model (``ValidateIOShape``: "cannot have empty reshape for non-batching model").
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import cache
from typing import Any

from trtforge.digests import sha256_bytes
from trtforge.errors import InvalidInputError
from trtforge.manifest import Manifest
from trtforge.shapes import distinct_shapes, profile_points
from trtforge.tags import ComputeCapability

PLATFORM = "tensorrt_plan"

#: manifest dtype -> Triton DataType (Triton has no FP8/FP4/INT4 tensor type)
TRITON_TYPES = {
    "bool": "TYPE_BOOL",
    "uint8": "TYPE_UINT8",
    "int8": "TYPE_INT8",
    "int32": "TYPE_INT32",
    "int64": "TYPE_INT64",
    "float16": "TYPE_FP16",
    "float32": "TYPE_FP32",
    "bfloat16": "TYPE_BF16",
}
_DATA_TYPES = [
    "TYPE_INVALID", "TYPE_BOOL", "TYPE_UINT8", "TYPE_UINT16", "TYPE_UINT32", "TYPE_UINT64", "TYPE_INT8",
    "TYPE_INT16", "TYPE_INT32", "TYPE_INT64", "TYPE_FP16", "TYPE_FP32", "TYPE_FP64", "TYPE_STRING", "TYPE_BF16",
]  # fmt: skip
_KINDS = ["KIND_AUTO", "KIND_GPU", "KIND_CPU", "KIND_MODEL"]

HASH_LINE = re.compile(r"^# trtforge-sha256: ([0-9a-f]{64})$", re.MULTILINE)


# ---------------------------------------------------------------- schema


@cache
def model_config_class() -> Any:
    """The ``inference.ModelConfig`` message class (subset), in a private descriptor pool."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    F = descriptor_pb2.FieldDescriptorProto
    file = descriptor_pb2.FileDescriptorProto(
        name="trtforge/triton_model_config_subset.proto", package="inference", syntax="proto2"
    )
    enum = file.enum_type.add(name="DataType")
    for number, name in enumerate(_DATA_TYPES):
        enum.value.add(name=name, number=number)

    def field(message: Any, name: str, number: int, kind: int, repeated: bool = False, type_name: str = "") -> Any:
        label = F.LABEL_REPEATED if repeated else F.LABEL_OPTIONAL
        added = message.field.add(name=name, number=number, type=kind, label=label)
        if type_name:
            added.type_name = type_name
        return added

    def map_entry(message: Any, entry: str, value_kind: int, value_type: str = "") -> str:
        nested = message.nested_type.add(name=entry)
        nested.options.map_entry = True
        field(nested, "key", 1, F.TYPE_STRING)
        field(nested, "value", 2, value_kind, type_name=value_type)
        return f".{file.package}.{message.name}.{entry}"

    model_input = file.message_type.add(name="ModelInput")
    field(model_input, "name", 1, F.TYPE_STRING)
    field(model_input, "data_type", 2, F.TYPE_ENUM, type_name=".inference.DataType")
    field(model_input, "dims", 4, F.TYPE_INT64, repeated=True)
    field(model_input, "is_shape_tensor", 6, F.TYPE_BOOL)

    model_output = file.message_type.add(name="ModelOutput")
    field(model_output, "name", 1, F.TYPE_STRING)
    field(model_output, "data_type", 2, F.TYPE_ENUM, type_name=".inference.DataType")
    field(model_output, "dims", 3, F.TYPE_INT64, repeated=True)

    group = file.message_type.add(name="ModelInstanceGroup")
    kind_enum = group.enum_type.add(name="Kind")
    for number, name in enumerate(_KINDS):
        kind_enum.value.add(name=name, number=number)
    field(group, "name", 1, F.TYPE_STRING)
    field(group, "count", 2, F.TYPE_INT32)
    field(group, "gpus", 3, F.TYPE_INT32, repeated=True)
    field(group, "kind", 4, F.TYPE_ENUM, type_name=".inference.ModelInstanceGroup.Kind")
    field(group, "profile", 5, F.TYPE_STRING, repeated=True)

    warmup = file.message_type.add(name="ModelWarmup")
    warmup_input = warmup.nested_type.add(name="Input")
    warmup_input.oneof_decl.add(name="input_data_type")
    field(warmup_input, "data_type", 1, F.TYPE_ENUM, type_name=".inference.DataType")
    field(warmup_input, "dims", 2, F.TYPE_INT64, repeated=True)
    for name, number, kind in (
        ("zero_data", 3, F.TYPE_BOOL),
        ("random_data", 4, F.TYPE_BOOL),
        ("input_data_file", 5, F.TYPE_STRING),
    ):
        field(warmup_input, name, number, kind).oneof_index = 0
    field(warmup, "name", 1, F.TYPE_STRING)
    field(warmup, "batch_size", 2, F.TYPE_UINT32)
    entry = map_entry(warmup, "InputsEntry", F.TYPE_MESSAGE, ".inference.ModelWarmup.Input")
    field(warmup, "inputs", 3, F.TYPE_MESSAGE, repeated=True, type_name=entry)
    field(warmup, "count", 4, F.TYPE_UINT32)

    config = file.message_type.add(name="ModelConfig")
    field(config, "name", 1, F.TYPE_STRING)
    field(config, "platform", 2, F.TYPE_STRING)
    field(config, "max_batch_size", 4, F.TYPE_INT32)
    field(config, "input", 5, F.TYPE_MESSAGE, repeated=True, type_name=".inference.ModelInput")
    field(config, "output", 6, F.TYPE_MESSAGE, repeated=True, type_name=".inference.ModelOutput")
    field(config, "instance_group", 7, F.TYPE_MESSAGE, repeated=True, type_name=".inference.ModelInstanceGroup")
    field(config, "default_model_filename", 8, F.TYPE_STRING)
    entry = map_entry(config, "CcModelFilenamesEntry", F.TYPE_STRING)
    field(config, "cc_model_filenames", 9, F.TYPE_MESSAGE, repeated=True, type_name=entry)
    field(config, "model_warmup", 16, F.TYPE_MESSAGE, repeated=True, type_name=".inference.ModelWarmup")
    field(config, "backend", 17, F.TYPE_STRING)

    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("inference.ModelConfig"))


# ---------------------------------------------------------------- building


def triton_type(dtype: str, tensor: str) -> str:
    try:
        return TRITON_TYPES[dtype]
    except KeyError:
        raise InvalidInputError(
            f"tensor '{tensor}' is {dtype}, which Triton has no data type for; publish this engine with dir:// or oci://"
        ) from None


def check_triton_io(manifest: Manifest) -> None:
    """What Triton cannot serve, refused before anything is written: a type it lacks, or a rank-0
    tensor (the configs are non-batching, where Triton takes neither empty dims nor an empty reshape)."""
    for tensor in manifest.io:
        triton_type(tensor.dtype, tensor.name)
    scalars = ", ".join(f"'{tensor.name}'" for tensor in manifest.io if not tensor.shape)
    if scalars:
        raise InvalidInputError(
            f"rank-0 (scalar) tensor(s) {scalars}: Triton cannot serve a scalar in a model without batching "
            "(trtforge writes max_batch_size 0, where Triton refuses empty dims and an empty reshape); "
            "give each shape [1] in the model and rebuild, or publish this engine with dir:// or oci://"
        )


def cc_assignment(plans: Sequence[tuple[Manifest, str]]) -> tuple[dict[str, str], str | None]:
    """``cc_model_filenames`` and ``default_model_filename``: per capability the plan the loader would
    prefer (``selection.preference``); an ``sm80plus`` plan becomes the default for every other GPU."""
    from trtforge.selection import preference

    best: dict[str, tuple[Any, str]] = {}
    default: tuple[Any, str] | None = None
    for manifest, filename in plans:
        rank = (preference(manifest), filename)
        if manifest.gpu.and_later_from is not None:
            default = min(default, rank) if default else rank
            continue
        for cc in manifest.gpu.compute_capabilities:
            best[cc] = min(best[cc], rank) if cc in best else rank
    ordered = sorted(best, key=ComputeCapability.parse)
    return {cc: best[cc][1] for cc in ordered}, (default[1] if default else None)


def warmup_samples(manifest: Manifest) -> list[tuple[str, dict[str, list[int]]]]:
    """One sample per distinct set of input shapes: every profile's min, opt and max
    (TensorRT re-allocates on each new shape, so warm-up must cover the shapes that will be served).
    None for an engine with shape-tensor inputs: Triton's zero-filled samples would give them the
    value 0 (a Reshape to 0 elements, TopK with k 0), outside the values the profiles allow."""
    if any(point.values for point in profile_points(manifest.profiles)):
        return []
    inputs = [tensor for tensor in manifest.io if tensor.mode == "input"]
    static = {tensor.name: tuple(tensor.shape) for tensor in inputs if all(dim >= 0 for dim in tensor.shape)}
    shape_sets = [
        (f"profile{point.profile}_{point.kind}", point.shapes)
        for point in distinct_shapes(profile_points(manifest.profiles, static))
    ] or [("static", static)]
    samples: list[tuple[str, dict[str, list[int]]]] = []
    for label, shapes in shape_sets:
        for tensor in inputs:
            if tensor.name not in shapes:
                raise InvalidInputError(
                    f"{manifest.artifact.file}: input '{tensor.name}' has dynamic dims {tensor.shape} but no "
                    "profile gives its shapes; add it to the spec's profiles and rebuild"
                )
        samples.append((label, {tensor.name: list(shapes[tensor.name]) for tensor in inputs}))
    return samples


def build_config(model_name: str, plans: Sequence[tuple[Manifest, str]]) -> Any:
    """The ModelConfig message for the plans of one version (they share I/O and profiles)."""
    if not plans:
        raise ValueError("a Triton config needs at least one plan")
    from trtforge.selection import preference

    manifest = min(plans, key=lambda item: (preference(item[0]), item[1]))[0]
    check_triton_io(manifest)  # never a config Triton would refuse at load
    config = model_config_class()(name=model_name, platform=PLATFORM, max_batch_size=0)
    shape_tensors = {name for point in profile_points(manifest.profiles) for name in point.values}
    for tensor in manifest.io:
        target = config.input.add() if tensor.mode == "input" else config.output.add()
        target.name = tensor.name
        target.data_type = triton_type(tensor.dtype, tensor.name)
        target.dims.extend(tensor.shape)
        if tensor.name in shape_tensors:
            target.is_shape_tensor = True  # the TensorRT backend refuses a config that does not say so
    group = config.instance_group.add(kind="KIND_GPU", count=1)
    group.profile.extend(str(index) for index in range(len(manifest.profiles)))
    by_cc, default = cc_assignment(plans)
    for cc, filename in by_cc.items():
        config.cc_model_filenames[cc] = filename
    if default:
        config.default_model_filename = default
    dtypes = {tensor.name: triton_type(tensor.dtype, tensor.name) for tensor in manifest.io}
    for name, shapes in warmup_samples(manifest):
        sample = config.model_warmup.add(name=name, batch_size=1)
        for tensor_name, shape in shapes.items():
            entry = sample.inputs[tensor_name]
            entry.data_type = dtypes[tensor_name]
            entry.dims.extend(shape)
            entry.zero_data = True  # zeros are valid for every dtype (random ids could be out of range)
    return config


def render_config(config: Any, sources: Sequence[str], warnings: Sequence[str] = ()) -> str:
    """The file text: an explanatory header, the hash line that detects hand edits, the message."""
    from google.protobuf import text_format

    from trtforge import __version__

    body = text_format.MessageToString(config)
    header = [
        f"# Generated by trtforge {__version__} from {', '.join(sources)}.",
        "# trtforge rewrites this file when it publishes to this model; once edited by hand it is kept",
        "# (publish --force regenerates it). max_batch_size 0 with -1 dims: the engines' own optimization",
        "# profiles handle the batch dimension; Triton's dynamic batcher is off.",
        *warmup_comment(config),
        *(f"# WARNING: {warning}" for warning in warnings),
        f"# trtforge-sha256: {sha256_bytes(body.encode())}",
    ]
    return "\n".join(header) + "\n" + body


def warmup_comment(config: Any) -> list[str]:
    """The header lines that say what ``model_warmup`` does, true of this config: it warms every
    profile's min/opt/max shapes, or (shape-tensor inputs) there is none, and Triton does not wait."""
    if len(config.model_warmup):
        return [
            "# model_warmup covers each profile's min/opt/max shapes: TensorRT re-allocates on every new",
            "# shape, so Triton keeps the model not-ready until these requests have run.",
        ]
    shape_tensors = ", ".join(tensor.name for tensor in config.input if tensor.is_shape_tensor)
    if not shape_tensors:
        return []
    return [
        f"# No model_warmup: {shape_tensors} are shape tensors, and Triton's zero-filled warm-up samples",
        "# would give them values no profile allows. Triton reports the model ready before any request",
        "# has run: the first request of each new shape pays TensorRT's allocation.",
    ]


def parse_config(text: str) -> Any:
    """Parse config.pbtxt text (comments allowed) into the ModelConfig subset; unknown fields raise."""
    from google.protobuf import text_format

    return text_format.Parse(text, model_config_class()())


def config_body(text: str) -> str | None:
    """The message below the hash line (what Triton reads; the header is comments), None without one."""
    match = HASH_LINE.search(text)
    return text[match.end() + 1 :] if match else None


def edited_by_hand(text: str) -> bool:
    """True unless the file still hashes to the value trtforge wrote in it."""
    match = HASH_LINE.search(text)
    return match is None or sha256_bytes(text[match.end() + 1 :].encode()) != match.group(1)
