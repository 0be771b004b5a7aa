"""The Triton release table, the rule "does this engine load in release R", and where it is used:
``check --triton``, ``build --triton``, ``matrix --triton`` and ``publish --to triton://``."""

from __future__ import annotations

import json
import re
import shutil
import time
from pathlib import Path

import pytest
import yaml
from clitools import cli
from models import conv_net, need_rtx
from registry import as_enterprise, build_engine

from trtforge import digests
from trtforge.compat import version_tuple
from trtforge.errors import InvalidInputError
from trtforge.manifest import TensorRTInfo, read_manifest
from trtforge.project import load_settings
from trtforge.tags import Platform, parse_trt_version
from trtforge.triton_releases import (
    CONTAINERS,
    PLAIN,
    RELEASE_PATTERN,
    TRTLLM,
    TritonRelease,
    find_release,
    release_problem,
    releases,
    runtime_release_problem,
)

need_rtx()

REFUSAL_24_08 = (
    "Triton 24.08 ships TensorRT 10.3.0.26; this engine was built with 10.13.0.35: rebuild inside "
    "nvcr.io/nvidia/tritonserver:24.08-py3 or use a version-compatible engine"
)


@pytest.fixture(scope="module")
def rtx_engine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_engine(tmp_path_factory.mktemp("triton-release"))


#: CUDA as the release notes give it: ``12.6``, ``12.6.2``, ``12.4.0.041`` (another numbering than TensorRT's)
CUDA_VERSION = re.compile(r"^\d+\.\d+(?:\.\d+){0,2}\Z", re.ASCII)

GITHUB_SOURCE = re.compile(
    r"^https://github\.com/triton-inference-server/server/blob/[0-9a-f]{40}/docs/introduction/"
    r"(release_notes|compatibility)\.md\Z"
)


def test_every_row_parses() -> None:
    rows = releases()
    assert rows, "the table ships with the package"
    keys = [(r.release, CONTAINERS.index(r.container)) for r in rows]
    assert keys == sorted(set(keys)), "one row per release and container, oldest first"
    for row in rows:
        assert RELEASE_PATTERN.match(row.release) and row.container in CONTAINERS, row
        # the rules read the release's TensorRT as a target's version (compat.version_tuple): numbers
        # only here (no wheel suffix), major.minor.patch at least, as the release notes give it
        shipped = parse_trt_version(row.tensorrt)
        assert version_tuple(row.tensorrt) == shipped and len(shipped) >= 3 and shipped[0] >= 8, row
        assert CUDA_VERSION.match(row.cuda), row
        from_page = row.source.startswith("https://docs.nvidia.com/") and row.release.replace(".", "-") in row.source
        assert from_page or GITHUB_SOURCE.match(row.source), row
        assert row.image == f"nvcr.io/nvidia/tritonserver:{row.release}-{row.container}"
        assert find_release(row.name) == row, "every row is reachable by the name --triton takes"


def test_the_table_covers_both_containers() -> None:
    """The plain container's months the release notes list, and the compatibility table's run of
    TensorRT-LLM containers (24.04 left out: its TensorRT is a dev build, 9.3.0.post12.dev1)."""
    by_container = {c: [r.release for r in releases() if r.container == c] for c in CONTAINERS}
    assert by_container[PLAIN] == ["24.08", "24.10", "24.12", "25.01"]
    months = [f"{year}.{month:02d}" for year in (24, 25, 26) for month in range(1, 13)]
    assert by_container[TRTLLM] == months[months.index("24.05") : months.index("26.07") + 1]


