"""Start-up: commands that need no model, array or TensorRT never import onnx, numpy or TensorRT.

Measured with ``python -X importtime`` in a fresh process, so what the command really imports is
seen (an in-process run would inherit the test session's modules)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

HEAVY = ("onnx", "numpy", "pydantic", "tensorrt", "tensorrt_rtx", "onnxruntime")


def _imported(*args: str) -> set[str]:
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "trtforge", *args],
        capture_output=True,
        text=True,
        env=os.environ,
    )
    names = {line.split("|")[-1].strip() for line in result.stderr.splitlines() if line.startswith("import time:")}
    return {name for name in names if name.split(".")[0] in HEAVY}


def test_help_imports_no_heavy_library() -> None:
    assert _imported("--help") == set()


@pytest.fixture
def manifest_only(tmp_path: Path) -> Path:
    """An engine file and its manifest (a real engine is not needed to judge `--cc`)."""
    engine = tmp_path / "m-fp32-rtx1.7-sm86-linux_x86_64.engine"
    engine.write_bytes(b"engine bytes")
    from trtforge.fsutil import sha256_file
    from trtforge.manifest import manifest_path_for

    manifest = {
        "schema": "trtforge/manifest/v1",
        "name": "m",
        "precision": "fp32",
        "tag": "rtx1.7-sm86-linux_x86_64",
        "artifact": {"file": engine.name, "sha256": sha256_file(engine), "size": engine.stat().st_size},
        "source": {"onnx_sha256": "0" * 64, "spec_sha256": "0" * 64},
        "tensorrt": {"flavor": "tensorrt-rtx", "version": "1.7.1.116", "version_compatible": False},
        "gpu": {
            "compute_capabilities": ["8.6"],
            "and_later_from": None,
            "hardware_compatibility": "none",
            "build_device": None,
        },
        "platform": {"os": "linux", "machine": "x86_64"},
        "profiles": [],
        "io": [],
        "calibration": None,
        "accuracy": None,
        "build": {"trtforge_version": "0.1.0", "created_utc": "2025-01-01T00:00:00Z", "seconds": 1.0},
    }
    manifest_path_for(engine).write_text(json.dumps(manifest))
    return engine


@pytest.mark.parametrize("command", [["check", "--cc", "8.6"], ["inspect"]], ids=["check-cc", "inspect"])
def test_check_and_inspect_import_no_onnx_numpy_or_tensorrt(manifest_only: Path, command: list[str]) -> None:
    """They read a manifest (pydantic) and hash a file: nothing else heavy."""
    roots = {name.split(".")[0] for name in _imported(command[0], str(manifest_only), *command[1:])}
    assert roots <= {"pydantic"}
