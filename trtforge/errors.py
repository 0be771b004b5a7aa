"""One exception class per kind of failure; each carries the exit code the CLI returns.

The codes are a contract (README "Exit codes"): CI scripts branch on them. Standard library only,
and nothing slow to import (``trtforge.cli.early`` imports it before anything else starts).
"""

from __future__ import annotations

import _imp
import _thread
import errno
import os
import re
import signal
import sys
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

#: ``TRTFORGE_DEBUG=1`` prints the traceback of an internal error (exit 1) on stderr
DEBUG_ENV = "TRTFORGE_DEBUG"
#: what an interrupted command exits with (Ctrl-C, and ``ci``'s SIGTERM): 128 + SIGINT, as a shell's
#: own interrupted commands do. Not an exception class's: an interrupt is a KeyboardInterrupt.
INTERRUPTED_EXIT = 130
#: what stops trtforge: Ctrl-C, and SIGTERM (how CI systems cancel a job; ``ci`` stops on it)
STOP_SIGNALS = frozenset({signal.SIGINT, signal.SIGTERM})


class TrtforgeError(Exception):
    """Base of every error trtforge raises on purpose; ``exit_code`` is what the CLI exits with."""

    exit_code: int = 1


class InvalidInputError(TrtforgeError):
    """Usage error or invalid input: spec, file, shape, flag."""

    exit_code = 2


class SpecError(InvalidInputError):
    """A spec that does not validate; the message names file, line and key."""


class BackendUnavailableError(InvalidInputError):
    """The requested TensorRT flavor is not installed (the message names the pip extra)."""


class BuildError(TrtforgeError):
    """The ONNX parser or the TensorRT builder refused the model."""

    exit_code = 3


class AccuracyError(TrtforgeError):
    """A candidate exceeded a tolerance of the accuracy gate."""

    exit_code = 4


class IncompatibleEngineError(TrtforgeError):
    """The engine would not (or must not) load on the target; ``reasons`` lists every failing rule."""

    exit_code = 5

    def __init__(self, message: str, reasons: Iterable[str] = ()) -> None:
        self.reasons = tuple(reasons)
        super().__init__(message)


class RegistryError(TrtforgeError):
    """A registry or the network failed (push, pull, listing)."""

    exit_code = 6


class InternalError(TrtforgeError):
    """A bug, or an exception a library raised that trtforge does not turn into its own."""


def internal_error(exc: BaseException, subject: str = "") -> InternalError:
    """``exc`` as one line naming ``subject`` (a spec) and the exception type, so that one spec's
    bug costs that spec only; the traceback goes to stderr only with ``TRTFORGE_DEBUG=1``."""
    if os.environ.get(DEBUG_ENV, "") not in ("", "0"):
        import traceback

        traceback.print_exception(exc, file=sys.stderr)
    where = f"{subject}: " if subject else ""
    return InternalError(
        f"{where}internal error ({type(exc).__name__}: {first_line(exc)}); please report it "
        f"({DEBUG_ENV}=1 prints the traceback)"
    )


def interrupted_by_user(exc: BaseException) -> bool:
    """Whether ``exc`` is a Ctrl-C in another exception's clothes: a KeyboardInterrupt that stopped
    a C extension's module init comes back as its ImportError, raised from the interrupt (pybind11's
    "initialization failed": ``import onnxruntime`` interrupted), which is no bug to report; one that
    stopped pydantic-core building a validator (a spec's model, the first time it is read) comes back
    as its SchemaError, which keeps the interrupt as text only, its last line."""
    seen: set[int] = set()
    link: BaseException | None = exc
    while link is not None and id(link) not in seen:
        if isinstance(link, KeyboardInterrupt) or _schema_error_of_interrupt(link):
            return True
        seen.add(id(link))
        link = link.__cause__
    return False


#: pydantic-core's exception for a validator it could not build (named here: this module imports
#: nothing but the standard library)
_SCHEMA_ERROR = ("pydantic_core._pydantic_core", "SchemaError")


