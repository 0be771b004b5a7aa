"""The ONNX graphs the precision step writes: FP16 conversion (also the high-precision part of
an INT8 Q/DQ graph) and the atomic save every derived graph goes through.

Strongly typed backends (TensorRT 11, TensorRT-RTX) take precision from the graph itself, so
FP16 is an ONNX conversion, not a builder flag.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from trtforge.fsutil import sha256_file, staged_file

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


def fp16_onnx(model_path: Path, cache_dir: Path) -> Path:
    """The FP16-converted graph, cached by the source model's content (``fp16/`` in the cache folder)."""
    import onnx

    target = cache_dir / "fp16" / f"{sha256_file(model_path)}.onnx"
    if not target.is_file():
        save_model(to_fp16(onnx.load(str(model_path))), target)
    return target
