"""The allocator settings a build runs with: freed memory stays in the heap for the next allocation.

Each case runs in a process of its own (the settings last as long as the process): 96 MiB in
blocks of 64 KiB (under glibc's mmap threshold, so from the heap) is allocated and freed through
the C library itself, and glibc's own count of the heap (``mallinfo2().arena``) says what the heap
kept. 96 MiB is over the most that glibc's default trim threshold can grow to by itself (64 MiB,
twice its largest dynamic mmap threshold), so with the defaults the heap always gives it back.
"""

from __future__ import annotations

import ctypes
import subprocess
import sys

import pytest

from trtforge.allocator import TOP_PAD, TRIM_THRESHOLD

PROBE = """
import ctypes, sys
from trtforge.allocator import keep_freed_memory

class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]

libc = ctypes.CDLL(None)
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
libc.mallinfo2.restype = MallInfo2
if sys.argv[1] == "kept":
    assert keep_freed_memory() and keep_freed_memory()  # applied, then remembered
blocks = (ctypes.c_void_p * 1536)()  # made first, so nothing of Python's lands above the blocks
for index in range(len(blocks)):
    blocks[index] = libc.malloc(64 << 10)
assert all(blocks)
allocated = libc.mallinfo2().arena
for block in blocks:
    libc.free(block)
print(allocated, libc.mallinfo2().arena)
"""

pytestmark = pytest.mark.skipif(
    sys.platform != "linux" or not hasattr(ctypes.CDLL(None), "mallinfo2"),
    reason="needs glibc >= 2.33 (mallopt, mallinfo2)",
)

MIB = 1 << 20


def heap_after(mode: str) -> tuple[int, int]:
    """(heap bytes with the 96 MiB allocated, heap bytes once it is freed) in a fresh process."""
    done = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True)
    allocated, freed = map(int, done.stdout.split())
    return allocated, freed


def test_glibc_defaults_give_the_freed_heap_back() -> None:
    allocated, freed = heap_after("default")
    assert allocated >= 96 * MIB
    assert freed < 16 * MIB  # trimmed: the next allocation faults its pages in again


def test_build_settings_keep_the_freed_heap_for_reuse() -> None:
    allocated, freed = heap_after("kept")
    assert allocated >= 96 * MIB
    assert freed >= 96 * MIB  # kept: the next allocation reuses the pages
    assert freed <= TRIM_THRESHOLD + TOP_PAD  # bounded by what the settings allow
