"""Items 2, 3, 4 and the ``ci`` parts of 14 of the trust review: ``trtforge ci`` never calls an
artifact "unchanged" or "restored" unless it is this spec's build, stops within seconds on Ctrl-C
leaving nothing partial, and one bad spec (or report path, or cache record) never kills the run."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import models
import pytest
from clitools import as_foreground_job, cli
from registry import RunningRegistry, build_engine, faulty_proxy
from trust import TrustRecorder

from trtforge.backends import choose_backend
from trtforge.ci import RECORD_FILE, build_inputs, build_key, cache_tag
from trtforge.digests import sha256_file
from trtforge.environment import installed_version
from trtforge.manifest import read_manifest
from trtforge.publish import OciLocation, load_local_artifact, open_registry, parse_location
from trtforge.spec import load_spec

models.need_rtx()

REPO = Path(__file__).resolve().parent.parent
#: the workers' progress lines (timestamped info, gate summaries): everything else is a verdict
PROGRESS = re.compile(r"^\d\d:\d\d:\d\d (?!error|warning)|^accuracy |^[│┃┏┗┡└┌]|^\s*$")
PROFILE = "profiles:\n  - input: {min: [1, 3, 16, 16], opt: [4, 3, 16, 16], max: [8, 3, 16, 16]}\n"
FP32 = f"name: conv\nprecision: fp32\nmodel: conv.onnx\ntargets: ['8.6']\n{PROFILE}"
INT8 = (
    f"name: conv\nprecision: int8\nmodel: conv.onnx\ntargets: ['8.6']\n{PROFILE}"
    "calibration: {data: data/*.npy, batch_size: 8, algorithm: ALGORITHM}\n"
    "accuracy: {enabled: false}\n"
)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """The conv model and calibration data; the tests write their specs beside them."""
    root = tmp_path / "project"
    models.write_samples(root / "data", (8, 3, 16, 16), files=2)
    models.conv_net(root / "conv.onnx")
    return root


def _said(stderr: str, *needles: str) -> str:
    """The lines of a run's stderr that carry its verdict (not the progress lines and the table)."""
    return "\n".join(line for line in stderr.splitlines() if any(needle in line for needle in needles))


def _ci(*args: object) -> tuple[int, dict, str]:
    code, stdout, stderr = cli("ci", *args, "--json")
    return code, json.loads(stdout) if stdout.strip() else {}, stderr


def _status(document: dict, spec: str) -> str:
    return next(r["status"] for r in document["results"] if Path(r["spec"]).name == spec)


# ---------------------------------------------------------------- item 2


@pytest.mark.parametrize(
    ("original", "edited"),
    [
        (FP32, FP32 + "accuracy: {tolerances: {'*': {cosine_min: 0.9}}}\n"),
        (INT8.replace("ALGORITHM", "entropy"), INT8.replace("ALGORITHM", "minmax")),
    ],
    ids=["tolerances", "int8-entropy-minmax"],
)
def test_restoring_a_spec_restores_its_build(
    project: Path,
    tmp_path: Path,
    isolated_cache: Path,
    trust_case: TrustRecorder,
    request: pytest.FixtureRequest,
    original: str,
    edited: str,
) -> None:
    """build, edit the spec, rebuild, put the spec back: --out holds the edited spec's build,
    so the original key's cache entry must be restored, never reported unchanged."""
    spec, out = project / "conv.yaml", tmp_path / "out"
    spec.write_text(original)
    assert _ci(project, "--out", out)[0] == 0
    spec.write_text(edited)
    assert _status(_ci(project, "--out", out)[1], "conv.yaml") == "built"
    spec.write_text(original)
    code, document, stderr = _ci(project, "--out", out)
    said = _said(stderr, "conv:")
    case = f"spec edited ({request.node.callspec.id}), rebuilt, put back: out holds the edited build"
    record = trust_case(2, case, code, said, (out, isolated_cache))
    assert record.exit_code == 0 and record.one_line and not record.leftovers
    assert _status(document, "conv.yaml") == "restored"
    assert "is another build (its " in said
    engine = next(out.glob("conv-*.engine"))
    assert read_manifest(engine).source.spec_sha256 == sha256_file(spec)
    assert sha256_file(engine) == read_manifest(engine).artifact.sha256
    assert _status(_ci(project, "--out", out)[1], "conv.yaml") == "unchanged"


