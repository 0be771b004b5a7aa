"""Exit codes: each failure class carries its code, and a batch exits with the most severe."""

from __future__ import annotations

import pytest

from trtforge.errors import (
    AccuracyError,
    BuildError,
    IncompatibleEngineError,
    InternalError,
    InvalidInputError,
    RegistryError,
    SpecError,
    most_severe,
)


@pytest.mark.parametrize(
    ("codes", "expected"),
    [
        ([], 0),
        ([0, 0], 0),
        ([0, 2], 2),
        ([2, 6], 6),
        ([6, 5], 5),
        ([5, 4], 4),
        ([4, 3], 3),
        ([3, 1], 1),
        ([2, 1, 0, 6, 4, 5, 3], 1),
    ],
)
def test_most_severe_follows_the_readme_order(codes: list[int], expected: int) -> None:
    """README "Exit codes": the most severe outcome wins, in the order 1, 3, 4, 5, 6, 2, 0."""
    assert most_severe(codes) == expected


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (InternalError, 1),
        (InvalidInputError, 2),
        (SpecError, 2),
        (BuildError, 3),
        (AccuracyError, 4),
        (IncompatibleEngineError, 5),
        (RegistryError, 6),
    ],
)
def test_each_kind_of_failure_carries_the_readme_exit_code(error: type, code: int) -> None:
    assert error.exit_code == code
