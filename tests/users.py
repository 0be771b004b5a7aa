"""Writers of other users: root's forked processes that give up root for another user (``nobody``)
for good, so that a folder users share is tested with real other users' files and permissions."""

from __future__ import annotations

import multiprocessing
import os
import pwd
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

FORK = multiprocessing.get_context("fork")
#: a forked writer's exit code where root may not change its user (no CAP_SETUID/CAP_SETGID)
CANNOT_DROP = 77
CANNOT_DROP_REASON = "root here may not change its user (no CAP_SETUID/CAP_SETGID): nothing runs as nobody"


def run_forked(*targets: Callable[[], None], timeout: float = 30) -> list[int | None]:
    processes = [FORK.Process(target=target) for target in targets]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout)
        if process.is_alive():
            process.kill()
            process.join()
    return [process.exitcode for process in processes]


def as_user(user: pwd.struct_passwd, target: Callable[[], None]) -> Callable[[], None]:
    """``target`` in a forked process that first gives up root for ``user`` for good (groups, gid,
    uid): a real other user, with its own files and permissions. Forked, not started with
    ``subprocess``'s ``user=``: root's interpreter may sit where ``nobody`` cannot run it (/root)."""

    def run() -> None:
        try:
            os.setgroups([])
            os.setgid(user.pw_gid)
            os.setuid(user.pw_uid)
        except PermissionError:
            sys.exit(CANNOT_DROP)
        target()

    return run


def run_as(user: pwd.struct_passwd, target: Callable[[], None]) -> int | None:
    (code,) = run_forked(as_user(user, target))
    if code == CANNOT_DROP:
        pytest.skip(CANNOT_DROP_REASON)
    return code


def waits_for_a_lock(process: multiprocessing.process.BaseProcess, timeout: float = 20) -> bool:
    """Whether ``process`` comes to wait for a flock another holds (``/proc/locks`` lists its
    request after ``->``) within ``timeout``; False as soon as it ends."""
    deadline = time.monotonic() + timeout
    while process.is_alive() and time.monotonic() < deadline:
        for line in Path("/proc/locks").read_text().splitlines():
            fields = line.split()
            if "->" in fields and fields[fields.index("->") + 4 :][:1] == [str(process.pid)]:
                return True
        time.sleep(0.02)
    return False


def comes_to_open(process: multiprocessing.process.BaseProcess, path: Path, timeout: float = 20) -> bool:
    """Whether ``process`` comes to hold ``path`` open (``/proc/PID/fd``) within ``timeout``: a
    lock waited for with a deadline is asked for again and again (``flock`` with ``LOCK_NB``),
    which ``/proc/locks`` never lists as waiting. False as soon as it ends."""
    deadline = time.monotonic() + timeout
    fds = Path(f"/proc/{process.pid}/fd")
    while process.is_alive() and time.monotonic() < deadline:
        try:
            if any(os.readlink(fd) == str(path) for fd in fds.iterdir()):
                return True
        except OSError:  # a descriptor closed while listed, or the process ended
            pass
        time.sleep(0.02)
    return False
