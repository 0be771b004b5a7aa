"""Derived ONNX graphs on disk: the atomic save every graph trtforge derives from a user's model
goes through (no half-written graph is ever picked up by a cache), with the weights in one data
file beside the graph where the user's model keeps its own (a graph past protobuf's 2 GB has no
other way), and a graph in a cache found whole or not at all."""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import TYPE_CHECKING

from trtforge.errors import InvalidInputError
from trtforge.fsutil import fsync_dir, fsync_file, staged_file, temp_dir
from trtforge.model import model_files

if TYPE_CHECKING:
    import onnx


def save_model(model: onnx.ModelProto, path: Path) -> Path:
    """Write an ONNX model atomically (no half-written graph is ever picked up by a cache)."""
    import onnx

    with staged_file(path) as tmp:
        onnx.save(model, str(tmp))
    return path


EXTERNAL_DATA_MIN_BYTES = 1024
"""Tensors of at least this many bytes go to the data file of a graph whose weights live in one
(onnx's own ``size_threshold``): scales and zero points stay in the graph."""


def save_graph(model: onnx.ModelProto, target: Path, with_data: bool) -> list[Path]:
    """Write ``model`` as ``target`` (a cache's graph made from a user's model); ``with_data``: its
    weights (tensors of :data:`EXTERNAL_DATA_MIN_BYTES` and more) in one data file beside it, as
    the user's model keeps its own, so a graph past protobuf's 2 GB can be written. Returns the
    files written (``target`` alone where no tensor is that large). Both are written in a
    temporary folder beside ``target`` and fsynced, then the data file is renamed into place, then
    the graph: a reader finds no graph whose data is missing or half-written. The data file's name
    holds ``target``'s and a random part, so once there it never changes: two writers of one graph
    each commit their own, and the graph renamed last names its own. ``model`` is left without its
    weights (onnx moves them out as it writes them)."""
    if not with_data:
        return [save_model(model, target)]
    import onnx

    target.parent.mkdir(parents=True, exist_ok=True)
    data = target.with_name(f"{target.stem}.{secrets.token_hex(8)}{target.suffix}.data")
    with temp_dir(target.parent, target.name) as staging:
        staged, staged_data = staging / target.name, staging / data.name
        onnx.save_model(
            model,
            str(staged),
            save_as_external_data=True,
            all_tensors_to_one_file=True,
            location=data.name,
            size_threshold=EXTERNAL_DATA_MIN_BYTES,
        )
        has_data = staged_data.exists()  # not where no tensor is that large: the graph holds all
        if has_data:
            fsync_file(staged_data)
        fsync_file(staged)
        if has_data:
            os.replace(staged_data, data)
        os.replace(staged, target)
    fsync_dir(target.parent)
    return [target, data] if has_data else [target]


def cached_graph_files(target: Path) -> list[Path] | None:
    """The files of a graph in a cache (the graph, then its data file if it has one), or None
    where it is not there whole: no graph, or one whose data file is gone (the graph's header
    alone is read, not its weights)."""
    if not target.is_file():
        return None
    try:
        return model_files(target)
    except InvalidInputError:
        return None
