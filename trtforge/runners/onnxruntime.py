"""``OnnxrtRunner``: an ONNX model in onnxruntime, the accuracy gate's reference (and its simulated
candidate on GPU-less hosts) and the pool's contexts for ``.onnx`` artifacts."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trtforge.errors import InvalidInputError
from trtforge.runners.base import Runner, RunnerError, check_feed_names

if TYPE_CHECKING:
    import numpy as np


class OnnxrtRunner(Runner):
    """An ONNX model (file or bytes) in onnxruntime, CPU by default.

    onnxruntime's numpy bridge knows no ml_dtypes types: a model with bfloat16 (or float8) inputs
    or outputs runs through OrtValues built from, and read back as, the raw bytes."""

    def __init__(
        self,
        model: Path | bytes,
        providers: Sequence[str] = ("CPUExecutionProvider",),
        name: str | None = None,
        intra_op_threads: int = 0,
        optimize: bool = True,
    ) -> None:
        super().__init__(name or (f"onnxrt:{model.name}" if isinstance(model, Path) else "onnxrt"))
        self.model = model
        self.providers = tuple(providers)
        self.intra_op_threads = intra_op_threads
        self.optimize = optimize  # False: onnxruntime's graph optimizations off (no cast folding, no fusion)
        self._session: Any = None
        self._native: Any = None  # what runs a request: see _activate
        self._raw_io = False
        self._names: tuple[list[str], list[str]] = ([], [])  # inputs, outputs: read once per session
        self._input_set: frozenset[str] = frozenset()
        self._check_feed = True  # names checked before each run (else only when onnxruntime refuses one)
        self._output_positions: tuple[tuple[int, str], ...] = ()
        self._invalid_argument: type[Exception] = Exception
        self._ndarray: type[Any] = object  # numpy's, once active (imported with onnxruntime, not before)

    def _activate(self) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = self.intra_op_threads
        if not self.optimize:
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        options.log_severity_level = 4  # fatal only: failures reach the caller as exceptions, not ANSI log lines
        source = str(self.model) if isinstance(self.model, Path) else self.model
        try:
            self._session = ort.InferenceSession(source, sess_options=options, providers=list(self.providers))
        except Exception as exc:  # onnxruntime raises its own pybind classes (Fail, InvalidGraph, ...)
            raise InvalidInputError(f"{self.name}: onnxruntime cannot load the model: {ort_error_text(exc)}") from exc
        from onnxruntime.capi.onnxruntime_pybind11_state import InvalidArgument

        inputs, outputs = self._session.get_inputs(), self._session.get_outputs()
        self._raw_io = any(meta.type in _RAW_ORT_TYPES for meta in (*inputs, *outputs))
        self._names = [meta.name for meta in inputs], [meta.name for meta in outputs]
        self._input_set = frozenset(self._names[0])
        self._output_positions = tuple(enumerate(self._names[1]))
        # A request calls the session's C++ binding (``InferenceSession._sess``, where onnxruntime's
        # own IOBinding calls it) with the output names read above. Its Python ``run`` first
        # checks, in Python, what matters to no request of ours (WebGPU graph capture, OrtValue
        # feeds, fallback to CPU on an EPFail, which in a pool is a failed context to rebuild) and
        # reads every input's and output's name and type through pybind: ~15 µs a request once a
        # ResNet-18 inference has evicted the CPU caches (2-core VM), more than all of the pool's
        # own request path. ``_sess`` is private: where an onnxruntime lacks it, the public ``run``
        # takes the same three arguments.
        self._native = getattr(self._session, "_sess", self._session)
        # The C++ session refuses an unknown input itself, and its refusal is then explained with
        # our message: the request pays for no name check (2-3 µs cold) beyond ``len``, which
        # tells a missing input before anything runs (the C++ session notices one only when a node
        # reads it, partway through the run). It takes an overridable initializer from the feed
        # without a word, so with those each feed is checked first.
        self._check_feed = bool(self._session.get_overridable_initializers())
        self._invalid_argument = InvalidArgument  # imported here once: a request must not pay for it
        import numpy as np

        self._ndarray = np.ndarray

    def _deactivate(self) -> None:
        self._session = self._native = None

    @property
    def input_names(self) -> list[str]:
        return self._names[0]

    def _run(self, feed: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        if not self._raw_io:
            return self._native.run(self._names[1], feed if type(feed) is dict else dict(feed), None)
        values = self._session.run_with_ort_values(None, {name: to_ort_value(array) for name, array in feed.items()})
        return [from_ort_value(value) for value in values]

    def _arrays(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The feed checked (``check_feed_names``), each array-like (a numpy scalar, anything with
        ``__array__``) as the ndarray onnxruntime needs: it takes no other, and the TensorRT runner
        takes them too (``np.asarray``)."""
        import numpy as np

        check_feed_names(self.name, self._names[0], feed)
        return {name: np.asarray(value) for name, value in feed.items()}

    def _infer(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        try:  # nearly free until something raises: the feed is looked at closely only then
            # onnxruntime would take what is no mapping of arrays: a list of pairs (``dict(feed)``) and
            # nested lists (as an array), so a dict of ndarrays alone skips the check (a type test each)
            if type(feed) is not dict or (
                (self._check_feed or len(feed) != len(self._input_set)) and feed.keys() != self._input_set
            ):
                feed = self._arrays(feed)
            else:
                for value in feed.values():
                    if type(value) is not self._ndarray:
                        feed = self._arrays(feed)
                        break
            values = self._run(feed)
        except InvalidInputError:
            raise
        except Exception as exc:
            # not a mapping of arrays, or a name onnxruntime refused: said the way every runner says it
            check_feed_names(self.name, self._names[0], feed)
            if isinstance(exc, self._invalid_argument):
                raise InvalidInputError(f"{self.name}: {ort_error_text(exc)}") from exc
            raise RunnerError(f"{self.name}: onnxruntime failed: {ort_error_text(exc)}") from exc
        # not dict(zip(...)): its iterators and tuples cost ~3 µs more a request than this loop once
        # a large inference has evicted the CPU caches (ResNet-18, 2-core VM)
        outputs = {}
        for position, name in self._output_positions:
            outputs[name] = values[position]
        return outputs


#: onnxruntime type strings whose values its numpy bridge cannot convert (ml_dtypes types)
_RAW_ORT_TYPES = frozenset(
    f"tensor({name})"
    for name in ("bfloat16", "float8e4m3fn", "float8e4m3fnuz", "float8e5m2", "float8e5m2fnuz", "float8e8m0")
)
_ORT_PREFIX = re.compile(r"^\[ONNXRuntimeError\] : \d+ : (\w+) : ")


def ort_error_text(exc: BaseException) -> str:
    """onnxruntime's error as one line, ``CODE: text`` instead of ``[ONNXRuntimeError] : 2 : CODE : text``;
    its further lines joined on (a wrong dim's index, what it got and what it expects are there)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return _ORT_PREFIX.sub(r"\1: ", " ".join(lines) or type(exc).__name__)


def to_ort_value(array: np.ndarray) -> Any:
    """An OrtValue of ``array``; ml_dtypes arrays go as their bytes with the ONNX element type."""
    import numpy as np
    import onnxruntime as ort
    from onnx import helper

    if array.dtype.kind != "V":
        return ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(array))
    raw = np.ascontiguousarray(array).view(f"u{array.dtype.itemsize}")
    return ort.OrtValue.ortvalue_from_numpy_with_onnx_type(raw, helper.np_dtype_to_tensor_dtype(array.dtype))


def from_ort_value(value: Any) -> np.ndarray:
    """A numpy array of an OrtValue on the CPU; ml_dtypes types copied from its bytes."""
    import ctypes

    import numpy as np
    from onnx import helper

    dtype = helper.tensor_dtype_to_np_dtype(value.element_type())
    if dtype.kind != "V":
        return value.numpy()
    raw = ctypes.string_at(value.data_ptr(), value.tensor_size_in_bytes())
    return np.frombuffer(raw, dtype=dtype).reshape(value.shape()).copy()
