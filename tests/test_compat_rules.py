"""The compatibility rules as a table: manifests x environments -> the rules that fail.

Every rule of README "Compatibility checks and the runtime loader" and its edges (version-compatible with newer,
older and other-major runtimes; ampere_plus on 7.5/8.0/9.0; explicit capability lists;
same_compute_capability; platform; flavor), then ``select_engine``'s preference order.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import sysconfig
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest
from models import need_rtx

from trtforge.cli.common import target_from_flags
from trtforge.compat import (
    DEFAULT_POLICY,
    NO_GPU_MESSAGE,
    ArtifactFacts,
    Environment,
    GpuDevice,
    LoadPolicy,
    Rule,
    SignatureStatus,
    device_model_note,
    problems,
)
from trtforge.digests import sha256_bytes
from trtforge.environment import detect_environment, detect_gpus, file_problem, measure_engine
from trtforge.errors import InvalidInputError
from trtforge.manifest import Manifest, parse_manifest
from trtforge.selection import select_engine
from trtforge.tags import ComputeCapability, EngineTag, Platform, artifact_stem

LINUX = Platform("linux", "x86_64")
SHA = "a" * 64


def manifest_for(
    flavor: str = "tensorrt-rtx",
    version: str = "1.7.1.116",
    version_compatible: bool = False,
    ccs: tuple[str, ...] = ("8.6", "8.9"),
    hardware: str = "none",
    and_later_from: str | None = None,
    build_cc: str | None = None,
    platform: tuple[str, str] = ("linux", "x86_64"),
    created: str = "2026-01-01T00:00:00+00:00",
    name: str = "m",
) -> Manifest:
    """A manifest as trtforge build writes it, with only the compatibility fields varying."""
    tag = EngineTag(
        flavor,
        version,
        version_compatible,
        tuple(ComputeCapability.parse(cc) for cc in ccs),
        ComputeCapability.parse(and_later_from) if and_later_from else None,
        Platform(*platform),
    )
    return Manifest.model_validate(
        {
            "schema": "trtforge/manifest/v1",
            "name": name,
            "precision": "fp32",
            "tag": tag.render(),
            "artifact": {"file": f"{artifact_stem(name, 'fp32', tag)}.engine", "sha256": SHA, "size": 1000},
            "source": {"onnx_sha256": "b" * 64, "spec_sha256": "c" * 64},
            "tensorrt": {"flavor": flavor, "version": version, "version_compatible": version_compatible},
            "gpu": {
                "compute_capabilities": list(ccs),
                "and_later_from": and_later_from,
                "hardware_compatibility": hardware,
                "build_device": {"name": "GPU", "compute_capability": build_cc} if build_cc else None,
            },
            "platform": {"os": platform[0], "machine": platform[1]},
            "profiles": [],
            "io": [],
            "calibration": None,
            "accuracy": None,
            "build": {"trtforge_version": "0.1.0", "created_utc": created, "seconds": 1.0},
        }
    )


def env_for(
    flavor: str | None = "tensorrt-rtx",
    version: str | None = "1.7.1.116",
    cc: str | None = "8.6",
    platform: Platform = LINUX,
    overridden: bool = True,
) -> Environment:
    return Environment(
        platform=platform,
        flavor=flavor,
        version=version,
        compute_capability=ComputeCapability.parse(cc) if cc else None,
        overridden=overridden,
    )


TRT = {"flavor": "tensorrt", "version": "10.13.0.35"}
TRT_VC = {**TRT, "version_compatible": True}
AMPERE_PLUS = {
    "flavor": "tensorrt",
    "version": "10.13.0.35",
    "ccs": (),
    "hardware": "ampere_plus",
    "and_later_from": "8.0",
}


@dataclass(frozen=True)
class Case:
    id: str
    manifest: dict[str, Any]
    env: dict[str, Any]
    rules: tuple[Rule, ...]
    says: tuple[str, ...] = ()  # substrings of the messages: the actionable part
    facts: ArtifactFacts = field(default_factory=ArtifactFacts)
    require_signature: bool = False
    allow_host_code: bool = True  # rules 1-6 judged alone; rule 7 (host-code policy) has its own cases


CASES = [
    # rule 4, explicit capability lists
    Case("rtx-listed-cc", {}, {"cc": "8.6"}, ()),
    Case("rtx-listed-second-cc", {}, {"cc": "8.9"}, ()),
    Case(
        "rtx-unlisted-older-cc",
        {},
        {"cc": "7.5"},
        (Rule.GPU,),
        ("built for compute capability 8.6, 8.9", "GPU is 7.5", "targets: ['7.5']", "sm75"),
    ),
    Case("rtx-unlisted-newer-cc", {}, {"cc": "12.0"}, (Rule.GPU,), ("GPU is 12.0", "sm120")),
    Case("rtx-list-with-120", {"ccs": ("8.6", "8.9", "12.0")}, {"cc": "12.0"}, ()),
    Case("explicit-list-is-exact-not-a-floor", {**TRT, "ccs": ("8.0",)}, {**TRT, "cc": "8.6"}, (Rule.GPU,)),
    Case("no-gpu", {}, {"cc": None, "overridden": False}, (Rule.GPU,), (NO_GPU_MESSAGE,)),
    # rule 4, ampere_plus
    Case(
        "ampere-plus-on-7.5",
        AMPERE_PLUS,
        {**TRT, "cc": "7.5"},
        (Rule.GPU,),
        ("8.0 and later (ampere_plus)", "GPU is 7.5"),
    ),
    Case("ampere-plus-on-8.0", AMPERE_PLUS, {**TRT, "cc": "8.0"}, ()),
    Case("ampere-plus-on-9.0", AMPERE_PLUS, {**TRT, "cc": "9.0"}, ()),
    Case("ampere-plus-on-12.0", AMPERE_PLUS, {**TRT, "cc": "12.0"}, ()),
    # rule 4, same_compute_capability
    Case(
        "same-cc-on-build-cc",
        {**TRT, "ccs": ("8.6",), "hardware": "same_compute_capability", "build_cc": "8.6"},
        {**TRT, "cc": "8.6"},
        (),
    ),
    Case(
        "same-cc-on-other-cc",
        {**TRT, "ccs": ("8.6",), "hardware": "same_compute_capability", "build_cc": "8.6"},
        {**TRT, "cc": "8.9"},
        (Rule.GPU,),
        ("built for compute capability 8.6", "rebuild on a 8.9 GPU"),
    ),
    # rule 1
    Case(
        "platform-aarch64",
        {},
        {"platform": Platform("linux", "aarch64")},
        (Rule.PLATFORM,),
        ("built for linux_x86_64", "the target is linux_aarch64", "tagged linux_aarch64"),
    ),
    # a TensorRT-RTX engine (built ahead of time on the CPU) is portable between Linux and Windows
    # (TensorRT-RTX's "CPU-Only AOT" page); an enterprise one is not (TensorRT's support matrix)
    Case("rtx-platform-windows", {}, {"platform": Platform("windows", "x86_64")}, ()),
    Case(
        "rtx-platform-windows-aarch64",
        {},
        {"platform": Platform("windows", "aarch64")},
        (Rule.PLATFORM,),
        ("not portable across machines",),
    ),
    Case(
        "trt-platform-windows",
        TRT,
        {**TRT, "platform": Platform("windows", "x86_64")},
        (Rule.PLATFORM,),
        ("win_amd64", "not portable across platforms"),
    ),
    # rule 2
    Case(
        "flavor-enterprise-engine-on-rtx",
        TRT,
        {},
        (Rule.FLAVOR,),
        ("built with TensorRT,", "runs TensorRT-RTX", "backend: tensorrt-rtx"),
    ),
    Case("flavor-rtx-engine-on-enterprise", {}, TRT, (Rule.FLAVOR,), ("built with TensorRT-RTX",)),
    Case(
        "no-runtime-installed",
        {},
        {"flavor": None, "version": None, "overridden": False},
        (Rule.FLAVOR,),
        ("this host has no TensorRT-RTX runtime", "pip install 'trtforge[rtx]'", "--trt-version"),
    ),
    # rule 3, plain engines: the exact version only
    Case(
        "plain-older-runtime",
        TRT,
        {**TRT, "version": "10.12.0.36"},
        (Rule.VERSION,),
        ("built with TensorRT 10.13.0.35", "runs 10.12.0.36", "rebuild with 10.12.0.36", "version_compatible: true"),
    ),
    Case("plain-newer-build-number", TRT, {**TRT, "version": "10.13.0.36"}, (Rule.VERSION,)),
    Case(
        "rtx-other-release",
        {},
        {"version": "1.6"},
        (Rule.VERSION,),
        (
            "built with TensorRT-RTX 1.7.1.116",
            "loads only on the release that built it",
            "rebuild with TensorRT-RTX 1.6",
        ),
    ),
    Case("plain-same-version", TRT, TRT, ()),
    # rule 3, version-compatible engines: a major they load on, runtime not older
    Case("vc-newer-runtime", {**TRT_VC, "version": "10.8.0.43"}, TRT, ()),
    Case("vc-same-runtime", TRT_VC, TRT, ()),
    Case(
        "vc-older-runtime",
        TRT_VC,
        {**TRT, "version": "10.8.0.43"},
        (Rule.VERSION,),
        ("at least as new", "older 10.8.0.43", "upgrade the runtime to 10.13.0.35"),
    ),
    # "at least as new" is the whole version: an older patch or build of the same minor is older
    Case(
        "vc-older-patch-runtime",
        {**TRT_VC, "version": "10.13.1.2"},
        TRT,
        (Rule.VERSION,),
        ("at least as new", "older 10.13.0.35", "upgrade the runtime to 10.13.1.2"),
    ),
    Case("vc-older-build-runtime", {**TRT_VC, "version": "10.13.0.40"}, TRT, (Rule.VERSION,), ("at least as new",)),
    # NVIDIA's support matrix: a TensorRT 10 version-compatible engine loads on TensorRT 11, and an 8 on 9
    # and 10; no other pair across majors (an 8 on 11, an 11 on 12)
    Case("vc-10-on-11", TRT_VC, {**TRT, "version": "11.0.0.1"}, ()),
    Case("vc-8-on-10", {**TRT_VC, "version": "8.6.1.6"}, TRT, ()),
    Case("vc-9-on-10", {**TRT_VC, "version": "9.3.0.1"}, TRT, ()),
    Case(
        "vc-8-on-11",
        {**TRT_VC, "version": "8.6.1.6"},
        {**TRT, "version": "11.0.0.1"},
        (Rule.VERSION,),
        ("loads only on TensorRT 8.x, 9.x, 10.x", "rebuild with TensorRT 11.x"),
    ),
    Case(
        "vc-11-on-12",
        {**TRT_VC, "version": "11.1.0.5"},
        {**TRT, "version": "12.0.0.1"},
        (Rule.VERSION,),
        ("loads only on TensorRT 11.x,", "rebuild with TensorRT 12.x"),
    ),
    Case("vc-11-on-10", {**TRT_VC, "version": "11.1.0.5"}, TRT, (Rule.VERSION,), ("loads only on TensorRT 11.x,",)),
    # rule 7: a version-compatible engine runs embedded host code, refused unless the policy allows it
    Case(
        "vc-host-code-refused-by-default",
        TRT_VC,
        TRT,
        (Rule.HOST_CODE,),
        ("host code", "--allow-host-code"),
        allow_host_code=False,
    ),
    Case("plain-has-no-host-code", TRT, TRT, (), allow_host_code=False),
    # rule 5 (facts measured on the bytes)
    Case(
        "sha256-differs",
        {},
        {},
        (Rule.SHA256,),
        ("sha256 bbbbbbbbbbbb… differs", "download or rebuild"),
        facts=ArtifactFacts(engine_file="m.engine", engine_size=1000, engine_sha256="b" * 64),
    ),
    Case(  # every character of the digest counts, not the 12 a message shows
        "sha256-differs-past-its-first-12-characters",
        {},
        {},
        (Rule.SHA256,),
        ("differs from the manifest's",),
        facts=ArtifactFacts(engine_size=1000, engine_sha256=SHA[:12] + "b" * 52),
    ),
    Case(
        "truncated",
        {},
        {},
        (Rule.SHA256,),
        ("999 bytes", "1,000", "truncated"),
        facts=ArtifactFacts(engine_file="m.engine", engine_size=999),
    ),
    Case("grown", {}, {}, (Rule.SHA256,), ("grown",), facts=ArtifactFacts(engine_size=2000)),
    Case(
        "manifest-of-another-engine",
        {},
        {},
        (Rule.SHA256,),
        ("this manifest describes m-fp32-rtx1.7-sm86.sm89-linux_x86_64.engine, not other.engine",),
        facts=ArtifactFacts(engine_file="other.engine", engine_size=1000, engine_sha256="b" * 64),
    ),
    Case(  # the same bytes under another artifact's name: as pip refuses a renamed wheel
        "renamed-but-same-bytes",
        {},
        {},
        (Rule.SHA256,),
        ("engine file other.engine is not the file this manifest describes", "renamed artifact"),
        facts=ArtifactFacts(engine_file="other.engine", engine_size=1000, engine_sha256=SHA),
    ),
    # rule 6
    Case(
        "signature-required-missing",
        {},
        {},
        (Rule.SIGNATURE,),
        ("not signed", "trtforge sign"),
        facts=ArtifactFacts(signature=SignatureStatus.MISSING),
        require_signature=True,
    ),
    Case("signature-required-no-key", {}, {}, (Rule.SIGNATURE,), ("--trusted-key",), require_signature=True),
    Case(
        "signature-invalid-always-refused",
        {},
        {},
        (Rule.SIGNATURE,),
        ("changed after signing",),
        facts=ArtifactFacts(signature=SignatureStatus.INVALID, signature_key_id="k1"),
    ),
    Case(
        "signature-unknown-key-required",
        {},
        {},
        (Rule.SIGNATURE,),
        ("key k2, which is not among the trusted",),
        facts=ArtifactFacts(signature=SignatureStatus.UNKNOWN_KEY, signature_key_id="k2"),
        require_signature=True,
    ),
    Case(
        "signature-unknown-key-not-required",
        {},
        {},
        (),
        facts=ArtifactFacts(signature=SignatureStatus.UNKNOWN_KEY, signature_key_id="k2"),
    ),
    Case("signature-missing-not-required", {}, {}, (), facts=ArtifactFacts(signature=SignatureStatus.MISSING)),
    Case(
        "signature-valid-required",
        {},
        {},
        (),
        facts=ArtifactFacts(signature=SignatureStatus.VALID),
        require_signature=True,
    ),
    # every reason at once
    Case(
        "everything-wrong",
        TRT,
        {**TRT, "version": "10.12.0.36", "cc": "7.5", "platform": Platform("linux", "aarch64")},
        (Rule.PLATFORM, Rule.VERSION, Rule.GPU, Rule.SHA256, Rule.SIGNATURE),
        facts=ArtifactFacts(engine_size=5, signature=SignatureStatus.MISSING),
        require_signature=True,
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_rule_table(case: Case) -> None:
    found = problems(
        manifest_for(**case.manifest),
        env_for(**case.env),
        case.facts,
        require_signature=case.require_signature,
        allow_host_code=case.allow_host_code,
    )
    assert tuple(problem.rule for problem in found) == case.rules, [problem.message for problem in found]
    text = " | ".join(problem.message for problem in found)
    for fragment in case.says:
        assert fragment in text


def test_messages_name_this_host_or_the_target() -> None:
    (here,) = problems(manifest_for(), env_for(cc="7.5", overridden=False))
    (there,) = problems(manifest_for(), env_for(cc="7.5", overridden=True))
    assert "this host's GPU is 7.5" in here.message
    assert "the target's GPU is 7.5" in there.message


def test_the_readmes_example_message_is_the_one_check_prints() -> None:
    """README "Compatibility checks" quotes rule 3's message for a plain engine on another version."""
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    quoted = re.search(r'Messages say what to do, e\.g\. "([^"]+)"', readme)
    assert quoted is not None
    (found,) = problems(manifest_for(**TRT), env_for(**{**TRT, "version": "10.12.0.36"}, overridden=False))
    assert " ".join(quoted.group(1).split()) == found.message


