"""Imported first by :mod:`trtforge.cli`: on ``trtforge check|inspect ... ENGINE`` it starts
hashing ENGINE on a background thread before the CLI's other imports (it imports nothing but
:mod:`trtforge.filehash` and :mod:`trtforge.errors`, both standard library only, itself first), so
the hash (hashlib releases the GIL) and the start-up overlap instead of adding up; the command's
own ``sha256_file`` then waits for that hash rather than reading the file again. Any other command
line starts nothing. In trtforge's own process it also pauses the garbage collector during start-up."""

from __future__ import annotations

import gc
import os
import signal
import sys
from collections.abc import Sequence
from types import FrameType

from trtforge.errors import INTERRUPTED_EXIT, interrupt
from trtforge.filehash import Prefetch

#: the commands whose cost is hashing the one engine they are given
_HASHING_COMMANDS = frozenset({"check", "inspect"})
_ENGINE = ".engine"
_MANIFEST = ".manifest.json"


def engine_to_hash(argv: Sequence[str]) -> str | None:
    """The engine file ``argv`` (trtforge's own command line, ``sys.argv``) will hash, or None: a
    wrong guess only costs a background hash, a missed one only the overlap."""
    if not is_trtforge_program(argv):
        return None
    words = [word for word in argv[1:] if not word.startswith("-")]
    if not words or words[0] not in _HASHING_COMMANDS or "--help" in argv:
        return None
    named = [word for word in words[1:] if word.endswith((_ENGINE, _MANIFEST))]
    if len(named) != 1:
        return None
    engine = named[0].removesuffix(_MANIFEST) + _ENGINE if named[0].endswith(_MANIFEST) else named[0]
    return engine if os.path.isfile(engine) else None


def is_trtforge_program(argv: Sequence[str]) -> bool:
    """Whether ``argv`` (``sys.argv``) is trtforge's own command line, not another program that
    imports trtforge.cli (a test, a script)."""
    program = argv[0] if argv else ""
    name, folder = os.path.basename(program), os.path.basename(os.path.dirname(program))
    return name == "trtforge" or (folder, name) == ("trtforge", "__main__.py")


#: start-up (typer, pydantic, trtforge's modules) allocates objects by the hundred thousand, none
#: of them garbage, and the cyclic collector keeps walking them: it is paused until the command
#: starts (:func:`start_command`), in trtforge's own process only
_own_process = is_trtforge_program(sys.argv)
_collector_paused = _own_process and gc.isenabled()
if _collector_paused:
    gc.disable()


def _interrupted_while_starting(signum: int, frame: FrameType | None) -> None:
    """Ctrl-C before the command started (typer and pydantic still importing): nothing was
    begun, so nothing to undo; exit 130 (``INTERRUPTED_EXIT``) as every interrupted command does,
    not with a traceback of whichever import was running."""
    os.write(2, b"interrupted: the command had not started\n")
    os._exit(INTERRUPTED_EXIT)


#: in trtforge's own process, Ctrl-C during start-up ends it at once (unless SIGINT is ignored, as
#: for a background job); :func:`start_command` gives it back to a KeyboardInterrupt (never where it
#: would break an import: ``errors.interrupt``), which each command turns into its clean-up and exit 130
_quiet_start = _own_process and signal.getsignal(signal.SIGINT) is signal.default_int_handler
if _quiet_start:
    signal.signal(signal.SIGINT, _interrupted_while_starting)


def start_command() -> None:
    """The command starts: Ctrl-C is a KeyboardInterrupt again (``errors.interrupt``: never where it
    would break an import, as it can leave an import lock held), the collector resumes, and what
    start-up made (modules, classes, schemas: all kept for the life of the process) is frozen out
    of its collections."""
    global _collector_paused, _quiet_start
    if _quiet_start:
        _quiet_start = False
        signal.signal(signal.SIGINT, interrupt)
    if _collector_paused:
        _collector_paused = False
        gc.freeze()
        gc.enable()


def exiting() -> None:
    """trtforge's process ends: what the command made is frozen too, so the collections that
    Python's finalization runs skip it (~7 ms on a build), and the exit frees it all at once."""
    if _own_process:
        gc.freeze()


_engine = engine_to_hash(sys.argv)
if _engine is not None:
    _started = Prefetch(os.path.abspath(_engine))
    from trtforge.digests import adopt_prefetch  # now: its own imports overlap the hash

    adopt_prefetch(_engine, _started)
