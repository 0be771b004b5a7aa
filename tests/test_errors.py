"""Exit codes: each failure class carries its code, and a batch exits with the most severe."""

from __future__ import annotations

import pytest

from trtforge.errors import (
    INTERRUPTED_EXIT,
    SEVERITY_ORDER,
    AccuracyError,
    BuildError,
    IncompatibleEngineError,
    InternalError,
    InvalidInputError,
    RegistryError,
    SpecError,
    TrtforgeError,
    interrupted_by_user,
    most_severe,
    one_line,
    raise_if_interrupted,
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


def test_the_severity_order_is_every_failure_class_s_code_once_then_success() -> None:
    """SEVERITY_ORDER is built from the classes' codes: a class whose code changed, or a new code,
    cannot be left out of (or counted twice in) what a batch exits with."""
    import trtforge.errors as errors

    kinds = [value for value in vars(errors).values() if isinstance(value, type) and issubclass(value, TrtforgeError)]
    assert sorted(SEVERITY_ORDER) == sorted({kind.exit_code for kind in kinds} | {0})
    assert len(set(SEVERITY_ORDER)) == len(SEVERITY_ORDER)


def test_an_interrupt_exits_130_which_no_failure_class_uses() -> None:
    """README "Exit codes": 130 for Ctrl-C, as a shell's interrupted commands; one constant for
    the CLI, its start-up and ``ci``'s workers."""
    assert INTERRUPTED_EXIT == 130 and INTERRUPTED_EXIT not in SEVERITY_ORDER


def test_a_ctrl_c_that_stopped_pydantic_building_a_validator_is_an_interrupt() -> None:
    """pydantic-core keeps a KeyboardInterrupt that stopped a validator's build (a spec's model
    the first time it is read) as its SchemaError's last line, with no cause: a Ctrl-C then was
    "internal error (SchemaError: ...); please report it", exit 1. Another SchemaError is a bug."""
    from pydantic_core import SchemaError, SchemaValidator, core_schema

    class Interrupting:
        def __repr__(self) -> str:  # pydantic-core writes a literal's expected values while it builds
            raise KeyboardInterrupt

    with pytest.raises(SchemaError) as interrupted:
        SchemaValidator(core_schema.literal_schema([Interrupting()]))
    with pytest.raises(SchemaError) as invalid:
        SchemaValidator({"type": "no such type"})  # type: ignore[typeddict-item]
    assert interrupted_by_user(interrupted.value)
    assert not interrupted_by_user(invalid.value)


def test_an_import_error_raised_from_a_ctrl_c_is_raised_again_as_the_interrupt() -> None:
    """pybind11 turns a Ctrl-C in a C extension's module init into ImportError("initialization
    failed") raised from the KeyboardInterrupt: the backend, nvml, cuda-python and guard imports
    hand what they catch to ``raise_if_interrupted``, which gives the interrupt back (exit 130);
    an ImportError of its own (a missing library) stays theirs to answer."""
    try:
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt as interrupt:
            raise ImportError("initialization failed") from interrupt
    except ImportError as exc:
        wrapped = exc
    raise_if_interrupted(ImportError("libnvinfer.so.10: cannot open shared object file"))  # returns
    with pytest.raises(KeyboardInterrupt) as raised:
        raise_if_interrupted(wrapped)
    assert raised.value.__cause__ is wrapped
    outer = RuntimeError("the guard's pass failed")
    outer.__cause__ = wrapped  # deeper in the chain: still the interrupt
    with pytest.raises(KeyboardInterrupt):
        raise_if_interrupted(outer)


def test_a_printed_line_never_breaks_nor_repeats_a_huge_value() -> None:
    """The one-line rule holds whatever a message repeats: control characters and line separators as
    ``repr`` writes them, a run of non-blank characters over 1024 cut around '…' (a spec's 900 KB
    ``name:`` made a 900 KB line); words, paths of up to 1024 characters and tabs stay as they are."""
    assert one_line("version '1.7.1.116\n' and \r\x1b[31m\u2028\x85\x00") == (
        "version '1.7.1.116\\n' and \\r\\x1b[31m\\u2028\\x85\\x00"
    )
    path = "/" + "p" * 1000
    assert one_line(f"cannot write {path}:\tfull") == f"cannot write {path}:\tfull"
    shown = one_line(f"name '{'a' * 900_000}b': too long; shorten it")
    assert shown == f"name '{'a' * 639}…{'a' * 317}b': too long; shorten it"
    assert one_line(shown) == shown  # what a table cell got once is printed as it is