def test_capability_spellings_are_one_value() -> None:
    """A target given as sm_89 is the manifest's 8.9."""
    assert problems(manifest_for(ccs=("8.6", "8.9")), env_for(cc="sm_89")) == []


@pytest.mark.parametrize(
    "platform", [Platform("linux", "amd64"), Platform("Linux", "AMD64"), Platform("linux", "X86_64")]
)
def test_platform_spellings_made_by_hand_are_one_value(platform: Platform) -> None:
    """``Target(platform=Platform("linux", "amd64"))`` is linux_x86_64, as the flag's text is: an
    enterprise engine built there is not refused for 'linux_amd64', nor told to pull that tag."""
    assert platform == LINUX and platform.tag == "linux_x86_64"
    assert problems(manifest_for(**TRT, ccs=("8.6",)), env_for(**TRT, platform=platform)) == []
    rtx_on_windows = env_for(platform=Platform("win", "amd64"))  # a TensorRT-RTX engine runs there
    assert rtx_on_windows.platform == Platform.parse("win_amd64") and problems(manifest_for(), rtx_on_windows) == []


@pytest.mark.parametrize(
    ("facts", "why"),
    [
        ({**AMPERE_PLUS, "and_later_from": None}, "ampere_plus means and_later_from '8.0'"),
        ({**AMPERE_PLUS, "and_later_from": "5.0"}, "ampere_plus means and_later_from '8.0'"),
        ({**AMPERE_PLUS, "ccs": ("8.6",)}, "ampere_plus means"),
        ({**TRT, "ccs": ("8.6",), "hardware": "same_compute_capability"}, "build_device.compute_capability"),
        ({**TRT, "ccs": ("8.6",), "hardware": "same_compute_capability", "build_cc": "9.0"}, "build_device"),
        ({"version_compatible": True}, "tensorrt-rtx engines are never version-compatible"),
        ({"hardware": "ampere_plus", "ccs": (), "and_later_from": "8.0"}, "tensorrt-rtx engines have hardware"),
        ({"ccs": ("sm86",)}, "'sm86' is not a compute capability as trtforge writes it ('8.6')"),
        ({"ccs": ("banana",)}, "'banana' is not a compute capability"),
        ({"ccs": ()}, "lists its compute_capabilities"),
        ({"version": "x"}, "'x' is not a TensorRT version"),
        ({"version": "1.7.1.116.2"}, "not a TensorRT version"),
    ],
)
def test_a_manifest_that_no_build_writes_is_refused(facts: dict[str, Any], why: str) -> None:
    """Facts that contradict each other (or are no facts at all) never reach the rules, where they
    crashed (exit 1) or passed: the manifest is unreadable, exit 2, and a registry skips it."""
    with pytest.raises(ValueError, match=re.escape(why)):
        manifest_for(**facts)