def _schema_error_of_interrupt(exc: BaseException) -> bool:
    """A SchemaError whose cause, written as its last line, is a KeyboardInterrupt."""
    if (type(exc).__module__, type(exc).__name__) != _SCHEMA_ERROR:
        return False
    return str(exc).rsplit("\n", 1)[-1].lstrip().startswith(KeyboardInterrupt.__name__)


def raise_if_interrupted(exc: BaseException) -> None:
    """Raise a Ctrl-C in ``exc``'s clothes (:func:`interrupted_by_user`) as the KeyboardInterrupt it
    is: for a caller about to turn ``exc`` into an answer of its own (a backend that does not
    import, a step skipped), which would carry on, or exit 2, instead of stopping."""
    if interrupted_by_user(exc):
        raise KeyboardInterrupt from exc


#: CPython's import machinery (importlib's frozen bootstrap), by its code's file names
_IMPORT_MACHINERY = frozenset({"<frozen importlib._bootstrap>", "<frozen importlib._bootstrap_external>"})
#: what runs a C extension's module init; importlib calls them through ``_call_with_frames_removed``
_EXTENSION_INITS = (_imp.create_dynamic, _imp.exec_dynamic)
#: a stop signal this long after one that was deferred takes effect at once: the user insists (an
#: import that never ends); one sooner is the same Ctrl-C again (a terminal's, then ``ci``'s forwarding)
INSIST_AFTER_S = 1.0


def _breaks_an_import(frame: FrameType) -> bool:
    """Whether a KeyboardInterrupt raised in ``frame`` could break an import rather than stop it:
    ``frame`` is the import machinery's own code, which can leave an import lock held, or runs
    inside a C extension's module init, called back from it, which can leave the module half made
    or abort the process (nanobind's ``python_error`` thrown out of onnx's init: std::terminate)."""
    if frame.f_code.co_filename in _IMPORT_MACHINERY:
        return True
    caller: FrameType | None = frame.f_back
    while caller is not None:
        code = caller.f_code
        if (
            code.co_name == "_call_with_frames_removed"
            and code.co_filename in _IMPORT_MACHINERY
            and caller.f_locals.get("f") in _EXTENSION_INITS
        ):
            return True
        caller = caller.f_back
    return False


def _runs_in(frame: FrameType, function: object) -> bool:
    """Whether ``frame`` is a call of ``function`` (Python code) or of something it called."""
    code = getattr(function, "__code__", None)
    caller: FrameType | None = frame
    while caller is not None:
        if caller.f_code is code:
            return True
        caller = caller.f_back
    return False


def _restore_profile(previous: Any) -> None:
    """Give the profiler that was set before a deferral back: a function through ``sys.setprofile``;
    cProfile's, whose function is C code that ``sys.getprofile`` does not return (only its object,
    which is not callable), through its own ``enable`` (``_lsprof`` is imported where one was made
    only: not on every command's start-up). Another profiler of C code cannot be set again from
    Python: it stays unset, as it would be after the KeyboardInterrupt, not set as what it is not."""
    lsprof = sys.modules.get("_lsprof")
    if lsprof is not None and isinstance(previous, lsprof.Profiler):
        previous.enable()
    else:
        sys.setprofile(previous if callable(previous) else None)


class _Pending(int):
    """A signal number whose ``received`` attribute marks that signal as received
    (``_thread.interrupt_main``), read rather than called: CPython runs a signal's handler at its next
    check for pending work, which follows every call but no attribute read, so a profile function that
    reads it last returns before the handler runs (see :class:`_PastImports`)."""

    received = property(_thread.interrupt_main)