def test_two_specs_writing_one_artifact_are_refused(project: Path, tmp_path: Path, trust_case: TrustRecorder) -> None:
    (project / "a.yaml").write_text(FP32)
    (project / "b.yaml").write_text(FP32 + "build: {optimization_level: 2}\n")
    (project / "other.yaml").write_text(FP32.replace("name: conv", "name: other"))
    out = tmp_path / "out"
    code, document, stderr = _ci(project, "--out", out)
    said = _said(stderr, "error:")
    record = trust_case(2, "two specs, same name/precision/targets, one folder", code, said, folders=(out,))
    assert record.exit_code == 2 and record.one_line and not record.leftovers
    assert str(project / "a.yaml") in said and str(project / "b.yaml") in said
    assert (_status(document, "a.yaml"), _status(document, "b.yaml")) == ("failed", "failed")
    assert _status(document, "other.yaml") == "built"
    assert [p.name.split("-")[0] for p in out.glob("*.engine")] == ["other"]


# ---------------------------------------------------------------- item 3


def _push_under_key(remote: str, engine: Path, key: str) -> None:
    """What a misconfigured runner (or an older trtforge) leaves: an artifact under build-<key>
    without the key recorded in it."""
    location = parse_location(remote)
    assert isinstance(location, OciLocation)
    open_registry(location, insecure=True).push(load_local_artifact(engine), cache_tag(key), force=True)


@pytest.mark.parametrize("planted", ["another model", "this spec's build without its key"])
def test_remote_cache_restores_only_this_specs_build(
    project: Path,
    tmp_path: Path,
    oci_registry: RunningRegistry,
    monkeypatch: pytest.MonkeyPatch,
    trust_case: TrustRecorder,
    planted: str,
) -> None:
    spec_path = project / "conv.yaml"
    spec_path.write_text(FP32)
    spec = load_spec(spec_path)
    flavor = choose_backend(spec.backend).flavor
    key = build_key(build_inputs(spec, flavor, installed_version(flavor) or ""))
    if planted == "another model":
        engine = build_engine(tmp_path / "other", name="conv")  # the digits model, named like this spec
    else:
        monkeypatch.setenv("TRTFORGE_CACHE_DIR", str(tmp_path / "runner-a-cache"))
        assert _ci(spec_path, "--out", tmp_path / "runner-a")[0] == 0
        engine = next((tmp_path / "runner-a").glob("*.engine"))
    remote = oci_registry.uri(f"tests/trust-ci-{len(planted)}")
    _push_under_key(remote, engine, key)

    cache, out = tmp_path / "runner-b-cache", tmp_path / "runner-b"
    monkeypatch.setenv("TRTFORGE_CACHE_DIR", str(cache))
    code, document, stderr = _ci(spec_path, "--out", out, "--remote-cache", remote, "--insecure")
    said = _said(stderr, "warning:")
    record = trust_case(3, f"remote cache: {planted} under build-<key>", code, said, folders=(out, cache))
    assert record.exit_code == 0 and record.one_line and not record.leftovers
    assert "is not this spec's build" in said and "building locally" in said
    assert "conv: replaced the damaged remote cache entry build-" in stderr
    assert _status(document, "conv.yaml") == "built"
    built = read_manifest(next(out.glob("*.engine")))
    assert built.source.onnx_sha256 == sha256_file(project / "conv.onnx")
    assert built.source.spec_sha256 == sha256_file(spec_path)

    # what this run pushed carries its key: a third runner restores it
    monkeypatch.setenv("TRTFORGE_CACHE_DIR", str(tmp_path / "runner-c-cache"))
    code, document, stderr = _ci(spec_path, "--out", tmp_path / "runner-c", "--remote-cache", remote, "--insecure")
    assert code == 0 and _status(document, "conv.yaml") == "restored", stderr


