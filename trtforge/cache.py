"""The host's cache folder, shared by every build, calibrate, verify and ci run on it.

Everything in it is keyed by content, so any run may reuse what another wrote, and deleting the
folder only costs time. ``verify`` reuses none of the derived graphs: whoever writes the folder
could have planted one, and verify decides whether to trust an artifact; it derives them again in
a scratch folder of its own here, taking only calibration scales whose digest the manifest pins
(:mod:`trtforge.verify`). Its layout, one folder per kind (files stay one folder down, which is
how deep a build sweeps stale temporaries):

- ``calibration/``: scales and Q/DQ graphs (:mod:`trtforge.calibration`)
- ``fp16/``: FP16-converted graphs (:mod:`trtforge.precision`)
- ``fp16-guard/``: the FP16 overflow guard's choices (:mod:`trtforge.precision.overflow`)
- ``timing/``: TensorRT timing caches, per backend, version and build GPU (:func:`timing_cache_file`)
- ``builds/``: ci's build cache, per build key (:mod:`trtforge.ci`)
- ``ci-reruns/``: what the last all-unchanged ``ci`` run saw, per command line (:mod:`trtforge.rerun`)
- ``digests/``: files' sha256 by path and stat stamp, so unchanged files are not read again
  (:func:`trtforge.digests.sha256_file`), and in ``digests/external-data/`` the names of a model's
  external data files per content of its .onnx; always the host's folder (``--cache-dir`` does not
  move it), which a build sweeps too, two folders deep
- ``reference/``: the accuracy gate's reference outputs (:mod:`trtforge.accuracy.references`)
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from trtforge.errors import InvalidInputError
from trtforge.fsutil import check_writable_dir
from trtforge.tags import ComputeCapability

#: the folders the precision step keeps its graphs and choices in, which a build reads back: a build
#: cannot do without them (the others only save time, and a run that cannot use one goes on)
PRECISION_FOLDERS = ("calibration", "fp16", "fp16-emulated", "fp16-guard")


def refuse_files_in_the_way(
    cache_dir: Path, folders: tuple[str, ...] = PRECISION_FOLDERS, flag: str = "--cache-dir"
) -> None:
    """A file (or a link to nothing) where the precision step keeps one of its folders: refused
    before the step uses them (an fp16 or int8 spec's, ``calibrate``'s), naming it, not met halfway
    through a build as an internal error. A run that never uses them (fp32, an unchanged ``ci``
    spec, ``verify``'s scratch folder) is not refused for them. The cache folder itself a file (or
    below one) is refused too: ``ci`` checks it no sooner, as only these folders cannot do without it."""
    if not cache_dir.is_dir():
        check_writable_dir(cache_dir, flag, "cache directory")  # names a file in the way; makes nothing
    for name in folders:
        folder = cache_dir / name
        if not folder.is_dir() and (folder.exists() or folder.is_symlink()):
            raise InvalidInputError(
                f"cache directory {cache_dir}: {folder} is no folder, and trtforge keeps its {name} cache "
                f"there; remove it (trtforge makes the folder again), or pass {flag} another folder"
            )


def default_cache_dir() -> Path:
    """``$TRTFORGE_CACHE_DIR``, else ``$XDG_CACHE_HOME/trtforge``, else ``~/.cache/trtforge``. An
    empty variable counts as unset, and so does a relative ``$XDG_CACHE_HOME``, which the XDG Base
    Directory spec says to ignore: neither puts the cache in the current folder."""
    env = os.environ.get("TRTFORGE_CACHE_DIR")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    return (Path(xdg) if os.path.isabs(xdg) else Path.home() / ".cache") / "trtforge"


def timing_cache_file(
    cache_dir: Path, flavor: str, version: str, gpu_name: str, compute_capability: ComputeCapability
) -> Path:
    """``timing/{flavor}-{version}-{gpu}-{sm}.cache``: a timing cache holds one GPU's kernel timings
    and TensorRT refuses one made on another device, so each build GPU model keeps its own."""
    gpu = re.sub(r"[^a-z0-9]+", "-", gpu_name.lower()).strip("-") or "gpu"
    return cache_dir / "timing" / f"{flavor}-{version}-{gpu}-{compute_capability.sm}.cache"
