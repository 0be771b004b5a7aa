"""TensorRT's error text, made into one line that names the user's model, node and tensor.

TensorRT reports failures as it sees them: multi-line descriptions with C++ source locations,
repeated assertions, nodes by an empty name, a dtype failure without the tensor, CUDA errors
that every CPU-only build logs, and some lines written straight to the C stderr. These
functions turn that into what a person can act on; they are pure but for ``native_stderr``.
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

#: ONNX element types the ONNX parser maps to a TensorRT type (DOUBLE becomes float32); measured
#: on TensorRT-RTX 1.7 with an Identity of each type (tests/test_messages.py checks the list).
TRT_ONNX_DTYPES = frozenset(
    [
        "FLOAT",
        "DOUBLE",
        "FLOAT16",
        "BFLOAT16",
        "INT8",
        "UINT8",
        "INT32",
        "INT64",
        "BOOL",
        "FLOAT8E4M3FN",
        "INT4",
        "FLOAT4E2M1",
    ]
)
#: The parser's assertion when an ONNX type has no TensorRT type (sic: "date type" in TensorRT).
DTYPE_ASSERTION = "Failed to convert ONNX dat"
#: What the ONNX parser prints to the C stderr about such a type; the dtype message replaces it.
_NATIVE_DTYPE_LINE = "Unsupported ONNX data type"
#: Logged by every build on a host without a CUDA driver; says nothing about the model there.
CPU_ONLY_NOISE = ("CUDA driver version is insufficient", "no CUDA-capable device is detected")
#: C++ source locations: "(... In validate at /_src/x.cpp:40)" and "[checkMacros.cpp::f::250] "
_SOURCE_LOCATION = re.compile(r"\s*In \w+ at /\S+:\d+(?=\))|^\[[\w.]+::\w+::\d+\] ")


#: TensorRT's builder error code INVALID_CONFIG (``ErrorCodeTRT``): a build refused for its
#: configuration, optimization profiles included, not for the network itself
INVALID_CONFIG = "Error Code 4:"
#: where TensorRT says which profile point failed ("kOPT values for profile 1 violate shape constraints")
_PROFILE_POINT = re.compile(r"\bk(MIN|OPT|MAX) values for profile (\d+) violate shape constraints")
#: the end of what TensorRT says about a layer: its C++ source location, or the message's closing parenthesis
_LAYER_REASON_END = re.compile(r"\s+In \S+ at /\S*|\)?\s*$")


def names_layer(text: str, layer: str) -> bool:
    """Whether TensorRT's ``text`` reports on the layer named ``layer`` (``IShuffleLayer node_of_y: ...``)."""
    return re.search(rf"\bI\w*Layer {re.escape(layer)}: ", text) is not None


def layer_reason(text: str, layer: str) -> str:
    """What ``text`` says about ``layer``: the words after ``I...Layer NAME:`` (the name again, as
    TopK repeats it, and the source location dropped); the whole text where it names no such layer."""
    found = re.search(rf"\bI\w*Layer {re.escape(layer)}: (?:{re.escape(layer)}: )?", text)
    if found is None:
        return text
    rest = text[found.end() :]
    end = _LAYER_REASON_END.search(rest)
    return rest[: end.start() if end else len(rest)].strip().rstrip(".")


def refused_point(text: str) -> tuple[int, str] | None:
    """The profile and point (``min``, ``opt`` or ``max``) TensorRT says violate its shape constraints, if it says."""
    found = _PROFILE_POINT.search(text)
    return (int(found[2]), found[1].lower()) if found else None


def clean_lines(messages: Iterable[str], noise: Iterable[str] = ()) -> list[str]:
    """The lines of ``messages`` without C++ source locations, noise, repeats or terminal control
    sequences (a progress display may redraw while the C stderr is being caught)."""
    dropped = (*noise, "\x1b")
    lines: list[str] = []
    for message in messages:
        for line in message.splitlines():
            text = _SOURCE_LOCATION.sub("", line).strip().rstrip(";")
            if text and text not in lines and not any(n in text for n in dropped):
                lines.append(text)
    return lines


def clean_text(messages: Iterable[str], noise: Iterable[str] = ()) -> str:
    """Messages as one line."""
    return "; ".join(clean_lines(messages, noise))


