"""The committed example model (calibration/digits) and its data are usable as documented.

Regenerate them with `python examples/digits/make_digits.py` (needs torch).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from clitools import cli
from models import without_gpu

DIGITS = Path(__file__).resolve().parents[1] / "calibration" / "digits"
FILE_BATCH = 64
N_CALIBRATION = 512
MIN_ACCURACY = 0.95


def _batch_files(folder: str) -> list[Path]:
    files = sorted((DIGITS / folder).glob("batch_*.npy"))
    assert files, f"no batch_*.npy files in {DIGITS / folder}"
    return files


def _load_val() -> tuple[np.ndarray, np.ndarray]:
    x = np.concatenate([np.load(f) for f in _batch_files("val")])
    y = np.load(DIGITS / "val-labels.npy")
    return x, y


def test_train_files_shapes_and_dtype() -> None:
    files = _batch_files("train")
    assert len(files) == N_CALIBRATION // FILE_BATCH
    for f in files:
        a = np.load(f)
        assert a.dtype == np.float32, f
        assert a.shape == (FILE_BATCH, 1, 8, 8), f
        assert float(a.min()) >= 0.0 and float(a.max()) <= 1.0, f


def test_val_files_shapes_dtype_and_labels() -> None:
    files = _batch_files("val")
    shapes = [np.load(f).shape for f in files]
    for f, shape in zip(files[:-1], shapes[:-1], strict=True):
        assert shape == (FILE_BATCH, 1, 8, 8), f
    assert 1 <= shapes[-1][0] <= FILE_BATCH and shapes[-1][1:] == (1, 8, 8)
    x, y = _load_val()
    assert x.dtype == np.float32
    assert y.dtype == np.int64
    assert y.shape == (len(x),)
    assert set(np.unique(y).tolist()) <= set(range(10))


@pytest.mark.parametrize(
    ("model", "batch"),
    [("digits_cnn.onnx", "batch"), ("digits_cnn_static.onnx", 1)],
)
def test_model_io(model: str, batch: str | int) -> None:
    graph = onnx.load(str(DIGITS / model)).graph
    (inp,) = graph.input
    (out,) = graph.output
    assert inp.name == "input" and out.name == "logits"

    def dims(value: onnx.ValueInfoProto) -> list[str | int]:
        return [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]

    assert dims(inp) == [batch, 1, 8, 8]
    assert dims(out) == [batch, 10]


def test_val_accuracy() -> None:
    x, y = _load_val()
    session = ort.InferenceSession(str(DIGITS / "digits_cnn.onnx"), providers=["CPUExecutionProvider"])
    (logits,) = session.run(["logits"], {"input": x})
    assert logits.shape == (len(x), 10)
    accuracy = float(np.mean(logits.argmax(axis=1) == y))
    assert accuracy >= MIN_ACCURACY, f"val accuracy {accuracy:.4f} < {MIN_ACCURACY}"


def test_demo_compare_script_reads_what_build_writes(tmp_path: Path) -> None:
    """``make demo``'s last step: examples/digits/compare.py over the reports a real build wrote."""
    repo = DIGITS.parents[1]
    code, _, stderr = cli("build", repo / "configs" / "digits-fp32.yaml", "--out", tmp_path)
    assert code == 0, stderr
    compare = [sys.executable, str(repo / "examples" / "digits" / "compare.py"), str(tmp_path), "--name", "digits-cnn"]
    done = subprocess.run([*compare, "--json"], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    (row,) = json.loads(done.stdout)["rows"]
    assert (row["precision"], row["samples"], row["passed"], row["measured"]) == ("fp32", 397, True, False)
    assert row["cosine"] is None and row["reference_accuracy"] == row["candidate_accuracy"] > 0.95
    assert "not measured" in done.stderr  # the fp32 row compared nothing (identical candidate)
    assert "digits-cnn" in done.stderr  # the table
    empty = subprocess.run([*compare[:2], str(tmp_path / "nothing")], capture_output=True, text=True, check=False)
    assert empty.returncode == 2 and "no accuracy reports" in empty.stderr


def test_demo_compare_names_the_reports_a_wrong_name_missed(tmp_path: Path) -> None:
    """``--name`` is a spec's name: one that no report has (the script's own usage line said
    ``--name digits``) was exit 2 saying the folder held no report at all, "build the specs first",
    beside the reports it had just read. Now the line names the names there."""
    repo = DIGITS.parents[1]
    code, _, stderr = cli("build", repo / "configs" / "digits-fp32.yaml", "--out", tmp_path)
    assert code == 0, stderr
    script = repo / "examples" / "digits" / "compare.py"
    done = subprocess.run(
        [sys.executable, str(script), str(tmp_path), "--name", "digits"], capture_output=True, text=True
    )
    assert (done.returncode, done.stdout) == (2, ""), done.stderr
    assert (
        done.stderr == f"error: no accuracy reports of --name 'digits' in {tmp_path}; pass a name there: digits-cnn\n"
    )
    assert "--name digits-cnn\n" in script.read_text()  # the usage line names a spec that exists


@without_gpu
def test_demo_compare_says_what_a_simulated_row_emulated(tmp_path: Path) -> None:
    """A simulated row's numbers are the emulation's: the table says what was emulated (as it says
    why an identical row proves nothing), and its JSON row carries the label."""
    from trtforge.mixedprecision import FP16_STORAGE

    repo = DIGITS.parents[1]
    code, _, stderr = cli("build", repo / "configs" / "digits-fp16.yaml", "--out", tmp_path)
    assert code == 0, stderr
    compare = [sys.executable, str(repo / "examples" / "digits" / "compare.py"), str(tmp_path), "--json"]
    done = subprocess.run(compare, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    (row,) = json.loads(done.stdout)["rows"]
    assert (row["candidate"], row["emulation"]) == ("simulated", FP16_STORAGE)
    assert f"simulated (fp16): no engine ran; emulated: {FP16_STORAGE}\n" in done.stderr, done.stderr
