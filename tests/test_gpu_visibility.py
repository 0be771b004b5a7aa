"""Which GPU trtforge judges and builds on: the first one CUDA numbers, as CUDA_VISIBLE_DEVICES picks
and orders NVML's devices. The mapping is pure and runs here; NVML itself only on a GPU host."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from trtforge.environment import CUDA_VISIBLE_DEVICES, cuda_visible_order, detect_gpus

A = "GPU-8932f937-d72c-4106-c12f-20bd9faed9f6"
B = "GPU-8932aaaa-0000-4106-c12f-20bd9faed9f6"
C = "GPU-c0ffee00-1111-2222-3333-444455556666"
MIG = "MIG-1b3a2c4d-5e6f-7a8b-9c0d-1e2f3a4b5c6d"
#: three GPUs in NVML (PCI bus) order, and one MIG instance of the third
DEVICES = [(0, A), (1, B), (2, C), (2, MIG)]


@pytest.mark.parametrize(
    ("visible", "expected"),
    [
        (None, (0, 1, 2)),  # unset: every GPU, in NVML's order
        ("", ()),  # empty: no GPU
        ("2,0", (2, 0)),  # picked and reordered
        ("1", (1,)),
        (" 2 , 1 ", (2, 1)),
        ("0,2,-1,1", (0, 2)),  # CUDA's own example: the list ends at the first invalid entry
        ("3", ()),  # no such device
        ("0,0,1", (0,)),  # a device named twice ends the list too
        ("0,", (0,)),
        ("GPU-c0ffee00", (2,)),  # a UUID prefix that names one GPU
        (f"{B},{A}", (1, 0)),
        ("GPU-8932,2", ()),  # names two GPUs: invalid, and nothing after it counts
        ("c0ffee00", ()),  # a UUID is written with its GPU- prefix
        ("MIG-1b3a2c4d", (2,)),  # a MIG instance: its GPU's facts (compute capability, name)
        (f"MIG-{C}/1/0", (2,)),  # the older MIG-<GPU UUID>/<instance>/<compute instance> form
        ("MIG-ffff", ()),
        ("NoDevFiles", ()),
    ],
)
def test_cuda_visible_devices_picks_and_orders_the_gpus(visible: str | None, expected: tuple[int, ...]) -> None:
    assert cuda_visible_order(visible, DEVICES) == expected


def test_indices_count_only_the_gpus_that_can_be_opened() -> None:
    """NVML lists a GPU this process may not open (NVML_ERROR_NO_PERMISSION, left out of
    ``devices``); CUDA does not number it, so index 0 is the first one that can be opened."""
    readable = [(1, B), (2, C)]
    assert cuda_visible_order("0", readable) == (1,)
    assert cuda_visible_order(None, readable) == (1, 2)
    assert cuda_visible_order(A, readable) == ()


def _detected(visible: str) -> str:
    """``detect_gpus()`` in a fresh process (it is cached per process) under CUDA_VISIBLE_DEVICES."""
    script = "from trtforge.environment import detect_gpus; print([(g.index, g.name) for g in detect_gpus()])"
    env = {**os.environ, CUDA_VISIBLE_DEVICES: visible}
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, check=True).stdout


def test_detect_gpus_honours_cuda_visible_devices() -> None:
    """Real on a GPU host: an empty value hides every GPU, an index or a UUID picks one."""
    gpus = detect_gpus()
    if not gpus:
        pytest.skip("no NVIDIA GPU/driver visible to NVML on this host; this test runs on a GPU host")
    import pynvml

    pynvml.nvmlInit()
    try:
        uuid = pynvml.nvmlDeviceGetUUID(pynvml.nvmlDeviceGetHandleByIndex(gpus[-1].index))
    finally:
        pynvml.nvmlShutdown()
    uuid = uuid.decode() if isinstance(uuid, bytes) else uuid
    last = [(gpus[-1].index, gpus[-1].name)]
    assert _detected("").strip() == "[]"
    assert _detected(str(len(gpus) - 1)).strip() == repr(last)
    assert _detected(uuid[:12]).strip() == repr(last)