def parser_reason(desc: str, operator: str) -> str:
    """The parser's description, or what it means where TensorRT phrases it as an assertion."""
    if "Plugin not found" in desc and operator:
        return f"TensorRT has no importer and no plugin for op {operator}"
    return desc


def node_label(index: int, name: str, operator: str) -> str:
    """``node #3 'conv1' (op Conv)``; the index always, the name only when the model gave one."""
    parts = [f"node #{index}" if index >= 0 else "node"]
    if name:
        parts.append(f"'{name}'")
    if operator:
        parts.append(f"(op {operator})")
    return " ".join(parts) if len(parts) > 1 or index >= 0 else ""


def unsupported_dtypes(model_path: Path) -> list[str]:
    """Tensors of the graph whose element type TensorRT lacks, as ``input 'x' is uint16``.

    Types of intermediate tensors come from ONNX shape inference; where it fails, the graph's
    own declarations (inputs, outputs, initializers, value_info, Constant and Cast) still count.
    """
    import onnx
    from onnx import TensorProto

    model = onnx.load(str(model_path), load_external_data=False)
    with suppress(Exception):  # inference only helps here; the declared types remain without it
        model = onnx.shape_inference.infer_shapes(model)
    graph = model.graph
    declared: list[tuple[str, str, int]] = [("input", v.name, v.type.tensor_type.elem_type) for v in graph.input]
    declared += [("initializer", t.name, t.data_type) for t in graph.initializer]
    for node in graph.node:
        for attribute in node.attribute:
            if node.op_type == "Constant" and attribute.name == "value":
                declared.append((f"{node.op_type} output", node.output[0], attribute.t.data_type))
            if node.op_type == "Cast" and attribute.name == "to":
                declared.append((f"{node.op_type} output", node.output[0], attribute.i))
    declared += [("output", v.name, v.type.tensor_type.elem_type) for v in graph.output]
    declared += [("tensor", v.name, v.type.tensor_type.elem_type) for v in graph.value_info]
    found: list[str] = []
    for kind, name, elem_type in declared:
        type_name = TensorProto.DataType.Name(elem_type) if elem_type in TensorProto.DataType.values() else ""
        text = f"{kind} '{name}' is {type_name.lower()}"
        if elem_type and type_name not in TRT_ONNX_DTYPES and text not in found:
            found.append(text)
    return found


def dtype_message(tensors: list[str]) -> str:
    """The dtype failure with the tensors it is about (at most three named)."""
    named = ", ".join(tensors[:3]) + (f" and {len(tensors) - 3} more" if len(tensors) > 3 else "")
    supported = "float32, float16, bfloat16, int8, uint8, int32, int64, bool, fp8 (e4m3fn), int4, fp4"
    return f"{named}: a type TensorRT has no tensors of (it has {supported}); change the model's type"


def without_native_dtype_lines(lines: Iterable[str]) -> list[str]:
    return [line for line in lines if not line.startswith(_NATIVE_DTYPE_LINE)]


def _writes_to_fd2(stream: object) -> bool:
    try:
        return stream is not None and stream.fileno() == 2  # type: ignore[attr-defined]
    except (AttributeError, OSError, ValueError):  # a test runner's buffer, a closed stream
        return False


@contextmanager
def native_stderr() -> Iterator[list[str]]:
    """Catch what native code writes to the C stderr (file descriptor 2) meanwhile: TensorRT prints
    some lines there, not through its logger. Python's own ``sys.stderr`` (progress bars, logs)
    keeps writing to the terminal. The caught lines are in the list on exit."""
    lines: list[str] = []
    python_stderr = sys.stderr
    python_stderr.flush()
    saved = os.dup(2)
    try:
        with tempfile.TemporaryFile() as capture, open(saved, "w", closefd=False, encoding="utf-8") as terminal:
            os.dup2(capture.fileno(), 2)
            if _writes_to_fd2(python_stderr):
                sys.stderr = terminal
            try:
                yield lines
            finally:
                sys.stderr = python_stderr
                terminal.flush()
                os.dup2(saved, 2)
                capture.seek(0)
                lines.extend(capture.read().decode("utf-8", "replace").splitlines())
    finally:
        os.close(saved)
