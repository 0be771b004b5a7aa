"""``trtforge build``'s TensorRT process, forked as trtforge starts.

A build's fixed cost is two imports in a row: the CLI's (typer and its pydantic adapters, PyYAML,
protobuf) and TensorRT's. On the digits CNN, whose raw build takes ~0.15 s, that fixed cost is
most of the command. So the ``build`` command line forks a process before the CLI imports anything
(:func:`start`, from :mod:`trtforge.cli.early`); it imports TensorRT-RTX (where ``auto`` would
choose it) while the CLI starts, on another core, and then runs each TensorRT-RTX build the
command asks of it
(:class:`RemoteBackend`: ``version``, ``check_targets`` and ``build`` as the in-process backend
answers them, the engine handed back in a memfd, never copied through the socket). Everything else
(the spec, the precision step, the gate, the artifacts) stays in trtforge's own process.

The process dies with trtforge (``PR_SET_PDEATHSIG``), ignores Ctrl-C (trtforge, which gets it
too, kills the process and exits 130: it writes no file), and ends when trtforge closes its end
of the socket. A build process that dies (killed for memory, TensorRT crashing) fails that build
with exit 3, naming the signal; the next spec builds in trtforge's own process.
Enterprise TensorRT builds in trtforge's own process: it builds on the GPU, where a second process
would hold a second CUDA context. ``TRTFORGE_BUILD_PROCESS=0`` builds in trtforge's own process
from the start. Linux only (memfd).

This module imports only the standard library at its top: it is imported before anything else.
"""

from __future__ import annotations

import os
import pickle
import signal
import socket
import struct
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from trtforge.backends.base import Builder, BuildMonitor, BuildRequest, BuildResult, TensorRTApiBackend
    from trtforge.spec import BuildOptions, SpecOrigin
    from trtforge.tags import ComputeCapability

#: "0": build in trtforge's own process
OPT_OUT = "TRTFORGE_BUILD_PROCESS"
_HEADER = struct.Struct("!Q")
_PR_SET_PDEATHSIG = 1


def wanted(argv: Sequence[str]) -> bool:
    """Whether ``argv`` (trtforge's own command line) builds: its command is ``build``, and not
    its ``--help``. A wrong guess costs an idle process that ends with trtforge."""
    words = [word for word in argv[1:] if not word.startswith("-")]
    return (
        bool(words)
        and words[0] == "build"
        and "--help" not in argv
        and os.environ.get(OPT_OUT, "") != "0"
        and hasattr(os, "memfd_create")
    )


class _Worker:
    """trtforge's end of the build process: its pid and socket."""

    def __init__(self, pid: int, channel: socket.socket) -> None:
        self.pid = pid
        self.channel = channel
        self.alive = True

    def ask(self, message: tuple[Any, ...], monitor: BuildMonitor | None = None) -> Any:
        """Send ``message`` and return the answer; raises what the build process raised. Any other
        failure here (Ctrl-C included) ends the process: no build goes on that nobody waits for."""
        try:
            _send(self.channel, message)
            while True:
                kind, *value = _receive(self.channel)
                if kind == "progress" and monitor is not None:
                    method, arguments = value
                    getattr(monitor, method)(*arguments)
                elif kind == "engine":
                    return _received_engine(self.channel, *value)
                elif kind in ("answer", "raised", "failed"):
                    break
        except _ProcessDied:
            raise _ended(message, self.stop()) from None
        except BaseException:
            self.stop()
            raise
        if kind == "raised":
            raise value[0]
        if kind == "failed":  # not trtforge's error: its class, by name, for the internal error's line
            name, text = value
            raise type(name, (RuntimeError,), {})(text)
        return value[0]

    def stop(self) -> int:
        """End the build process (if it has not ended) and return its wait status."""
        if not self.alive:
            return 0
        self.alive = False
        self.channel.close()
        try:
            os.kill(self.pid, signal.SIGKILL)  # nothing if it already ended: its status stays its own
            return os.waitpid(self.pid, 0)[1]
        except (ProcessLookupError, ChildProcessError):
            return 0


_worker: _Worker | None = None