def test_a_tag_that_does_not_say_what_the_manifest_does_is_refused() -> None:
    data = manifest_for().to_dict()
    data["gpu"]["compute_capabilities"].append("12.0")  # the tag still says sm86.sm89
    with pytest.raises(InvalidInputError, match=r"tag 'rtx1.7-sm86.sm89-linux_x86_64' does not say .*edited by hand"):
        parse_manifest(json.dumps(data), "m.manifest.json")


# ---------------------------------------------------------------- Target (flags -> environment)


def test_target_from_flags_overrides_detection() -> None:
    target = target_from_flags("tensorrt", "10.13.0.35", "sm_90", "linux_aarch64")
    env = target.environment()
    assert env.flavor == "tensorrt" and env.version == "10.13.0.35"
    assert env.compute_capability == ComputeCapability(9, 0)
    assert env.platform == Platform("linux", "aarch64")
    assert env.overridden and env.where == "the target"


def test_target_flavor_defaults_to_the_engines_with_the_installed_version() -> None:
    tensorrt_rtx = need_rtx()

    env = target_from_flags(cc="8.6").environment(default_flavor="tensorrt-rtx")
    assert env.flavor == "tensorrt-rtx" and env.version == tensorrt_rtx.__version__


@pytest.mark.parametrize(
    ("flags", "says"),
    [
        ({"flavor": "tensorrt_rtx"}, "did you mean 'tensorrt-rtx'"),
        ({"trt_version": "ten"}, "--trt-version 'ten'"),
        ({"cc": "8.x"}, "--cc: '8.x' is not a compute capability; write it as 8.6, sm86 or sm_86"),
        ({"platform": "macos"}, "--platform: 'macos' is not a platform"),
    ],
)
def test_target_flags_refuse_bad_values(flags: dict[str, str], says: str) -> None:
    with pytest.raises(InvalidInputError) as caught:
        target_from_flags(**flags)
    assert says in str(caught.value)


