"""The precision step: turn the checked FP32 ONNX into the graph the backend builds.

Strongly typed backends (TensorRT 11, TensorRT-RTX) take precision from the graph itself, so
FP16 is an ONNX conversion, not a builder flag. INT8 is the calibration step's Q/DQ graph.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from trtforge.fsutil import staged_file

if TYPE_CHECKING:
    import onnx


def to_fp16(model: onnx.ModelProto, keep_fp32_nodes: tuple[str, ...] = ()) -> onnx.ModelProto:
    """FP16 graph whose inputs and outputs stay FP32 (the caller's buffers don't change).

    onnxruntime's converter keeps its default block list (ops that are wrong or unsupported
    in FP16) in FP32 and inserts the casts at the boundaries.
    """
    from onnxruntime.transformers import float16

    return float16.convert_float_to_float16(
        model,
        keep_io_types=True,
        op_block_list=list(float16.DEFAULT_OP_BLOCK_LIST),
        node_block_list=list(keep_fp32_nodes),
    )


def save_model(model: onnx.ModelProto, path: Path) -> Path:
    """Write an ONNX model atomically (no half-written graph is ever picked up by a cache)."""
    import onnx

    with staged_file(path) as tmp:
        onnx.save(model, str(tmp))
    return path
