"""Compatibility tags: small frozen values, like ``packaging.tags`` for wheels.

An engine's file name says where it runs: ``{name}-{precision}-{flavor}{version}-{gpus}-{platform}``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import total_ordering
from typing import Literal, get_args

#: the two spellings of a compute capability, ASCII digits only (``\d`` would take ``٨.٦``)
_DOTTED_TEXT = r"([1-9][0-9]?)\.([0-9])"
_SM_TEXT = r"[sS][mM]_?([1-9][0-9]{1,2})"
_DOTTED = re.compile(f"^{_DOTTED_TEXT}$")
_SM = re.compile(f"^{_SM_TEXT}$")
#: what :meth:`ComputeCapability.parse` reads, as the JSON Schema's pattern for the text form
CAPABILITY_PATTERN = rf"^\s*(?:{_DOTTED_TEXT}|{_SM_TEXT})\s*$"

#: Longest OCI tag (the distribution spec's limit); ``{name}-{precision}-{tag}`` must fit.
MAX_OCI_TAG = 128

#: The one name rule (spec ``name``, a manifest's ``name``, ``--name``, registry folders): a
#: lowercase letter or digit first, so a name is never ``.``, ``..``, a hidden file, a CLI option
#: or a path.
NAME_PATTERN = r"^[a-z0-9][a-z0-9._-]*$"
MAX_NAME_LENGTH = 64
NAME_RULE = "a lowercase letter or digit, then lowercase letters, digits, '.', '_' or '-' (64 at most)"


def valid_name(name: str) -> bool:
    return len(name) <= MAX_NAME_LENGTH and re.fullmatch(NAME_PATTERN, name) is not None


FLAVOR_TENSORRT = "tensorrt"
FLAVOR_RTX = "tensorrt-rtx"
FLAVORS = (FLAVOR_TENSORRT, FLAVOR_RTX)
#: the TensorRT flavor an engine is built with, as specs, manifests and tags name it
Flavor = Literal["tensorrt", "tensorrt-rtx"]

#: an engine's precision, as specs, manifests, artifact names and ``--precision`` name it
Precision = Literal["fp32", "fp16", "int8"]
PRECISIONS: tuple[Precision, ...] = get_args(Precision)


@total_ordering
@dataclass(frozen=True)
class ComputeCapability:
    """A CUDA compute capability such as 8.6."""

    major: int
    minor: int

    @classmethod
    def parse(cls, text: str | float | int) -> ComputeCapability:
        """The one normalizer: accepts ``8.6``, ``"8.6"``, ``sm86``, ``sm_86``, ``SM120``."""
        raw = str(text).strip()
        dotted = _DOTTED.match(raw)
        if dotted:
            return cls(int(dotted.group(1)), int(dotted.group(2)))
        sm = _SM.match(raw)
        if sm:
            digits = sm.group(1)
            return cls(int(digits[:-1]), int(digits[-1]))
        raise ValueError(f"'{raw}' is not a compute capability; write it as 8.6, sm86 or sm_86")

    def __str__(self) -> str:
        return f"{self.major}.{self.minor}"

    @property
    def sm(self) -> str:
        """The tag spelling, ``sm86``."""
        return f"sm{self.major}{self.minor}"

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, ComputeCapability):
            return NotImplemented
        return (self.major, self.minor) < (other.major, other.minor)


AMPERE = ComputeCapability(8, 0)


#: machines as trtforge writes them (Python's ``platform.machine()`` on Linux)
MACHINES = ("x86_64", "aarch64")
#: other spellings of them (Windows, macOS, Debian, wheel tags), read as trtforge's
MACHINE_ALIASES = {"amd64": "x86_64", "arm64": "aarch64"}


def canonical_machine(machine: str) -> str:
    """``AMD64`` -> ``x86_64``, ``arm64`` -> ``aarch64``: one spelling per machine, so a tag,
    a flag and a detected host compare equal."""
    lowered = machine.lower()
    return MACHINE_ALIASES.get(lowered, lowered)


@dataclass(frozen=True)
class Platform:
    """Operating system and machine, as the tag writes them (``linux_x86_64``)."""

    os: str
    machine: str

    def __post_init__(self) -> None:
        """One spelling per value, whoever builds it: ``Platform("linux", "amd64")`` is linux_x86_64 and
        ``Platform("Windows", "AMD64")`` win_amd64, so a platform made by hand (``Target(platform=...)``)
        compares equal to the one a tag, a flag or this host's detection gives."""
        os_name = self.os.lower()
        object.__setattr__(self, "os", "windows" if os_name.startswith("win") else os_name)
        object.__setattr__(self, "machine", canonical_machine(self.machine))

    @property
    def tag(self) -> str:
        if self.os == "windows":
            return "win_amd64" if self.machine == "x86_64" else f"win_{self.machine}"
        return f"{self.os}_{self.machine}"

    @classmethod
    def parse(cls, text: str) -> Platform:
        """``linux_x86_64``, ``linux_aarch64``, ``win_amd64``; the other spellings of a machine
        (``linux_amd64``, ``linux_arm64``) mean the same, anything else is refused."""
        raw = text.strip().lower()
        os_name, sep, machine = raw.partition("_")
        usage = "use linux_x86_64, linux_aarch64 or win_amd64"
        if not sep or not machine or os_name not in ("linux", "windows", "win"):
            raise ValueError(f"'{text}' is not a platform; {usage}")
        if canonical_machine(machine) not in MACHINES:
            known = ", ".join([*MACHINES, *MACHINE_ALIASES])
            raise ValueError(f"'{text}': '{machine}' is not a machine trtforge knows ({known}); {usage}")
        return cls(os_name, machine)