class _PastImports:
    """``sys.setprofile``'s function from a stop signal deferred inside an import
    (:func:`_breaks_an_import`) to the first call made where it no longer would, where the signal goes
    back to its handler: raised into that call (a pure Python module's own code, or the importer's).
    The handler's own calls (another signal meanwhile) are not that call. The profiler set before
    (``python -m cProfile``'s) is set again first, and the signal marked received only as this function
    returns: an exception leaving a profile function makes CPython unset whatever profile function is
    set then, so the handler must raise in the code that was profiled, not in here. With none set
    again it raises in here, as a C function's call would otherwise run first (a ``time.sleep``, a
    blocking read: the interrupt waited for it)."""

    def __init__(self, signum: int, previous: Any) -> None:
        self.signum = signal.Signals(signum)
        self.previous = previous  # a profiler's, given back
        self.since = time.monotonic()
        # the calls after which the profiled code checks for the signal before a profile function of
        # Python code runs (it would take the signal in there): a Python function's start; a C
        # function's, unless the profiler given back is a function, which runs at its return first
        self.events = ("call", "c_return" if callable(previous) else "c_call")

    def __call__(self, frame: FrameType, event: str, arg: object) -> None:
        if event not in self.events or _breaks_an_import(frame):
            return
        if _runs_in(frame, signal.getsignal(self.signum)):
            return
        _restore_profile(self.previous)
        if sys.getprofile() is None:  # none to unset: raised in here, before a C function called next runs
            _thread.interrupt_main(self.signum)
        else:
            _Pending(self.signum).received  # noqa: B018 - its handler runs once this returns, in ``frame``


def interrupt_deferred(signum: int, frame: FrameType | None) -> bool:
    """Whether a stop signal's handler must not raise now, as ``frame`` (the code the signal
    interrupted) is inside an import, where a KeyboardInterrupt can break it
    (:func:`_breaks_an_import`). In the import machinery it can land between its taking a lock and
    the ``try`` that gives it back (CPython's ``_get_module_lock``, that lock's weakref callback,
    whose exception Python drops besides, ``_ModuleLock.acquire``): the lock stays held by this
    thread, whose own imports still go on, but every other thread's next import waits for it
    forever, and so does whatever then waits for that thread (a build's gate pass, joined as the
    build unwinds: a hang). So is one that lands in a profile function (a Python one, set with
    ``sys.setprofile``), which CPython would unset as the KeyboardInterrupt leaves it. Deferred to the
    first call where it no longer breaks one (:class:`_PastImports`); another signal meanwhile is not,
    from ``INSIST_AFTER_S`` on."""
    waiting = sys.getprofile()
    if isinstance(waiting, _PastImports):
        if time.monotonic() - waiting.since < INSIST_AFTER_S:
            return True  # the same Ctrl-C again: still deferred
        _restore_profile(waiting.previous)
        return False
    if frame is None or not (_breaks_an_import(frame) or _runs_in(frame, waiting)):
        return False
    sys.setprofile(_PastImports(signum, waiting))
    return True


def interrupt(signum: int, frame: FrameType | None) -> None:
    """The stop signals' handler of trtforge's own process once a command runs (SIGINT; ``ci``'s
    SIGTERM too): Python's ``signal.default_int_handler``, a KeyboardInterrupt, each command's
    clean-up and exit 130, but never where it would break an import (:func:`interrupt_deferred`)."""
    if not interrupt_deferred(signum, frame):
        raise KeyboardInterrupt


#: what the disk, not trtforge, refused a write for: full, over quota, read-only, or a file larger
#: than the file system or the process's file size limit (``ulimit -f``) allows
DISK_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG})
#: how to fix a disk error of each kind (any other: free space)
_DISK_FIXES = {
    errno.EROFS: "write to a folder on a writable file system instead",
    errno.EFBIG: "raise the file size limit (ulimit -f), or write to a folder on a file system that takes larger files",
}


def disk_error(exc: BaseException, path: os.PathLike[str] | str | None = None) -> InvalidInputError | None:
    """A write the disk refused (``DISK_ERRNOS``) as the user's error (exit 2): what, where and how
    to fix it; None for any other exception. Where: the file the error names, which is the one that
    was written (``path``, the caller's guess, may be on another disk: a cache written inside a
    commit to ``--out``), and a copy's or rename's destination, not its source; else ``path``."""
    if not isinstance(exc, OSError) or exc.errno not in DISK_ERRNOS:
        return None
    named = exc.filename2 if exc.filename2 is not None else exc.filename
    where = named if named is not None else path
    target = f" {where}" if where is not None else ""
    reason = (exc.strerror or os.strerror(exc.errno or 0)).lower()
    fix = _DISK_FIXES.get(exc.errno or 0, "free space on that disk, or write to a folder on another one")
    return InvalidInputError(f"cannot write{target}: {reason}; {fix}")