def test_a_remote_cache_entry_is_judged_by_one_read_of_its_tag(
    project: Path, tmp_path: Path, oci_registry: RunningRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ci read the tag's image manifest twice, the entry and then its annotations: a tag deleted
    (or replaced by another runner) between the two reads had this entry judged by another's
    annotations, or none ("it records no build key"), and a whole, verified entry rebuilt."""
    spec_path = project / "conv.yaml"
    spec_path.write_text(FP32)
    repository = "tests/trust-ci-one-read"
    monkeypatch.setenv("TRTFORGE_CACHE_DIR", str(tmp_path / "runner-a-cache"))
    pushed = _ci(
        spec_path, "--out", tmp_path / "runner-a", "--remote-cache", oci_registry.uri(repository), "--insecure"
    )
    assert pushed[0] == 0, pushed[2]
    gone = (404, b'{"errors": [{"code": "MANIFEST_UNKNOWN", "message": "manifest unknown"}]}')
    monkeypatch.setenv("TRTFORGE_CACHE_DIR", str(tmp_path / "runner-b-cache"))
    with faulty_proxy(oci_registry.host, {f"GET /v2/{repository}/manifests/build-": gone}, after=1) as proxy:
        remote = f"oci://{proxy}/{repository}"
        code, document, stderr = _ci(spec_path, "--out", tmp_path / "runner-b", "--remote-cache", remote, "--insecure")
    assert code == 0 and _status(document, "conv.yaml") == "restored", stderr
    assert "building locally" not in stderr


def _claim_larger_batches(document: dict[str, Any]) -> None:
    """A lie the tag does not show: a server would send batches the engine was not built for."""
    for shapes in document["profiles"][0].values():
        shapes["max"][0] *= 2


@pytest.mark.parametrize(
    ("edit", "reason"),
    [
        (_claim_larger_batches, "manifest is not the one its build wrote"),
        (lambda doc: doc["accuracy"].update(passed=False), "records a failed accuracy gate"),
    ],
    ids=["profiles", "failed-gate"],
)
def test_a_manifest_edited_in_the_remote_cache_is_refused(
    project: Path, tmp_path: Path, oci_registry: RunningRegistry, monkeypatch: pytest.MonkeyPatch, edit, reason: str
) -> None:
    """The engine layer untouched, the key and manifest facts annotations those the build pushed:
    only the manifest layer differs, and a restore would report what it says (exit 0, a failed gate)."""
    spec_path = project / "conv.yaml"
    spec_path.write_text(FP32)
    remote = oci_registry.uri(f"tests/trust-ci-edit-{reason.split()[0]}")
    monkeypatch.setenv("TRTFORGE_CACHE_DIR", str(tmp_path / "runner-a-cache"))
    assert _ci(spec_path, "--out", tmp_path / "runner-a", "--remote-cache", remote, "--insecure")[0] == 0
    engine = next((tmp_path / "runner-a").glob("*.engine"))
    location = parse_location(remote)
    assert isinstance(location, OciLocation)
    registry = open_registry(location, insecure=True)
    spec = load_spec(spec_path)
    flavor = choose_backend(spec.backend).flavor
    tag = cache_tag(build_key(build_inputs(spec, flavor, installed_version(flavor) or "")))
    (tmp_path / "pulled").mkdir()
    pulled = registry.pull_tag(tag, tmp_path / "pulled")
    assert pulled is not None
    annotations = pulled.annotations
    manifest_file = engine.with_name(engine.name.replace(".engine", ".manifest.json"))
    document = json.loads(manifest_file.read_text())
    as_built = json.loads(manifest_file.read_text())["profiles"]
    edit(document)
    manifest_file.write_text(json.dumps(document))
    registry.store_build(load_local_artifact(engine), tag, annotations, replacing=registry.manifest_digest(tag))

    monkeypatch.setenv("TRTFORGE_CACHE_DIR", str(tmp_path / "runner-b-cache"))
    out = tmp_path / "runner-b"
    code, document, stderr = _ci(spec_path, "--out", out, "--remote-cache", remote, "--insecure")
    assert code == 0 and _status(document, "conv.yaml") == "built", stderr
    assert reason in stderr and "building locally" in stderr
    built = read_manifest(next(out.glob("*.engine")))
    assert built.profiles == as_built and built.accuracy is not None and built.accuracy["passed"]


# ---------------------------------------------------------------- item 4


@pytest.fixture
def slow_project(tmp_path: Path) -> Path:
    """Three specs whose builds take seconds each (a 600-layer model)."""
    root = tmp_path / "slow"
    root.mkdir()
    models.deep_net(root / "deep.onnx", layers=600)
    for index in range(3):
        (root / f"deep{index}.yaml").write_text(
            f"name: deep{index}\nmodel: deep.onnx\n"
            "profiles:\n  - input: {min: [1, 32, 32, 32], opt: [1, 32, 32, 32], max: [2, 32, 32, 32]}\n"
        )
    return root


@pytest.mark.slow
@pytest.mark.parametrize(
    ("target", "signum"),
    [("process group", signal.SIGINT), ("parent alone", signal.SIGINT), ("process group", signal.SIGTERM)],
    ids=["ctrl-c", "sigint-to-parent", "sigterm-to-group"],
)
def test_interrupt_stops_every_worker_within_seconds(
    slow_project: Path,
    tmp_path: Path,
    isolated_cache: Path,
    trust_case: TrustRecorder,
    target: str,
    signum: signal.Signals,
) -> None:
    out, log = tmp_path / "out", tmp_path / "stderr.log"
    with open(log, "w") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "trtforge", "ci", str(slow_project), "--out", str(out), "--jobs", "2"],
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            start_new_session=True,  # its own process group, as a terminal gives a foreground job
            preexec_fn=as_foreground_job,
        )
    try:
        deadline = time.monotonic() + 120
        while log.read_text().count("Building engine") < 2:  # both workers are inside TensorRT
            assert process.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        interrupted = time.monotonic()
        if target == "process group":
            os.killpg(process.pid, signum)
        else:
            process.send_signal(signum)
        code = process.wait(timeout=30)
        seconds = time.monotonic() - interrupted
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    said = "\n".join(line for line in log.read_text().splitlines() if not PROGRESS.match(line))
    case = f"{signum.name} to ci --jobs 2 ({target})"
    record = trust_case(4, case, code, said, folders=(out, isolated_cache))
    assert record.exit_code == 130 and seconds < 10, (seconds, log.read_text())
    assert record.one_line and not record.leftovers, (said, record.leftovers)
    assert not list(out.glob("*.engine")) and not list(out.glob("*.manifest.json"))
    with pytest.raises(ProcessLookupError):
        os.killpg(process.pid, 0)  # no worker outlived the run


def _children(parent: int) -> list[int]:
    """The live processes whose parent is ``parent`` (from /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == parent and fields[0] != "Z":
            found.append(int(stat.parent.name))
    return found


def _alive(pid: int) -> bool:
    """Running (a zombie nobody reaps is dead)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _state(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*")}


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the parent-death signal is Linux's")
def test_workers_die_with_a_killed_ci_and_write_nothing_after(
    slow_project: Path, tmp_path: Path, isolated_cache: Path
) -> None:
    """kill -9 of the ci process (an OOM kill, a lost runner agent): its workers die with it
    instead of going on committing into --out, and the run leaves no folder of its own behind (the
    workers' results come back through pipes, not files in /tmp or the cache)."""
    out, log = tmp_path / "out", tmp_path / "stderr.log"
    with open(log, "w") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "trtforge", "ci", str(slow_project), "--out", str(out), "--jobs", "2"],
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 120
        while log.read_text().count("Building engine") < 2:  # both workers are inside TensorRT
            assert process.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        workers = _children(process.pid)
        assert len(workers) == 2, workers
        process.kill()
        process.wait()
        deadline = time.monotonic() + 10
        while any(_alive(pid) for pid in workers):
            assert time.monotonic() < deadline, f"workers outlived the ci process: {workers}"
            time.sleep(0.1)
        before = _state(out) if out.exists() else {}
        time.sleep(3)  # a worker still running would commit its engine into --out meanwhile
        assert (_state(out) if out.exists() else {}) == before
        assert not list(out.glob("*.engine")) if out.exists() else True
        assert not [p.name for p in isolated_cache.iterdir() if p.name.startswith(".ci.")]
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)  # whatever survived the test


# ---------------------------------------------------------------- item 14


def test_report_paths_that_are_folders(
    project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, trust_case: TrustRecorder
) -> None:
    (project / "conv.yaml").write_text(FP32)
    out = tmp_path / "out"
    code, _, stderr = cli("ci", project, "--out", out, "--junit", tmp_path)
    record = trust_case(14, "ci --junit FOLDER", code, stderr, folders=(tmp_path,))
    assert record.exit_code == 2 and record.one_line and not record.leftovers
    assert "--junit" in stderr and "is a folder" in stderr

    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(tmp_path))
    code, _, stderr = cli("ci", project, "--out", out)
    record = trust_case(14, "ci with GITHUB_STEP_SUMMARY=FOLDER", code, stderr, folders=(tmp_path,))
    assert record.exit_code == 2 and record.one_line and not record.leftovers
    assert "GITHUB_STEP_SUMMARY" in stderr and "is a folder" in stderr
    assert f"e.g. {tmp_path / 'summary.md'}" in stderr  # a Markdown file, not the JUnit's report.xml
    assert not out.exists() or not list(out.glob("*.engine"))  # refused before any build


