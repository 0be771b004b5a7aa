"""The one runner interface: activation bookkeeping and the context-manager protocol every
runner shares, so the accuracy gate and the pool drive any kind the same way."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any

from trtforge.errors import InvalidInputError, TrtforgeError, did_you_mean

if TYPE_CHECKING:
    import numpy as np


class RunnerError(TrtforgeError):
    """The runtime itself failed (CUDA, TensorRT execution): not the caller's input."""


class Runner(ABC):
    """``activate()``, then ``infer(feed)`` any number of times, then ``deactivate()`` (or a ``with`` block)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.is_active = False

    def activate(self) -> None:
        if self.is_active:
            raise RunnerError(f"runner '{self.name}' is already active")
        self._activate()
        self.is_active = True

    def deactivate(self) -> None:
        if not self.is_active:
            return
        try:
            self._deactivate()
        finally:
            self.is_active = False

    def infer(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        if not self.is_active:
            raise RunnerError(f"runner '{self.name}' is not active: call activate() or use it in a with block")
        return self._infer(feed)

    @property
    def device_bytes(self) -> int:
        """Device memory the runner's own buffers hold (0 where the runner allocates none itself)."""
        return 0

    def __enter__(self) -> Runner:
        self.activate()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.deactivate()

    @abstractmethod
    def _activate(self) -> None: ...

    @abstractmethod
    def _deactivate(self) -> None: ...

    @abstractmethod
    def _infer(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]: ...


def check_feed_names(runner: str, expected: Sequence[str], feed: Mapping[str, Any]) -> None:
    """A mapping with every input, nothing unknown, and arrays for values: one clear line
    otherwise. An unknown name is named first: with a missing one, it is likely its typo."""
    listed = ", ".join(expected)
    if not isinstance(feed, Mapping):
        raise InvalidInputError(
            f"{runner}: the inputs are a mapping of input name to array ({listed}), not {type(feed).__name__}"
        )
    missing = [name for name in expected if name not in feed]
    unknown = [name for name in feed if name not in expected]
    if unknown:
        hint = did_you_mean(str(unknown[0]), missing or expected)
        lacking = f"input '{missing[0]}' is missing from the feed; " if missing else ""
        raise InvalidInputError(f"{runner}: the model has no input '{unknown[0]}'{hint} ({lacking}inputs: {listed})")
    if missing:
        raise InvalidInputError(f"{runner}: input '{missing[0]}' is missing from the feed (inputs: {listed})")
    for name, value in feed.items():
        if not hasattr(value, "__array_interface__") and not hasattr(value, "__array__"):
            raise InvalidInputError(f"{runner}: input '{name}' is {type(value).__name__}, not an array")
