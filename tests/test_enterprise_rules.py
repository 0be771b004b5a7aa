"""Enterprise TensorRT's rules that need no ``import tensorrt`` and no GPU: they run everywhere.

The builds themselves are in ``test_backend_tensorrt.py`` (skipped without TensorRT and a GPU).
"""

from __future__ import annotations

import pytest

from trtforge.calibration.cache import trt_version_int
from trtforge.compat import weakly_typed
from trtforge.errors import InvalidInputError

# ---------------------------------------------------------------- weakly typed: one rule, three users


@pytest.mark.parametrize(
    ("flavor", "version", "expected"),
    [
        ("tensorrt", "10.13.0.35", True),
        ("tensorrt", "10.0.1", True),
        ("tensorrt", "8.6.1.6", True),
        ("tensorrt", "11.0.0.1", False),
        ("tensorrt", "12.1", False),
        ("tensorrt-rtx", "1.7.1.116", False),
    ],
)
def test_weakly_typed_is_enterprise_tensorrt_before_11(flavor: str, version: str, expected: bool) -> None:
    assert weakly_typed(flavor, version) is expected


def test_the_calibration_cache_and_the_precision_step_follow_the_rule() -> None:
    """The calibration cache exists exactly where the rule says the calibrator does."""
    assert trt_version_int("10.13.0.35") == 101300
    with pytest.raises(InvalidInputError, match=r"TensorRT 11\.0\.0 has no INT8 calibrator"):
        trt_version_int("11.0.0")
