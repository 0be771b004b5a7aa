"""Shared fixtures: every test gets its own trtforge cache; small models are built once per session."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

sys.path.insert(0, str(Path(__file__).parent))

import models

#: the OCI registry fixture (a real docker-registry on 127.0.0.1), for every test module
pytest_plugins = ["registry", "trust"]

REPO = Path(__file__).resolve().parent.parent

#: every property test (Hypothesis): the same examples on every run, so that CI is reproducible and a
#: failure reruns as it failed; no deadline per example, which a loaded 2-core machine would miss; the
#: health checks that only say a strategy is slow or filters much, and that a function-scoped fixture
#: (tmp_path) is shared by the examples, which these tests allow for. Each test sets its max_examples.
settings.register_profile(
    "trtforge",
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.function_scoped_fixture],
)
settings.load_profile("trtforge")


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    cache = tmp_path_factory.mktemp("cache")
    monkeypatch.setenv("TRTFORGE_CACHE_DIR", str(cache))
    return cache


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Callable[[str], Path]]:
    """Mount a tmpfs of a given size (root only; skipped where mounting is not allowed)."""
    mounted: list[Path] = []

    def mount(size: str) -> Path:
        folder = tmp_path / f"disk{len(mounted)}"
        folder.mkdir()
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], capture_output=True)
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
        mounted.append(folder)
        return folder

    try:
        yield mount
    finally:
        for folder in mounted:
            subprocess.run(["umount", str(folder)], check=False)


@pytest.fixture
def reachable() -> Iterator[Path]:
    """A folder in /tmp that another user (``nobody``) can reach (pytest's are root's alone, 0o700)."""
    scratch = Path(tempfile.mkdtemp(prefix="trtforge-nobody-"))
    scratch.chmod(0o755)
    try:
        yield scratch
    finally:
        shutil.rmtree(scratch)


@pytest.fixture
def nobody() -> pwd.struct_passwd:
    """The user ``nobody``, whom root's forked writers become (as root only: ``users.as_user``)."""
    if os.geteuid() != 0:
        pytest.skip("needs root to write as another user (nobody)")
    try:
        return pwd.getpwnam("nobody")
    except KeyError:
        pytest.skip("there is no user nobody here to write as")


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("models")
    models.conv_net(folder / "conv.onnx")
    models.conv_net(folder / "conv_static.onnx", batch=1)
    models.two_inputs(folder / "two_inputs.onnx")
    models.unsupported_op(folder / "unsupported.onnx")
    models.deep_net(folder / "deep.onnx")
    return folder


@pytest.fixture
def write_spec(tmp_path: Path, model_dir: Path) -> Callable[..., Path]:
    """Write a spec YAML into tmp_path; ``{models}`` in the text is the model folder."""

    def write(text: str, name: str = "spec.yaml") -> Path:
        path = tmp_path / name
        path.write_text(text.replace("{models}", str(model_dir)), encoding="utf-8")
        return path

    return write
