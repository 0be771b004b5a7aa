"""The serving side: load an engine only after it passed every compatibility and policy check.

``load_engine(path, policy=LoadPolicy(...), environment=None)`` returns a ``LoadedEngine``
(manifest, runtime, ICudaEngine); ``check_artifact`` is the same checks without loading.
TensorRT itself is imported only when an engine is really checked or loaded.
"""

from trtforge.compat import Environment, LoadPolicy, Target
from trtforge.runtime.loader import (
    CheckResult,
    HeaderVerdict,
    LoadedEngine,
    check_artifact,
    find_artifacts,
    load_best,
    load_engine,
    select_artifact,
)
from trtforge.runtime.pool import EnginePool, PoolClosed, PoolExhausted, PoolManager, PoolState, suggest_pool_size

__all__ = [
    "CheckResult",
    "EnginePool",
    "Environment",
    "HeaderVerdict",
    "LoadPolicy",
    "LoadedEngine",
    "PoolClosed",
    "PoolExhausted",
    "PoolManager",
    "PoolState",
    "Target",
    "check_artifact",
    "find_artifacts",
    "load_best",
    "load_engine",
    "select_artifact",
    "suggest_pool_size",
]
