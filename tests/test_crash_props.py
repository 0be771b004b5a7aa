"""Crash consistency under SIGKILL at any moment (README "Writes are atomic"): ``trtforge build``,
``publish`` to ``dir://`` and ``ci``, each a real process of the CLI building or copying a real
TensorRT-RTX engine over a good one, killed after a delay Hypothesis draws across the whole run
(start-up, precision step, TensorRT build, gate, commit, and after the process ended).

``test_trust_commit.py`` kills at each named step of a commit through the protocol's own hook; here
nothing inside the process knows when the kill comes. The oracle, after each kill:

- the folder's files under final names are the old set byte for byte, or a whole new set (the
  engine's and the report's sha256 those its manifest pins, the manifest's model the new one);
  ``check --cc`` and ``inspect`` exit 0 on it. README's one allowance: a kill between the renames of
  one commit leaves new files beside the old manifest, with the commit's journal; that manifest then
  refuses the new engine (exit 5) until the next run rolls the commit back;
- any other file is hidden (a temporary or journal, never under a final name);
- the next run succeeds, leaves the new set and no temporary (``--out``, registry, cache), and every
  entry of the cache folder it used reads whole (a killed writer never left a torn one to serve).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import models
import numpy as np
import onnx
import pytest
from clitools import cli
from hypothesis import example, given, settings
from hypothesis import strategies as st
from trust import leftovers

from trtforge.digests import sha256_bytes
from trtforge.manifest import MANIFEST_SUFFIX, REPORT_SHA256, REPORT_SUFFIX, parse_manifest

models.need_rtx()

pytestmark = pytest.mark.slow

CC = "8.6"
STEM = "conv-fp16-rtx1.7-sm86-linux_x86_64"
ENGINE, MANIFEST, REPORT = f"{STEM}.engine", f"{STEM}{MANIFEST_SUFFIX}", f"{STEM}{REPORT_SUFFIX}"
FINALS = (ENGINE, MANIFEST, REPORT)
#: fp16 with the gate on its seeded random data: the build writes engine, manifest and report, and
#: fills the cache (FP16 graph, its emulation, the overflow guard's choice, reference outputs)
SPEC = (
    "name: conv\nmodel: model/conv.onnx\nprecision: fp16\nbackend: tensorrt-rtx\ntargets: ['8.6']\n"
    "profiles:\n  - input: {min: [1, 3, 16, 16], opt: [2, 3, 16, 16], max: [4, 3, 16, 16]}\n"
)


def trtforge(*args: object) -> list[str]:
    """The real CLI as its own process (``python -m trtforge``)."""
    return [sys.executable, "-m", "trtforge", *map(str, args)]


def staged_in(folder: Path) -> bool:
    """A temporary of the artifact's files (``.{file}.{pid}-{token}.tmp``) is in ``folder``: the
    writer is writing its set, and its commit is near."""
    with contextlib.suppress(FileNotFoundError):
        return any(name.startswith(f".{STEM}") and name.endswith(".tmp") for name in os.listdir(folder))
    return False


#: a moment to kill at: ("start", s) is s seconds after the process started; ("staged", s) is s
#: seconds after its first temporary appeared in the folder it commits to (write, gate, commit), so
#: that the milliseconds of a commit are hit whatever a loaded machine does to the run's length
Moment = tuple[str, float]


def killed_after(command: list[str], moment: Moment, cwd: Path, folder: Path) -> int:
    """Run ``command``, SIGKILL it at ``moment`` (if it still runs), wait until every process of
    its group is gone (``ci``'s workers die with it), and return its exit status."""
    anchor, delay = moment
    process = subprocess.Popen(
        command, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True
    )
    start = time.monotonic()
    if anchor == "staged":
        while process.poll() is None and not staged_in(folder):
            time.sleep(0.001)
        start = time.monotonic()
    while process.poll() is None and time.monotonic() - start < delay:
        time.sleep(0.001)
    if process.poll() is None:
        process.send_signal(signal.SIGKILL)
    _, stderr = process.communicate(timeout=120)
    deadline = time.monotonic() + 15
    while True:  # the workers a killed ci leaves must die with it (parent-death signal)
        try:
            os.killpg(process.pid, 0)
        except ProcessLookupError:
            break
        assert time.monotonic() < deadline, f"processes of {command[3]} outlived its kill"
        time.sleep(0.02)
    assert process.returncode in (0, -signal.SIGKILL), stderr.decode(errors="replace")[-2000:]
    return process.returncode


#: what Hypothesis draws: from start-up on (scaled by a measured whole run: a fraction up to 1.5, so
#: after the process ended too), or from the first temporary on (seconds)
moments = st.one_of(
    st.tuples(st.just("start"), st.floats(0.0, 1.5)),
    st.tuples(st.just("staged"), st.floats(0.0, 0.5)),
)


def scaled(moment: Moment, whole_run_s: float) -> Moment:
    anchor, value = moment
    return (anchor, value * whole_run_s) if anchor == "start" else moment


def timed(command: list[str], cwd: Path) -> float:
    """A whole run's wall time (it must succeed)."""
    started = time.monotonic()
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return time.monotonic() - started


def final_files(folder: Path) -> dict[str, bytes]:
    """The files under final (not hidden) names, each checked to be one of the artifact's set."""
    names = [name for name in os.listdir(folder) if not name.startswith(".")]
    assert set(names) <= set(FINALS), f"files under final names that are no artifact's: {names}"
    return {name: (folder / name).read_bytes() for name in names}


class Project:
    """A spec whose model changes (a new seed) before each killed run, so each run's set and cache
    entries are new; ``held`` is the set the folder held when the run began."""

    def __init__(self, root: Path, cache: Path) -> None:
        self.root, self.cache = root, cache
        self.seed = 0
        self.held: dict[str, bytes] = {}
        self.whole_run_s = 0.0

    def __repr__(self) -> str:  # what Hypothesis prints of a failing example: not the engine's bytes
        return f"Project({self.root}, seed={self.seed}, whole run {self.whole_run_s:.2f} s)"

    @property
    def model(self) -> Path:
        return self.root / "model" / "conv.onnx"

    def next_model(self) -> str:
        """Write another model at the same path; its sha256."""
        self.seed += 1
        models.conv_net(self.model, seed=self.seed)
        return sha256_bytes(self.model.read_bytes())


def make_project(tmp_path: Path, name: str) -> Project:
    root = tmp_path / name
    (root / "model").mkdir(parents=True)
    (root / "spec.yaml").write_text(SPEC)
    project = Project(root, tmp_path / f"{name}-cache")
    project.next_model()
    return project


def whole_set(folder: Path, model_sha256: str) -> dict[str, bytes]:
    """The set ``folder`` holds, asserted whole and built from ``model_sha256``: the engine and
    the report the manifest pins, ``check`` and ``inspect`` content."""
    files = final_files(folder)
    assert set(files) == set(FINALS), sorted(files)
    manifest = parse_manifest(files[MANIFEST], str(folder / MANIFEST))
    assert manifest.source.onnx_sha256 == model_sha256
    assert sha256_bytes(files[ENGINE]) == manifest.artifact.sha256 and len(files[ENGINE]) == manifest.artifact.size
    assert sha256_bytes(files[REPORT]) == manifest.accuracy[REPORT_SHA256]
    for command in (("check", folder / ENGINE, "--cc", CC), ("inspect", folder / ENGINE)):
        code, _, err = cli(*command)
        assert code == 0, (command[0], err)
    return files


def after_a_kill(folder: Path, old: dict[str, bytes], new_model: str) -> str:
    """The folder after a kill: the old set, or a whole new set, or (a commit cut between its renames,
    its journal beside) new files beside the old manifest, which refuses the new engine. Says which."""
    files = final_files(folder)
    assert MANIFEST in files and ENGINE in files, sorted(files)
    if files[MANIFEST] != old[MANIFEST]:
        whole_set(folder, new_model)
        return "new"
    if files == old:
        return "old"
    journals = [name for name in os.listdir(folder) if name.endswith(".journal.tmp")]
    assert journals, f"the old manifest beside new files, and no commit journal: {sorted(files)}"
    if files[ENGINE] != old[ENGINE]:  # the old manifest pins the old engine: the new one is refused
        for command in (("check", folder / ENGINE, "--cc", CC), ("inspect", folder / ENGINE)):
            code, _, err = cli(*command)
            assert code == 5, (command[0], err)
    return "open commit"


def cache_entries_read_whole(cache: Path) -> None:
    """Every entry under a final name in the cache folder parses as what it claims to be."""
    for path in cache.rglob("*"):
        if not path.is_file() or any(part.startswith(".") for part in path.relative_to(cache).parts):
            continue
        if path.suffix == ".onnx":  # a graph trtforge derived (not one onnx.checker need take whole)
            assert onnx.load(str(path)).graph.node, path
        elif path.suffix == ".json":
            json.loads(path.read_bytes())
        elif path.suffix == ".npz":
            with np.load(path) as arrays:
                for name in arrays.files:
                    arrays[name]


def next_run_recovers(folder: Path, cache: Path | None, run: Callable[[], tuple[int, str, str]], model: str) -> None:
    """The next run succeeds and leaves the new set, no temporary in its folder and its cache
    folder (None: the command has none), and a cache whose every entry reads whole."""
    code, _, err = run()
    assert code == 0, err
    whole_set(folder, model)
    assert leftovers(folder, *([cache] if cache else [])) == ()
    if cache is not None:
        cache_entries_read_whole(cache)


# ---------------------------------------------------------------- build


@pytest.fixture(scope="module")
def build_project(tmp_path_factory: pytest.TempPathFactory) -> Project:
    """A good set in ``out``, built by the CLI process whose run time the delays scale."""
    project = make_project(tmp_path_factory.mktemp("crash-build"), "build")
    command = trtforge("build", "spec.yaml", "--out", "out", "--cache-dir", project.cache)
    project.whole_run_s = timed(command, project.root)
    project.held = whole_set(project.root / "out", sha256_bytes(project.model.read_bytes()))
    return project


def _kill_a_build(project: Project, moment: Moment) -> None:
    out = project.root / "out"
    new_model = project.next_model()
    command = trtforge("build", "spec.yaml", "--out", "out", "--cache-dir", project.cache)
    code = killed_after(command, scaled(moment, project.whole_run_s), project.root, out)
    state = after_a_kill(out, project.held, new_model)
    assert code != 0 or state == "new", f"the build ended (exit 0) and {out} holds the {state} set"
    next_run_recovers(
        out,
        project.cache,
        lambda: cli("build", project.root / "spec.yaml", "--out", out, "--cache-dir", project.cache),
        new_model,
    )
    project.held = final_files(out)


@settings(max_examples=1)
@given(moment=moments)
@example(moment=("start", 0.0))
@example(moment=("start", 0.5))
@example(moment=("staged", 0.0))
@example(moment=("staged", 0.02))
@example(moment=("staged", 0.05))
@example(moment=("staged", 0.1))
@example(moment=("start", 1.5))
def test_a_build_killed_at_any_moment_leaves_one_whole_set(build_project: Project, moment: Moment) -> None:
    _kill_a_build(build_project, moment)


# ---------------------------------------------------------------- publish to dir://


@dataclass
class Registry:
    folder: Path
    sources: tuple[Path, Path]  # two output folders, each one whole set of the same artifact
    models: tuple[str, str]
    turn: int = 0
    whole_run_s: float = 0.0


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Registry:
    root = tmp_path_factory.mktemp("crash-publish")
    project = make_project(root, "publish")
    digests = []
    for name in ("a", "b"):
        if name == "b":
            project.next_model()
        code, _, err = cli("build", project.root / "spec.yaml", "--out", root / name, "--cache-dir", project.cache)
        assert code == 0, err
        digests.append(sha256_bytes(project.model.read_bytes()))
    found = Registry(root / "registry", (root / "a", root / "b"), (digests[0], digests[1]))
    found.whole_run_s = timed(trtforge("publish", root / "a" / ENGINE, "--to", f"dir://{found.folder}"), root)
    whole_set(found.folder, digests[0])
    return found


@settings(max_examples=1)
@given(moment=moments)
@example(moment=("start", 0.5))
@example(moment=("staged", 0.0))
@example(moment=("staged", 0.005))
@example(moment=("staged", 0.02))
def test_a_publish_killed_at_any_moment_leaves_one_whole_set(registry: Registry, moment: Moment) -> None:
    """``publish --force`` of the other set over the one the registry holds, killed."""
    old = final_files(registry.folder)
    registry.turn += 1
    source, model = registry.sources[registry.turn % 2], registry.models[registry.turn % 2]
    command = trtforge("publish", source / ENGINE, "--to", f"dir://{registry.folder}", "--force")
    code = killed_after(command, scaled(moment, registry.whole_run_s), registry.folder.parent, registry.folder)
    state = after_a_kill(registry.folder, old, model)
    assert code != 0 or state == "new", f"the publish ended (exit 0) and the registry holds the {state} set"
    next_run_recovers(
        registry.folder,
        None,  # publish has no cache folder (the digest cache is swept by the next build)
        lambda: cli("publish", source / ENGINE, "--to", f"dir://{registry.folder}", "--force"),
        model,
    )


# ---------------------------------------------------------------- ci


@pytest.fixture(scope="module")
def ci_project(tmp_path_factory: pytest.TempPathFactory) -> Project:
    """``trtforge ci`` over a folder with the one spec; its build cache and rerun record in ``cache``."""
    project = make_project(tmp_path_factory.mktemp("crash-ci"), "ci")
    project.whole_run_s = timed(trtforge(*ci_args(project)), project.root)
    project.held = whole_set(project.root / "out", sha256_bytes(project.model.read_bytes()))
    return project


def ci_args(project: Project) -> tuple[object, ...]:
    """One command line (the rerun record is per command line), absolute paths."""
    return (
        "ci",
        project.root / "spec.yaml",
        "--out",
        project.root / "out",
        "--cache-dir",
        project.cache,
        "--jobs",
        "1",
    )


@settings(max_examples=1)
@given(moment=moments)
@example(moment=("start", 0.4))
@example(moment=("staged", 0.0))
@example(moment=("staged", 0.05))
def test_a_ci_run_killed_at_any_moment_leaves_one_whole_set(ci_project: Project, moment: Moment) -> None:
    """A changed model: ci rebuilds and commits, or restores from its build cache, when killed.
    The next ci run (and an unchanged one after it, which reads the rerun record) succeed."""
    project = ci_project
    out = project.root / "out"
    new_model = project.next_model()
    args = ci_args(project)
    code = killed_after(trtforge(*args), scaled(moment, project.whole_run_s), project.root, out)
    state = after_a_kill(out, project.held, new_model)
    assert code != 0 or state == "new", f"ci ended (exit 0) and {out} holds the {state} set"
    next_run_recovers(out, project.cache, lambda: cli(*args), new_model)
    code, _, err = cli(*args)
    assert code == 0 and "unchanged" in err, err
    project.held = final_files(out)