def test_detect_environment_on_this_host() -> None:
    """The host's platform as Python's build names it (``linux-x86_64``, ``linux-aarch64``: uname's
    machine), not a constant: an aarch64 runner is ``linux_aarch64``. On a GPU host the capability is
    device 0's (or the device asked for); without one there is none."""
    env = detect_environment(flavor="tensorrt-rtx")
    host = sysconfig.get_platform().replace("-", "_")
    if not host.startswith("linux_"):
        pytest.skip(f"{host}: the platform check is written for Linux hosts")
    assert env.platform.tag == host and env.platform == Platform.parse(host)
    assert not env.overridden and env.flavor == "tensorrt-rtx"
    gpus = detect_gpus()
    assert env.gpus == gpus
    if gpus:  # device 0 by default, the one asked for otherwise
        assert env.compute_capability == gpus[0].compute_capability >= ComputeCapability(3, 0)
        last = detect_environment(flavor="tensorrt-rtx", device=len(gpus) - 1)
        assert last.compute_capability == gpus[-1].compute_capability and last.gpus == gpus
    else:
        assert env.compute_capability is None and env.gpus == ()


def test_detect_gpus_through_nvml() -> None:
    """Real on a GPU host (run it there: pytest tests/test_compat_rules.py -k nvml)."""
    gpus = detect_gpus()
    if not gpus:
        pytest.skip("no NVIDIA GPU/driver visible to NVML on this host; this test runs on a GPU host")
    env = detect_environment(flavor="tensorrt-rtx")
    assert env.compute_capability == gpus[0].compute_capability
    for gpu in gpus:
        assert gpu.compute_capability >= ComputeCapability(3, 0)
        assert gpu.memory_total > 0 and gpu.name and gpu.driver_version


# ---------------------------------------------------------------- select_engine


def _pick(manifests: list[Manifest], env: Environment, policy: LoadPolicy = DEFAULT_POLICY) -> str | None:
    chosen, _ = select_engine([(manifest, manifest.name) for manifest in manifests], env, policy)
    return chosen[1] if chosen else None


TRT_ENV = env_for(**TRT, cc="8.6")
HOST_CODE_ALLOWED = LoadPolicy(allow_host_code=True)