def test_variants_resolve() -> None:
    """The issue's example: 24.10 ships 10.5.0.18 in the plain container, 10.4.0 in the TensorRT-LLM one."""
    plain, trtllm = find_release("24.10"), find_release(" 24.10-trtllm-python-py3 ")
    assert find_release("24.10-py3") == plain and (plain.container, plain.tensorrt) == (PLAIN, "10.5.0.18")
    assert (trtllm.container, trtllm.tensorrt, trtllm.cuda) == (TRTLLM, "10.4.0", "12.5.1.007")
    assert plain.name == "24.10" and trtllm.name == "24.10-trtllm-python-py3"
    assert plain.image == "nvcr.io/nvidia/tritonserver:24.10-py3"
    assert trtllm.image == "nvcr.io/nvidia/tritonserver:24.10-trtllm-python-py3"
    assert find_release("26.07-trtllm-python-py3").tensorrt == "10.14.1.48"


@pytest.mark.parametrize(
    ("name", "says"),
    [
        ("24.11", "did you mean '24.11-trtllm-python-py3'"),  # only the TensorRT-LLM container is known
        ("24.10-vllm-python-py3", "write it YY.MM, as the NGC tag, or YY.MM-trtllm-python-py3"),
        ("24.04-trtllm-python-py3", "not a Triton release trtforge knows"),  # left out: a dev build
        ("24.08-", "did you mean '24.08'"),  # a dash names a container: none here (it was taken as 24.08)
    ],
)
def test_unknown_variants_say_what_is_known(name: str, says: str) -> None:
    with pytest.raises(InvalidInputError) as caught:
        find_release(name)
    message = str(caught.value)
    assert says in message and len(message.splitlines()) == 1
    assert "24.05, 24.06" in message and "(-trtllm-python-py3)" in message and "25.01 (-py3)" in message


def test_the_release_notes_numbers() -> None:
    """The issue's example, as the 24.08 release notes give it."""
    assert find_release("24.08") == TritonRelease(
        "24.08",
        "10.3.0.26",
        "12.6",
        "https://docs.nvidia.com/deeplearning/triton-inference-server/release-notes/rel-24-08.html",
    )


def test_unknown_release_names_the_known_ones() -> None:
    with pytest.raises(InvalidInputError) as caught:
        find_release("24.8")
    message = str(caught.value)
    assert "--triton '24.8'" in message and "write it YY.MM" in message and "24.08" in message


@pytest.mark.parametrize(
    ("version", "version_compatible", "release", "fits"),
    [
        ("10.3.0", False, "24.08", True),  # the wheel's version: the header has no build number
        ("10.3.0.26", False, "24.08", True),
        ("10.13.0.35", False, "24.08", False),
        ("10.5.0.18", False, "24.08", False),  # older runtime, plain engine
        ("10.3.0", False, "24.10", False),  # newer runtime, plain engine: exact version only
        ("10.3.0", True, "24.10", True),  # version-compatible: same major, runtime at least as new
        ("10.7.0", True, "24.08", False),  # version-compatible, runtime older
        ("9.3.0", True, "24.12", True),  # version-compatible 9 on 10: one of NVIDIA's cross-major pairs
        ("11.0.0", True, "24.12", False),  # version-compatible 11 on 10: an older major
        ("10.4.0", False, "24.10-trtllm-python-py3", True),  # the table gives major.minor.patch only
        ("10.4.0.26", False, "24.10-trtllm-python-py3", True),  # compared at the precision both give
        ("10.5.0.18", False, "24.10-trtllm-python-py3", False),  # the plain container's TensorRT
        ("10.5.0.18", False, "24.10", True),
        ("10.4.1", False, "24.10-trtllm-python-py3", False),
    ],
)
def test_the_rule_is_compats(
    rtx_engine: Path, tmp_path: Path, version: str, version_compatible: bool, release: str, fits: bool
) -> None:
    manifest = read_manifest(as_enterprise(rtx_engine, tmp_path, version, version_compatible))
    problem = release_problem(manifest, find_release(release))
    assert (problem is None) == fits, problem


def test_check_refuses_with_the_issues_message(rtx_engine: Path, tmp_path: Path) -> None:
    engine = as_enterprise(rtx_engine, tmp_path, "10.13.0.35")
    code, stdout, stderr = cli("check", engine, "--triton", "24.08")
    assert code == 5
    assert REFUSAL_24_08 in stderr and len(stderr.strip().splitlines()) == 1 and not stdout
    code, stdout, _ = cli("check", engine, "--triton", "24.08", "--json")
    assert code == 5 and json.loads(stdout)["problems"] == [{"rule": "version", "message": REFUSAL_24_08}]


