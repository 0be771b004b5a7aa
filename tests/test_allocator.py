"""The allocator settings a build runs with: freed memory stays in the heap for the next allocation.

Each case runs in a process of its own (the settings last as long as the process): 96 MiB in
blocks of 64 KiB (under glibc's mmap threshold, so from the heap) is allocated and freed through
the C library itself, and glibc's own count of the heap (``mallinfo2().arena``) says what the heap
kept. 96 MiB is over the most that glibc's default trim threshold can grow to by itself (64 MiB,
twice its largest dynamic mmap threshold), so with the defaults the heap always gives it back.
"""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys
from pathlib import Path

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
applied = keep_freed_memory() and keep_freed_memory() if sys.argv[1] == "asked" else None  # the second: cached
blocks = (ctypes.c_void_p * 1536)()  # made first, so nothing of Python's lands above the blocks
for index in range(len(blocks)):
    blocks[index] = libc.malloc(64 << 10)
if not all(blocks):
    sys.exit("malloc failed")
allocated = libc.mallinfo2().arena
for block in blocks:
    libc.free(block)
print(applied, allocated, libc.mallinfo2().arena)
"""

#: how a build applies them: a real build_spec, then whether it called keep_freed_memory (the
#: cache is read before the call that prints its result)
BUILD = """
import sys
from pathlib import Path
from trtforge.allocator import keep_freed_memory
from trtforge.build import build_spec
from trtforge.console import Reporter
from trtforge.spec import load_spec
build_spec(load_spec(Path(sys.argv[1])), Path(sys.argv[2]), Reporter(interactive=False), cache_dir=Path(sys.argv[3]))
print(keep_freed_memory.cache_info().currsize, keep_freed_memory())
"""

SPEC = """name: digits
model: {model}
precision: fp32
backend: tensorrt-rtx
targets: ["8.6"]
profiles:
  - input: {{min: [1, 1, 8, 8], opt: [4, 1, 8, 8], max: [8, 1, 8, 8]}}
accuracy: {{enabled: false}}
"""

pytestmark = pytest.mark.skipif(
    sys.platform != "linux" or not hasattr(ctypes.CDLL(None), "mallinfo2"),
    reason="needs glibc >= 2.33 (mallopt, mallinfo2)",
)

MIB = 1 << 20


def _environment(**extra: str) -> dict[str, str]:
    """This process's environment without anything that tunes or replaces malloc, plus ``extra``."""
    tuning = ("MALLOC_", "GLIBC_TUNABLES", "LD_PRELOAD", "TRTFORGE_KEEP_FREED_MEMORY")
    return {key: value for key, value in os.environ.items() if not key.startswith(tuning)} | extra


def heap_after(ask: bool, **environment: str) -> tuple[str, int, int]:
    """In a fresh process (``keep_freed_memory()`` called first when ``ask``): what it returned,
    the heap's bytes with the 96 MiB allocated, and once it is freed."""
    done = subprocess.run(
        [sys.executable, "-c", PROBE, "asked" if ask else "not asked"],
        capture_output=True,
        text=True,
        check=True,
        env=_environment(**environment),
    )
    applied, allocated, freed = done.stdout.split()
    return applied, int(allocated), int(freed)


def test_glibc_defaults_give_the_freed_heap_back() -> None:
    _, allocated, freed = heap_after(ask=False)
    assert allocated >= 96 * MIB
    assert freed < 16 * MIB  # trimmed: the next allocation faults its pages in again


def test_build_settings_keep_the_freed_heap_for_reuse() -> None:
    applied, allocated, freed = heap_after(ask=True)
    assert applied == "True"
    assert allocated >= 96 * MIB
    assert freed >= 96 * MIB  # kept: the next allocation reuses the pages
    assert freed <= TRIM_THRESHOLD + TOP_PAD  # bounded by what the settings allow


@pytest.mark.parametrize(
    "tuning",
    [
        {"MALLOC_TRIM_THRESHOLD_": "131072"},
        {"GLIBC_TUNABLES": "glibc.malloc.trim_threshold=131072"},
        {"TRTFORGE_KEEP_FREED_MEMORY": "0"},
    ],
)
def test_a_user_tuned_malloc_is_left_as_it_is(tuning: dict[str, str]) -> None:
    """glibc's own setting (here its default trim threshold), or trtforge's opt-out: the user's
    word wins and the heap is given back."""
    applied, allocated, freed = heap_after(ask=True, **tuning)
    assert applied == "False"
    assert allocated >= 96 * MIB and freed < 16 * MIB


def test_a_build_applies_them(tmp_path: Path) -> None:
    spec = tmp_path / "digits.yaml"
    model = Path(__file__).resolve().parent.parent / "calibration" / "digits" / "digits_cnn.onnx"
    spec.write_text(SPEC.format(model=model), encoding="utf-8")
    done = subprocess.run(
        [sys.executable, "-c", BUILD, str(spec), str(tmp_path / "out"), str(tmp_path / "cache")],
        capture_output=True,
        text=True,
        check=True,
        env=_environment(),
    )
    assert done.stdout.split() == ["1", "True"]  # called by the build itself, and applied
