"""`trtforge calibrate`: the calibration step alone, on the digits example."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from clitools import cli

from trtforge.calibration.cache import parse_trt_cache

REPO = Path(__file__).resolve().parent.parent
INT8_SPEC = REPO / "configs" / "digits-int8.yaml"


@pytest.fixture(scope="module")
def native_spec(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The digits INT8 spec with ``calibration.mode: native``: TensorRT 10.x's calibrator reads the
    cache ``--trt-version`` writes, with a scale for every activation."""
    folder = tmp_path_factory.mktemp("native")
    text = INT8_SPEC.read_text().replace("../calibration/", f"{REPO}/calibration/")
    spec = folder / "digits-int8-native.yaml"
    spec.write_text(text.replace("  algorithm: entropy\n", "  algorithm: entropy\n  mode: native\n"))
    return spec


def test_calibrate_exports_qdq_model_scales_and_tensorrt_cache(tmp_path: Path, native_spec: Path) -> None:
    code, stdout, stderr = cli("calibrate", native_spec, "--out", tmp_path, "--trt-version", "10.13.0.35", "--json")
    assert code == 0, stderr
    document = json.loads(stdout)
    assert (document["algorithm"], document["mode"], document["samples"]) == ("entropy", "native", 512)
    assert document["reused"] is False
    files = {label: Path(path) for label, path in document["files"].items()}
    assert files["qdq_model"] == tmp_path / "digits-cnn-int8.qdq.onnx"
    scales = json.loads(files["scales"].read_text())
    version, algorithm, cached = parse_trt_cache(files["tensorrt_cache"].read_bytes())
    assert (version, algorithm) == (101300, "EntropyCalibration2")
    assert set(cached) == set(scales["scales"]) and scales["samples"] == 512
    for name, scale in scales["scales"].items():  # float32 in the cache, float64 in the JSON
        assert cached[name] == pytest.approx(scale, rel=1e-6) and scale > 0

    again = cli("calibrate", native_spec, "--json")
    assert again[0] == 0 and json.loads(again[1])["reused"] is True
    assert "reusing" in again[2]


def test_calibrate_refuses_a_spec_without_calibration() -> None:
    code, _, stderr = cli("calibrate", REPO / "configs" / "digits-fp16.yaml")
    assert code == 2
    assert "digits-fp16.yaml:5: precision fp16 and no 'calibration:' section" in stderr


def test_calibrate_refuses_an_fp16_spec_with_calibration(tmp_path: Path, isolated_cache: Path) -> None:
    """An fp16 spec may have a calibration section (the overflow guard reads its data), and calibrate
    took it for an int8 spec: it wrote INT8 scales that no build of the spec reads."""
    text = INT8_SPEC.read_text().replace("../calibration/", f"{REPO}/calibration/")
    spec = tmp_path / "digits-fp16.yaml"
    spec.write_text(text.replace("precision: int8", "precision: fp16").replace("  algorithm: entropy\n", ""))
    code, _, stderr = cli("calibrate", spec, "--out", tmp_path / "out")
    assert code == 2
    assert f"{spec}:5: precision fp16: calibrate takes an int8 spec" in stderr, stderr
    assert not (tmp_path / "out").exists() and not list(isolated_cache.rglob("*.onnx"))


def test_trt_version_needs_out() -> None:
    code, _, stderr = cli("calibrate", INT8_SPEC, "--trt-version", "10.13.0.35")
    assert code == 2 and "pass --out too" in stderr


def test_a_bad_trt_version_is_refused_before_anything_is_written(tmp_path: Path, native_spec: Path) -> None:
    out = tmp_path / "out"
    code, _, stderr = cli("calibrate", native_spec, "--out", out, "--trt-version", "10.100.0")
    assert code == 2 and "--trt-version: not a TensorRT version: '10.100.0'" in stderr
    assert not out.exists()


def test_an_out_that_is_a_file_is_refused_before_calibrating(tmp_path: Path, isolated_cache: Path) -> None:
    """``--out FILE`` was refused only once the whole calibration had run (and was cached)."""
    out = tmp_path / "out"
    out.write_text("a file, not a folder")
    code, _, stderr = cli("calibrate", INT8_SPEC, "--out", out)
    assert code == 2 and stderr == f"error: output directory {out} is a file; pass --out with a writable folder\n"
    assert not (isolated_cache / "calibration").exists()


def test_a_qdq_spec_gets_no_tensorrt_cache(tmp_path: Path) -> None:
    """A Q/DQ spec's scales cover only the tensors its Q/DQ nodes quantize (4 of the digits model's
    18): written as TensorRT's cache, TensorRT found no scale for every Conv output, without a word."""
    code, _, stderr = cli("calibrate", INT8_SPEC, "--out", tmp_path / "out", "--trt-version", "10.13.0.35")
    assert code == 2 and "digits-int8.yaml:9: --trt-version writes TensorRT's calibration cache" in stderr
    assert "needs calibration.mode: native" in stderr and stderr.count("\n") == 1
    assert not (tmp_path / "out").exists()


def test_the_trt_version_is_spelled_one_way_in_the_cache_files_name(tmp_path: Path, native_spec: Path) -> None:
    """Spaces and leading zeros went into the file's name ('digits-cnn-int8.trt 10.13.calibration.cache'):
    one version, one name. A version TensorRT never spells (a line break, other digits) is refused."""
    for index, given in enumerate((" 10.13.0.35 ", "010.13.00.35")):
        out = tmp_path / f"out{index}"
        code, stdout, stderr = cli("calibrate", native_spec, "--out", out, "--trt-version", given, "--json")
        assert code == 0, stderr
        cache = Path(json.loads(stdout)["files"]["tensorrt_cache"])
        assert cache == out / "digits-cnn-int8.trt10.13.0.35.calibration.cache" and cache.is_file()
    for given in ("10.13\n0", "١٠.١٣"):  # Arabic-Indic digits match Python's \d
        code, _, stderr = cli("calibrate", native_spec, "--out", tmp_path / "refused", "--trt-version", given)
        assert code == 2 and stderr == f"error: --trt-version: not a TensorRT version: {given!r} " + (
            "(expected e.g. 10.13.0 or 10.13.0.35)\n"
        )
    assert not (tmp_path / "refused").exists()


@pytest.mark.parametrize("name", ["digits-cnn-int8.qdq.onnx", "digits-cnn-int8.scales.json"])
def test_a_folder_named_like_an_exported_file_is_refused_before_calibrating(
    tmp_path: Path, isolated_cache: Path, name: str
) -> None:
    """Renaming an export over a folder failed after the calibration: exit 1 ("internal error"),
    with the files exported before it left in --out."""
    out = tmp_path / "out"
    (out / name).mkdir(parents=True)
    code, _, stderr = cli("calibrate", INT8_SPEC, "--out", out)
    assert code == 2, stderr
    assert stderr == f"error: cannot write {out / name}: it is a folder; remove it, or pass --out another folder\n"
    assert [path.name for path in out.iterdir()] == [name]
    assert not (isolated_cache / "calibration").exists()
