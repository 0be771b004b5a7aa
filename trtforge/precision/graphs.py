"""The graphs the precision step derives from the spec's model, cached by content: the
FP16-converted graph (:func:`trtforge.mixedprecision.to_fp16`, with the nodes kept in FP32) and
its FP16-storage emulation, the accuracy gate's candidate
(:func:`trtforge.mixedprecision.emulate_fp16`); and one load of the model that the overflow guard
and the conversion share. Each is written through :mod:`trtforge.graphfiles` (atomically; with a
data file where the user's model has one).
"""

from __future__ import annotations

import functools
import hashlib
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from trtforge.digests import sha256_file
from trtforge.graphfiles import cached_graph_files, save_graph, save_model
from trtforge.mixedprecision import CONVERSION_REVISION, EMULATION_REVISION, FP16_STORAGE, emulate_fp16, to_fp16

if TYPE_CHECKING:
    import onnx


def fp16_onnx(
    model_path: Path,
    cache_dir: Path,
    keep_fp32_nodes: Sequence[str] = (),
    source: Callable[[], onnx.ModelProto] | None = None,
) -> Path:
    """The FP16-converted graph, cached by the source model's content (its external data too) and
    the nodes kept in FP32 (``fp16/`` in the cache folder). ``source``: the model at ``model_path``
    as the caller already loaded it (left as it is); None: loaded here."""
    from trtforge.model import content_files, content_sha256

    kept = sorted(set(keep_fp32_nodes))
    suffix = "-keep-" + hashlib.sha256("\n".join(kept).encode()).hexdigest()[:16] if kept else ""
    files = content_files(model_path)
    target = cache_dir / "fp16" / f"{content_sha256(model_path, files)}-r{CONVERSION_REVISION}{suffix}.onnx"
    with_data = len(files) > 1  # weights in a data file, as the user's (a model past 2 GB has to)
    cached = cached_graph_files(target) is not None if with_data else target.is_file()
    if not cached:
        save_graph(to_fp16((source or onnx_loader(model_path))(), kept), target, with_data)
    return target


def onnx_loader(model_path: Path) -> Callable[[], onnx.ModelProto]:
    """``model_path`` loaded on the first call and shared by later ones: the overflow guard and
    the FP16 conversion read one load of the model, not one each, also when they ask for it at
    once from two threads."""
    lock = threading.Lock()

    @functools.cache
    def parsed() -> onnx.ModelProto:
        import onnx

        return onnx.load(str(model_path))

    def load() -> onnx.ModelProto:
        with lock:
            return parsed()

    return load


def emulated_onnx(graph_path: Path, cache_dir: Path) -> Path:
    """The gate's candidate for a graph with FP16 parts: its FP16-storage emulation, cached by the
    graph's content (``fp16-emulated/``); the graph itself when there is nothing to emulate."""
    import onnx

    # the label is in the graph, and the revision is how it is emulated: a new one of either, a new entry
    label = hashlib.sha256(f"{FP16_STORAGE}/{EMULATION_REVISION}".encode()).hexdigest()[:8]
    target = cache_dir / "fp16-emulated" / f"{sha256_file(graph_path)}-{label}.onnx"
    if target.is_file():
        return target
    emulated = emulate_fp16(onnx.load(str(graph_path)))
    return graph_path if emulated is None else save_model(emulated, target)