def test_select_prefers_exact_gpu_over_sm80plus_over_version_compatible() -> None:
    exact = manifest_for(**TRT, ccs=("8.6",), name="exact")
    plus = manifest_for(**AMPERE_PLUS, name="plus")
    vc = manifest_for(**TRT_VC, ccs=(), hardware="ampere_plus", and_later_from="8.0", name="vc")
    assert _pick([vc, plus, exact], TRT_ENV, HOST_CODE_ALLOWED) == "exact"
    assert _pick([vc, plus], TRT_ENV, HOST_CODE_ALLOWED) == "plus"
    assert _pick([vc], TRT_ENV, HOST_CODE_ALLOWED) == "vc"
    assert _pick([vc], TRT_ENV) is None, "the default policy refuses host code (rule 7)"


def test_select_prefers_plain_over_version_compatible_for_the_same_gpu() -> None:
    plain = manifest_for(**TRT, ccs=("8.6",), name="plain")
    vc = manifest_for(**TRT_VC, ccs=("8.6",), name="vc")
    assert _pick([vc, plain], TRT_ENV) == "plain"


def test_select_prefers_the_newest_builder_then_the_newest_build() -> None:
    old = manifest_for(**{**TRT_VC, "version": "10.8.0.43"}, ccs=("8.6",), name="old")
    new = manifest_for(**{**TRT_VC, "version": "10.12.0.36"}, ccs=("8.6",), name="new")
    assert _pick([old, new], TRT_ENV, HOST_CODE_ALLOWED) == "new"
    earlier = manifest_for(**TRT, ccs=("8.6",), created="2026-01-01T00:00:00+00:00", name="earlier")
    later = manifest_for(**TRT, ccs=("8.6",), created="2026-03-01T00:00:00+00:00", name="later")
    assert _pick([later, earlier], TRT_ENV) == "later"
    assert _pick([earlier, later], TRT_ENV) == "later"


def test_select_keeps_input_order_on_a_tie() -> None:
    first = manifest_for(**TRT, ccs=("8.6",), name="first")
    second = manifest_for(**TRT, ccs=("8.6",), name="second")
    assert _pick([first, second], TRT_ENV) == "first"


def test_select_never_picks_an_incompatible_engine_and_says_why() -> None:
    newer_runtime_only = manifest_for(**{**TRT_VC, "version": "10.14.0.1"}, ccs=("8.6",), name="too-new")
    other_gpu = manifest_for(**TRT, ccs=("8.9",), name="other-gpu")
    chosen, rejected = select_engine([(m, m.name) for m in (newer_runtime_only, other_gpu)], TRT_ENV, HOST_CODE_ALLOWED)
    assert chosen is None
    assert [(r.manifest.name, [p.rule for p in r.problems]) for r in rejected] == [
        ("too-new", [Rule.VERSION]),
        ("other-gpu", [Rule.GPU]),
    ]
    # a rejection unpacks like the (manifest, problems) pair it always was
    manifest, found = rejected[0]
    assert manifest.name == "too-new" and "at least as new" in found[0].message


def test_pull_refuses_each_candidate_for_its_own_runtime_chosen_or_not() -> None:
    """pull judges each runtime's engines by that runtime (enterprise TensorRT first): beside the one it
    chose, an engine of the other runtime is refused for that runtime's own reason, never 'the target
    runs TensorRT-RTX', and one that fits there is no refusal (it listed both as "did not fit")."""
    from trtforge.publish.base import Candidate
    from trtforge.publish.pulling import choose

    older_trt = manifest_for(**{**TRT, "version": "10.12.0.36"}, ccs=("8.6",), name="older-trt")
    trt = manifest_for(**TRT, ccs=("8.6",), name="trt")
    rtx = manifest_for(ccs=("8.6",), name="rtx")
    other_gpu = manifest_for(ccs=("8.9",), name="rtx-other-gpu")
    envs = (TRT_ENV, env_for(cc="8.6"))

    def pulled(*manifests: Manifest) -> tuple[str | None, dict[str, list[Rule]]]:
        candidates = [Candidate(manifest.name, manifest, b"", None) for manifest in manifests]
        chosen, _, refused = choose(candidates, envs, DEFAULT_POLICY)
        return (chosen.reference if chosen else None), {c.reference: [p.rule for p in found] for c, found in refused}

    assert pulled(older_trt, rtx, other_gpu) == ("rtx", {"older-trt": [Rule.VERSION], "rtx-other-gpu": [Rule.GPU]})
    assert pulled(rtx, trt, other_gpu) == ("trt", {"rtx-other-gpu": [Rule.GPU]})
    assert pulled(older_trt, other_gpu) == (None, {"older-trt": [Rule.VERSION], "rtx-other-gpu": [Rule.GPU]})


def test_select_with_a_required_signature_skips_unsigned_engines() -> None:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from trtforge.keys import SigningKey, TrustedKey
    from trtforge.signing import key_id_of, sign_manifest

    private = Ed25519PrivateKey.generate()
    key_id = key_id_of(private.public_key())
    exact_unsigned = manifest_for(**TRT, ccs=("8.6",), name="exact-unsigned")
    plus_signed = sign_manifest(manifest_for(**AMPERE_PLUS, name="plus-signed"), SigningKey(private, key_id, "t"))
    policy = LoadPolicy(require_signature=True, trusted_keys=(TrustedKey(private.public_key(), key_id, "t"),))
    assert _pick([exact_unsigned, plus_signed], TRT_ENV) == "exact-unsigned"
    assert _pick([exact_unsigned, plus_signed], TRT_ENV, policy) == "plus-signed"


# ---------------------------------------------------------------- the one size-then-sha256 measure


def _engine_on_disk(tmp_path: Path, data: bytes) -> tuple[Path, Manifest]:
    """An engine file and a manifest that pins exactly its bytes."""
    base = manifest_for(name="pinned")
    engine = tmp_path / base.artifact.file
    engine.write_bytes(data)
    artifact = base.artifact.model_copy(update={"size": len(data), "sha256": sha256_bytes(data)})
    return engine, base.replace(artifact=artifact)


