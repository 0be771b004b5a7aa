"""Hypothesis strategies for a reference output and a candidate beside it, shared by the gate's
metric properties (tests/test_metric_props.py) and the diagnosis's (tests/test_layerwise_props.py),
so that both hold their metrics to the same kinds of candidates."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

FLOATS = (np.float16, np.float32, np.float64)
#: how a candidate may stand to its reference
CANDIDATE_KINDS = ("independent", "equal", "off", "negated", "scaled", "flipped", "zeros")


def elements(dtype: Any) -> st.SearchStrategy[float]:
    """Every finite value of the dtype: subnormals, zeros of both signs, values near its largest."""
    return st.floats(width=np.dtype(dtype).itemsize * 8, allow_nan=False, allow_infinity=False)


def finite_like(values: Callable[[], Any], fallback: np.ndarray) -> np.ndarray:
    """``values()`` cast to ``fallback``'s dtype, ``fallback`` where it or the cast overflowed."""
    with np.errstate(all="ignore"):
        cast = np.asarray(values(), np.float64).astype(fallback.dtype)
    return np.where(np.isfinite(cast), cast, fallback)


@st.composite
def candidate_for(draw: st.DrawFn, ref: np.ndarray) -> np.ndarray:
    """A finite candidate of ``ref``'s shape and float dtype: independent, equal, slightly off,
    negated, scaled, half its signs flipped (sums that cancel), or all zeros."""
    kind = draw(st.sampled_from(CANDIDATE_KINDS))
    wide = ref.astype(np.float64)
    if kind == "independent":
        cand = draw(hnp.arrays(ref.dtype, ref.shape, elements=elements(ref.dtype)))
    elif kind == "equal":
        cand = ref.copy()
    elif kind == "off":
        noise = draw(hnp.arrays(np.float64, ref.shape, elements=st.floats(-1e-3, 1e-3)))
        cand = finite_like(lambda: wide * (1.0 + noise), ref)
    elif kind == "negated":
        cand = -ref
    elif kind == "scaled":
        factor = draw(st.sampled_from([2.0, 0.5, 1.5, 3.0, -1e-3, 1e3]))
        cand = finite_like(lambda: wide * factor, ref)
    elif kind == "flipped":
        cand = ref.copy()
        cand.ravel()[::2] *= -1
    else:
        cand = np.zeros_like(ref)
    return np.asarray(cand, ref.dtype).copy()  # -x of a 0-d array is a scalar
