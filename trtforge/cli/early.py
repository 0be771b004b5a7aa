"""Imported first by :mod:`trtforge.cli`: on ``trtforge check|inspect ... ENGINE`` it starts
hashing ENGINE on a background thread before the CLI's other imports (it imports nothing but
:mod:`trtforge.filehash` itself first), so the hash (hashlib releases the GIL) and the start-up
overlap instead of adding up; the command's own ``sha256_file`` then waits for that hash rather
than reading the file again. Any other command line starts nothing."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

from trtforge.filehash import Prefetch

#: the commands whose cost is hashing the one engine they are given
_HASHING_COMMANDS = frozenset({"check", "inspect"})
_ENGINE = ".engine"
_MANIFEST = ".manifest.json"


def engine_to_hash(argv: Sequence[str]) -> str | None:
    """The engine file ``argv`` (trtforge's own command line, ``sys.argv``) will hash, or None: a
    wrong guess only costs a background hash, a missed one only the overlap."""
    program = argv[0] if argv else ""
    name, folder = os.path.basename(program), os.path.basename(os.path.dirname(program))
    if name != "trtforge" and (folder, name) != ("trtforge", "__main__.py"):
        return None  # trtforge.cli imported by another program (a test, a script)
    words = [word for word in argv[1:] if not word.startswith("-")]
    if not words or words[0] not in _HASHING_COMMANDS or "--help" in argv:
        return None
    named = [word for word in words[1:] if word.endswith((_ENGINE, _MANIFEST))]
    if len(named) != 1:
        return None
    engine = named[0].removesuffix(_MANIFEST) + _ENGINE if named[0].endswith(_MANIFEST) else named[0]
    return engine if os.path.isfile(engine) else None


_engine = engine_to_hash(sys.argv)
if _engine is not None:
    _started = Prefetch(os.path.abspath(_engine))
    from trtforge.fsutil import adopt_prefetch  # now: its own imports overlap the hash

    adopt_prefetch(_engine, _started)