def start(argv: Sequence[str]) -> None:
    """Fork the build process where ``argv`` builds (:func:`wanted`); in the child, serve builds
    and exit, never returning. A fork refused (no memory, a process limit) builds in-process."""
    global _worker
    if not wanted(argv):
        return
    ours, theirs = socket.socketpair()
    parent = os.getpid()
    # Ctrl-C is held back across the fork, so the build process ignores it before it can land there
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        pid = os.fork()
    except OSError:
        ours.close()
        theirs.close()
        return
    finally:
        if os.getpid() == parent:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    if pid == 0:
        ours.close()
        _serve(theirs, parent)  # never returns
    theirs.close()
    _worker = _Worker(pid, ours)


class RemoteBackend:
    """A flavor's backend in the build process, as :mod:`trtforge.build` uses a backend."""

    def __init__(self, worker: _Worker, flavor: str, version: str) -> None:
        self._worker = worker
        self.flavor = flavor
        self.version = version

    def check_targets(
        self, targets: tuple[ComputeCapability, ...], options: BuildOptions, origin: SpecOrigin | None
    ) -> None:
        self._worker.ask(("check_targets", self.flavor, targets, options, origin))

    def build(self, request: BuildRequest, monitor: BuildMonitor) -> BuildResult:
        result: BuildResult = self._worker.ask(("build", self.flavor, request), monitor)
        return result


def open_builder(flavor: str) -> Builder:
    """The backend a build runs on: in the build process, which imported TensorRT-RTX while
    trtforge started, else in this process (:func:`open_remote`)."""
    from trtforge.backends import open_backend

    return open_remote(flavor) or open_backend(flavor)


def open_remote(flavor: str) -> RemoteBackend | None:
    """``flavor``'s backend in the build process, or None where there is none (any command line
    but a build, ``TRTFORGE_BUILD_PROCESS=0``, a process that died) or the flavor is enterprise
    TensorRT: build in-process then. Enterprise TensorRT builds on the GPU, and a second process
    would hold a second CUDA context there for as long as trtforge runs the gate.
    Raises what opening the flavor raises (not installed: BackendUnavailableError)."""
    from trtforge.tags import FLAVOR_RTX

    if _worker is None or not _worker.alive or flavor != FLAVOR_RTX:
        return None
    version: str = _worker.ask(("open", flavor))
    return RemoteBackend(_worker, flavor, version)


# ---------------------------------------------------------------- the build process


class _Progress:
    """The build's monitor in the build process: each call is passed on to trtforge's."""

    def __init__(self, channel: socket.socket) -> None:
        self.channel = channel

    def phase_start(self, phase: str, parent: str | None, steps: int) -> None:
        _send(self.channel, ("progress", "phase_start", (phase, parent, steps)))

    def step(self, phase: str, step: int) -> None:
        _send(self.channel, ("progress", "step", (phase, step)))

    def phase_finish(self, phase: str) -> None:
        _send(self.channel, ("progress", "phase_finish", (phase,)))

    def note(self, message: str) -> None:
        _send(self.channel, ("progress", "note", (message,)))


def _serve(channel: socket.socket, parent: int) -> None:
    """The build process: open the flavor ``auto`` chooses while trtforge starts, then answer
    trtforge's questions one by one until it closes the socket."""
    code = 0
    try:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
        _die_with(parent)
        from trtforge.allocator import keep_freed_memory

        keep_freed_memory()  # as in-process builds: TensorRT's build reuses what it frees
        backends: dict[str, TensorRTApiBackend] = {}
        try:
            from trtforge.environment import choose_backend
            from trtforge.tags import FLAVOR_RTX

            if choose_backend("auto").flavor == FLAVOR_RTX:
                backends[FLAVOR_RTX] = _opened(FLAVOR_RTX)
        except Exception:  # the same failure is raised, and said, when trtforge asks for it
            pass
        import gc

        gc.freeze()  # the imports' objects: never garbage (trtforge's start-up paused the collector)
        gc.enable()
        while True:
            try:
                message = _receive(channel)
            except _ProcessDied:
                break  # trtforge closed its end: done
            _answer(channel, message, backends)
    except BaseException:
        code = 1
    finally:
        os._exit(code)


def _opened(flavor: str) -> TensorRTApiBackend:
    from trtforge.backends import open_backend

    return open_backend(flavor)