def test_measure_engine_hashes_the_bytes_it_keeps(tmp_path: Path) -> None:
    data = bytes(range(256)) * 40
    engine, manifest = _engine_on_disk(tmp_path, data)
    facts, kept = measure_engine(engine, manifest, keep_bytes=True)
    assert kept == bytearray(data)
    assert (facts.engine_file, facts.engine_size, facts.engine_sha256) == (engine.name, len(data), sha256_bytes(data))
    assert measure_engine(engine, manifest) == (facts, None)
    assert file_problem(manifest, engine) is None


def test_a_file_of_the_wrong_size_is_refused_without_hashing(tmp_path: Path) -> None:
    engine, manifest = _engine_on_disk(tmp_path, b"x" * 1000)
    engine.write_bytes(b"x" * 999)
    facts, kept = measure_engine(engine, manifest, keep_bytes=True)
    assert (facts.engine_size, facts.engine_sha256, kept) == (999, None, None)
    problem = file_problem(manifest, engine)
    assert problem is not None and "999 bytes, the manifest says 1,000 (truncated" in problem


def test_same_size_other_bytes_is_a_sha256_problem(tmp_path: Path) -> None:
    engine, manifest = _engine_on_disk(tmp_path, b"x" * 1000)
    engine.write_bytes(b"y" * 1000)
    problem = file_problem(manifest, engine)
    assert problem is not None and f"differs from the manifest's {manifest.artifact.sha256[:12]}" in problem


def test_a_missing_engine_is_rule_5_for_every_caller(tmp_path: Path) -> None:
    engine, manifest = _engine_on_disk(tmp_path, b"x" * 10)
    engine.unlink()
    facts, kept = measure_engine(engine, manifest)
    assert facts.engine_missing and kept is None
    assert [problem.rule for problem in problems(manifest, env_for(), facts)] == [Rule.SHA256]
    assert file_problem(manifest, engine) == (
        f"engine file {engine.name} is missing beside its manifest: copy or download the .engine together "
        "with its .manifest.json"
    )


def test_the_rules_import_no_detection_signing_or_tensorrt() -> None:
    """compat judges values; measuring (NVML, TensorRT, files) and signatures live elsewhere (it
    raises trtforge's own errors for values it cannot judge)."""
    import ast

    import trtforge.compat

    tree = ast.parse(Path(trtforge.compat.__file__).read_text(encoding="utf-8"))
    runtime = [node for node in tree.body if not isinstance(node, ast.If)]  # `if TYPE_CHECKING:` never runs
    imported: set[str] = set()
    for child in (child for node in runtime for child in ast.walk(node)):
        if isinstance(child, ast.Import):
            imported.update(alias.name for alias in child.names)
        elif isinstance(child, ast.ImportFrom) and child.module:
            imported.add(child.module)
    assert {name for name in imported if name.startswith("trtforge")} == {"trtforge.errors", "trtforge.tags"}
    assert not imported & {"importlib", "pynvml", "tensorrt", "tensorrt_rtx", "platform"}


def test_no_nvidia_control_device_means_no_gpu_without_importing_nvml() -> None:
    """On Linux NVML opens /dev/nvidiactl (WSL: /dev/dxg); without either (this CI host) the
    detection answers () before importing NVML's bindings: a fresh process shows it."""
    from trtforge.environment import NVIDIA_CONTROL_DEVICES

    if any(os.path.exists(device) for device in NVIDIA_CONTROL_DEVICES):
        pytest.skip("this host has an NVIDIA control device: test_detect_gpus_through_nvml covers it")
    script = "import sys; from trtforge.environment import detect_gpus; print(detect_gpus(), 'pynvml' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["()", "False"]


# ---------------------------------------------------------------- one version comparison (rule 3)


@pytest.mark.parametrize(
    ("built", "version_compatible", "runtime", "fits"),
    [
        ("10.3.0", False, "10.3.0.26", True),  # a manifest's major.minor.patch against what a runtime reports
        ("10.3.0.26", False, "10.3.0", True),  # --trt-version as the wheel spells it
        ("10.3.0.26", False, "10.3", True),  # a missing patch is 0
        ("10.3.1.2", False, "10.3", False),
        ("10.3.0.26", False, "10.3.0.27", False),  # both give the build number: it counts
        ("10.3.0.26", False, "10", False),  # never "any 10.x"
        ("10.4.0.26", True, "10.4.0", True),
        ("10.4.0.26", True, "10.3.0.30", False),
        ("10.4.0", True, "10.4.1.1", True),
    ],
)
def test_one_version_comparison_at_the_precision_both_give(
    built: str, version_compatible: bool, runtime: str, fits: bool
) -> None:
    found = problems(
        manifest_for(flavor="tensorrt", version=built, version_compatible=version_compatible),
        env_for(flavor="tensorrt", version=runtime),
        allow_host_code=True,
    )
    assert (found == []) == fits, found
    assert all(problem.rule is Rule.VERSION for problem in found)


def test_a_triton_release_is_judged_by_the_same_comparison() -> None:
    """``check --triton R`` and ``check --flavor tensorrt --trt-version`` (R's TensorRT) give one verdict."""
    from trtforge.manifest import TensorRTInfo
    from trtforge.triton_releases import releases, runtime_release_problem

    for release in releases():
        for built in ("10.3.0", "10.3.0.26", "10.4.0", "10.4.0.26", "10.5.0.18", release.tensorrt, "9.3.0"):
            for version_compatible in (False, True):
                info = TensorRTInfo(flavor="tensorrt", version=built, version_compatible=version_compatible)
                manifest = manifest_for(flavor="tensorrt", version=built, version_compatible=version_compatible)
                plain = problems(manifest, env_for(flavor="tensorrt", version=release.tensorrt), allow_host_code=True)
                triton = runtime_release_problem(info, LINUX, release)
                assert (triton is None) == (plain == []), (release.name, built, version_compatible)