@pytest.mark.parametrize(
    ("suffix", "gate"), [(".intoto.jsonl", True), (".accuracy.json", False)], ids=["attestation", "report"]
)
def test_a_folder_where_a_companion_file_goes_is_never_unchanged(
    project: Path, tmp_path: Path, suffix: str, gate: bool
) -> None:
    """Beside a build that has no attestation (or, its gate off, no report), a folder under that
    name is not "none there": the artifact in --out is not the build's set, so it is never reported
    unchanged; restoring the set cannot write there, which is exit 2 naming the folder."""
    spec = FP32 + ("" if gate else "accuracy: {enabled: false}\n")
    (project / "conv.yaml").write_text(spec)
    out = tmp_path / "out"
    assert _ci(project, "--out", out)[0] == 0
    engine = next(out.glob("*.engine"))
    folder = engine.with_name(engine.name.removesuffix(".engine") + suffix)
    folder.mkdir()
    code, document, stderr = _ci(project, "--out", out)
    assert code == 2 and _status(document, "conv.yaml") == "failed", stderr
    assert f"cannot write {folder}: it is a folder; remove it" in stderr


@pytest.mark.parametrize(
    "garbage", [b"{not json", b"[]", b'{"key": "K", "engine": "../../escaped.engine", "sha256": "x"}', b"\xff\xfe"]
)
def test_corrupt_cache_record_warns_and_rebuilds(
    project: Path, tmp_path: Path, isolated_cache: Path, trust_case: TrustRecorder, garbage: bytes
) -> None:
    (project / "conv.yaml").write_text(FP32)
    out = tmp_path / "out"
    assert _ci(project, "--out", out)[0] == 0
    (record_file,) = (isolated_cache / "builds").glob(f"*/{RECORD_FILE}")
    record_file.write_bytes(garbage.replace(b"K", record_file.parent.name.encode()))
    code, document, stderr = _ci(project, "--out", out)
    said = _said(stderr, "warning:", "error:")
    record = trust_case(14, f"ci with a corrupt build-cache record {garbage[:12]!r}", code, said, (out, isolated_cache))
    assert record.exit_code == 0 and record.one_line and not record.leftovers
    assert "corrupt build-cache record" in said and "rebuilding" in said
    assert _status(document, "conv.yaml") == "built"
    assert json.loads(record_file.read_text())["engine"].startswith("conv-fp32-")  # a good record again
    assert not (tmp_path / "escaped.engine").exists()
    assert _status(_ci(project, "--out", out)[1], "conv.yaml") == "unchanged"


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_missing_model_fails_its_spec_only(project: Path, tmp_path: Path, trust_case: TrustRecorder, jobs: str) -> None:
    (project / "conv.yaml").write_text(FP32)
    (project / "lost.yaml").write_text(FP32.replace("name: conv", "name: lost").replace("conv.onnx", "gone.onnx"))
    out = tmp_path / "out"
    code, document, stderr = _ci(project, "--out", out, "--jobs", jobs)
    said = _said(stderr, "error:", "Traceback")
    record = trust_case(14, f"ci --jobs {jobs} with a spec whose model is missing", code, said, folders=(out,))
    assert record.exit_code == 2 and record.one_line and not record.leftovers
    assert "gone.onnx" in said and "not found" in said
    assert (_status(document, "lost.yaml"), _status(document, "conv.yaml")) == ("failed", "built")
    assert len(list(out.glob("conv-fp32-*.engine"))) == 1


