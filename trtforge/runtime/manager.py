"""Several models in one process: one pool per model name, one merged metrics registry."""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trtforge.errors import InvalidInputError, did_you_mean
from trtforge.runtime.health import HealthReport
from trtforge.runtime.lending import PoolClosed, PoolState
from trtforge.runtime.metrics import MergedRegistries
from trtforge.runtime.pool import EnginePool


class PoolManager:
    """One pool per model name, with one merged metrics registry for a single ``/metrics`` page."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry

        self._pools: dict[str, EnginePool | _Reserved] = {}
        self._lock = threading.Lock()
        self._closed = False
        self.registry = CollectorRegistry()
        self.registry.register(MergedRegistries(lambda: [pool.metrics.registry for pool in self.pools()]))

    def add(self, name: str, artifact: Path | str, size: int = 1, **options: Any) -> EnginePool:
        """Start a pool for ``artifact`` under ``name`` (blocks until it is warm); names are unique.

        A ``close()`` meanwhile closes the starting pool too: its warm-up stops between contexts
        and this raises PoolClosed, so a server stopping during warm-up does not wait for it."""
        with self._lock:
            if self._closed:
                raise PoolClosed("the pool manager is closed")
            if name in self._pools:
                raise InvalidInputError(f"a pool named '{name}' exists already; remove it first or pick another name")
            pool = EnginePool(artifact, size, name=name, start=False, **options)
            self._pools[name] = placeholder = _Reserved(pool)
        try:
            pool.start()
        except BaseException:
            with self._lock:
                if self._pools.get(name) is placeholder:
                    del self._pools[name]
            raise
        with self._lock:
            if self._pools.get(name) is placeholder:
                self._pools[name] = pool
                return pool
        pool.close()  # the manager was closed as the start ended
        raise PoolClosed("the pool manager was closed while the pool started")

    def get(self, name: str) -> EnginePool:
        with self._lock:
            pool = self._pools.get(name)
            names = [key for key, value in self._pools.items() if isinstance(value, EnginePool)]
        if not isinstance(pool, EnginePool):
            raise InvalidInputError(
                f"no pool named '{name}'{did_you_mean(name, names)} (pools: {', '.join(names) or 'none'})"
            )
        return pool

    def __getitem__(self, name: str) -> EnginePool:
        return self.get(name)

    def __contains__(self, name: object) -> bool:
        with self._lock:
            return isinstance(name, str) and isinstance(self._pools.get(name), EnginePool)

    def pools(self) -> list[EnginePool]:
        with self._lock:
            return [pool for pool in self._pools.values() if isinstance(pool, EnginePool)]

    def names(self) -> list[str]:
        return [pool.name for pool in self.pools()]

    def infer(self, name: str, inputs: Mapping[str, Any], timeout: float | None = None) -> dict[str, Any]:
        return self.get(name).infer(inputs, timeout=timeout)

    def check(self) -> dict[str, HealthReport]:
        return {pool.name: pool.check() for pool in self.pools()}

    @property
    def ready(self) -> bool:
        pools = self.pools()
        return bool(pools) and all(pool.ready for pool in pools)

    def states(self) -> dict[str, PoolState]:
        return {pool.name: pool.state for pool in self.pools()}

    def device_memory_bytes(self) -> int | None:
        """Sum over the pools; None when any pool cannot tell."""
        totals = [pool.memory.total for pool in self.pools()]
        return None if any(total is None for total in totals) else sum(t for t in totals if t is not None)

    def remove(self, name: str) -> None:
        pool = self.get(name)
        with self._lock:
            self._pools.pop(name, None)
        pool.close()

    def close(self, timeout: float | None = 30.0) -> None:
        """Close every pool, the starting ones included (their ``add`` raises PoolClosed); no add after.

        ``timeout`` bounds the wait for lent contexts over all pools together (see ``EnginePool.close``)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            self._closed = True
            pools = [entry if isinstance(entry, EnginePool) else entry.pool for entry in self._pools.values()]
            self._pools.clear()
        for pool in pools:
            pool.close(None if deadline is None else max(0.0, deadline - time.monotonic()))

    def __enter__(self) -> PoolManager:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


@dataclass(frozen=True)
class _Reserved:
    """Holds a name in a PoolManager while its pool starts (so two adds cannot race for it, and
    ``close()`` can stop the start)."""

    pool: EnginePool
