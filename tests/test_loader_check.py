"""``trtforge check`` and the runtime loader on real TensorRT-RTX engines built here.

This machine has no GPU: every check runs for real (manifest, size, sha256, signature, rules)
against a target given with ``--cc``; deserialization needs a GPU that TensorRT-RTX supports
and the test that needs one skips saying so.
"""

from __future__ import annotations

import io
import json
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from models import need_rtx, retag
from registry import as_enterprise
from rich.console import Console
from typer.testing import CliRunner

from trtforge.cli import app
from trtforge.compat import NO_GPU_MESSAGE, LoadPolicy, Rule
from trtforge.environment import Target, detect_gpus
from trtforge.errors import IncompatibleEngineError, InvalidInputError
from trtforge.manifest import manifest_path_for, read_manifest
from trtforge.runtime import check_compatibility, load_best, load_engine, select_artifact
from trtforge.signing import generate_keypair, load_signing_key, load_trusted_keys, sign_artifact
from trtforge.tags import ComputeCapability, Platform

DIGITS = Path(__file__).resolve().parents[1] / "calibration" / "digits"
AT_86 = Target(compute_capability=ComputeCapability(8, 6))

CONV_SPEC = """\
name: net
model: {model}
precision: fp32
backend: tensorrt-rtx
targets: {targets}
profiles:
  - input: {{min: [1, 3, 16, 16], opt: [2, 3, 16, 16], max: [4, 3, 16, 16]}}
accuracy: {{enabled: false}}
"""

DIGITS_SPEC = """\
name: digits-cnn
model: {model}
precision: {precision}
backend: tensorrt-rtx
targets: ["8.6", "8.9"]
profiles:
  - input: {{min: [1, 1, 8, 8], opt: [16, 1, 8, 8], max: [64, 1, 8, 8]}}
accuracy: {{enabled: false}}
"""


@pytest.fixture(scope="module")
def engines(tmp_path_factory: pytest.TempPathFactory, model_dir: Path) -> dict[str, Path]:
    """Real TensorRT-RTX builds (about a second each): two engines of one name, and the example
    model at fp32 and fp16."""
    need_rtx()
    from trtforge.build import build_spec
    from trtforge.console import Reporter
    from trtforge.spec import load_spec

    folder = tmp_path_factory.mktemp("loader-builds")
    model = model_dir / "conv.onnx"
    quiet = Reporter(Console(file=io.StringIO()), interactive=False)
    built: dict[str, Path] = {}
    for label, targets in {"sm86": '["8.6"]', "sm89": '["8.9"]'}.items():
        spec = folder / f"{label}.yaml"
        spec.write_text(CONV_SPEC.format(model=model, targets=targets))
        built[label] = build_spec(load_spec(spec), folder / "net", quiet, cache_dir=folder / "cache").engine
    for label, precision in (("digits", "fp32"), ("digits16", "fp16")):
        spec = folder / f"{label}.yaml"
        spec.write_text(DIGITS_SPEC.format(model=DIGITS / "digits_cnn.onnx", precision=precision))
        built[label] = build_spec(load_spec(spec), folder / "digits", quiet, cache_dir=folder / "cache").engine
    return built


#: the enterprise TensorRT that the relabelled manifests name (see ``enterprise``)
TRT = "10.13.0.35"


