"""Where may an engine run? The rules, pure: values in, problems out.

``problems()`` is the one rule function: ``check``, the runtime loader, ``pull`` and
``trtforge.selection.select_engine`` (which ranks what passes) all judge with it. What it judges
is measured elsewhere (``trtforge.environment``: this host, a target, an engine file's size and
sha256; ``trtforge.selection.signature_facts``: the signature), so nothing here touches NVML,
TensorRT, signing or the disk. Every message says what differs and what to do about it, because
the person reading it is usually a CI log reader who cannot ask the engine why.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING

from trtforge.errors import IncompatibleEngineError, InvalidInputError, one_line
from trtforge.tags import (
    AMPERE,
    FLAVOR_RTX,
    FLAVOR_TENSORRT,
    RTX_COMPUTE_CAPABILITIES,
    TRT_VERSION_RULE,
    ComputeCapability,
    Platform,
    parse_trt_version,
)

if TYPE_CHECKING:
    from trtforge.keys import TrustedKey
    from trtforge.manifest import Manifest, TensorRTInfo

#: pip extra per flavor
PIP_EXTRAS = {FLAVOR_TENSORRT: "tensorrt", FLAVOR_RTX: "rtx"}
PRODUCT_NAMES = {FLAVOR_TENSORRT: "TensorRT", FLAVOR_RTX: "TensorRT-RTX"}

#: Where no GPU is there is nothing to load on: the advice is to judge for a target GPU, through what
#: takes one (``load_engine``, ``load_best`` and ``EnginePool`` take no target: they load here).
NO_GPU_MESSAGE = (
    "no GPU detected: judge the engine for a target GPU with --cc (trtforge check, pull), or from "
    "Python with check_compatibility(..., target=Target(compute_capability=...)) or select_artifact(..., "
    "target=...); load_engine, load_best and EnginePool deserialize it here, which needs a GPU"
)


@dataclass(frozen=True)
class GpuDevice:
    index: int
    name: str
    compute_capability: ComputeCapability
    driver_version: str
    memory_total: int
    memory_free: int


@dataclass(frozen=True)
class Environment:
    """What an engine is checked against: this host (detected) or a deployment target (flags).

    ``gpus`` holds only GPUs really detected here (never the overrides): the loader needs a
    real one before it asks the runtime anything.
    """

    platform: Platform
    flavor: str | None = None
    version: str | None = None
    compute_capability: ComputeCapability | None = None
    gpus: tuple[GpuDevice, ...] = ()
    overridden: bool = False

    @property
    def where(self) -> str:
        """How messages name it: "this host" or "the target"."""
        return "the target" if self.overridden else "this host"

    def describe(self) -> str:
        if self.flavor and self.version:
            runtime = f"{product(self.flavor)} {self.version}"
        else:  # a flavor without its version: that runtime is not installed
            runtime = f"no {product(self.flavor)} runtime" if self.flavor else "no TensorRT runtime"
        gpu = f"compute capability {self.compute_capability}" if self.compute_capability else "no GPU"
        return f"{runtime}, {gpu}, {self.platform.tag}"

    def to_dict(self) -> dict[str, object]:
        return {
            "flavor": self.flavor,
            "version": self.version,
            "compute_capability": str(self.compute_capability) if self.compute_capability else None,
            "platform": self.platform.tag,
            "gpus": [
                {"index": g.index, "name": g.name, "compute_capability": str(g.compute_capability)} for g in self.gpus
            ],
            "overridden": self.overridden,
        }


class Rule(str, Enum):
    """The README's seven rules ("Compatibility checks"; the last, host code, is policy), then
    what ``check`` and the loader add: the runtime's own header check, and a missing manifest
    (nothing says what the engine is, so no other rule can be judged)."""

    PLATFORM = "platform"
    FLAVOR = "flavor"
    VERSION = "version"
    GPU = "gpu"
    SHA256 = "sha256"
    SIGNATURE = "signature"
    HOST_CODE = "host_code"  # policy: version-compatible engines run code embedded in the engine
    RUNTIME = "runtime"  # the runtime's own header check (get_engine_validity) said no
    MANIFEST = "manifest"  # no manifest beside the engine


@dataclass(frozen=True)
class Problem:
    """One failed rule, with a sentence a person can act on."""

    rule: Rule
    message: str

    def to_dict(self) -> dict[str, str]:
        return {"rule": self.rule.value, "message": self.message}


class Refused(IncompatibleEngineError):
    """An engine refused by named rules (exit 5): ``problems`` keeps each rule with its message, so
    a ``--json`` document says which rule refused it, not only why."""

    def __init__(self, message: str, problems: Sequence[Problem]) -> None:
        self.problems = tuple(problems)
        super().__init__(message, reasons=[problem.message for problem in self.problems])


class SignatureStatus(str, Enum):
    VALID = "valid"
    MISSING = "missing"  # the manifest has no signature
    INVALID = "invalid"  # names a trusted key but does not verify: changed after signing
    MALFORMED = "malformed"  # an algorithm trtforge does not sign with, or a value that is not base64
    UNKNOWN_KEY = "unknown_key"  # signed, but by none of the trusted keys
    UNCHECKED = "unchecked"  # no trusted key was given, so nothing could be verified


@dataclass(frozen=True)
class ArtifactFacts:
    """What was measured on the artifact (the rules themselves stay pure); None = not measured."""

    engine_file: str | None = None
    engine_missing: bool = False  # the manifest is there, its engine file is not
    engine_size: int | None = None
    engine_sha256: str | None = None
    signature: SignatureStatus = SignatureStatus.UNCHECKED
    signature_key_id: str | None = None


#: A required signature with no key to check it against: refused by every caller alike.
NO_TRUSTED_KEY_MESSAGE = (
    "a signature is required but no trusted key was given: pass --trusted-key FILE "
    "(or set TRTFORGE_TRUSTED_KEY; from Python, LoadPolicy(trusted_keys=load_trusted_keys([path])))"
)


@dataclass(frozen=True)
class LoadPolicy:
    """What the serving side demands beyond "it runs": a trusted signature, no embedded host code.

    ``trusted_keys``: Ed25519 or ECDSA P-256 public keys (``trtforge.signing.load_trusted_keys``); a
    present signature is verified whenever keys are given, ``require_signature`` also refuses
    unsigned manifests (and needs keys: a policy that can verify nothing is a usage error).
    ``allow_host_code``: version-compatible engines embed runtime code that the loader must allow
    to run; keep it False unless the engine is trusted (signed).
    """

    require_signature: bool = False
    trusted_keys: tuple[TrustedKey, ...] = ()
    allow_host_code: bool = False

    def __post_init__(self) -> None:
        """Refused at once (exit 2), with the fix, rather than as a TypeError, an AttributeError or an
        engine refused for its signature later: ``check``, ``pull``, ``serve`` and the loader alike."""
        for flag in ("require_signature", "allow_host_code"):
            if not isinstance(getattr(self, flag), bool):
                raise InvalidInputError(f"LoadPolicy {flag} {getattr(self, flag)!r}: True or False")
        given = self.trusted_keys
        keys = tuple(given) if isinstance(given, Iterable) and not isinstance(given, (str, bytes)) else None
        if keys is None or not all(hasattr(key, "key_id") and hasattr(key, "public_key") for key in keys):
            raise InvalidInputError(
                f"LoadPolicy trusted_keys {given!r}: loaded public keys, "
                "e.g. trusted_keys=trtforge.signing.load_trusted_keys(['signer.pub'])"
            )
        if self.require_signature and not keys:
            raise InvalidInputError(NO_TRUSTED_KEY_MESSAGE)
        object.__setattr__(self, "trusted_keys", keys)  # a list given is kept as the tuple it is typed


#: The default: no signature required, no host code; checks every rule.
DEFAULT_POLICY = LoadPolicy()


# ---------------------------------------------------------------- rules (pure)


def product(flavor: str | None) -> str:
    """``TensorRT`` / ``TensorRT-RTX``: how people name the runtimes in messages."""
    return PRODUCT_NAMES.get(flavor or "", flavor or "TensorRT")


#: A TensorRT version as a wheel's metadata or the module may report it: the release numbers
#: (``tags.parse_trt_version``), then what PEP 440 lets a pre-, post-, dev- or local release add
#: (``10.0.0b6``, ``9.3.0.post12.dev1``, ``10.3.0+cuda12``, ``10.3.0-1``: an implicit post release)
_RELEASE_PART = r"(?:alpha|beta|preview|pre|post|dev|rev|rc|a|b|c|r)(?:[-_.]?\d+)?"
_REPORTED_VERSION = re.compile(
    rf"(?P<release>\d+(?:\.\d+){{0,3}})(?:-\d+)?(?:[-_.]?{_RELEASE_PART}(?:[-_.]{_RELEASE_PART})*)?"
    r"(?:\+[a-z0-9]+(?:[-_.][a-z0-9]+)*)?",
    re.ASCII | re.IGNORECASE,
)


def version_tuple(version: str) -> tuple[int, ...]:
    """A TensorRT version's release numbers: ``10.13.0.35`` -> ``(10, 13, 0, 35)``, ``1.7.1.116`` ->
    ``(1, 7, 1, 116)``; the rules compare them.

    A manifest's version is numbers only (``tags.parse_trt_version``), but a runtime's is what
    its wheel reports (``environment.installed_version``), which may add a PEP 440 pre-, post-,
    dev- or local release part (``10.0.0b6``, ``9.3.0.post12.dev1``): that part is dropped, on
    purpose and only that part, so ``10.0.0b6`` is judged as 10.0.0. Anything else is refused
    (InvalidInputError, exit 2) instead of being read as another version: ``10.x`` is not 10.0.0,
    ``''`` is not 0.0.0 (a ``Target`` or ``Environment`` given such a version, say)."""
    match = _REPORTED_VERSION.fullmatch(version) if isinstance(version, str) else None
    if match is None:
        raise InvalidInputError(f"{version!r} is not a TensorRT version ({TRT_VERSION_RULE})")
    return parse_trt_version(match["release"])


#: the first enterprise TensorRT that builds strongly typed networks only (NVIDIA removed the
#: FP16/INT8 builder flags and the INT8 calibrator in 11.0)
STRONGLY_TYPED_MAJOR = 11


def weakly_typed(flavor: str, version: str) -> bool:
    """Whether this TensorRT picks layer precisions itself (FP16/INT8 builder flags, the INT8
    calibrator): enterprise TensorRT before 11.0; 11.x and TensorRT-RTX take them from the graph."""
    return flavor == FLAVOR_TENSORRT and version_tuple(version)[:1] < (STRONGLY_TYPED_MAJOR,)


#: parts of major.minor.patch: a shorter version means zeros there (``10.3`` is ``10.3.0``)
_RELEASE_PARTS = 3


def comparable_versions(built: str, runtime: str) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """The two versions as the version rule compares them: at the precision both give.

    A runtime reports major.minor.patch.build (``10.3.0.26``); a manifest, a Triton release and
    ``--trt-version`` give that or major.minor.patch (``10.3.0``, the pip wheel's version and what
    TensorRT's engine header records). Nothing says which build ``10.3.0`` was, so ``10.3.0``
    equals ``10.3.0.26``, and ``10.3.0.26`` equals ``10.3.0``, while ``10.3.0.26`` and ``10.3.0.27``
    differ. Parts missing before the patch are zeros, so ``10`` is never "any 10.x".
    """
    first, second = (
        parts + (0,) * (_RELEASE_PARTS - len(parts)) for parts in (version_tuple(built), version_tuple(runtime))
    )
    common = min(len(first), len(second))
    return first[:common], second[:common]


def problems(
    manifest: Manifest,
    env: Environment,
    facts: ArtifactFacts = ArtifactFacts(),
    *,
    require_signature: bool = False,
    allow_host_code: bool = False,
) -> list[Problem]:
    """Every rule (README "Compatibility checks and the runtime loader") that ``manifest`` fails on ``env``.

    Facts that were not measured (None) are not judged: ``pull`` ranks manifests before it
    has the engine bytes, and checks them after the download. The policy (signature, host code)
    is always judged, so ``check``, the loader, ``pull`` and ``select_engine`` refuse alike.
    """
    runtime_rule, runtime_message = runtime_problem(manifest.tensorrt, env)
    checks: list[tuple[Rule, str | None]] = [
        (Rule.PLATFORM, _platform_problem(manifest, env)),
        (runtime_rule, runtime_message),
        (Rule.GPU, _gpu_problem(manifest, env)),
        (Rule.SHA256, content_problem(manifest, facts)),
        (Rule.SIGNATURE, signature_problem(facts, require_signature)),
        (Rule.HOST_CODE, _host_code_problem(manifest, allow_host_code)),
    ]
    # one line each, whatever values a message repeats (a manifest's key id, a file's name on disk)
    return [Problem(rule, one_line(message)) for rule, message in checks if message]


def policy_problems(manifest: Manifest, env: Environment, facts: ArtifactFacts, policy: LoadPolicy) -> list[Problem]:
    """``problems`` under a LoadPolicy (its signature and host-code demands)."""
    return problems(
        manifest, env, facts, require_signature=policy.require_signature, allow_host_code=policy.allow_host_code
    )


def _platform_problem(manifest: Manifest, env: Environment) -> str | None:
    """Rule 1. A TensorRT-RTX engine (built ahead of time on the CPU) is "portable to both Windows
    and Linux" (TensorRT-RTX's documentation): only its machine counts. An enterprise TensorRT
    engine loads on the platform that built it alone (TensorRT's support matrix)."""
    built = Platform(manifest.platform.os, manifest.platform.machine)
    if manifest.tensorrt.flavor == FLAVOR_RTX and built.machine == env.platform.machine:
        return None
    if built == env.platform:
        return None
    across = "machines" if manifest.tensorrt.flavor == FLAVOR_RTX else "platforms"
    return (
        f"engine was built for {built.tag}, {env.where} is {env.platform.tag}: engines are not portable "
        f"across {across}; build (or pull) the engine tagged {env.platform.tag}"
    )


def runtime_problem(trt: TensorRTInfo, env: Environment) -> tuple[Rule, str | None]:
    """Rules 2 and 3: the flavor, then (same flavor only) the version. They read only the
    manifest's ``tensorrt`` section, so ``build --triton`` judges a build with them before it runs."""
    built = product(trt.flavor)
    if env.flavor is not None and trt.flavor != env.flavor:  # another runtime, installed or not
        return Rule.FLAVOR, (
            f"engine was built with {built}, {env.where} runs {product(env.flavor)}: the two runtimes "
            f"cannot load each other's engines; run it with {built}, or rebuild with backend: {env.flavor}"
        )
    if env.flavor is None or env.version is None:
        return Rule.FLAVOR, (
            f"engine needs the {built} runtime, {env.where} has no {built} runtime "
            f"installed: pip install 'trtforge[{PIP_EXTRAS[trt.flavor]}]', or pass --flavor {trt.flavor} "
            "--trt-version V to check against a target"
        )
    return Rule.VERSION, _version_problem(trt, env.version, env.where)


#: (builder major, runtime major) pairs where a version-compatible engine loads across majors, as
#: NVIDIA's pages list them: TensorRT 8 on 9 and 10, TensorRT 9 on 10 (10.x's "Version
#: Compatibility": "TensorRT 8 or TensorRT 9 engines with TensorRT 10"), TensorRT 10 on 11 (the
#: 11.x support matrix; "no other combination across major versions": an 8 does not load on 11)
CROSS_MAJOR_VERSION_COMPATIBLE = frozenset({(8, 9), (8, 10), (9, 10), (10, 11)})


def version_compatible_majors(built_major: int) -> tuple[int, ...]:
    """The runtime majors a version-compatible engine built with ``built_major`` loads on."""
    later = sorted(runtime for builder, runtime in CROSS_MAJOR_VERSION_COMPATIBLE if builder == built_major)
    return (built_major, *later)


def _version_problem(trt: TensorRTInfo, runtime: str, where: str) -> str | None:
    """Rule 3, on the versions at the precision both give (``comparable_versions``). The advice
    follows the flavor: TensorRT-RTX refuses ``version_compatible``, so it is never offered there."""
    product_name, built = product(trt.flavor), trt.version
    built_tuple, runtime_tuple = comparable_versions(built, runtime)
    if not trt.version_compatible:
        if built_tuple == runtime_tuple:
            return None
        if trt.flavor == FLAVOR_RTX:
            return (
                f"engine was built with {product_name} {built}, {where} runs {runtime}: a {product_name} engine "
                f"loads only on the release that built it; rebuild with {product_name} {runtime}"
            )
        return (
            f"engine was built with {product_name} {built}, {where} runs {runtime}: a plain engine loads "
            f"only on the exact version that built it; rebuild with {runtime}, or build with "
            "build.version_compatible: true"
        )
    majors = (built_tuple[0], runtime_tuple[0])
    if majors[0] != majors[1] and majors not in CROSS_MAJOR_VERSION_COMPATIBLE:
        loads_on = ", ".join(f"{major}.x" for major in version_compatible_majors(majors[0]))
        return (
            f"version-compatible engine from {product_name} {built} loads only on {product_name} "
            f"{loads_on}, {where} runs {runtime}: rebuild with {product_name} {runtime_tuple[0]}.x"
        )
    if runtime_tuple < built_tuple:
        return (
            f"version-compatible engine from {product_name} {built} needs a runtime at least as new, "
            f"{where} runs the older {runtime}: upgrade the runtime to {built} or later, or rebuild "
            f"with {runtime}"
        )
    return None


def _gpu_problem(manifest: Manifest, env: Environment) -> str | None:
    cc = env.compute_capability
    if cc is None:
        return NO_GPU_MESSAGE
    gpu = manifest.gpu
    if gpu.hardware_compatibility == "ampere_plus":  # the manifest holds and_later_from 8.0 (manifest.GpuInfo)
        if cc < AMPERE:
            rtx = f" (or with targets: ['{cc}'] on tensorrt-rtx)" if cc in RTX_COMPUTE_CAPABILITIES else ""
            return (
                f"engine runs on compute capability {AMPERE} and later (ampere_plus), {env.where}'s "
                f"GPU is {cc}: rebuild on a {cc} GPU without hardware_compatibility{rtx}"
            )
        return None
    capabilities = sorted(ComputeCapability.parse(text) for text in gpu.compute_capabilities)
    if cc in capabilities:
        return None
    listed = ", ".join(str(c) for c in capabilities) or "no compute capability"
    return (
        f"engine was built for compute capability {listed}, {env.where}'s GPU is {cc}: "
        f"{retarget_advice(manifest.tensorrt.flavor, cc)}, or pull the engine tagged {cc.sm}"
    )


def device_model_note(manifest: Manifest, env: Environment) -> str | None:
    """A plan tuned on one GPU model checked on another of the same compute capability: TensorRT
    only warns ("Using an engine plan file across different models of devices is not recommended
    and is likely to affect performance or even cause errors"), so this is a note, not a rule.
    Judged on this host's own GPU only (a target from flags has no model). Pure."""
    built = (manifest.gpu.build_device or {}).get("name")
    if manifest.gpu.hardware_compatibility != "none" or not built or env.overridden or not env.gpus:
        return None
    here = env.gpus[0]
    if here.name == built or str(here.compute_capability) not in manifest.gpu.compute_capabilities:
        return None
    return (
        f"built on {built}, this GPU is {here.name}: TensorRT tunes a plan for the GPU model that built it, and "
        "another model of the same compute capability may run it slower or fail; rebuild on this model, or "
        "build with hardware_compatibility: same_compute_capability"
    )


def retarget_advice(flavor: str, cc: ComputeCapability) -> str:
    """How to get an engine for ``cc``: TensorRT-RTX compiles only for its own list of GPUs."""
    if flavor != FLAVOR_RTX:
        return f"rebuild on a {cc} GPU (enterprise TensorRT builds for the GPU it runs on)"
    if cc in RTX_COMPUTE_CAPABILITIES:
        return f"rebuild with targets: ['{cc}']"
    listed = ", ".join(str(c) for c in RTX_COMPUTE_CAPABILITIES)
    return (
        f"TensorRT-RTX cannot compile for {cc} (it supports {listed}), so build it with backend: tensorrt "
        f"(enterprise TensorRT) on a {cc} GPU"
    )


def content_problem(manifest: Manifest, facts: ArtifactFacts) -> str | None:
    """Rule 5: the engine is there, its bytes are the ones the manifest describes (size first: the
    cheaper clue), and so is its file name: a signed artifact copied under another one's name is
    refused, not served as the model that name says."""
    artifact = manifest.artifact
    other_file = facts.engine_file is not None and facts.engine_file != artifact.file
    whose = f"; this manifest describes {artifact.file}, not {facts.engine_file}" if other_file else ""
    if facts.engine_missing:
        return (
            f"engine file {facts.engine_file or artifact.file} is missing beside its manifest: copy or download "
            "the .engine together with its .manifest.json"
        )
    if facts.engine_size is not None and facts.engine_size != artifact.size:
        kind = "truncated" if facts.engine_size < artifact.size else "grown"
        return (
            f"engine file is {facts.engine_size:,} bytes, the manifest says {artifact.size:,} ({kind} or "
            f"not the engine this manifest describes{whose}): download or rebuild the artifact"
        )
    if facts.engine_sha256 is not None and facts.engine_sha256 != artifact.sha256:
        return (
            f"engine sha256 {facts.engine_sha256[:12]}… differs from the manifest's {artifact.sha256[:12]}… "
            f"(damaged, or not the engine this manifest describes{whose}): download or rebuild the artifact"
        )
    if other_file:  # as pip refuses a wheel whose file name is not its metadata's
        return (
            f"engine file {facts.engine_file} is not the file this manifest describes ({artifact.file}): a renamed "
            "artifact may stand in for another model; give the engine and its manifest the names the build gave them"
        )
    return None


#: Why a malformed signature cannot be checked (what trtforge sign writes, and so reads).
MALFORMED_SIGNATURE = "its algorithm is not ed25519 or ecdsa-p256, or its value is not base64"


def signature_text(facts: ArtifactFacts) -> str:
    """What the signature facts say, for ``check`` and ``inspect`` alike: only a trusted key makes a
    signature worth anything, so an unverified one is never shown as "signed" alone."""
    key = facts.signature_key_id
    return {
        SignatureStatus.VALID: f"valid, by trusted key {key}",
        SignatureStatus.MISSING: "not signed",
        SignatureStatus.INVALID: f"INVALID (key {key}): changed after signing",
        SignatureStatus.MALFORMED: f"MALFORMED (key {key}): {MALFORMED_SIGNATURE}",
        SignatureStatus.UNKNOWN_KEY: f"signed by key {key}, which is not a trusted key",
        SignatureStatus.UNCHECKED: f"signed by key {key} (not verified: pass --trusted-key to verify)",
    }[facts.signature]


def signature_problem(facts: ArtifactFacts, required: bool) -> str | None:
    """Rule 6: a signature that does not verify (or cannot be read) always refuses; a missing or
    untrusted one when required."""
    key = f" {facts.signature_key_id}" if facts.signature_key_id else ""
    status = facts.signature
    if status is SignatureStatus.INVALID:
        return (
            f"signature by trusted key{key} does not verify: the manifest or the engine it pins was changed "
            "after signing; do not load it, fetch the artifact again from its source"
        )
    if status is SignatureStatus.MALFORMED:
        return f"signature by key{key} cannot be verified: {MALFORMED_SIGNATURE}; re-sign it (trtforge sign)"
    if status is SignatureStatus.UNKNOWN_KEY and required:
        return (
            f"manifest is signed by key{key}, which is not among the trusted keys: pass that key's public "
            "file with --trusted-key if you trust it, or re-sign with a trusted key (trtforge sign)"
        )
    if status is SignatureStatus.MISSING and required:
        return "manifest is not signed and policy requires a signature: sign it with trtforge sign ENGINE --key FILE"
    if status is SignatureStatus.UNCHECKED and required:
        return NO_TRUSTED_KEY_MESSAGE
    return None


def _host_code_problem(manifest: Manifest, allowed: bool) -> str | None:
    """Rule 7: a version-compatible engine runs host code shipped inside it (TensorRT's lean runtime)."""
    if not manifest.tensorrt.version_compatible or allowed:
        return None
    return (
        "version-compatible engine runs host code embedded in the engine, which this policy forbids: "
        "allow it (--allow-host-code, LoadPolicy(allow_host_code=True)) only for trusted, signed engines"
    )


def describe_problems(found: Sequence[Problem]) -> str:
    return "; ".join(problem.message for problem in found)
