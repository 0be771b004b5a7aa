"""What is here: this host's platform, GPUs and TensorRT runtimes, and an engine file's size and
sha256. The side effects (NVML, importing TensorRT, reading files) live here, so that the rules
(``trtforge.compat``) stay pure: this module measures, ``compat.problems()`` judges.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import platform as _platform
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from functools import cache
from importlib import metadata
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from trtforge.compat import PIP_EXTRAS, ArtifactFacts, Environment, GpuDevice, content_problem
from trtforge.digests import read_hashed, sha256_file
from trtforge.errors import BackendUnavailableError, InvalidInputError, first_line, raise_if_interrupted
from trtforge.tags import FLAVOR_RTX, FLAVOR_TENSORRT, FLAVORS, ComputeCapability, Platform, parse_trt_version

if TYPE_CHECKING:
    from trtforge.manifest import Manifest

#: module name per flavor
BACKEND_MODULES = {FLAVOR_TENSORRT: "tensorrt", FLAVOR_RTX: "tensorrt_rtx"}


def usable_cores() -> int:
    """CPU cores this process may run on: its affinity (which a CI container's CPU set limits)
    where the OS says, else every core."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0)) or 1
    return os.cpu_count() or 1


def detect_platform() -> Platform:
    return Platform(_platform.system(), _platform.machine())


#: what a Linux host with an NVIDIA driver has: the driver's control device, or WSL's GPU device
NVIDIA_CONTROL_DEVICES = ("/dev/nvidiactl", "/dev/dxg")


#: CUDA's list of the GPUs this process may use, in the order CUDA numbers them
CUDA_VISIBLE_DEVICES = "CUDA_VISIBLE_DEVICES"


@cache
def detect_gpus() -> tuple[GpuDevice, ...]:
    """The GPUs CUDA numbers 0, 1, ... for this process, read through NVML without importing CUDA:
    CUDA_VISIBLE_DEVICES picks and orders them (:func:`cuda_visible_order`; empty: none), and a
    device NVML may not read (NVML_ERROR_NO_PERMISSION) is left out rather than all of them.
    trtforge builds on and judges the first one, the device TensorRT uses. Without
    CUDA_DEVICE_ORDER=PCI_BUS_ID, CUDA numbers unlike GPUs fastest first, which NVML's PCI bus
    order need not be: set it on hosts that mix GPU models. A machine without driver or GPU answers
    ``()`` without error (on Linux without even importing NVML's bindings: NVML opens the driver's
    control device, so without one there is nothing it could find)."""
    with nvml() as pynvml:
        if pynvml is None:
            return ()
        try:
            driver = _text(pynvml.nvmlSystemGetDriverVersion())
            visible = os.environ.get(CUDA_VISIBLE_DEVICES)
            handles, identities = _nvml_devices(pynvml, with_mig=visible is not None and "MIG-" in visible)
            devices = []
            for index in cuda_visible_order(visible, identities):
                with suppress(pynvml.NVMLError):  # not described: left out, as one NVML cannot open
                    devices.append(_gpu_device(pynvml, index, handles[index], driver))
            return tuple(devices)
        except pynvml.NVMLError:
            return ()


@contextmanager
def nvml() -> Iterator[Any]:
    """NVML's bindings, initialized for the block; None where there is no driver (on Linux known
    without importing them: NVML opens the driver's control device), no bindings, or NVML refuses."""
    if sys.platform == "linux" and not any(os.path.exists(device) for device in NVIDIA_CONTROL_DEVICES):
        yield None
        return
    try:
        import pynvml
    except ImportError as exc:
        raise_if_interrupted(exc)  # Ctrl-C in its import: not "no bindings", which would go on without GPUs
        yield None
        return
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        yield None
        return
    try:
        yield pynvml
    finally:
        pynvml.nvmlShutdown()


def _nvml_devices(pynvml: Any, *, with_mig: bool) -> tuple[dict[int, Any], list[tuple[int, str]]]:
    """The handles of the GPUs NVML can open, by NVML index, and their (index, UUID) pairs, then
    (``with_mig``) each MIG instance's as (its GPU's index, its UUID)."""
    handles: dict[int, Any] = {}
    gpus: list[tuple[int, str]] = []
    instances: list[tuple[int, str]] = []
    for index in range(pynvml.nvmlDeviceGetCount()):
        try:
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            uuid = _text(pynvml.nvmlDeviceGetUUID(handle))
        except pynvml.NVMLError:  # NVML_ERROR_NO_PERMISSION: a device this process cannot open (nor can CUDA)
            continue
        handles[index] = handle
        gpus.append((index, uuid))
        if with_mig:
            instances.extend((index, uuid) for uuid in _mig_uuids(pynvml, handle))
    return handles, gpus + instances


def _mig_uuids(pynvml: Any, handle: Any) -> list[str]:
    try:
        slots = pynvml.nvmlDeviceGetMaxMigDeviceCount(handle)
    except pynvml.NVMLError:  # no MIG on this GPU
        return []
    found = []
    for slot in range(slots):
        with suppress(pynvml.NVMLError):  # an empty slot
            found.append(_text(pynvml.nvmlDeviceGetUUID(pynvml.nvmlDeviceGetMigDeviceHandleByIndex(handle, slot))))
    return found


def _gpu_device(pynvml: Any, index: int, handle: Any, driver: str) -> GpuDevice:
    major, minor = pynvml.nvmlDeviceGetCudaComputeCapability(handle)
    memory = pynvml.nvmlDeviceGetMemoryInfo(handle)
    return GpuDevice(
        index=index,
        name=_text(pynvml.nvmlDeviceGetName(handle)),
        compute_capability=ComputeCapability(major, minor),
        driver_version=driver,
        memory_total=int(memory.total),
        memory_free=int(memory.free),
    )


def cuda_visible_order(visible: str | None, devices: Sequence[tuple[int, str]]) -> tuple[int, ...]:
    """The NVML indices of the GPUs CUDA numbers 0, 1, ..., in that order (pure).

    ``devices``: (NVML index, ``GPU-`` UUID) of each GPU this process can open, in NVML order, and
    possibly (its GPU's index, ``MIG-`` UUID) of MIG instances. ``visible`` is CUDA_VISIBLE_DEVICES
    (None: unset, every GPU): comma-separated CUDA indices, or UUID prefixes that name one device
    (``GPU-8932f937``, ``MIG-…``, ``MIG-GPU-…/1/0``); as CUDA does, the list ends at the first entry
    that names no device (or one already named), so an empty value hides every GPU. An index counts
    the GPUs CUDA can open in NVML's (PCI bus) order: CUDA's only with CUDA_DEVICE_ORDER=PCI_BUS_ID.
    """
    gpus = [(index, uuid) for index, uuid in devices if uuid.startswith("GPU-")]
    if visible is None:
        return tuple(index for index, _ in gpus)
    order: list[int] = []
    for entry in visible.split(","):
        index = _visible_device(entry.strip(), gpus, devices)
        if index is None or index in order:
            break
        order.append(index)
    return tuple(order)


def _visible_device(entry: str, gpus: Sequence[tuple[int, str]], devices: Sequence[tuple[int, str]]) -> int | None:
    """The NVML index one CUDA_VISIBLE_DEVICES entry names, or None."""
    if entry.isdigit():
        position = int(entry)
        return gpus[position][0] if position < len(gpus) else None
    candidates = devices
    if entry.startswith("MIG-GPU-"):  # the older MIG form: MIG-<GPU UUID>/<GPU instance>/<compute instance>
        entry, candidates = entry.removeprefix("MIG-").partition("/")[0], gpus
    if not entry.startswith(("GPU-", "MIG-")):
        return None
    named = {uuid: index for index, uuid in candidates if uuid.startswith(entry)}
    return next(iter(named.values())) if len(named) == 1 else None


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


def import_backend(flavor: str) -> ModuleType:
    """Import the TensorRT module of a flavor, or say which pip extra installs it (a Ctrl-C in its
    init is the KeyboardInterrupt it is, not a broken install: exit 130, not 2)."""
    module_name = BACKEND_MODULES[flavor]
    try:
        return importlib.import_module(module_name)
    except Exception as exc:  # the PyPI stub of `tensorrt` raises at import time, not ImportError
        raise_if_interrupted(exc)
        raise BackendUnavailableError(import_failure(flavor, _shipping_wheel(module_name), first_line(exc))) from exc


def import_failure(flavor: str, wheel: tuple[str, str] | None, error: str) -> str:
    """What to do about a flavor whose module does not import with ``error`` (pure). ``wheel``
    (``{module}_cu{N}``, its version) is there: a library it loads may be missing or the wrong one,
    so its wheels are reinstalled; none: the flavor's pip extra installs it."""
    if wheel is not None:
        name, version = wheel
        reinstall = " ".join(f"{name}{part}=={version}" for part in ("", "_libs", "_bindings"))
        driver = "check that the GPU driver's libraries are found, or " if flavor == FLAVOR_TENSORRT else ""
        return (
            f"{flavor} {version} is installed but does not import ({error}); {driver}reinstall "
            f"its wheels (and the CUDA runtime they need): pip install --force-reinstall {reinstall}"
        )
    return (
        f"{flavor} is not installed (import {BACKEND_MODULES[flavor]} failed: {error}); "
        f"install it with: pip install 'trtforge[{PIP_EXTRAS[flavor]}]'"
    )


#: CUDA majors of the wheels that ship a flavor's module (``{module}_cu{N}``, and its
#: ``_bindings``), whose metadata version is the module's ``__version__``; the bare ``tensorrt``
#: and ``tensorrt_rtx`` distributions are meta packages (or PyPI's stub) and are not trusted
WHEEL_CUDA_MAJORS = (13, 12, 11)


@cache
def installed_version(flavor: str) -> str | None:
    """Version of an installed flavor, from its wheel's metadata (importing TensorRT costs
    ~50 ms and more, and only its version is wanted); where no shipping wheel is found (a
    source or conda install, PyPI's stub) the module is imported, and None when it does not import."""
    module_name = BACKEND_MODULES[flavor]
    if importlib.util.find_spec(module_name) is None:
        return None
    wheel = _shipping_wheel(module_name)
    if wheel is not None:
        return wheel[1]
    try:
        version = getattr(import_backend(flavor), "__version__", None)  # None: a leftover folder, no module
    except BackendUnavailableError:
        return None
    return str(version) if version is not None else None


def installed_flavor() -> str | None:
    """The one TensorRT flavor installed here (:func:`only_flavor`)."""
    return only_flavor([flavor for flavor in FLAVORS if installed_version(flavor) is not None])


def only_flavor(installed: Sequence[str]) -> str | None:
    """The one flavor of those ``installed`` (None: neither, pure); with both, which one a target
    runs is the caller's to say."""
    if len(installed) > 1:
        raise InvalidInputError(
            f"both {' and '.join(installed)} are installed here: say which runtime the target runs, "
            "e.g. Target(flavor='tensorrt-rtx', compute_capability='8.6')"
        )
    return installed[0] if installed else None


def _shipping_wheel(module_name: str) -> tuple[str, str] | None:
    """(``{module}_cu{N}``, its version) of the installed wheels that ship ``module_name``."""
    for cuda in WHEEL_CUDA_MAJORS:
        base = f"{module_name}_cu{cuda}"
        for name in (base, f"{base}_bindings"):
            with suppress(metadata.PackageNotFoundError):
                return base, metadata.version(name)
    return None


@dataclass(frozen=True)
class Choice:
    """A TensorRT flavor and why it was chosen (``ci`` re-checks it without importing the backends)."""

    flavor: str
    reason: str


def choose_backend(requested: str) -> Choice:
    """Resolve ``auto``: enterprise TensorRT when it is installed and a GPU is present, else
    TensorRT-RTX. Installed by its wheel's metadata (``installed_version``): choosing imports
    nothing, so ``ci`` settles unchanged specs without TensorRT, and a broken wheel install is the
    build's error to name (``import_backend``), not a silent switch to another runtime. A module
    without wheel metadata (a source or conda install) counts as installed when it imports."""
    if requested != "auto":
        return Choice(requested, f"{requested} requested")
    has_trt = installed_version(FLAVOR_TENSORRT) is not None
    return auto_choice(
        has_trt,
        lambda: importlib.util.find_spec(BACKEND_MODULES[FLAVOR_TENSORRT]) is not None,
        detect_gpus() if has_trt else (),  # NVML only where it decides
        lambda: installed_version(FLAVOR_RTX) is not None,
    )


def auto_choice(
    has_trt: bool, trt_found: Callable[[], bool], gpus: Sequence[GpuDevice], has_rtx: Callable[[], bool]
) -> Choice:
    """``auto``'s rule (pure but for the questions it asks): enterprise TensorRT where it is installed
    (``has_trt``) and a GPU is present, else TensorRT-RTX, and why. ``trt_found``: a ``tensorrt``
    module is on the path, so one that is not installed is there and does not import. Each question
    is asked only where it decides: TensorRT-RTX without wheel metadata (a tarball's wheel) is
    imported to answer ``has_rtx``, which a build on enterprise TensorRT must not pay for."""
    if has_trt and gpus:
        return Choice(FLAVOR_TENSORRT, f"tensorrt is installed and a GPU is present ({gpus[0].name})")
    if not has_rtx():
        raise BackendUnavailableError(
            "no TensorRT backend is installed: pip install 'trtforge[rtx]' (CPU-only builds) "
            "or 'trtforge[tensorrt]' (on a GPU host)"
        )
    if has_trt:
        why = "no GPU detected"
    elif trt_found():
        why = "tensorrt does not import"
    else:
        why = "tensorrt is not installed"
    return Choice(FLAVOR_RTX, f"{why}; tensorrt-rtx builds on the CPU")


def detect_environment(
    *,
    flavor: str | None = None,
    version: str | None = None,
    compute_capability: ComputeCapability | None = None,
    platform: Platform | None = None,
    device: int = 0,
) -> Environment:
    """This host, with any value overridden (to check against a target this host is not).

    ``flavor`` picks the runtime whose installed version is detected (a manifest's flavor,
    usually); ``version`` without ``flavor`` is meaningless and left to the caller to pair.
    """
    gpus = detect_gpus()
    overridden = version is not None or compute_capability is not None or platform is not None
    if compute_capability is None and gpus:
        compute_capability = gpus[min(device, len(gpus) - 1)].compute_capability
    if flavor is not None and version is None:
        version = installed_version(flavor)
    return Environment(
        platform=platform or detect_platform(),
        flavor=flavor,
        version=version,
        compute_capability=compute_capability,
        gpus=gpus,
        overridden=overridden,
    )


@dataclass(frozen=True, init=False)
class Target:
    """Overrides of detected values, so CI can check an engine against a deployment target.

    The fields hold parsed values; the constructor also takes their text (its own signature, so
    that type checkers accept ``Target(compute_capability="8.6")`` as the runtime does)."""

    flavor: str | None
    version: str | None
    compute_capability: ComputeCapability | None
    platform: Platform | None

    def __init__(
        self,
        flavor: str | None = None,
        version: str | None = None,
        compute_capability: ComputeCapability | str | None = None,
        platform: Platform | str | None = None,
    ) -> None:
        """Text is parsed as the CLI flags are (``"8.6"``, ``"sm86"``, ``"linux_x86_64"``); anything
        else that is not the value's type is refused here, not deep inside a check."""
        if flavor is not None and flavor not in FLAVORS:
            raise InvalidInputError(f"Target flavor {flavor!r}: one of {', '.join(FLAVORS)}")
        if version is not None:
            try:
                parse_trt_version(version)
            except ValueError as exc:
                raise InvalidInputError(f"Target version: {exc}") from exc
        values: dict[str, object] = {"compute_capability": compute_capability, "platform": platform}
        for field, kind in (("compute_capability", ComputeCapability), ("platform", Platform)):
            value = values[field]
            if isinstance(value, str):
                try:
                    values[field] = kind.parse(value)
                except ValueError as exc:
                    raise InvalidInputError(f"Target {field}: {exc}") from exc
            elif value is not None and not isinstance(value, kind):
                raise InvalidInputError(f"Target {field} {value!r}: a {kind.__name__} or its text")
        for field, value in {"flavor": flavor, "version": version, **values}.items():
            object.__setattr__(self, field, value)  # frozen: set once, here

    def environment(self, default_flavor: str | None = None) -> Environment:
        """This host with the target's values put over it. The runtime is the target's flavor, else
        ``default_flavor`` (the engine's), else the one installed here, as ``check`` takes it: an
        environment without one would refuse every engine as "not installed"."""
        return detect_environment(
            flavor=self.flavor or default_flavor or installed_flavor(),
            version=self.version,
            compute_capability=self.compute_capability,
            platform=self.platform,
        )


# ---------------------------------------------------------------- an engine file


def measure_engine(
    engine: Path, manifest: Manifest, *, keep_bytes: bool = False, disk_cache: bool = False
) -> tuple[ArtifactFacts, bytearray | None]:
    """The one "size, then sha256" measure of an engine file against its manifest.

    A missing file or one of the wrong size is not hashed (that already refuses it). With ``keep_bytes``
    the bytes that were hashed come back too, so the loader deserializes exactly what it
    checked (no second read that a writer could slip a different file into). The engine is hashed
    in this process unless ``disk_cache`` (``ci`` asking whether its own artifact is unchanged): a
    decision to trust it never takes the digest cache's word (:func:`trtforge.digests.sha256_file`).
    """
    if not engine.is_file():
        return ArtifactFacts(engine_file=engine.name, engine_missing=True), None
    size = engine.stat().st_size
    if size != manifest.artifact.size:
        return ArtifactFacts(engine_file=engine.name, engine_size=size), None
    if not keep_bytes:
        digest = sha256_file(engine, disk_cache=disk_cache)
        return ArtifactFacts(engine_file=engine.name, engine_size=size, engine_sha256=digest), None
    data, digest = read_hashed(engine, size)
    return ArtifactFacts(engine_file=engine.name, engine_size=len(data), engine_sha256=digest), data


def file_problem(manifest: Manifest, engine: Path, *, disk_cache: bool = False) -> str | None:
    """Rule 5 (``compat.content_problem``) on an engine file on disk; None when it is the manifest's
    engine (``disk_cache``: as :func:`measure_engine`)."""
    return content_problem(manifest, measure_engine(engine, manifest, disk_cache=disk_cache)[0])
