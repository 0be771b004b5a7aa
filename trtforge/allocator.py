"""The C allocator's settings for a build.

glibc's malloc gives the memory freed at the top of its heap back to the kernel as soon as more
than 128 KiB is free there (``M_TRIM_THRESHOLD``), and grows the heap by little more than each
request (``M_TOP_PAD``). A build (the FP16 conversion, then TensorRT's parse and build) allocates
and frees tens of megabytes over and over: the heap shrinks, grows again, and every page it takes
back costs a page fault. Measured on ResNet-18 at 224x224 with TensorRT-RTX 1.7 on a 2-core host,
against ``TRTFORGE_KEEP_FREED_MEMORY=0`` in the same run: the fp32 build 0.69 -> 0.61 s, the fp16
build 1.30 -> 1.14 s, with the gate 1.97 -> 1.94 s; system time down a third; peak resident memory
+45 MiB at fp32 (what the heap keeps), about equal at fp16.

Setting either also fixes glibc's mmap threshold where it stands (128 KiB unless the process has
raised it already): a larger block comes from the heap's top when the pad leaves room there, else
from a fresh mapping. Raising that threshold to its 32 MiB ceiling as well measured ~2% faster
again, for +230 MiB of peak memory on ResNet-18's fp16 build with the gate: not done.

A process whose environment tunes glibc's malloc keeps its settings (the user's tuning wins), and
``TRTFORGE_KEEP_FREED_MEMORY=0`` leaves glibc's defaults (no variable of glibc's own can: setting
any of them fixes the mmap threshold too, which measured slower than both: ResNet-18's fp16 build
with the gate 2.41 s with ``MALLOC_TRIM_THRESHOLD_=131072``, in the run above).
Python has no binding for mallopt(3), so ctypes calls it. Other C libraries are left as they are.
"""

from __future__ import annotations

import functools
import os

#: free memory the heap may keep at its top instead of giving it back (glibc's default: 128 KiB)
TRIM_THRESHOLD = 256 << 20
#: what the heap grows by beyond a request, and keeps when it trims (glibc's default: 128 KiB)
TOP_PAD = 128 << 20
#: (parameter number in glibc's malloc.h, value): M_TRIM_THRESHOLD, M_TOP_PAD
_SETTINGS = ((-1, TRIM_THRESHOLD), (-2, TOP_PAD))
#: environment variables through which a user tunes glibc's malloc (read by glibc at start-up),
#: besides ``glibc.malloc.*`` in GLIBC_TUNABLES
USER_SETTINGS = ("MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_", "MALLOC_MMAP_THRESHOLD_", "MALLOC_MMAP_MAX_")
#: "0": glibc's defaults stay
OPT_OUT = "TRTFORGE_KEEP_FREED_MEMORY"


def _is_glibc() -> bool:
    try:
        return bool(os.confstr("CS_GNU_LIBC_VERSION"))
    except (AttributeError, ValueError, OSError):  # no confstr (Windows), or a C library without the name
        return False


@functools.cache
def keep_freed_memory() -> bool:
    """Apply the settings above to this process (once; they last as long as it does, so a ``ci``
    worker may keep up to TRIM_THRESHOLD + TOP_PAD of freed memory). False where the C library is
    not glibc, refused one, or the environment tunes malloc itself or opts out (nothing changed then)."""
    tuned = any(name in os.environ for name in USER_SETTINGS) or "glibc.malloc." in os.environ.get("GLIBC_TUNABLES", "")
    if tuned or os.environ.get(OPT_OUT) == "0" or not _is_glibc():
        return False
    import ctypes

    mallopt = ctypes.CDLL(None).mallopt
    applied = [mallopt(parameter, value) for parameter, value in _SETTINGS]
    return all(result == 1 for result in applied)