def test_check_refusal_names_the_variants_image(rtx_engine: Path, tmp_path: Path) -> None:
    engine = as_enterprise(rtx_engine, tmp_path, "10.5.0.18")
    code, stdout, stderr = cli("check", engine, "--triton", "24.10-trtllm-python-py3")
    assert code == 5 and not stdout and len(stderr.strip().splitlines()) == 1
    assert (
        "Triton 24.10-trtllm-python-py3 ships TensorRT 10.4.0; this engine was built with 10.5.0.18: rebuild inside "
        "nvcr.io/nvidia/tritonserver:24.10-trtllm-python-py3 or use a version-compatible engine"
    ) in stderr
    code, _, stderr = cli("check", engine, "--triton", "24.10", "--cc", "8.6")
    assert code == 0, stderr
    code, _, stderr = cli("check", rtx_engine, "--triton", "24.11-trtllm-python-py3")
    assert code == 5
    assert "rebuild with backend: tensorrt inside nvcr.io/nvidia/tritonserver:24.11-trtllm-python-py3" in stderr


def test_check_passes_an_engine_the_release_loads(rtx_engine: Path, tmp_path: Path) -> None:
    engine = as_enterprise(rtx_engine, tmp_path, "10.3.0")
    code, stdout, stderr = cli("check", engine, "--triton", "24.08", "--cc", "8.6", "--json")
    assert code == 0, stderr
    result = json.loads(stdout)
    assert result["compatible"] is True and result["environment"]["flavor"] == "tensorrt"
    assert result["environment"]["version"] == "10.3.0.26"  # the release's TensorRT, not the engine's
    code, _, stderr = cli("check", engine, "--triton", "24.08", "--cc", "8.6")
    assert code == 0 and "loads on TensorRT 10.3.0.26, compute capability 8.6" in stderr


def test_one_verdict_for_a_release_and_its_tensorrt(rtx_engine: Path, tmp_path: Path) -> None:
    """``--triton 24.08`` and ``--flavor tensorrt --trt-version 10.3.0.26`` (what 24.08 ships) agree."""
    for version, fits in (("10.3.0", True), ("10.3.0.26", True), ("10.3.0.27", False), ("10.4.0", False)):
        engine = as_enterprise(rtx_engine, tmp_path / version, version)
        triton, _, _ = cli("check", engine, "--cc", "8.6", "--triton", "24.08")
        plain, _, _ = cli("check", engine, "--cc", "8.6", "--flavor", "tensorrt", "--trt-version", "10.3.0.26")
        assert triton == plain == (0 if fits else 5), version


def test_check_judges_flags_and_the_path_before_the_manifest(rtx_engine: Path, tmp_path: Path) -> None:
    """--triton read the manifest first: a mistyped path was "manifest missing" (exit 5) and a bad
    flag went unreported."""
    code, _, stderr = cli("check", tmp_path / "typo.engine", "--triton", "24.08")
    assert code == 2 and "no such engine" in stderr
    code, stdout, _ = cli("check", tmp_path / "typo.engine", "--triton", "24.08", "--json")
    assert code == 2 and set(json.loads(stdout)) == {"error"}
    code, _, stderr = cli("check", rtx_engine, "--triton", "24.08", "--cc", "banana")
    assert code == 2 and "--cc: 'banana' is not a compute capability" in stderr
    code, _, stderr = cli("check", rtx_engine, "--triton", "24.08", "--platform", "linux_x86 64")
    assert code == 2 and "--platform" in stderr
    alone = tmp_path / rtx_engine.name
    shutil.copyfile(rtx_engine, alone)  # no manifest beside it: refused, under the rule named for it
    code, stdout, _ = cli("check", alone, "--triton", "24.08", "--json")
    assert code == 5 and [problem["rule"] for problem in json.loads(stdout)["problems"]] == ["manifest"]


