"""Work on a thread of its own, overlapping what the caller does next."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def beside(work: Callable[[], T], name: str, *, daemon: bool = False) -> Callable[[], T]:
    """Run ``work`` on a thread of its own, so that it overlaps what the caller does next: work that
    releases the GIL or wants it little (hashing, fsync, onnxruntime's runs beside TensorRT's
    build). Call the result to wait for its value; its exception is raised there. The interpreter
    waits for the thread at exit, so a cache file it writes is never cut short; a ``daemon`` one
    (work whose result is dropped unless waited for, like the flush of a staged file) it does not."""
    outcome: list[T] = []
    failure: list[BaseException] = []

    def run() -> None:
        try:
            outcome.append(work())
        except BaseException as exc:  # raised again in the caller's thread, where it is waited for
            failure.append(exc)

    thread = threading.Thread(target=run, name=name, daemon=daemon)
    thread.start()

    def result() -> T:
        thread.join()
        if failure:
            raise failure[0]
        return outcome[0]

    return result