def test_the_no_gpu_advice_offers_target_only_where_it_is_taken() -> None:
    """The no-GPU refusal offered ``target=Target(...)`` "from Python" to every entry point, but
    load_engine, load_best and EnginePool take none (TypeError): it names the ones that judge for
    another GPU, and says the loading ones need a GPU here."""
    import inspect

    from trtforge import runtime

    offered = re.findall(r"(\w+)\(\.\.\., target=", NO_GPU_MESSAGE)
    assert sorted(offered) == ["check_compatibility", "select_artifact"]
    for name in offered:
        assert "target" in inspect.signature(getattr(runtime, name)).parameters
    for name in ("load_engine", "load_best", "EnginePool"):
        assert "target" not in inspect.signature(getattr(runtime, name)).parameters
        assert name in NO_GPU_MESSAGE.split(";")[-1] and "needs a GPU" in NO_GPU_MESSAGE.split(";")[-1]


def test_a_flavor_mismatch_is_said_before_a_runtime_that_is_not_installed() -> None:
    """``check --flavor tensorrt`` on a TensorRT-RTX engine: the target runs the other runtime (installed
    here or not), which no pip extra fixes."""
    (found,) = problems(manifest_for(), env_for(flavor="tensorrt", version=None))
    assert found.rule is Rule.FLAVOR
    assert "built with TensorRT-RTX, the target runs TensorRT" in found.message and "pip install" not in found.message
    assert env_for(flavor="tensorrt", version=None).describe().startswith("no TensorRT runtime")


def test_a_target_without_a_flavor_runs_the_runtime_installed_here() -> None:
    """``Target(compute_capability=...).environment()`` describes this host's runtime, not none at all."""
    from trtforge import environment

    rtx = need_rtx()
    env = environment.Target(compute_capability="8.6").environment()
    assert (env.flavor, env.version) == ("tensorrt-rtx", rtx.__version__)
    assert problems(manifest_for(version=rtx.__version__), env) == []


def test_the_runtime_installed_here_is_the_only_flavor_installed_or_the_caller_s_to_say() -> None:
    """Both flavors installed: which one a target runs is the caller's to say; neither: the target
    has no runtime, which a check then names with the pip extra that installs the engine's."""
    from trtforge.environment import only_flavor

    assert only_flavor(["tensorrt-rtx"]) == "tensorrt-rtx" and only_flavor(["tensorrt"]) == "tensorrt"
    with pytest.raises(InvalidInputError, match=r"both tensorrt and tensorrt-rtx are installed here.*Target\(flavor="):
        only_flavor(["tensorrt", "tensorrt-rtx"])
    assert only_flavor([]) is None
    (missing,) = problems(manifest_for(), env_for(flavor=None, version=None))
    assert "has no TensorRT-RTX runtime installed: pip install 'trtforge[rtx]'" in missing.message


# ---------------------------------------------------------------- ranking: a pure function of the manifest


def test_select_orders_versions_of_different_lengths() -> None:
    """1.7.1 is newer than 1.7 (a negated tuple once ranked the shorter one first)."""
    short = manifest_for(**{**TRT_VC, "version": "10.7"}, ccs=("8.6",), name="short")
    longer = manifest_for(**{**TRT_VC, "version": "10.7.1"}, ccs=("8.6",), name="longer")
    env = env_for(**TRT, cc="8.6")
    assert _pick([short, longer], env, HOST_CODE_ALLOWED) == "longer"
    assert _pick([longer, short], env, HOST_CODE_ALLOWED) == "longer"
    zero = manifest_for(**{**TRT_VC, "version": "10.7.0"}, ccs=("8.6",), name="zero")
    assert _pick([short, zero], env, HOST_CODE_ALLOWED) == "short"  # one version: the input order decides
    assert _pick([zero, short], env, HOST_CODE_ALLOWED) == "zero"


def test_build_times_are_utc_whatever_the_time_zone(monkeypatch: pytest.MonkeyPatch) -> None:
    """A build time without an offset is UTC (``created_utc``), not this host's local time."""
    import time

    from trtforge.selection import preference

    naive = manifest_for(**TRT, ccs=("8.6",), created="2026-01-01T00:00:00", name="naive")
    aware = manifest_for(**TRT, ccs=("8.6",), created="2026-01-01T00:30:00+00:00", name="aware")
    zulu = manifest_for(**TRT, ccs=("8.6",), created="2026-01-01T00:15:00Z", name="zulu")
    broken = manifest_for(**TRT, ccs=("8.6",), created="yesterday", name="broken")
    seen = []
    try:
        for zone in ("UTC", "America/New_York", "Asia/Tokyo"):
            monkeypatch.setenv("TZ", zone)
            time.tzset()
            seen.append([preference(m) for m in (naive, aware, zulu, broken)])
            assert _pick([naive, broken, zulu, aware], TRT_ENV) == "aware"
            assert _pick([broken, naive, zulu], TRT_ENV) == "zulu"
    finally:
        monkeypatch.undo()
        time.tzset()
    assert seen[0] == seen[1] == seen[2]


def test_compatible_engines_of_several_precisions_are_the_callers_choice() -> None:
    fp32 = manifest_for(**TRT, ccs=("8.6",), name="m")
    fp16 = fp32.replace(precision="fp16")
    int8_elsewhere = manifest_for(**TRT, ccs=("8.9",), name="m").replace(precision="int8")
    with pytest.raises(InvalidInputError) as refused:
        select_engine([(fp32, "fp32"), (fp16, "fp16"), (int8_elsewhere, "int8")], TRT_ENV, what="dir://r: 'm'")
    message = str(refused.value)
    assert message.startswith("dir://r: 'm': compatible engines of 2 precisions fit (fp16, fp32)"), message
    assert "--precision (trtforge pull, serve)" in message and "precision= (select_artifact, load_best)" in message
    # one precision that fits (the other engine needs another GPU) is no question
    chosen, rejected = select_engine([(fp32, "fp32"), (int8_elsewhere, "int8")], TRT_ENV)
    assert chosen is not None and chosen[1] == "fp32" and len(rejected) == 1


# ---------------------------------------------------------------- the policy, refused at once