def test_check_refuses_a_tensorrt_rtx_engine(rtx_engine: Path) -> None:
    code, _, stderr = cli("check", rtx_engine, "--triton", "24.12")
    assert code == 5
    assert "Triton 24.12 ships TensorRT 10.7.0.23; this engine was built with TensorRT-RTX 1.7" in stderr
    assert "rebuild with backend: tensorrt inside nvcr.io/nvidia/tritonserver:24.12-py3" in stderr


def test_check_flags_that_contradict_the_release(rtx_engine: Path) -> None:
    code, _, stderr = cli("check", rtx_engine, "--triton", "24.08", "--trt-version", "10.3.0")
    assert code == 2 and "drop --flavor and --trt-version" in stderr
    code, _, stderr = cli("check", rtx_engine, "--triton", "99.99")
    assert code == 2 and "not a Triton release trtforge knows" in stderr


def _conv_spec(folder: Path, backend: str = "tensorrt-rtx", build: str = "") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    conv_net(folder / "conv.onnx")
    spec = folder / "conv.yaml"
    spec.write_text(
        f"name: conv\nmodel: conv.onnx\nbackend: {backend}\ntargets: ['8.6']\naccuracy: {{enabled: false}}\n"
        "profiles:\n  - input: {min: [1, 3, 16, 16], opt: [2, 3, 16, 16], max: [4, 3, 16, 16]}\n"
        + (f"build: {build}\n" if build else "")
    )
    return spec


def _files(folder: Path) -> dict[str, bytes]:
    """Every file below ``folder`` (hidden ones and temporaries included) with its bytes."""
    return {str(path.relative_to(folder)): path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file()}


def test_build_refuses_before_building_and_keeps_the_good_artifact(tmp_path: Path) -> None:
    """TensorRT-RTX engines never load in Triton's tensorrt_plan backend: the verdict is known from
    the spec and the installed backend, so nothing is built, and a good artifact in --out stays."""
    spec = _conv_spec(tmp_path / "specs")
    out, cache = tmp_path / "out", tmp_path / "cache"
    code, _, stderr = cli("build", spec, "--out", out, "--cache-dir", cache)
    assert code == 0, stderr
    before = _files(out)
    assert any(name.endswith(".engine") for name in before)
    stamps = {path: path.stat().st_mtime_ns for path in out.rglob("*")}
    code, stdout, stderr = cli("build", spec, "--out", out, "--cache-dir", cache, "--triton", "24.08")
    assert code == 5 and not stdout
    [line] = stderr.strip().splitlines()
    assert line.startswith("error: Triton 24.08 ships TensorRT 10.3.0.26; this engine was built with TensorRT-RTX 1.")
    assert line.endswith("rebuild with backend: tensorrt inside nvcr.io/nvidia/tritonserver:24.08-py3")
    assert _files(out) == before, "the good artifact is byte-identical, and no temporary is left"
    assert {path: path.stat().st_mtime_ns for path in out.rglob("*")} == stamps, "nothing was rewritten"


def test_build_refusal_touches_nothing(tmp_path: Path) -> None:
    """A fresh --out is not even created, the cache stays empty and the backend is never opened (no
    "backend" line); version_compatible does not help an engine of the other flavor; --json reports
    the refusal as the spec's row."""
    spec = _conv_spec(tmp_path / "specs", backend="auto", build="{version_compatible: true}")
    out, cache = tmp_path / "out", tmp_path / "cache"
    code, _, stderr = cli("build", spec, "--out", out, "--cache-dir", cache, "--triton", "24.10-trtllm-python-py3")
    assert code == 5, stderr
    assert "Triton 24.10-trtllm-python-py3 ships TensorRT 10.4.0; this engine was built with TensorRT-RTX" in stderr
    assert "backend tensorrt-rtx" not in stderr and not out.exists()
    assert not any(cache.iterdir()), "no precision, timing or build cache was written"
    code, stdout, _ = cli("build", spec, "--out", out, "--triton", "24.12", "--json")
    [row] = json.loads(stdout)["results"]
    assert code == 5 and row["exit_code"] == 5 and row["status"] == "failed"
    assert row["error"].startswith("Triton 24.12 ships TensorRT 10.7.0.23") and not out.exists()
    code, _, stderr = cli("build", spec, "--out", out, "--triton", "2408")
    assert code == 2 and "write it YY.MM" in stderr and not out.exists()