def _answer(channel: socket.socket, message: tuple[Any, ...], backends: dict[str, TensorRTApiBackend]) -> None:
    question, flavor, *arguments = message
    try:
        backend = backends.get(flavor)
        if backend is None:
            backend = backends[flavor] = _opened(flavor)
        if question == "open":
            _send(channel, ("answer", backend.version))
        elif question == "check_targets":
            backend.check_targets(*arguments)
            _send(channel, ("answer", None))
        else:
            (request,) = arguments
            _send_engine(channel, backend.build(request, _Progress(channel)))
    except Exception as exc:
        _send(channel, _raised(exc))


def _send_engine(channel: socket.socket, result: BuildResult) -> None:
    """The engine in a memfd whose descriptor follows the message: no copy through the socket.
    A memfd counts against the file size limit (``ulimit -f``): past it, the bytes follow instead,
    and trtforge's own write of the engine then meets that limit and says so."""
    facts = (len(result.engine), result.io, result.gpu, result.notes)
    descriptor = os.memfd_create("trtforge-engine", os.MFD_CLOEXEC)
    try:
        with open(descriptor, "wb", closefd=False) as memory:
            memory.write(result.engine)
    except OSError:
        _send(channel, ("engine", False, *facts))
        channel.sendall(result.engine)
    else:
        _send(channel, ("engine", True, *facts))
        socket.send_fds(channel, [b"\0"], [descriptor])
    finally:
        os.close(descriptor)


def _received_engine(channel: socket.socket, in_memfd: bool, size: int, *facts: Any) -> BuildResult:
    """The build's result, its engine mapped from the memfd that follows the message (or read)."""
    import mmap

    from trtforge.backends.base import BuildResult

    if not in_memfd:
        return BuildResult(memoryview(_exactly(channel, size)), *facts)
    _, descriptors, _, _ = socket.recv_fds(channel, 1, 1)
    (descriptor,) = descriptors
    try:
        engine = mmap.mmap(descriptor, size, prot=mmap.PROT_READ)
    finally:
        os.close(descriptor)
    return BuildResult(memoryview(engine), *facts)


def _raised(exc: Exception) -> tuple[Any, ...]:
    """``exc`` as it can cross to trtforge: trtforge's own errors as they are, any other by its
    class's name and its text (the class may live in a module trtforge has not imported)."""
    from trtforge.errors import DEBUG_ENV, TrtforgeError

    if os.environ.get(DEBUG_ENV, "") not in ("", "0"):
        import traceback

        traceback.print_exception(exc, file=sys.stderr)
    if isinstance(exc, TrtforgeError):
        try:
            pickle.dumps(exc)
            return ("raised", exc)
        except Exception:  # an attribute that does not pickle: sent as any other exception
            pass
    return ("failed", type(exc).__name__, str(exc))


def _die_with(parent: int) -> None:
    """SIGKILL this process when trtforge ends, however it ends (Linux's ``PR_SET_PDEATHSIG``)."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # it ended before the request took hold
        os._exit(0)


# ---------------------------------------------------------------- messages


class _ProcessDied(Exception):
    """The other end closed the socket: the build process died (or, seen from the build process,
    trtforge is done)."""


def _ended(message: tuple[Any, ...], status: int) -> Exception:
    """The build process's death during ``message`` as the build's error (exit 3)."""
    from trtforge.errors import BuildError

    how = (
        f"killed by {signal.Signals(os.WTERMSIG(status)).name}"
        if os.WIFSIGNALED(status)
        else f"exit status {os.waitstatus_to_exitcode(status)}"
    )
    question, flavor, *arguments = message
    subject = arguments[0].source if question == "build" else flavor
    return BuildError(
        f"{subject}: the process running {flavor}'s {question} ended ({how}); if it was killed for "
        "memory, free some or lower build.workspace"
    )


def _send(channel: socket.socket, message: tuple[Any, ...]) -> None:
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    channel.sendall(_HEADER.pack(len(data)) + data)


def _receive(channel: socket.socket) -> tuple[Any, ...]:
    (size,) = _HEADER.unpack(_exactly(channel, _HEADER.size))
    message: tuple[Any, ...] = pickle.loads(_exactly(channel, size))
    return message


def _exactly(channel: socket.socket, size: int) -> bytearray:
    """``size`` bytes, never more: a descriptor the next byte carries must not be read past."""
    buffer = bytearray(size)
    view = memoryview(buffer)
    while view:
        got = channel.recv_into(view)
        if got == 0:
            raise _ProcessDied
        view = view[got:]
    return buffer
