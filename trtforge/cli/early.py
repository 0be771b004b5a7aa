"""Imported first by :mod:`trtforge.cli`: on ``trtforge check|inspect ... ENGINE`` it starts
hashing ENGINE on a background thread before the CLI's other imports, so the hash (hashlib releases
the GIL) and the start-up overlap instead of adding up; the command's own ``sha256_file`` then
waits for that hash rather than reading the file again. Any other command line starts nothing."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path

from trtforge.fsutil import prefetch_digest

#: the commands whose cost is hashing the one engine they are given
_HASHING_COMMANDS = frozenset({"check", "inspect"})
_ENGINE = ".engine"
_MANIFEST = ".manifest.json"


def engine_to_hash(argv: Sequence[str]) -> Path | None:
    """The engine file ``argv`` (trtforge's own command line, ``sys.argv``) will hash, or None: a
    wrong guess only costs a background hash, a missed one only the overlap."""
    program = Path(argv[0]) if argv else Path()
    if program.name != "trtforge" and program.parts[-2:] != ("trtforge", "__main__.py"):
        return None  # trtforge.cli imported by another program (a test, a script)
    words = [word for word in argv[1:] if not word.startswith("-")]
    if not words or words[0] not in _HASHING_COMMANDS or "--help" in argv:
        return None
    named = [word for word in words[1:] if word.endswith((_ENGINE, _MANIFEST))]
    if len(named) != 1:
        return None
    engine = named[0].removesuffix(_MANIFEST) + _ENGINE if named[0].endswith(_MANIFEST) else named[0]
    return Path(engine) if os.path.isfile(engine) else None


_engine = engine_to_hash(sys.argv)
if _engine is not None:
    prefetch_digest(_engine)