def test_the_pre_build_rule_is_the_manifests(rtx_engine: Path) -> None:
    """``build`` judges the TensorRT section it will stamp with the rule ``check`` applies to the stamped one."""
    manifest = read_manifest(rtx_engine)
    platform = Platform(manifest.platform.os, manifest.platform.machine)
    for release in releases():
        for version, compatible in (("10.3.0", False), ("10.4.0.26", True), (release.tensorrt, False)):
            for flavor in ("tensorrt", "tensorrt-rtx"):
                built = TensorRTInfo(flavor=flavor, version=version, version_compatible=compatible)
                stamped = manifest.model_copy(update={"tensorrt": built})
                assert runtime_release_problem(built, platform, release) == release_problem(stamped, release)
    assert release_problem(manifest.model_copy(update={"tensorrt": built}), find_release("24.08")) is not None


def _project(root: Path, backend: str) -> Path:
    root.mkdir()
    conv_net(root / "conv.onnx")
    (root / "trt.yaml").write_text(
        f"name: big\nmodel: conv.onnx\nbackend: {backend}\ntargets: ['8.6']\n"
        "profiles:\n  - input: {min: [1, 3, 16, 16], opt: [2, 3, 16, 16], max: [4, 3, 16, 16]}\n"
    )
    (root / "trtforge.yaml").write_text("runners:\n  cpu: ubuntu-latest\n  '8.6': [gpu, a10]\n")
    return root


def test_matrix_builds_in_the_releases_container(tmp_path: Path) -> None:
    root = _project(tmp_path / "specs", "auto")
    code, stdout, stderr = cli("matrix", root, "--format", "github", "--triton", "24.08")
    assert code == 0, stderr
    [entry] = json.loads(stdout)["include"]
    assert entry["backend"] == "tensorrt" and entry["runner"] == ["gpu", "a10"]
    assert entry["container"] == "nvcr.io/nvidia/tritonserver:24.08-py3"
    assert "'tensorrt==10.3.0.*'" in entry["install"]
    code, stdout, _ = cli("matrix", root, "--format", "gitlab", "--triton", "24.08")
    job = yaml.safe_load(stdout)["build:big-fp32-sm86"]
    assert job["image"] == "nvcr.io/nvidia/tritonserver:24.08-py3"
    assert job["before_script"] == [entry["install"]]
    code, stdout, _ = cli("matrix", root, "--format", "gitlab")
    assert yaml.safe_load(stdout)["build:big-fp32-cpu"]["image"] == "python:3.11"  # no release: pip's image


def test_matrix_builds_in_the_variants_container(tmp_path: Path) -> None:
    root = _project(tmp_path / "specs", "auto")
    code, stdout, stderr = cli("matrix", root, "--format", "github", "--triton", "24.10-trtllm-python-py3")
    assert code == 0, stderr
    [entry] = json.loads(stdout)["include"]
    assert entry["container"] == "nvcr.io/nvidia/tritonserver:24.10-trtllm-python-py3"
    assert "'tensorrt==10.4.0.*'" in entry["install"]


def test_matrix_refuses_a_tensorrt_rtx_spec_for_triton(tmp_path: Path) -> None:
    root = _project(tmp_path / "specs", "tensorrt-rtx")
    code, _, stderr = cli("matrix", root, "--triton", "24.08")
    assert code == 2 and "Triton 24.08 runs enterprise TensorRT plans only" in stderr