def test_a_policy_that_cannot_verify_or_has_no_keys_is_a_usage_error() -> None:
    from trtforge.compat import NO_TRUSTED_KEY_MESSAGE

    with pytest.raises(InvalidInputError) as refused:
        LoadPolicy(require_signature=True)
    assert str(refused.value) == NO_TRUSTED_KEY_MESSAGE and refused.value.exit_code == 2
    with pytest.raises(InvalidInputError, match="LoadPolicy trusted_keys None: loaded public keys"):
        LoadPolicy(trusted_keys=None)  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="LoadPolicy trusted_keys 5"):
        LoadPolicy(trusted_keys=5)  # type: ignore[arg-type]


def test_a_policy_keeps_keys_given_as_a_generator() -> None:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from trtforge.keys import TrustedKey

    public = Ed25519PrivateKey.generate().public_key()
    keys = (TrustedKey(public, f"k{index}", "t") for index in range(2))
    policy = LoadPolicy(require_signature=True, trusted_keys=keys)  # type: ignore[arg-type]
    assert [key.key_id for key in policy.trusted_keys] == ["k0", "k1"]


def test_another_gpu_model_of_the_same_capability_gets_a_note_not_a_refusal() -> None:
    """TensorRT only warns that a plan may not port across GPU models of one compute capability:
    ``check`` says so beside its verdict, for this host's own GPU (a target from flags has no model)."""
    manifest = manifest_for(**TRT, ccs=("8.6",), build_cc="8.6")  # build_device name "GPU"

    def here(name: str, cc: str = "8.6", overridden: bool = False) -> Environment:
        device = GpuDevice(0, name, ComputeCapability.parse(cc), "580.1", 24 << 30, 20 << 30)
        return replace(env_for(**TRT, cc=cc, overridden=overridden), gpus=(device,))

    note = device_model_note(manifest, here("NVIDIA A10"))
    assert note is not None and note.startswith("built on GPU, this GPU is NVIDIA A10")
    assert "hardware_compatibility: same_compute_capability" in note
    assert problems(manifest, here("NVIDIA A10")) == []  # a note, never a rule
    assert device_model_note(manifest, here("GPU")) is None  # the same model
    assert device_model_note(manifest, here("NVIDIA A10", overridden=True)) is None  # a target from flags
    assert device_model_note(manifest, here("NVIDIA L4", cc="8.9")) is None  # the GPU rule speaks there
    assert device_model_note(manifest_for(ccs=("8.6",)), here("NVIDIA A10")) is None  # RTX: no build device


def test_select_engine_prefers_the_plan_built_on_this_gpu_model() -> None:
    """Most specific first, as ``packaging.tags`` ranks tags: a plain plan built on this model, then
    one made for every model of its compute capability, then a plain one built on another model
    (TensorRT warns it may run slower or fail), then ``ampere_plus``; the newest build only breaks a
    tie. Before, a newer plan from another model won over the one built on this GPU."""
    device = GpuDevice(0, "NVIDIA A10", ComputeCapability.parse("8.6"), "580.1", 24 << 30, 20 << 30)
    a10_host = replace(env_for(**TRT, cc="8.6", overridden=False), gpus=(device,))

    def plan(name: str, built_on: str, created: str, hardware: str = "none") -> Manifest:
        manifest = manifest_for(**TRT, ccs=("8.6",), build_cc="8.6", hardware=hardware, created=created, name=name)
        gpu = manifest.gpu.model_copy(update={"build_device": {"name": built_on, "compute_capability": "8.6"}})
        return manifest.model_copy(update={"gpu": gpu})

    here = plan("here", "NVIDIA A10", "2026-01-01T00:00:00+00:00")
    same_cc = plan("same_cc", "RTX 3090", "2026-03-01T00:00:00+00:00", hardware="same_compute_capability")
    elsewhere = plan("elsewhere", "RTX 3090", "2026-02-01T00:00:00+00:00")
    ampere = manifest_for(
        **TRT, ccs=(), and_later_from="8.0", hardware="ampere_plus", created="2026-04-01T00:00:00+00:00", name="ampere"
    )

    def chosen(*manifests: Manifest, env: Environment = a10_host) -> str:
        best, rejected = select_engine([(m, m.name) for m in manifests], env)
        assert rejected == [] and best is not None
        return best[1]

    assert chosen(ampere, elsewhere, same_cc, here) == "here"
    assert chosen(ampere, elsewhere, same_cc) == "same_cc"
    assert chosen(ampere, elsewhere) == "elsewhere"
    target = replace(a10_host, gpus=(), overridden=True)  # a target from flags has no model: newest plain
    assert chosen(here, elsewhere, env=target) == "elsewhere"


def test_a_tensorrt_rtx_engine_is_never_advised_version_compatible(tmp_path: Path) -> None:
    """TensorRT-RTX refuses ``build.version_compatible`` (README "Limits"): before, check and pull
    advised it for an engine of another RTX release."""
    need_rtx()
    from clitools import cli
    from registry import build_engine

    (problem,) = problems(manifest_for(), env_for(version="1.6"))
    assert "version_compatible" not in problem.message
    engine = build_engine(tmp_path / "build")
    code, _, err = cli("check", engine, "--trt-version", "1.6", "--cc", "8.6")
    assert code == 5 and "rebuild with TensorRT-RTX 1.6" in err and "version_compatible" not in err, err
    target = (
        "--name",
        "digits-cnn",
        "--flavor",
        "tensorrt-rtx",
        "--trt-version",
        "1.6",
        "--cc",
        "8.6",
        "--out",
        tmp_path / "pulled",
    )
    code, _, err = cli("pull", f"dir://{engine.parent}", *target)
    assert code == 5 and "rebuild with TensorRT-RTX 1.6" in err and "version_compatible" not in err, err
    # five parts is no TensorRT version (a manifest holding it is refused): it was compared on four, and passed
    code, _, err = cli("check", engine, "--trt-version", "1.7.1.116.5", "--cc", "8.6")
    assert code == 2 and "write it as up to four numbers and dots" in err, err