#: The compute capabilities TensorRT-RTX compiles for (its ``ComputeCapability`` enum, 1.x); advice
#: to rebuild for any other GPU must name enterprise TensorRT instead.
RTX_COMPUTE_CAPABILITIES = tuple(ComputeCapability.parse(cc) for cc in ("7.5", "8.0", "8.6", "8.9", "12.0", "12.1"))


def flavor_prefix(flavor: str) -> str:
    return "rtx" if flavor == FLAVOR_RTX else "trt"


#: How a TensorRT version is written, enterprise or RTX: as a manifest holds it and ``--trt-version``,
#: a ``Target`` and the Triton release table give it (``parse_trt_version``); a runtime's wheel may
#: add a pre-, post- or dev-release part to it (``compat.version_tuple`` drops that part).
TRT_VERSION_RULE = "up to four numbers and dots, e.g. 10.13.0.35"
_TRT_VERSION = re.compile(r"\d+(?:\.\d+){0,3}", re.ASCII)


def parse_trt_version(text: str) -> tuple[int, ...]:
    """``10.13.0.35`` -> ``(10, 13, 0, 35)``; ``1.7.1.116`` (TensorRT-RTX), ``10.3.0``, ``10`` too.

    The one rule for a TensorRT version: major[.minor[.patch[.build]]], ASCII digits only. A caller
    may ask for more parts than one (a manifest's version names a minor, which its tag carries).
    ValueError for anything else: an empty part, a fifth, a letter (``10.x`` is not "any 10"), a
    space or newline, a digit of another script. Triton's ``YY.MM`` releases and CUDA's versions are
    other things (``triton_releases``). Pure.
    """
    if not isinstance(text, str) or _TRT_VERSION.fullmatch(text) is None:
        raise ValueError(f"{text!r} is not a TensorRT version ({TRT_VERSION_RULE})")
    return tuple(int(part) for part in text.split("."))


def short_version(flavor: str, version: str, version_compatible: bool) -> str:
    """``rtx1.7``, ``trt10.13``; a version-compatible engine runs on every later runtime of its
    major version (and of the majors NVIDIA lists, ``compat.CROSS_MAJOR_VERSION_COMPATIBLE``), so its
    tag carries only the major (``trt10``, ``rtx1``)."""
    parts = version.split(".")
    kept = parts[:1] if version_compatible else parts[:2]
    return f"{flavor_prefix(flavor)}{'.'.join(kept)}"


def gpus_tag(capabilities: tuple[ComputeCapability, ...], and_later_from: ComputeCapability | None) -> str:
    """``sm86.sm89`` (the listed GPUs), ``sm80plus`` (that GPU and later ones) or ``anygpu`` (none
    listed); ``EngineTag.render`` shortens a list too long for a tag to its range."""
    if and_later_from is not None:
        return f"{and_later_from.sm}plus"
    ordered = sorted(set(capabilities))
    if not ordered:
        return "anygpu"
    return ".".join(cc.sm for cc in ordered)


@dataclass(frozen=True)
class EngineTag:
    """Where an engine runs; its string form is the artifact tag."""

    flavor: str
    version: str
    version_compatible: bool
    capabilities: tuple[ComputeCapability, ...]
    and_later_from: ComputeCapability | None
    platform: Platform

    def render(self, max_length: int = MAX_OCI_TAG) -> str:
        head = short_version(self.flavor, self.version, self.version_compatible)
        gpus = gpus_tag(self.capabilities, self.and_later_from)
        text = f"{head}-{gpus}-{self.platform.tag}"
        if len(text) > max_length and self.and_later_from is None and self.capabilities:
            ordered = sorted(self.capabilities)
            text = f"{head}-{ordered[0].sm}-{ordered[-1].sm}-{self.platform.tag}"
        return text

    def __str__(self) -> str:
        return self.render()


def artifact_stem(name: str, precision: str, tag: EngineTag) -> str:
    """``{name}-{precision}-{tag}``, guaranteed to be a valid OCI tag."""
    prefix = f"{name}-{precision}-"
    return prefix + tag.render(MAX_OCI_TAG - len(prefix))