def test_publish_warns_when_the_repository_is_declared_for_another_release(rtx_engine: Path, tmp_path: Path) -> None:
    engine = as_enterprise(rtx_engine, tmp_path / "e", "10.13.0.35")
    repository = tmp_path / "models"
    repository.mkdir()
    (repository / ".trtforge-triton-release").write_text("24.08\n")
    code, stdout, stderr = cli("publish", engine, "--to", f"triton://{repository}", "--json")
    assert code == 0, stderr
    [warning] = json.loads(stdout)["warnings"]
    assert warning == f"triton://{repository} is declared for Triton 24.08 (.trtforge-triton-release): {REFUSAL_24_08}"
    (repository / ".trtforge-triton-release").write_text("10.3\n")
    code, stdout, _ = cli("publish", engine, "--to", f"triton://{repository}", "--json")
    assert code == 0 and "not a Triton release trtforge knows" in json.loads(stdout)["warnings"][0]
    fitting = as_enterprise(rtx_engine, tmp_path / "f", "10.3.0")
    (repository / ".trtforge-triton-release").write_text("24.08")
    code, stdout, _ = cli("publish", fitting, "--to", f"triton://{repository}", "--json", "--force")
    assert code == 0 and json.loads(stdout)["warnings"] == []
    (repository / ".trtforge-triton-release").write_text("24.10-trtllm-python-py3\n")
    code, stdout, _ = cli(
        "publish",
        as_enterprise(rtx_engine, tmp_path / "v", "10.5.0.18"),
        "--to",
        f"triton://{repository}",
        "--json",
        "--force",
    )
    assert code == 0 and json.loads(stdout)["warnings"] == [
        f"triton://{repository} is declared for Triton 24.10-trtllm-python-py3 (.trtforge-triton-release): "
        "Triton 24.10-trtllm-python-py3 ships TensorRT 10.4.0; this engine was built with 10.5.0.18: rebuild inside "
        "nvcr.io/nvidia/tritonserver:24.10-trtllm-python-py3 or use a version-compatible engine"
    ]


def _ci(root: Path, out: Path, cache: Path, *extra: str) -> tuple[int, dict, str]:
    time.sleep(0.1)  # what the previous run wrote has settled (SETTLE_NS below), so a rerun can be recorded
    code, stdout, stderr = cli("ci", root, "--out", out, "--cache-dir", cache, "--jobs", "1", "--json", *extra)
    return code, json.loads(stdout), stderr