@pytest.fixture(scope="module")
def enterprise(engines: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The sm86 and sm89 engines as enterprise TensorRT builds, and a version-compatible
    ampere_plus one, at the manifest level (``registry.as_enterprise``): the rules read only the
    manifest, and TensorRT-RTX builds no version-compatible engine."""
    folder = tmp_path_factory.mktemp("enterprise")
    return {
        "sm86": as_enterprise(engines["sm86"], folder, TRT),
        "sm89": as_enterprise(engines["sm89"], folder, TRT),
        "vc": as_enterprise(engines["sm89"], folder, TRT, version_compatible=True, ampere_plus=True),
    }


def at(cc: str) -> Target:
    """A GPU host with that enterprise TensorRT."""
    return Target(flavor="tensorrt", version=TRT, compute_capability=ComputeCapability.parse(cc))


def _copy(engine: Path, folder: Path, name: str | None = None) -> Path:
    target = folder / (name or engine.name)
    shutil.copy2(engine, target)
    shutil.copy2(manifest_path_for(engine), manifest_path_for(target))
    return target


def _check(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, ["check", *args])
    assert "Traceback" not in result.output
    return result.exit_code, result.stdout, result.stderr


# ---------------------------------------------------------------- real engines, checked here


def test_real_engines_pass_check_for_their_targets(engines: dict[str, Path]) -> None:
    code, _, err = _check(str(engines["digits"]), "--cc", "8.6")
    assert code == 0 and "compatible: digits-cnn-fp32-rtx1.7-sm86.sm89-linux_x86_64.engine loads on" in err
    code, _, _ = _check(str(engines["sm89"]), "--cc", "sm_89")
    assert code == 0
    code, out, _ = _check(str(engines["sm86"]), "--cc", "8.6", "--json")
    document = json.loads(out)
    assert code == 0 and document["compatible"] and document["problems"] == []
    assert document["sha256"]["engine"] == document["sha256"]["manifest"]
    assert document["environment"]["compute_capability"] == "8.6" and document["environment"]["overridden"]


def test_a_compatible_result_has_no_refusal_to_give(engines: dict[str, Path]) -> None:
    """``error()`` of a compatible result gave a refusal with no message and no problem (an exception
    that says nothing, exit 5 if raised): it is a usage error that says so."""
    result = check_compatibility(engines["digits"], target=AT_86)
    assert result.compatible
    result.raise_if_refused()
    with pytest.raises(InvalidInputError, match=r"compatible on .*, nothing to refuse: .*raise_if_refused\(\)"):
        result.error()
    refused = check_compatibility(engines["digits"], target=Target(compute_capability="7.5"))
    assert "[gpu] engine was built for compute capability 8.6, 8.9" in str(refused.error())


def test_check_lists_every_reason_and_exits_5(engines: dict[str, Path]) -> None:
    args = ["--cc", "7.5", "--platform", "linux_aarch64", "--trt-version", "1.6.0.1", "--json"]
    code, out, _ = _check(str(engines["sm86"]), *args)
    document = json.loads(out)
    assert code == 5 and not document["compatible"]
    assert [p["rule"] for p in document["problems"]] == ["platform", "version", "gpu"]
    assert "rebuild with targets: ['7.5']" in document["problems"][2]["message"]


def test_check_through_a_subprocess_prints_one_json_document(engines: dict[str, Path]) -> None:
    for cc, expected in (("8.6", 0), ("12.0", 5)):
        run = subprocess.run(
            [sys.executable, "-m", "trtforge", "check", str(engines["digits"]), "--cc", cc, "--json"],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert run.returncode == expected, run.stderr
        assert json.loads(run.stdout)["compatible"] is (expected == 0)
        assert "Traceback" not in run.stderr


@pytest.mark.skipif(bool(detect_gpus()), reason="this host has a GPU: the no-GPU answer does not apply")
def test_no_gpu_and_no_cc_exits_5_and_says_pass_cc(engines: dict[str, Path]) -> None:
    code, _, err = _check(str(engines["sm86"]))
    assert code == 5 and NO_GPU_MESSAGE in err
    result = check_compatibility(engines["sm86"])
    assert [(p.rule, p.message) for p in result.problems] == [(Rule.GPU, NO_GPU_MESSAGE)]


def test_check_accepts_the_manifest_path_and_a_manifest_only_target(engines: dict[str, Path]) -> None:
    code, _, _ = _check(str(manifest_path_for(engines["sm86"])), "--cc", "8.6")
    assert code == 0
    code, _, err = _check(str(engines["sm86"]), "--cc", "8.6", "--flavor", "tensorrt", "--trt-version", "10.13.0.35")
    assert code == 5 and "engine was built with TensorRT-RTX, the target runs TensorRT" in err


@pytest.mark.parametrize(
    ("flags", "says"),
    [
        (["--cc", "8.x"], "--cc: '8.x' is not a compute capability"),
        (["--flavor", "tensorrt_rtx"], "did you mean 'tensorrt-rtx'"),
        (["--platform", "darwin"], "--platform: 'darwin' is not a platform"),
    ],
)
def test_bad_flags_exit_2_with_one_line(engines: dict[str, Path], flags: list[str], says: str) -> None:
    code, _, err = _check(str(engines["sm86"]), *flags)
    assert code == 2 and says in err and len(err.strip().splitlines()) == 1


def test_nonexistent_engine_is_a_usage_error(tmp_path: Path) -> None:
    code, _, err = _check(str(tmp_path / "nope.engine"), "--cc", "8.6")
    assert code == 2 and "no such engine" in err


# ---------------------------------------------------------------- damaged or mismatched artifacts


def test_one_flipped_byte_is_refused(engines: dict[str, Path], tmp_path: Path) -> None:
    engine = _copy(engines["sm86"], tmp_path)
    data = bytearray(engine.read_bytes())
    data[len(data) // 2] ^= 0x01
    engine.write_bytes(bytes(data))
    code, _, err = _check(str(engine), "--cc", "8.6")
    assert code == 5 and "[sha256] engine sha256" in err and "differs from the manifest's" in err
    with pytest.raises(IncompatibleEngineError) as caught:
        load_engine(engine, environment=AT_86.environment("tensorrt-rtx"))
    assert any("differs from the manifest's" in reason for reason in caught.value.reasons)


def test_truncated_engine_is_refused_without_hashing(engines: dict[str, Path], tmp_path: Path) -> None:
    engine = _copy(engines["sm86"], tmp_path)
    size = engine.stat().st_size
    engine.write_bytes(engine.read_bytes()[: size // 2])
    result = check_compatibility(engine, target=AT_86)
    assert result.facts.engine_sha256 is None  # a wrong size already decides it
    (problem,) = result.problems
    assert problem.rule is Rule.SHA256 and "truncated" in problem.message and f"{size:,}" in problem.message


def test_missing_manifest_is_refused(engines: dict[str, Path], tmp_path: Path) -> None:
    engine = tmp_path / engines["sm86"].name
    shutil.copy2(engines["sm86"], engine)
    code, out, _ = _check(str(engine), "--cc", "8.6", "--json")
    document = json.loads(out)
    assert code == 5 and "manifest missing" in document["problems"][0]["message"]
    with pytest.raises(IncompatibleEngineError, match="manifest missing; an engine without its manifest is refused"):
        load_engine(engine)


def test_an_engine_without_its_manifest_is_a_result_not_an_exception(tmp_path: Path) -> None:
    """``check_compatibility`` never raises for an engine that must not load: one without its
    manifest is a ``manifest`` problem (the README lists the rule), as the CLI reports it; the
    loader refuses it (exit 5) with that reason. A path where neither file is stays a usage error."""
    folder = tmp_path / "f2"
    folder.mkdir()
    orphan = folder / "orphan.engine"
    orphan.write_bytes(b"an engine nothing describes")
    result = check_compatibility(orphan, target=Target(compute_capability="8.6"))
    assert not result.compatible and result.exit_code == 5 and result.manifest is None
    (problem,) = result.problems
    assert problem.rule is Rule.MANIFEST and "manifest missing; an engine without its manifest" in problem.message
    document = json.loads(json.dumps(result.to_dict()))
    assert document["compatible"] is False and document["name"] is None
    assert document["problems"] == [{"rule": "manifest", "message": problem.message}]
    assert document["size"] == {"manifest": None, "engine": orphan.stat().st_size}
    assert document["signature"]["status"] == "missing"  # no manifest, so no signature: not "unchecked"
    with pytest.raises(IncompatibleEngineError) as refused:
        load_engine(orphan)
    assert refused.value.exit_code == 5 and refused.value.reasons == (problem.message,)
    code, out, _ = _check(str(orphan), "--cc", "8.6", "--json")
    assert code == 5 and json.loads(out)["problems"] == document["problems"]
    with pytest.raises(InvalidInputError, match="no such engine"):
        check_compatibility(folder / "orphn.engine", target=Target(compute_capability="8.6"))


def test_missing_engine_beside_its_manifest_is_refused(engines: dict[str, Path], tmp_path: Path) -> None:
    engine = _copy(engines["sm86"], tmp_path)
    engine.unlink()
    code, _, err = _check(str(manifest_path_for(engine)), "--cc", "8.6")
    assert code == 5 and "is missing beside its manifest" in err


@pytest.mark.parametrize("command", ["check", "inspect", "bench", "verify", "sign", "publish"])
@pytest.mark.parametrize(("gone", "code"), [("engine", 5), ("manifest", 5), ("both", 2)])
def test_every_engine_command_exits_alike_on_a_missing_file(
    engines: dict[str, Path], tmp_path: Path, command: str, gone: str, code: int
) -> None:
    """README "Exit codes": one file of the two without the other is an incomplete artifact, refused
    (5), and neither a mistyped path (2). inspect, verify, sign and publish said 2 for an engine
    missing beside its manifest, where check, bench and the loader said 5."""
    engine = _copy(engines["digits"], tmp_path)
    if gone in ("engine", "both"):
        engine.unlink()
    if gone in ("manifest", "both"):
        manifest_path_for(engine).unlink()
    needs = {
        "check": ["--cc", "8.6"],
        "verify": ["--spec", str(DIGITS.parents[1] / "configs" / "digits-fp32.yaml")],
        "sign": ["--key", str(generate_keypair(tmp_path / "key").private_path)],
        "publish": ["--to", f"dir://{tmp_path / 'registry'}"],
    }
    result = CliRunner().invoke(app, [command, str(engine), *needs.get(command, [])])
    assert result.exit_code == code and "Traceback" not in result.output, result.output
    missing = "is missing beside its manifest" if gone == "engine" else "manifest missing"
    assert (missing if gone != "both" else "no such engine") in result.stderr, result.stderr


def test_manifest_of_another_engine_is_refused(engines: dict[str, Path], tmp_path: Path) -> None:
    engine = _copy(engines["sm89"], tmp_path)
    shutil.copy2(manifest_path_for(engines["digits"]), manifest_path_for(engine))
    result = check_compatibility(engine, target=Target(compute_capability=ComputeCapability(8, 9)))
    assert [p.rule for p in result.problems] == [Rule.SHA256]
    assert f"this manifest describes {engines['digits'].name}, not {engine.name}" in result.problems[0].message


def test_unparseable_manifest_is_invalid_input(engines: dict[str, Path], tmp_path: Path) -> None:
    engine = _copy(engines["sm86"], tmp_path)
    manifest_path_for(engine).write_text("{not json")
    with pytest.raises(InvalidInputError, match="not JSON"):
        check_compatibility(engine, target=AT_86)


# ---------------------------------------------------------------- signatures


@pytest.fixture
def signer(tmp_path: Path) -> tuple[Path, Path]:
    pair = generate_keypair(tmp_path / "release")
    return pair.private_path, pair.public_path


def test_signed_engine_passes_a_signature_policy(
    engines: dict[str, Path], tmp_path: Path, signer: tuple[Path, Path]
) -> None:
    engine = _copy(engines["digits"], tmp_path)
    code, _, _ = _check(str(engine), "--cc", "8.6", "--require-signature", "--trusted-key", str(signer[1]))
    assert code == 5
    sign = CliRunner().invoke(app, ["sign", str(engine), "--key", str(signer[0])])
    assert sign.exit_code == 0, sign.output
    code, out, _ = _check(str(engine), "--cc", "8.6", "--require-signature", "--trusted-key", str(signer[1]), "--json")
    assert code == 0 and json.loads(out)["signature"]["status"] == "valid"
    policy = LoadPolicy(require_signature=True, trusted_keys=load_trusted_keys([signer[1]]))
    assert check_compatibility(engine, policy, target=AT_86).compatible


def test_manifest_edited_after_signing_is_refused(
    engines: dict[str, Path], tmp_path: Path, signer: tuple[Path, Path]
) -> None:
    engine = _copy(engines["sm86"], tmp_path)
    sign_artifact(engine, load_signing_key(signer[0]))
    path = manifest_path_for(engine)
    document = json.loads(path.read_text())
    document["gpu"]["compute_capabilities"].append("8.9")  # claim a GPU the engine was not built for
    path.write_text(json.dumps(retag(document), indent=2))
    code, _, err = _check(str(engine), "--cc", "8.6", "--trusted-key", str(signer[1]))
    assert code == 5 and "[signature] signature by trusted key" in err and "changed after signing" in err
    policy = LoadPolicy(require_signature=True, trusted_keys=load_trusted_keys([signer[1]]))
    with pytest.raises(IncompatibleEngineError, match="does not verify"):
        load_engine(engine, policy, environment=AT_86.environment("tensorrt-rtx"))


def test_a_signed_artifact_under_another_models_name_is_refused(
    engines: dict[str, Path], tmp_path: Path, signer: tuple[Path, Path]
) -> None:
    """A genuine signed pair copied to another artifact's file names would be served as that model
    (``serve resnet=...``): the engine's file name is the manifest's, as pip checks a wheel's."""
    signed = _copy(engines["digits"], tmp_path)
    sign_artifact(signed, load_signing_key(signer[0]))
    impostor = _copy(signed, tmp_path, signed.name.replace("digits-cnn-", "resnet50-", 1))
    trusted = ["--require-signature", "--trusted-key", str(signer[1])]
    assert _check(str(signed), "--cc", "8.6", *trusted)[0] == 0
    code, _, err = _check(str(impostor), "--cc", "8.6", *trusted)
    assert code == 5 and f"is not the file this manifest describes ({signed.name})" in err
    policy = LoadPolicy(require_signature=True, trusted_keys=load_trusted_keys([signer[1]]))
    with pytest.raises(IncompatibleEngineError, match="renamed artifact"):
        load_engine(impostor, policy, environment=AT_86.environment("tensorrt-rtx"))


def test_engine_swapped_under_a_signed_manifest_is_refused(
    engines: dict[str, Path], tmp_path: Path, signer: tuple[Path, Path]
) -> None:
    engine = _copy(engines["sm86"], tmp_path)
    sign_artifact(engine, load_signing_key(signer[0]))
    shutil.copy2(engines["sm89"], engine)  # a real engine of the same model, but not the signed one
    policy = LoadPolicy(require_signature=True, trusted_keys=load_trusted_keys([signer[1]]))
    result = check_compatibility(engine, policy, target=AT_86)
    assert result.facts.signature.value == "valid"  # the manifest is genuine...
    assert [p.rule for p in result.problems] == [Rule.SHA256]  # ...the engine is not the one it pins


# ---------------------------------------------------------------- version-compatible engines (host code)


def test_version_compatible_engine_needs_host_code_allowed(enterprise: dict[str, Path]) -> None:
    engine = enterprise["vc"]
    assert read_manifest(engine).tensorrt.version_compatible
    target = ("--flavor", "tensorrt", "--trt-version", TRT, "--cc", "8.6")
    code, _, err = _check(str(engine), *target)
    assert code == 5 and "[host_code]" in err and "--allow-host-code" in err
    assert "[flavor]" not in err and "[version]" not in err and "[gpu]" not in err  # host code is the only reason
    code, _, _ = _check(str(engine), *target, "--allow-host-code")
    assert code == 0
    assert check_compatibility(engine, LoadPolicy(allow_host_code=True), target=at("8.6")).compatible


# ---------------------------------------------------------------- the loader


def test_loader_checks_pass_then_deserialization_needs_a_gpu(engines: dict[str, Path]) -> None:
    if detect_gpus():
        pytest.skip("this host has a GPU: see test_load_engine_deserializes_on_a_supported_gpu")
    with pytest.raises(IncompatibleEngineError) as caught:
        load_engine(engines["sm86"], environment=AT_86.environment("tensorrt-rtx"))
    assert "passed every check" in str(caught.value) and "no GPU is detected here" in str(caught.value)
    with pytest.raises(IncompatibleEngineError) as caught:
        load_engine(engines["sm86"])  # this host, detected: refused by the rules already
    assert NO_GPU_MESSAGE in caught.value.reasons


def test_loader_refuses_an_environment_that_is_not_the_installed_runtime(
    engines: dict[str, Path], tmp_path: Path
) -> None:
    """Rules judged for another runtime version prove nothing about the one that would deserialize."""
    engine = _copy(engines["sm86"], tmp_path)
    path = manifest_path_for(engine)
    document = json.loads(path.read_text())
    document["tensorrt"]["version"] = "1.7.0.1"
    path.write_text(json.dumps(document))
    claimed = Target(version="1.7.0.1", compute_capability=ComputeCapability(8, 6)).environment("tensorrt-rtx")
    assert check_compatibility(engine, environment=claimed).compatible
    with pytest.raises(IncompatibleEngineError) as caught:
        load_engine(engine, environment=claimed)
    assert "checked for TensorRT-RTX 1.7.0.1, but the runtime installed here is TensorRT-RTX 1.7" in str(caught.value)


def test_loader_refuses_an_environment_that_is_not_this_hosts_platform(engines: dict[str, Path]) -> None:
    """``--platform`` on a host that deserializes (bench, serve, load_engine): the rules passed for
    the target, then the engine would go to this host's runtime, where they prove nothing."""
    host = Target().environment("tensorrt-rtx").platform
    other = Platform("windows", host.machine) if host.os == "linux" else Platform("linux", host.machine)
    elsewhere = Target(compute_capability="8.6", platform=other).environment("tensorrt-rtx")
    assert check_compatibility(engines["sm86"], environment=elsewhere).compatible  # RTX: portable across OSes
    with pytest.raises(IncompatibleEngineError) as caught:
        load_engine(engines["sm86"], environment=elsewhere)
    assert f"checked for {other.tag}, but this host is {host.tag}" in str(caught.value)


def test_loader_refuses_an_environment_that_is_not_this_hosts_gpu(tmp_path: Path) -> None:
    """``--cc`` on a GPU host: the rules passed for the target, then the engine went to the real GPU,
    where enterprise TensorRT (no header check) failed on its own. Refused before the engine is
    read (this one does not exist), so no TensorRT is needed to check it on a GPU host."""
    gpus = detect_gpus()
    if not gpus:
        pytest.skip("no NVIDIA GPU/driver visible to NVML on this host; this test runs on a GPU host")
    real = gpus[0].compute_capability
    claimed = ComputeCapability(8, 9) if real == ComputeCapability(8, 6) else ComputeCapability(8, 6)
    claimed_here = Target(compute_capability=claimed).environment("tensorrt-rtx")
    with pytest.raises(IncompatibleEngineError) as caught:
        load_engine(tmp_path / "never-read.engine", environment=claimed_here)
    assert f"checked for compute capability {claimed}, but this host's GPU ({gpus[0].name}) is {real}" in str(
        caught.value
    )


def test_engine_for_another_gpu_is_refused_by_the_rules_not_deserialized(engines: dict[str, Path]) -> None:
    """On a GPU host the engine does not target (e.g. an H100, 9.0, for an 8.6 engine) the rules
    refuse it for the real GPU, and the runtime's header check is not asked (it runs only once the
    rules pass: ``test_load_engine_deserializes_on_a_supported_gpu``)."""
    gpus = detect_gpus()
    if not gpus:
        pytest.skip(
            "no GPU: the rules refuse it for want of one (test_loader_checks_pass_then_deserialization_needs_a_gpu)"
        )
    real = gpus[0].compute_capability
    if real in (ComputeCapability(8, 6), ComputeCapability(8, 9)):
        pytest.skip(f"this GPU ({real}) is a target of the engine; the mismatch case needs another GPU")
    with pytest.raises(IncompatibleEngineError) as caught:
        load_engine(engines["sm86"])
    assert any(str(real) in reason for reason in caught.value.reasons), caught.value.reasons
    result = check_compatibility(engines["sm86"])
    assert "header check: not asked, the engine already failed the rules above" in result.notes


def test_load_engine_deserializes_on_a_supported_gpu(engines: dict[str, Path]) -> None:
    gpus = detect_gpus()
    supported = {ComputeCapability(8, 6), ComputeCapability(8, 9)}
    if not gpus or gpus[0].compute_capability not in supported:
        found = f"{gpus[0].name} ({gpus[0].compute_capability})" if gpus else "no GPU"
        pytest.skip(f"deserialization needs a GPU this engine targets (8.6 or 8.9) with TensorRT-RTX; here: {found}")
    loaded = load_engine(engines["digits"])
    assert loaded.engine is not None and loaded.engine.num_io_tensors == 2
    assert loaded.check.header is not None and loaded.check.header.validity in ("valid", "suboptimal")
    assert loaded.runtime.engine_host_code_allowed is False


# ---------------------------------------------------------------- several engines of one name


def test_select_artifact_picks_the_best_engine_for_the_gpu(enterprise: dict[str, Path], tmp_path: Path) -> None:
    for label in ("sm86", "sm89", "vc"):
        _copy(enterprise[label], tmp_path)
    policy = LoadPolicy(allow_host_code=True)

    def pick(cc: str) -> str:
        return select_artifact(tmp_path, "net", policy=policy, environment=at(cc).environment()).name

    assert pick("8.6") == enterprise["sm86"].name  # plain for this GPU before version-compatible sm80plus
    as_text = select_artifact(str(tmp_path), "net", policy=policy, environment=at("8.6").environment())
    assert as_text == tmp_path / enterprise["sm86"].name  # the README's call
    assert pick("8.9") == enterprise["sm89"].name
    (tmp_path / enterprise["sm89"].name).unlink()  # an orphan manifest is no candidate
    assert pick("8.9") == enterprise["vc"].name  # the version-compatible ampere_plus engine covers 8.9 too
    with pytest.raises(IncompatibleEngineError) as caught:
        pick("7.5")
    assert len(caught.value.reasons) == 2 and all("GPU is 7.5" in reason for reason in caught.value.reasons)
    with pytest.raises(InvalidInputError, match="no engine of other"):
        select_artifact(tmp_path, "other")


def test_load_best_refuses_a_damaged_best_engine_instead_of_falling_back(
    enterprise: dict[str, Path], tmp_path: Path
) -> None:
    best = _copy(enterprise["sm86"], tmp_path)
    _copy(enterprise["vc"], tmp_path)  # fits 8.6 too, and is not taken instead
    best.write_bytes(best.read_bytes()[:-1] + b"\x00")
    env = at("8.6").environment()
    with pytest.raises(IncompatibleEngineError) as caught:
        load_best(tmp_path, "net", policy=LoadPolicy(allow_host_code=True), environment=env)
    assert any("differs from the manifest's" in reason for reason in caught.value.reasons)


def test_every_header_diagnostic_of_the_installed_runtime_has_a_message() -> None:
    """The header check cannot run without a GPU, but its decoding of TensorRT-RTX's real
    ``EngineInvalidityDiagnostics`` bit flags can: a new flag in a newer runtime fails here first."""
    trt = need_rtx()

    from trtforge.runtime.loader import _DIAGNOSTICS, _diagnostic_names

    members = trt.EngineInvalidityDiagnostics.__members__
    assert set(members) <= set(_DIAGNOSTICS)
    combined = int(members["UNSUPPORTED_CC"]) | int(members["MALFORMED_ENGINE"])
    assert _diagnostic_names(trt, combined) == ("UNSUPPORTED_CC", "MALFORMED_ENGINE")
    assert _diagnostic_names(trt, 0) == ()


def test_a_target_takes_text_as_the_flags_do_and_refuses_other_types() -> None:
    text = Target(compute_capability="sm_86", platform="linux_x86_64")
    assert text == Target(compute_capability=ComputeCapability(8, 6), platform=Platform("linux", "x86_64"))
    for bad, expected in (
        ({"flavor": "trt"}, "Target flavor 'trt': one of tensorrt, tensorrt-rtx"),
        ({"compute_capability": "nine"}, "'nine' is not a compute capability"),
        ({"compute_capability": 8.6}, "Target compute_capability 8.6: a ComputeCapability or its text"),
    ):
        with pytest.raises(InvalidInputError, match=re.escape(expected)):
            Target(**bad)  # type: ignore[arg-type]


def test_a_target_version_is_refused_where_it_is_made_as_the_flag_refuses_it() -> None:
    """``Target(version="x.y")`` was taken, and failed only once a check used it, naming no Target
    (``--trt-version x.y`` is refused at once)."""
    for bad in ("x.y", "10.x", " 10.3", 10.3):
        with pytest.raises(InvalidInputError, match=re.escape(f"Target version: {bad!r} is not a TensorRT version")):
            Target(flavor="tensorrt", version=bad)  # type: ignore[arg-type]
    assert Target(flavor="tensorrt", version="10.3.0.26").version == "10.3.0.26"


def test_the_loader_refuses_a_policy_environment_or_target_of_another_type(engines: dict[str, Path]) -> None:
    """``policy=None`` (as ``EnginePool`` takes it) or ``target="8.6"`` failed as an AttributeError
    from inside a rule ('NoneType' object has no attribute 'trusted_keys')."""
    engine = engines["sm86"]
    policy = "policy None: a LoadPolicy, e.g. LoadPolicy()"
    calls: list[tuple[str, Callable[[], object]]] = [
        (policy, lambda: check_compatibility(engine, None)),  # type: ignore[arg-type]
        ("target '8.6': a Target", lambda: check_compatibility(engine, target="8.6")),  # type: ignore[arg-type]
        ("environment 'here': an Environment", lambda: load_engine(engine, LoadPolicy(), "here")),  # type: ignore[arg-type]
        ("policy 'strict': a LoadPolicy", lambda: load_engine(engine, "strict")),  # type: ignore[arg-type]
        (policy, lambda: select_artifact(engine.parent, "net", policy=None)),  # type: ignore[arg-type]
        ("target 8.6: a Target", lambda: select_artifact(engine.parent, "net", target=8.6)),  # type: ignore[arg-type]
        (policy, lambda: load_best(engine.parent, "net", policy=None)),  # type: ignore[arg-type]
    ]
    for expected, call in calls:
        with pytest.raises(InvalidInputError, match=re.escape(expected)):
            call()


def test_a_load_policy_of_the_wrong_types_is_refused_with_the_fix() -> None:
    with pytest.raises(InvalidInputError, match=re.escape("load_trusted_keys(['signer.pub'])")):
        LoadPolicy(trusted_keys=["signer.pub"])  # type: ignore[list-item]
    with pytest.raises(InvalidInputError, match="LoadPolicy require_signature 'yes': True or False"):
        LoadPolicy(require_signature="yes")  # type: ignore[arg-type]
    assert LoadPolicy(trusted_keys=[]).trusted_keys == ()  # a list is kept as the tuple it is typed


# ---------------------------------------------------------------- what check says, and where it stops


def test_check_json_failure_documents(engines: dict[str, Path], tmp_path: Path) -> None:
    """A mistyped path is a usage error (the plain error document); an engine without its manifest is
    refused under a rule the README names."""
    code, out, _ = _check(str(tmp_path / "typo.engine"), "--cc", "8.6", "--json")
    document = json.loads(out)
    assert code == 2 and set(document) == {"error"} and document["error"]["exit_code"] == 2
    assert "no such engine" in document["error"]["message"]
    engine = tmp_path / engines["sm86"].name
    shutil.copy2(engines["sm86"], engine)
    code, out, _ = _check(str(engine), "--cc", "8.6", "--json")
    document = json.loads(out)
    assert code == 5 and document["compatible"] is False and document["exit_code"] == 5
    assert [problem["rule"] for problem in document["problems"]] == [Rule.MANIFEST.value]


def test_another_runtime_is_a_flavor_mismatch_not_a_missing_install(engines: dict[str, Path]) -> None:
    code, _, err = _check(str(engines["sm86"]), "--cc", "8.6", "--flavor", "tensorrt")
    assert code == 5 and "[flavor] engine was built with TensorRT-RTX, the target runs TensorRT" in err
    assert "pip install" not in err


def test_a_required_signature_without_a_key_is_a_usage_error(
    engines: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """check exits 2 before reading anything, as pull and serve do (one check: LoadPolicy)."""
    monkeypatch.delenv("TRTFORGE_TRUSTED_KEY", raising=False)
    code, _, err = _check(str(engines["sm86"]), "--cc", "8.6", "--require-signature")
    assert code == 2 and "no trusted key was given: pass --trusted-key FILE" in err
    code, _, err = _check("typo.engine", "--require-signature")
    assert code == 2 and "no trusted key" in err  # the flags first, then the path


# ---------------------------------------------------------------- inspect: facts, and how far to trust them


def test_inspect_shows_an_unverified_signature_as_such(
    engines: dict[str, Path], tmp_path: Path, signer: tuple[Path, Path]
) -> None:
    engine = _copy(engines["sm86"], tmp_path)
    sign_artifact(engine, load_signing_key(signer[0]))
    result = CliRunner().invoke(app, ["inspect", str(engine)])
    assert result.exit_code == 0 and "(not verified: pass --trusted-key to verify)" in result.stderr
    assert "(matches the manifest)" in result.stderr and "verified: matches" not in result.stderr
    result = CliRunner().invoke(app, ["inspect", str(engine), "--trusted-key", str(signer[1])])
    assert result.exit_code == 0 and "valid, by trusted key" in result.stderr
    path = manifest_path_for(engine)
    document = json.loads(path.read_text())
    document["build"]["seconds"] = 0.5  # any edit after signing
    path.write_text(json.dumps(document, indent=2))
    result = CliRunner().invoke(app, ["inspect", str(engine)])
    assert result.exit_code == 0 and "(not verified: pass --trusted-key to verify)" in result.stderr
    assert not re.search(r"\bsigned\s+yes\b", result.stderr)
    result = CliRunner().invoke(app, ["inspect", str(engine), "--trusted-key", str(signer[1]), "--json"])
    facts = json.loads(result.stdout)
    assert result.exit_code == 5 and facts["signature"]["status"] == "invalid"
    assert [problem["rule"] for problem in facts["problems"]] == ["signature"]


def test_inspect_reports_another_keys_signature_and_check_refuses_it(
    engines: dict[str, Path], tmp_path: Path, signer: tuple[Path, Path]
) -> None:
    """inspect reports (exit 0: "which is not a trusted key", status unknown_key); the gate that
    refuses it is check --require-signature (exit 5), as README says of each."""
    engine = _copy(engines["sm86"], tmp_path)
    sign_artifact(engine, load_signing_key(signer[0]))
    stranger = generate_keypair(tmp_path / "stranger")
    result = CliRunner().invoke(app, ["inspect", str(engine), "--trusted-key", str(stranger.public_path), "--json"])
    assert result.exit_code == 0 and json.loads(result.stdout)["signature"]["status"] == "unknown_key"
    code, _, err = _check(str(engine), "--cc", "8.6", "--require-signature", "--trusted-key", str(stranger.public_path))
    assert code == 5 and "which is not a trusted key" in err


def test_inspect_exits_5_when_the_engine_is_not_the_manifests(engines: dict[str, Path], tmp_path: Path) -> None:
    engine = _copy(engines["sm86"], tmp_path)
    data = bytearray(engine.read_bytes())
    data[len(data) // 2] ^= 0x01
    engine.write_bytes(bytes(data))
    result = CliRunner().invoke(app, ["inspect", str(engine)])
    assert result.exit_code == 5 and "(DIFFERS from the manifest)" in result.stderr
    assert "[sha256] engine sha256" in result.stderr and "Traceback" not in result.output
    facts = json.loads(CliRunner().invoke(app, ["inspect", str(engine), "--json"]).stdout)
    assert facts["engine"]["matches_manifest"] is False and facts["problems"][0]["rule"] == "sha256"


# ---------------------------------------------------------------- choosing in a folder


def test_select_artifact_takes_a_target_as_check_does(engines: dict[str, Path], tmp_path: Path) -> None:
    """The no-GPU message tells Python users ``target=Target(compute_capability=...)``: select_artifact
    takes it, and an environment from a Target without a flavor runs the installed runtime."""
    import inspect

    assert "target=Target(compute_capability=...)" in NO_GPU_MESSAGE
    assert "target" in inspect.signature(select_artifact).parameters
    for label in ("sm86", "sm89"):
        _copy(engines[label], tmp_path)
    assert select_artifact(tmp_path, "net", target=Target(compute_capability="8.9")).name == engines["sm89"].name
    env = Target(compute_capability="8.6").environment()
    assert env.flavor == "tensorrt-rtx" and env.version
    assert select_artifact(tmp_path, "net", environment=env).name == engines["sm86"].name


def test_a_target_version_without_a_flavor_is_refused_among_both_runtimes_engines(
    engines: dict[str, Path], enterprise: dict[str, Path], tmp_path: Path
) -> None:
    """``Target(version=...)`` alone names no runtime: among engines of both, it was paired with
    each, so an enterprise TensorRT engine was chosen for a host running TensorRT-RTX."""
    rtx = _copy(engines["sm86"], tmp_path)
    trt = _copy(enterprise["sm86"], tmp_path)
    with pytest.raises(InvalidInputError, match=r"without a flavor.*tensorrt and tensorrt-rtx"):
        select_artifact(tmp_path, "net", target=Target(version=TRT, compute_capability="8.6"))
    assert select_artifact(tmp_path, "net", target=at("8.6")) == trt
    rtx_version = read_manifest(rtx).tensorrt.version
    assert select_artifact(tmp_path, "net", target=Target("tensorrt-rtx", rtx_version, "8.6")) == rtx


def test_select_artifact_asks_for_a_precision_when_several_fit(engines: dict[str, Path], tmp_path: Path) -> None:
    """fp32 and fp16 both fit: the build time (one-second resolution) used to choose."""
    fp32, fp16 = _copy(engines["digits"], tmp_path), _copy(engines["digits16"], tmp_path)
    with pytest.raises(InvalidInputError) as refused:
        select_artifact(tmp_path, "digits-cnn", target=AT_86)
    message = str(refused.value)
    assert refused.value.exit_code == 2 and "compatible engines of 2 precisions fit (fp16, fp32)" in message
    assert "--precision" in message and "precision=" in message
    assert select_artifact(tmp_path, "digits-cnn", precision="fp16", target=AT_86) == fp16
    assert select_artifact(tmp_path, "digits-cnn", precision="fp32", target=AT_86) == fp32
    with pytest.raises(InvalidInputError, match="2 precisions"):
        load_best(tmp_path, "digits-cnn", environment=AT_86.environment())


def test_a_precision_of_no_engine_is_refused_naming_the_precisions(engines: dict[str, Path], tmp_path: Path) -> None:
    """``precision="FP16"`` was "no engine of digits-cnn (FP16); check the name or build it first":
    it is refused as the spec and ``--precision`` refuse it, the valid ones named, the closest offered."""
    from trtforge.runtime import find_artifacts

    _copy(engines["digits16"], tmp_path)
    picks = {
        "select_artifact": lambda: select_artifact(tmp_path, "digits-cnn", precision="FP16", target=AT_86),
        "load_best": lambda: load_best(tmp_path, "digits-cnn", precision="FP16", environment=AT_86.environment()),
        "find_artifacts": lambda: find_artifacts(tmp_path, "digits-cnn", "FP16"),
    }
    for what, pick in picks.items():
        with pytest.raises(InvalidInputError) as refused:
            pick()
        assert str(refused.value) == "precision 'FP16': use fp32, fp16, int8 — did you mean 'fp16'?", what
    with pytest.raises(InvalidInputError, match=r"precision 'bf16': use fp32, fp16, int8 — did you mean 'fp16'\?"):
        select_artifact(tmp_path, "digits-cnn", precision="bf16", target=AT_86)


def test_a_folder_that_is_not_there_or_is_a_file_is_refused(tmp_path: Path) -> None:
    """Not "no engine of digits-cnn" (a folder with none of them): the path names no folder at all."""
    from trtforge.runtime import find_artifacts

    (tmp_path / "file").write_text("")
    for where in (tmp_path / "missing", tmp_path / "file"):
        with pytest.raises(InvalidInputError) as refused:
            find_artifacts(where)
        assert str(refused.value) == f"{where}: not a directory of engines"
        with pytest.raises(InvalidInputError) as refused:
            select_artifact(where, "digits-cnn", target=AT_86)
        assert str(refused.value) == f"{where}: not a directory of engines"


def test_the_header_check_is_asked_only_for_this_very_host(engines: dict[str, Path]) -> None:
    """Rules judged for a target's values (or an environment given) prove nothing about this
    host's GPU, so its runtime's header check is neither asked nor said to be skipped by default."""
    for result in (
        check_compatibility(engines["sm86"], target=AT_86),
        check_compatibility(engines["sm86"], environment=AT_86.environment()),
    ):
        assert not [note for note in result.notes if note.startswith("header check")], result.notes


def test_an_unreadable_manifest_is_skipped_and_said(engines: dict[str, Path], tmp_path: Path) -> None:
    """One damaged entry in a folder does not refuse every other model."""
    from trtforge.runtime import find_artifacts

    digits = _copy(engines["digits"], tmp_path)
    (tmp_path / "zzz-other.manifest.json").write_text("{}")
    (tmp_path / "zzz-other.engine").write_bytes(b"")
    assert select_artifact(tmp_path, "digits-cnn", target=AT_86) == digits
    listing = find_artifacts(tmp_path)
    assert [manifest.name for manifest, _ in listing.found] == ["digits-cnn"]
    (skipped,) = listing.skipped
    assert skipped.startswith(f"{tmp_path / 'zzz-other.manifest.json'}: not a trtforge manifest")
    with pytest.raises(InvalidInputError) as refused:
        select_artifact(tmp_path, "zzz-other", target=AT_86)
    assert "no engine of zzz-other" in str(refused.value) and "(1 unreadable entry skipped: " in str(refused.value)
    with pytest.raises(IncompatibleEngineError, match="1 unreadable entry skipped"):
        select_artifact(tmp_path, "digits-cnn", target=Target(compute_capability="7.5"))


# ---------------------------------------------------------------- one listing of a folder

#: a manifest no reader may open (root reads any file whatever its mode: the refusal is made here)
LOCKED = "locked-fp32-x.manifest.json"
#: the manifests of ``_busy_folder`` that do not read, each beside an engine
UNREADABLE = (
    "bad-fp32-x.manifest.json",
    "version-fp32-x.manifest.json",
    "fifo-fp32-x.manifest.json",
    LOCKED,
    "folder-fp32-x.manifest.json",
)


def _counting_opens(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """How often each ``*.manifest.json`` is opened from now on, however it is reached (``open``,
    ``Path.open``, ``Path.read_bytes``); opening ``LOCKED`` fails as an unreadable file does."""
    import builtins

    opened: dict[str, int] = {}
    real_open = io.open

    def counted(file: object, *args: object, **kwargs: object) -> object:
        name = Path(str(file)).name if isinstance(file, (str, Path)) else ""
        if name.endswith(".manifest.json"):
            opened[name] = opened.get(name, 0) + 1
        if name == LOCKED:
            raise PermissionError(13, "Permission denied", str(file))
        return real_open(file, *args, **kwargs)  # type: ignore[call-overload]

    monkeypatch.setattr(builtins, "open", counted)
    monkeypatch.setattr(io, "open", counted)
    return opened


def _busy_folder(engines: dict[str, Path], folder: Path) -> list[Path]:
    """A folder as a shared one looks: three artifacts (returned), a hidden copy of a fourth, the
    temporaries of writers in progress, a manifest whose engine is gone, and manifests that do not
    read (not JSON, not a version, a FIFO, a folder, one without read permission)."""
    import os

    artifacts = [_copy(engines[label], folder) for label in ("digits", "digits16", "sm86")]
    _copy(engines["sm89"], folder, "." + engines["sm89"].name)  # a user's dot-named copy: never listed
    manifest = manifest_path_for(artifacts[0])
    for temporary in (
        f".{manifest.name}.4242-k3j2h1.tmp",  # fsutil.TEMP_PATTERN: staged, backup, journal
        f".{artifacts[0].name}.4242-k3j2h1.bak.tmp",
        ".trtforge-commit@digits-cnn-fp32.4242-k3j2h1.journal.tmp",
        f".{manifest.name}.a1b2c3d4.tmp",  # LEGACY_TEMP_PATTERN
        ".tmp-a1b2c3d4",
    ):
        shutil.copy2(manifest, folder / temporary)
    shutil.copy2(manifest, folder / "gone-fp32-x.manifest.json")  # its engine is gone: no artifact
    document = json.loads(manifest.read_text())
    document["tensorrt"]["version"] = "x"
    makers: tuple[Callable[[Path], object], ...] = (
        lambda path: path.write_text("{}"),
        lambda path: path.write_text(json.dumps(document)),
        os.mkfifo,  # reading one waited for a writer that never came
        lambda path: shutil.copy2(manifest, path),
        Path.mkdir,
    )
    for name, make in zip(UNREADABLE, makers, strict=True):
        make(folder / name)
        (folder / name.replace(".manifest.json", ".engine")).write_bytes(b"engine")
    return artifacts


def test_the_loader_and_a_dir_registry_list_a_folder_alike(
    engines: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``find_artifacts`` and ``DirRegistry.candidates`` listed a folder two ways: the registry left
    hidden manifests out and the loader did not; the registry stopped at a manifest it could not
    open (exit 6) and hung on a FIFO, where the loader refused the whole folder (exit 5). One
    listing now (``selection.list_artifacts``): the same artifacts, the same entries skipped."""
    from trtforge.publish import DirLocation
    from trtforge.publish.directory import DirRegistry
    from trtforge.runtime import find_artifacts

    artifacts = _busy_folder(engines, tmp_path)
    _counting_opens(monkeypatch)
    stems = sorted(read_manifest(engine).stem for engine in artifacts)
    loader = find_artifacts(tmp_path)
    registry = DirRegistry(DirLocation(tmp_path)).candidates("digits-cnn", None)
    assert sorted(manifest.stem for manifest, _ in loader.found) == stems
    assert sorted([c.manifest.stem for c in registry.candidates] + list(registry.others)) == stems
    net = tmp_path / engines["sm86"].name
    assert sorted(engine for _, engine in loader.found) == sorted([*(c.locator for c in registry.candidates), net])
    assert registry.skipped == loader.skipped
    reasons = dict(reason.split(": ", 1) for reason in loader.skipped)
    assert sorted(Path(path).name for path in reasons) == sorted(UNREADABLE)
    assert reasons[str(tmp_path / LOCKED)] == "cannot read the manifest (Permission denied); check its permissions"
    assert reasons[str(tmp_path / "fifo-fp32-x.manifest.json")].startswith("not a regular file")
    assert "(5 unreadable entries skipped: " in loader.note
    # the loader chooses from that listing
    assert select_artifact(tmp_path, "net", target=AT_86) == net


def test_serve_reads_each_manifest_of_a_folder_once(
    engines: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``serve FOLDER`` listed the folder, then listed it again for each model name (every manifest
    read once per name, and once more), then read the chosen ones again for their plans."""
    from trtforge import environment
    from trtforge.compat import DEFAULT_POLICY, GpuDevice
    from trtforge.serve.server import PullOptions, resolve_artifacts

    served = [_copy(engines[label], tmp_path) for label in ("digits", "digits16", "sm86", "sm89")]
    gpu = GpuDevice(0, "RTX 3090", ComputeCapability(8, 6), "550", 24 << 30, 20 << 30)
    monkeypatch.setattr(environment, "detect_gpus", lambda: (gpu,))
    opened = _counting_opens(monkeypatch)
    logged: list[str] = []
    plans, refused = resolve_artifacts([str(tmp_path)], DEFAULT_POLICY, PullOptions(precision="fp32"), logged.append)
    assert refused == [] and logged == []
    assert {plan.name: plan.path for plan in plans} == {"digits-cnn": served[0], "net": served[2]}
    assert opened == {manifest_path_for(engine).name: 1 for engine in served}


def test_a_folder_in_place_of_an_engine_is_skipped_with_its_reason(engines: dict[str, Path], tmp_path: Path) -> None:
    """A manifest beside a folder named as its engine was listed, and, newer, chosen over a real
    engine (then "not a file" when served); it is skipped now, and said."""
    from trtforge.runtime import find_artifacts

    real = _copy(engines["digits"], tmp_path)
    stray = tmp_path / "stray"
    stray.mkdir()
    manifest = read_manifest(real)
    fake = stray / real.name.replace(manifest.stem, f"{manifest.stem}-newer")
    (stray / manifest_path_for(fake).name).write_text(manifest_path_for(real).read_text())
    fake.mkdir()
    listing = find_artifacts(stray)
    assert listing.found == () and [reason.split(": ", 1)[1] for reason in listing.skipped] == [
        "a folder, not an engine file; remove it, or rebuild with trtforge build"
    ]
