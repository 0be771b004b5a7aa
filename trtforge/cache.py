"""The host's cache folder, shared by every build, calibrate, verify and ci run on it.

Everything in it is keyed by content, so any run may reuse what another wrote, and deleting the
folder only costs time. Its layout, one folder per kind (files stay one folder down, which is
how deep a build sweeps stale temporaries):

- ``calibration/``: scales and Q/DQ graphs (:mod:`trtforge.calibration`)
- ``fp16/``: FP16-converted graphs (:mod:`trtforge.precision`)
- ``fp16-guard/``: the FP16 overflow guard's choices (:mod:`trtforge.precision.overflow`)
- ``timing/``: TensorRT timing caches, per backend and version (:mod:`trtforge.build`)
- ``builds/``: ci's build cache, per build key (:mod:`trtforge.ci`)
- ``ci-reruns/``: what the last all-unchanged ``ci`` run saw, per command line (:mod:`trtforge.rerun`)
- ``digests/``: files' sha256 by path and stat stamp, so unchanged files are not read again
  (:func:`trtforge.fsutil.sha256_file`)
- ``reference/``: the accuracy gate's reference outputs (:mod:`trtforge.accuracy.references`)
"""

from __future__ import annotations

import os
from pathlib import Path


def default_cache_dir() -> Path:
    """``$TRTFORGE_CACHE_DIR``, else ``$XDG_CACHE_HOME/trtforge`` (``~/.cache/trtforge``)."""
    env = os.environ.get("TRTFORGE_CACHE_DIR")
    if env:
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "trtforge"