def test_ci_refuses_what_the_release_cannot_load(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``ci --triton`` judges every spec before its build (an unchanged artifact too), and a rerun
    recorded without the flag is not replayed with it."""
    monkeypatch.setattr(digests, "SETTLE_NS", 50_000_000)
    root = _conv_spec(tmp_path / "specs").parent
    out, cache = tmp_path / "out", tmp_path / "cache"
    assert _ci(root, out, cache)[1]["results"][0]["status"] == "built"
    code, report, _ = _ci(root, out, cache)
    assert code == 0 and report["results"][0]["status"] == "unchanged"
    assert list((cache / "ci-reruns").glob("*.json")), "the unchanged run was recorded for a replay"
    before = _files(out)
    code, report, _ = _ci(root, out, cache, "--triton", "24.08")
    [result] = report["results"]
    assert code == 5 and (result["status"], result["exit_code"]) == ("failed", 5)
    assert result["message"].startswith(
        "Triton 24.08 ships TensorRT 10.3.0.26; this engine was built with TensorRT-RTX"
    )
    assert _files(out) == before
    code, _, stderr = cli("ci", root, "--out", out, "--cache-dir", cache, "--triton", "24.8")
    assert code == 2 and "--triton '24.8': not a Triton release trtforge knows" in stderr


def test_ci_takes_the_release_from_the_project_file(tmp_path: Path) -> None:
    root = _conv_spec(tmp_path / "specs").parent
    out, cache = tmp_path / "out", tmp_path / "cache"
    settings = root / "trtforge.yaml"
    settings.write_text("triton: 24.08\n")  # YAML's number 24.08 keeps both month digits
    code, report, _ = _ci(root, out, cache)
    assert code == 5 and report["results"][0]["message"].startswith("Triton 24.08 ships TensorRT 10.3.0.26")
    assert not list(out.glob("*.engine"))
    code, report, _ = _ci(root, out, cache, "--triton", "24.12")  # the flag wins
    assert code == 5 and report["results"][0]["message"].startswith("Triton 24.12 ships TensorRT 10.7.0.23")
    settings.write_text("triton: '24.8'\n")
    code, _, stderr = cli("ci", root, "--out", out, "--cache-dir", cache)
    assert code == 2 and len(stderr.strip().splitlines()) == 1
    assert f"{settings}:1: key 'triton': release '24.8': not a Triton release trtforge knows" in stderr
    settings.write_text("triton: 24.10\n")
    code, _, stderr = cli("ci", root, "--out", out, "--cache-dir", cache)
    assert code == 2 and f"{settings}:1: key 'triton': YAML reads 24.1 as a number" in stderr and "'24.10'" in stderr
    settings.write_text("tritn: '24.10'\n")
    code, _, stderr = cli("ci", root, "--out", out, "--cache-dir", cache)
    assert code == 2 and "unknown key 'tritn' — did you mean 'triton'?" in stderr
    settings.write_text("triton: 24.10-py3\n")
    assert load_settings(root).triton == "24.10", "stored by the name --triton gives it"
    settings.write_text("runners: {cpu: [ubuntu-latest]}\n")
    code, report, stderr = _ci(root, out, cache)
    assert code == 0 and report["results"][0]["status"] == "built", stderr


def test_matrix_takes_the_release_from_the_project_file(tmp_path: Path) -> None:
    root = _project(tmp_path / "specs", "auto")
    (root / "trtforge.yaml").write_text("runners:\n  cpu: ubuntu-latest\n  '8.6': [gpu, a10]\ntriton: '24.08'\n")
    code, stdout, stderr = cli("matrix", root, "--format", "github")
    assert code == 0, stderr
    [entry] = json.loads(stdout)["include"]
    assert entry["backend"] == "tensorrt" and entry["container"] == "nvcr.io/nvidia/tritonserver:24.08-py3"
    assert entry["triton"] == "24.08" and "'tensorrt==10.3.0.*'" in entry["install"]
    code, stdout, _ = cli("matrix", root, "--format", "gitlab", "--triton", "24.10-trtllm-python-py3")
    job = yaml.safe_load(stdout)["build:big-fp32-sm86"]  # the flag wins
    assert job["image"] == "nvcr.io/nvidia/tritonserver:24.10-trtllm-python-py3"
    assert "--triton 24.10-trtllm-python-py3 " in job["script"][0], "the job's ci judges the same release"
    (root / "trtforge.yaml").write_text("runners:\n  cpu: ubuntu-latest\ntriton: '24.8'\n")
    code, _, stderr = cli("matrix", root)
    assert code == 2 and f"{root / 'trtforge.yaml'}:3: key 'triton': release '24.8'" in stderr
    (root / "trtforge.yaml").write_text("runners:\n  cpu: ubuntu-latest\n")
    code, stdout, _ = cli("matrix", root, "--format", "gitlab")
    job = yaml.safe_load(stdout)["build:big-fp32-cpu"]
    assert job["image"] == "python:3.11" and "--triton" not in job["script"][0]


def test_matrix_refuses_a_tensorrt_rtx_spec_for_the_project_files_release(tmp_path: Path) -> None:
    root = _project(tmp_path / "specs", "tensorrt-rtx")
    (root / "trtforge.yaml").write_text("runners:\n  cpu: ubuntu-latest\ntriton: '24.12'\n")
    code, _, stderr = cli("matrix", root)
    assert code == 2 and "Triton 24.12 runs enterprise TensorRT plans only" in stderr
    assert "trtforge.yaml triton:" in stderr