def test_worker_crash_fails_its_spec_only(project: Path, tmp_path: Path) -> None:
    """A worker that dies (here: killed by the OOM killer's signal) costs its spec, not the run."""
    (project / "conv.yaml").write_text(FP32)
    victim = project / "victim.yaml"
    victim.write_text(FP32.replace("name: conv", "name: victim"))
    script = (
        "import os, signal, sys\n"
        "import trtforge.ci as ci\n"
        "real = ci.run_one\n"
        "def run_one(path, *args, **kwargs):\n"
        f"    if path == {str(victim)!r} and kwargs.get('allow_build', True):\n"
        "        os.kill(os.getpid(), signal.SIGKILL)\n"
        "    return real(path, *args, **kwargs)\n"
        "ci.run_one = run_one\n"
        "from trtforge.cli import app\n"
        "app(sys.argv[1:])\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", script, "ci", str(project), "--out", str(tmp_path / "out"), "--jobs", "2", "--json"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 1, run.stderr
    document = json.loads(run.stdout)
    assert (_status(document, "victim.yaml"), _status(document, "conv.yaml")) == ("failed", "built")
    assert "killed by signal 9" in next(r["message"] for r in document["results"] if r["name"] == "victim")


# ---------------------------------------------------------------- second review: external data, reports, signing


def test_weights_edited_in_their_external_data_file_are_another_model(project: Path, tmp_path: Path) -> None:
    """The .onnx file of a model with external data holds its graph alone: every weight zeroed in
    conv.onnx.data, the .onnx byte for byte the same, is never "unchanged" (a stale engine, exit 0)."""
    data = models.externalize(project / "conv.onnx")
    (project / "conv.yaml").write_text(FP32)
    out = tmp_path / "out"
    first = _ci(project, "--out", out)[1]
    assert _status(first, "conv.yaml") == "built" and _status(_ci(project, "--out", out)[1], "conv.yaml") == "unchanged"
    graph = (project / "conv.onnx").read_bytes()
    data.write_bytes(bytes(data.stat().st_size))
    assert (project / "conv.onnx").read_bytes() == graph
    code, document, stderr = _ci(project, "--out", out)
    assert code == 0 and _status(document, "conv.yaml") == "built", stderr
    assert document["results"][0]["key"] != first["results"][0]["key"]
    manifest = read_manifest(next(out.glob("conv-*.engine")))
    assert manifest.source.onnx_sha256 == sha256_file(project / "conv.onnx")  # the .onnx file's, as documented


def _new_external_weights(model: Path, tmp_path: Path) -> None:
    """Other weights into ``model``'s external data file, its .onnx file byte for byte the same."""
    other = tmp_path / "other" / model.name
    other.parent.mkdir()
    models.conv_net(other, seed=1)
    model.with_name(f"{model.name}.data").write_bytes(models.externalize(other).read_bytes())
    assert other.read_bytes() == model.read_bytes()


def test_an_fp16_build_of_new_external_weights_reuses_nothing_of_the_old_ones(
    project: Path, tmp_path: Path, isolated_cache: Path
) -> None:
    """``trtforge build``'s caches (the FP16 graph, the overflow guard's choice, the gate's reference
    outputs) are keyed by the model's content: new weights in the external data file, the .onnx the
    same, are never served results of the old ones."""
    models.externalize(project / "conv.onnx")
    spec = project / "conv.yaml"
    spec.write_text(FP32.replace("fp32", "fp16"))

    def build() -> str:
        code, _, stderr = cli("build", spec, "--out", tmp_path / "out")
        assert code == 0, stderr
        return stderr

    reused = "reference outputs read from the cache"
    assert reused not in build()
    _new_external_weights(project / "conv.onnx", tmp_path)
    assert reused not in build()
    assert reused in build()  # what the check looks for: the same weights again are reused
    assert len(list((isolated_cache / "fp16").glob("*.onnx"))) == 2
    assert len(list((isolated_cache / "fp16-guard").glob("*.json"))) == 2


def test_calibration_scales_are_keyed_by_the_external_weights(project: Path, tmp_path: Path) -> None:
    """The scales' cache key holds the model's content (an int8 build of a model with external data
    end to end: tests/test_external_data.py)."""
    from trtforge.calibration import _Batching, _cache_inputs, candidates

    models.externalize(project / "conv.onnx")
    (project / "conv.yaml").write_text(INT8.replace("ALGORITHM", "minmax"))
    spec = load_spec(project / "conv.yaml")
    assert spec.calibration is not None
    (rule,) = candidates(spec.calibration)

    def key() -> dict[str, Any]:
        return _cache_inputs(spec.calibration, rule, spec.model_path, "data", _Batching(8, drop_last=False))

    before = key()
    _new_external_weights(project / "conv.onnx", tmp_path)
    assert key()["model_sha256"] != before["model_sha256"]


def _edit_report(report: Path, manifest: Path) -> None:
    report.write_text(report.read_text().replace('"passed": true', '"passed": false'))


def _delete_report(report: Path, manifest: Path) -> None:
    report.unlink()


def _fail_the_verdict(report: Path, manifest: Path) -> None:
    document = json.loads(manifest.read_text())
    document["accuracy"]["passed"] = False
    manifest.write_text(json.dumps(document, indent=2))


@pytest.mark.parametrize("edit", [_edit_report, _delete_report, _fail_the_verdict], ids=lambda edit: edit.__name__[1:])
def test_an_edited_report_or_verdict_is_restored_never_unchanged(project: Path, tmp_path: Path, edit: Any) -> None:
    """What ci reports for a reused build (its JSON accuracy, the JUnit case) is the cache's: the
    report and verdict in --out must be those too, else the set is restored (and said to be)."""
    (project / "conv.yaml").write_text(FP32)
    out = tmp_path / "out"
    assert _ci(project, "--out", out)[0] == 0
    built = {path.name: path.read_bytes() for path in out.iterdir() if path.is_file()}
    (report,) = out.glob("conv-*.accuracy.json")
    (manifest,) = out.glob("conv-*.manifest.json")
    edit(report, manifest)
    assert {path.name: path.read_bytes() for path in out.iterdir() if path.is_file()} != built
    code, document, stderr = _ci(project, "--out", out)
    assert code == 0 and _status(document, "conv.yaml") == "restored", stderr
    assert {path.name: path.read_bytes() for path in out.iterdir() if path.is_file()} == built
    assert document["results"][0]["accuracy"] == read_manifest(manifest).accuracy
    assert _status(_ci(project, "--out", out)[1], "conv.yaml") == "unchanged"


def test_ci_signs_with_the_signing_key_as_build_does(
    project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``TRTFORGE_SIGNING_KEY`` signs ``build``'s artifacts, and ``ci``'s alike; a signed build is
    not an unsigned run's (nor an unsigned one a signing run's), and a key that cannot sign is
    exit 2 before anything is built."""
    from trtforge.keys import SIGNING_KEY_ENV
    from trtforge.manifest import attestation_path

    (project / "conv.yaml").write_text(FP32)
    out, key = tmp_path / "out", tmp_path / "key"
    assert cli("keygen", key)[0] == 0
    monkeypatch.setenv(SIGNING_KEY_ENV, str(tmp_path / "missing-key"))
    code, _, stderr = _ci(project, "--out", out)
    assert code == 2 and "missing-key" in stderr and not list(out.glob("*.engine"))

    monkeypatch.setenv(SIGNING_KEY_ENV, str(key))
    assert _status(_ci(project, "--out", out)[1], "conv.yaml") == "built"
    engine = next(out.glob("conv-*.engine"))
    signature = read_manifest(engine).signature
    assert signature is not None and attestation_path(engine).is_file()
    assert cli("verify-provenance", engine, "--trusted-key", f"{key}.pub")[0] == 0
    assert _status(_ci(project, "--out", out)[1], "conv.yaml") == "unchanged"
    attestation_path(engine).unlink()
    assert _status(_ci(project, "--out", out)[1], "conv.yaml") == "restored" and attestation_path(engine).is_file()

    monkeypatch.delenv(SIGNING_KEY_ENV)
    assert _status(_ci(project, "--out", out)[1], "conv.yaml") == "built"
    assert read_manifest(engine).signature is None and not attestation_path(engine).exists()
    monkeypatch.setenv(SIGNING_KEY_ENV, str(key))
    assert _status(_ci(project, "--out", out)[1], "conv.yaml") == "restored"
    assert read_manifest(engine).signature == signature


def test_a_reformatted_manifest_is_not_its_build_s(project: Path, tmp_path: Path) -> None:
    """A manifest rewritten with the same JSON value in other bytes (indented otherwise) is not the
    manifest its build wrote (an attestation covers its bytes): ``ci`` restores the build's, never
    calls it unchanged (it did: only the parsed facts were compared)."""
    (project / "conv.yaml").write_text(FP32)
    out = tmp_path / "out"
    assert _status(_ci(project, "--out", out)[1], "conv.yaml") == "built"
    (manifest,) = out.glob("*.manifest.json")
    built = manifest.read_bytes()
    manifest.write_text(json.dumps(json.loads(built), indent=4))
    code, document, stderr = _ci(project, "--out", out)
    assert code == 0 and _status(document, "conv.yaml") == "restored", stderr
    assert f"{manifest.name} is not as trtforge wrote it" in stderr
    assert manifest.read_bytes() == built
    assert _status(_ci(project, "--out", out)[1], "conv.yaml") == "unchanged"


def test_a_signed_build_whose_attestation_no_longer_covers_its_manifest_is_restored(
    project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A signing run's manifest with its signature taken out (written as trtforge writes a
    manifest): the build's attestation beside it no longer covers it, so ``verify-provenance``
    refuses the set. ``ci`` called it unchanged (the attestation was the build's, byte for byte);
    it restores the build's set, which verifies."""
    from trtforge.keys import SIGNING_KEY_ENV

    (project / "conv.yaml").write_text(FP32)
    out, key = tmp_path / "out", tmp_path / "key"
    assert cli("keygen", key)[0] == 0
    monkeypatch.setenv(SIGNING_KEY_ENV, str(key))
    assert _status(_ci(project, "--out", out)[1], "conv.yaml") == "built"
    (manifest,) = out.glob("*.manifest.json")
    (engine,) = out.glob("*.engine")
    built = manifest.read_bytes()
    document = json.loads(built)
    del document["signature"]
    manifest.write_text(json.dumps(document, indent=2) + "\n")
    code, result, stderr = _ci(project, "--out", out)
    assert code == 0 and _status(result, "conv.yaml") == "restored", stderr
    assert "does not cover the manifest beside it" in stderr
    assert manifest.read_bytes() == built
    assert cli("verify-provenance", engine, "--trusted-key", f"{key}.pub")[0] == 0
