"""``trtforge verify`` takes nothing derived from the cache folder on trust: whoever writes it (a CI
cache restored from another job) could plant the graph the gate judges. verify derives the FP16
graph, its FP16-storage emulation and the Q/DQ graph again in a scratch folder of its own, and
takes from the cache folder only the calibration scales whose bytes have the manifest's
``cache_sha256``. A planted entry makes a build pass (a build trusts the folder, as the README
says); verify then fails the artifact as a clean cache fails it. Real TensorRT-RTX builds and real
onnxruntime, through the CLI."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from clitools import cli
from models import conv_net, need_rtx, overflowing_fp16_spec, without_gpu

from trtforge.calibration import calibrate
from trtforge.calibration.cache import scales_document
from trtforge.digests import FileStamp, digest_dir
from trtforge.manifest import read_manifest
from trtforge.spec import load_spec

pytestmark = without_gpu  # on a GPU host the engine itself runs, and no derived graph is judged


def _int8_spec(tmp_path: Path, scale: float = 0.01, name: str = "int8") -> Path:
    """A conv net calibrated on data a hundredth of the gate's range (``scale``): its INT8 graph
    clips nearly every activation and fails the gate (exit 4 on a clean cache)."""
    data = tmp_path / f"{name}-calibration"
    data.mkdir()
    np.save(data / "batch.npy", np.random.default_rng(1).random((16, 3, 16, 16), dtype=np.float32) * scale)
    spec = tmp_path / f"{name}.yaml"
    spec.write_text(
        f"name: conv\nmodel: {conv_net(tmp_path / 'conv.onnx')}\nprecision: int8\ntargets: ['8.6']\n"
        "profiles:\n  - input: {min: [1, 3, 16, 16], opt: [4, 3, 16, 16], max: [8, 3, 16, 16]}\n"
        f"calibration:\n  data: {data}/*.npy\n  algorithm: minmax\n"
        "accuracy:\n  tolerances: {logits: {top1_min: 0.9}}\n"  # ten random classes: one sample in 13 may flip
    )
    return spec


def _built_over_a_plant(spec: Path, out: Path, entries: Path, pattern: str, model: Path) -> tuple[Path, Path]:
    """(the engine, the planted entry): a build fails the gate (exit 4), its one cache entry in
    ``entries`` matching ``pattern`` is replaced by a copy of the FP32 ``model``, and the build,
    which takes the entry at its word, then passes."""
    code, _, stderr = cli("build", spec, "--out", out)
    assert code == 4, stderr
    (plant,) = entries.glob(pattern)
    shutil.copyfile(model, plant)
    code, _, stderr = cli("build", spec, "--out", out)
    assert code == 0, stderr
    (engine,) = out.glob("*.engine")
    return engine, plant


@pytest.mark.parametrize("entry", ["fp16-emulated", "fp16"])
def test_a_planted_fp16_graph_does_not_pass_verify(tmp_path: Path, isolated_cache: Path, entry: str) -> None:
    """The FP32 model planted as the FP16 emulation (the gate's candidate), or as the FP16
    conversion (whose emulation is then the FP32 model again): verify fails the overflowing
    engine, as on a clean cache, and leaves no scratch folder behind."""
    need_rtx()
    spec, out = overflowing_fp16_spec(tmp_path), tmp_path / "out"
    engine, _ = _built_over_a_plant(spec, out, isolated_cache / entry, "*.onnx", tmp_path / "over.onnx")

    code, _, stderr = cli("verify", engine, "--spec", spec)
    assert code == 4 and "NaN/Inf pattern differs from the reference's" in stderr, stderr
    assert read_manifest(engine).accuracy["passed"] is False  # type: ignore[index]
    clean = tmp_path / "clean-cache"
    assert cli("verify", engine, "--spec", spec, "--cache-dir", clean)[0] == 4  # the same verdict
    assert sorted(path.name for path in isolated_cache.iterdir()) == sorted(
        path.name for path in isolated_cache.iterdir() if not path.name.startswith(".")
    )  # the scratch folder is gone


def test_a_planted_qdq_graph_does_not_pass_verify(tmp_path: Path, isolated_cache: Path) -> None:
    """The FP32 model planted as the Q/DQ graph: verify makes the graph again from the scales the
    manifest pins (taken from the cache: their digest is the manifest's) and fails the engine."""
    need_rtx()
    spec, out = _int8_spec(tmp_path), tmp_path / "out"
    engine, _ = _built_over_a_plant(spec, out, isolated_cache / "calibration", "qdq-*.onnx", tmp_path / "conv.onnx")

    code, _, stderr = cli("verify", engine, "--spec", spec)
    assert code == 4 and "cosine" in stderr, stderr
    assert "the manifest's calibration.cache_sha256" in stderr  # the pinned scales: no calibration pass
    assert read_manifest(engine).accuracy["passed"] is False  # type: ignore[index]


def test_planted_scales_do_not_pass_verify(tmp_path: Path, isolated_cache: Path) -> None:
    """Scales that pass the gate (calibrated on data of the gate's range), planted under the
    entry's own key with a digest-cache entry that gives them the manifest's ``cache_sha256``, the
    Q/DQ graph removed so that it is made from them: verify hashes the entry itself, finds it is
    not the engine's, calibrates again, and fails the engine."""
    need_rtx()
    spec, out = _int8_spec(tmp_path), tmp_path / "out"
    engine, qdq = _built_over_a_plant(spec, out, isolated_cache / "calibration", "qdq-*.onnx", tmp_path / "conv.onnx")
    pinned = read_manifest(engine).calibration["cache_sha256"]  # type: ignore[index]

    (entry,) = (isolated_cache / "calibration").glob("scales-*.json")
    document = json.loads(entry.read_text())
    key = entry.stem.removeprefix("scales-")
    wide = calibrate(load_spec(_int8_spec(tmp_path, 1.0, "wide")), tmp_path / "conv.onnx", tmp_path / "other-cache")
    assert wide.scales.keys() == json.loads(entry.read_text())["scales"].keys()
    entry.write_text(scales_document(key, document["inputs"], wide.scales, document["samples"]))
    stamp = FileStamp.of(entry, entry.stat())
    digest_dir().mkdir(parents=True, exist_ok=True)
    (digest_dir() / stamp.entry_name()).write_text(json.dumps({**dataclasses.asdict(stamp), "sha256": pinned}))
    qdq.unlink()

    code, _, stderr = cli("verify", engine, "--spec", spec)
    assert code == 4 and "cosine" in stderr, stderr
    assert f"{entry} is not the scales the engine was built with" in stderr and "calibrating again" in stderr


def test_a_fifo_planted_as_the_scales_is_never_waited_for(tmp_path: Path, isolated_cache: Path) -> None:
    """A named pipe under the scales entry's name: verify opened it and waited for a writer
    forever (its scratch folder left behind); it is no scales file, and verify calibrates again."""
    import os
    import subprocess
    import sys

    need_rtx()
    spec, out = _int8_spec(tmp_path, 1.0), tmp_path / "out"
    code, _, stderr = cli("build", spec, "--out", out)
    assert code == 0, stderr
    (entry,) = (isolated_cache / "calibration").glob("scales-*.json")
    entry.unlink()
    os.mkfifo(entry)
    (engine,) = out.glob("*.engine")
    run = subprocess.run(
        [sys.executable, "-m", "trtforge", "verify", str(engine), "--spec", str(spec)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "TRTFORGE_CACHE_DIR": str(isolated_cache)},
    )
    assert run.returncode == 0, run.stderr
    assert f"{entry} is not a scales file: calibrating again" in run.stderr
    assert not [path for path in isolated_cache.iterdir() if path.name.startswith(".verify")]
