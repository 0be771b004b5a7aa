"""The adversarial cases of the trust review, recorded as they run.

A test that replays a hostile input or a fault takes the ``trust_case`` fixture and records
what trtforge did: the exit code, whether the user saw exactly one line and no traceback, and
what was left on disk. The tests assert; this only records, so that
``benchmarks/trust_replay.py`` can print the table case -> exit code -> one line? -> leftovers
from the same tests CI runs (one source of truth, no second copy of the cases).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path

import pytest

#: where the records go when set (benchmarks/trust_replay.py sets it)
RECORD_ENV = "TRTFORGE_TRUST_RECORD"

_records: list[TrustRecord] = []


@dataclass(frozen=True)
class TrustRecord:
    item: int
    case: str
    exit_code: int
    one_line: bool | None
    leftovers: tuple[str, ...]
    test: str


def leftovers(*folders: Path) -> tuple[str, ...]:
    """Hidden temporaries (``.*.tmp``, ``.tmp-*``) and partial files under ``folders``."""
    found: list[str] = []
    for folder in folders:
        if not folder.exists():
            continue
        for path in folder.rglob("*"):
            name = path.name
            if name.endswith((".tmp", ".partial")) or name.startswith((".tmp", ".remote-", ".staging")):
                found.append(str(path.relative_to(folder)))
    return tuple(sorted(found))


#: progress and warnings in CI logs ("12:03:04 text"); the error itself is printed without a time
_LOG_LINE = re.compile(r"^\d\d:\d\d:\d\d ")


def is_one_line(exit_code: int, stderr: str) -> bool | None:
    """Did the user get one line about the case, and no Python traceback?

    A failure's message is its lines other than timestamped progress lines (a test may also pass
    just the line it extracted). None for a success whose output is a whole log: nothing to judge.
    """
    lines = [line for line in stderr.splitlines() if line.strip()]
    message = [line for line in lines if not _LOG_LINE.match(line)] or lines
    if exit_code == 0 and len(message) > 1:
        return None
    return len(message) == 1 and "Traceback" not in stderr


class TrustRecorder:
    def __init__(self, test: str) -> None:
        self._test = test

    def __call__(
        self, item: int, case: str, exit_code: int, stderr: str = "", folders: tuple[Path, ...] = ()
    ) -> TrustRecord:
        """Record one replayed case; returns the record so the test can assert on it. No case, failed
        or not, may leave a temporary in the folders it names (the trust review's rule)."""
        record = TrustRecord(item, case, exit_code, is_one_line(exit_code, stderr), leftovers(*folders), self._test)
        _records.append(record)
        assert not record.leftovers, f"{case}: left on disk: {', '.join(record.leftovers)}"
        return record


@pytest.fixture
def trust_case(request: pytest.FixtureRequest) -> TrustRecorder:
    return TrustRecorder(request.node.nodeid)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "trust: replays a case of the trust review (benchmarks/trust_replay.py)")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "trust_case" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.trust)


def pytest_sessionfinish(session: pytest.Session) -> None:
    target = os.environ.get(RECORD_ENV)
    if target:
        Path(target).write_text(json.dumps([asdict(record) for record in _records], indent=2))
