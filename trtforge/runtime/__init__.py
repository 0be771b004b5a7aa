"""The serving side: load an engine only after it passed every compatibility and policy check,
and keep warm contexts of it ready.

``load_engine(path, policy=LoadPolicy(...), environment=None)`` returns a ``LoadedEngine``
(manifest, runtime, ICudaEngine); ``check_compatibility`` is the same checks without loading;
``EnginePool`` serves requests from warmed contexts. The pool's own errors are here
(``PoolStartError``, an ``IncompatibleEngineError``; ``RunnerError``; and ``PoolExhausted``,
``PoolClosed``, ``PoolNotStarted``, which are no ``TrtforgeError``: nothing the user gave failed);
every other one trtforge raises is in ``trtforge.errors``. Names resolve on first use (PEP 562), so
``trtforge check`` does not pay for the pool's Prometheus client, and TensorRT itself is imported
only when an engine is really checked or loaded.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from trtforge.compat import Environment, LoadPolicy
    from trtforge.environment import Target
    from trtforge.runners.base import RunnerError
    from trtforge.runtime.lending import PoolClosed, PoolExhausted, PoolNotStarted, PoolState
    from trtforge.runtime.loader import (
        CompatibilityResult,
        FolderArtifacts,
        HeaderVerdict,
        LoadedEngine,
        check_compatibility,
        find_artifacts,
        load_best,
        load_engine,
        select_artifact,
    )
    from trtforge.runtime.manager import PoolManager
    from trtforge.runtime.pool import EnginePool, PoolStartError, suggest_pool_size

_HOMES = {
    "trtforge.compat": ("Environment", "LoadPolicy"),
    "trtforge.environment": ("Target",),
    "trtforge.runtime.loader": (
        "CompatibilityResult",
        "FolderArtifacts",
        "HeaderVerdict",
        "LoadedEngine",
        "check_compatibility",
        "find_artifacts",
        "load_best",
        "load_engine",
        "select_artifact",
    ),
    "trtforge.runners.base": ("RunnerError",),
    "trtforge.runtime.lending": ("PoolClosed", "PoolExhausted", "PoolNotStarted", "PoolState"),
    "trtforge.runtime.manager": ("PoolManager",),
    "trtforge.runtime.pool": ("EnginePool", "PoolStartError", "suggest_pool_size"),
}
_MODULE_OF = {name: module for module, names in _HOMES.items() for name in names}

__all__ = [
    "CompatibilityResult",
    "EnginePool",
    "Environment",
    "FolderArtifacts",
    "HeaderVerdict",
    "LoadPolicy",
    "LoadedEngine",
    "PoolClosed",
    "PoolExhausted",
    "PoolManager",
    "PoolNotStarted",
    "PoolStartError",
    "PoolState",
    "RunnerError",
    "Target",
    "check_compatibility",
    "find_artifacts",
    "load_best",
    "load_engine",
    "select_artifact",
    "suggest_pool_size",
]


def __getattr__(name: str) -> Any:
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module 'trtforge.runtime' has no attribute '{name}'")
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    """The lazy names too, for ``dir()`` and tab completion."""
    return sorted({*globals(), *__all__})