def unexpected_error(exc: BaseException, subject: str = "") -> TrtforgeError:
    """An exception trtforge did not raise itself, as the error the user gets: a full or
    read-only disk is theirs to fix (exit 2), anything else a bug to report (:func:`internal_error`)."""
    full = disk_error(exc)
    if full is None:
        return internal_error(exc, subject)
    return InvalidInputError(f"{subject}: {full}") if subject else full


def first_line(exc: BaseException) -> str:
    """An exception as one line (libraries put details below the first): for one-line errors."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


#: a run of non-blank characters longer than this in a printed line is a value echoed from a file or
#: a flag (a spec's 900 KB ``name:``), not a word or a path (deep CI and Bazel paths stay whole): it
#: is cut to its start and its end
MAX_ECHOED = 1024
_ECHO_HEAD, _ECHO_TAIL = 640, 320
_LONG_RUN = re.compile(rf"\S{{{MAX_ECHOED + 1},}}")
#: what would break a line or drive a terminal: every control character but tab, and the line and
#: paragraph separators (``str.splitlines`` breaks at all of them)
_LINE_BREAKING = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029]")


def one_line(text: str) -> str:
    """``text`` as the one line a message must be, whatever values it repeats: a control character
    or line separator is written as ``repr`` writes it (a manifest's ``"1.7.1.116\\n"`` split the
    error over two lines), and a run of over ``MAX_ECHOED`` non-blank characters is cut around
    ``…`` (a 900 KB value made a 900 KB line). Every error and warning line goes through it
    (``exits_cleanly``, ``Reporter.warn``/``error``), and every table cell."""
    escaped = _LINE_BREAKING.sub(lambda found: repr(found.group())[1:-1], text)
    return _LONG_RUN.sub(lambda found: f"{found.group()[:_ECHO_HEAD]}…{found.group()[-_ECHO_TAIL:]}", escaped)


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """Return ' — did you mean 'x'?' for the closest choice, or '' when nothing is close."""
    import difflib  # only when a word is unknown: not on every command's start-up

    options = list(choices)
    same_but_case = [choice for choice in options if choice.lower() == word.lower()]
    close = same_but_case or difflib.get_close_matches(word, options, n=max(len(options), 1), cutoff=0.6)
    # of the close ones, one a single edit away first: difflib rated 'mnx' as near 'min' as 'max'
    # and, on the tie, offered 'min'
    one_edit = [choice for choice in close if _one_edit(word.lower(), choice.lower())]
    return f" — did you mean '{(one_edit or close)[0]}'?" if close else ""


def _one_edit(a: str, b: str) -> bool:
    """Whether ``a`` becomes ``b`` by inserting, deleting or replacing at most one character."""
    if len(a) > len(b):
        a, b = b, a
    if len(b) - len(a) > 1:
        return False
    start = next((index for index, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), len(a))
    return a[start + (len(a) == len(b)) :] == b[start + 1 :]


#: ``trtforge ci`` and multi-spec commands exit with the most severe outcome, in this order
#: (README "Exit codes": 1, 3, 4, 5, 6, 2, 0): a bug first, then the pipeline's own failures in the
#: order its steps run, a registry's, the user's input, success.
SEVERITY_ORDER = (
    *(kind.exit_code for kind in (InternalError, BuildError, AccuracyError, IncompatibleEngineError, RegistryError)),
    InvalidInputError.exit_code,
    0,
)


def most_severe(codes: Iterable[int]) -> int:
    present = set(codes)
    return next((code for code in SEVERITY_ORDER if code in present), 0)


@contextmanager
def stop_signals_held() -> Iterator[None]:
    """A stop signal that arrives in the block is held, not lost, and acted on as the block ends:
    around a step it must not split. Starting a thread and recording who will stop and join it (a
    Ctrl-C in ``Thread.start``'s wait for the thread left one running that nobody stopped: at exit
    Python 3.11 ended it inside onnxruntime's C++, which aborted the process); a fork (the child
    starts with them blocked, until its own handlers are in place)."""
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)
