"""Train the example digits CNN and write its ONNX models and data.

Trains a small CNN on scikit-learn's bundled digits dataset (8x8 grayscale, 10 classes) on the
CPU, exports it to ONNX twice (dynamic batch and fixed batch 1) and writes the calibration and
validation data that the example specs use:

    <out>/digits_cnn.onnx          input "input" [batch, 1, 8, 8] -> output "logits" [batch, 10]
    <out>/digits_cnn_static.onnx   the same model with a fixed batch of 1
    <out>/train/batch_XX.npy       calibration set: 512 training samples, 64 per file, float32
    <out>/val/batch_XX.npy         every validation sample, 64 per file (the last is smaller)
    <out>/val-labels.npy           int64 labels of the validation samples, in file order

Everything is seeded, so a rerun gives the same weights and data. Needs torch; nothing under
trtforge/ imports it.

Usage: python examples/digits/make_digits.py [--out calibration/digits]
"""

from __future__ import annotations

import argparse
import random
import time
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from sklearn.datasets import load_digits
from torch import nn

SEED = 0
N_TRAIN = 1400
N_CALIBRATION = 512
FILE_BATCH = 64
EPOCHS = 10
BATCH_SIZE = 32
LEARNING_RATE = 1e-3
OPSET = 17
MIN_ACCURACY = 0.95
MAX_ORT_DIFF = 1e-4

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_OUT = REPO_ROOT / "calibration" / "digits"


class DigitsCNN(nn.Module):
    """Conv-BN-ReLU x2, max-pool, two fully connected layers; returns logits."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, kernel_size=3, padding=1),
            nn.BatchNorm2d(16),
            nn.ReLU(),
            nn.Conv2d(16, 32, kernel_size=3, padding=1),
            nn.BatchNorm2d(32),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Linear(32 * 4 * 4, 64),
            nn.ReLU(),
            nn.Linear(64, 10),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits: torch.Tensor = self.head(self.features(x))
        return logits


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True)
    # One thread: float reductions then run in one fixed order on every machine.
    torch.set_num_threads(1)


def load_data() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Digits as float32 N x 1 x 8 x 8 in [0, 1] and int64 labels, split train / val."""
    digits = load_digits()
    images = (digits.images.astype(np.float32) / 16.0).reshape(-1, 1, 8, 8)
    labels = digits.target.astype(np.int64)
    return images[:N_TRAIN], labels[:N_TRAIN], images[N_TRAIN:], labels[N_TRAIN:]


def train(model: DigitsCNN, x: np.ndarray, y: np.ndarray) -> None:
    xt = torch.from_numpy(x)
    yt = torch.from_numpy(y)
    optimizer = torch.optim.Adam(model.parameters(), lr=LEARNING_RATE)
    loss_fn = nn.CrossEntropyLoss()
    generator = torch.Generator().manual_seed(SEED)
    model.train()
    for epoch in range(EPOCHS):
        order = torch.randperm(len(xt), generator=generator)
        total = 0.0
        for start in range(0, len(xt), BATCH_SIZE):
            idx = order[start : start + BATCH_SIZE]
            optimizer.zero_grad()
            loss = loss_fn(model(xt[idx]), yt[idx])
            loss.backward()
            optimizer.step()
            total += loss.item() * len(idx)
        print(f"epoch {epoch + 1:2d}/{EPOCHS}  loss {total / len(xt):.4f}")


def predict(model: DigitsCNN, x: np.ndarray) -> np.ndarray:
    model.eval()
    with torch.no_grad():
        logits: np.ndarray = model(torch.from_numpy(x)).numpy()
    return logits


def export(model: DigitsCNN, path: Path, dynamic_batch: bool) -> None:
    model.eval()
    sample = torch.zeros(1, 1, 8, 8, dtype=torch.float32)
    dynamic_axes = {"input": {0: "batch"}, "logits": {0: "batch"}} if dynamic_batch else None
    with warnings.catch_warnings():
        # The classic TorchScript exporter is chosen on purpose (a plain graph); torch >= 2.9
        # warns that it is legacy.
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            model,
            (sample,),
            str(path),
            input_names=["input"],
            output_names=["logits"],
            opset_version=OPSET,
            do_constant_folding=True,
            dynamic_axes=dynamic_axes,
            dynamo=False,
        )
    onnx.checker.check_model(onnx.load(str(path)), full_check=True)


def check_against_onnxruntime(path: Path, x: np.ndarray, expected: np.ndarray) -> np.ndarray:
    """Run the ONNX model in onnxruntime; fail if it differs from torch by MAX_ORT_DIFF or more."""
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = np.concatenate([session.run(["logits"], {"input": x[i : i + 1]})[0] for i in range(len(x))])
    diff = float(np.max(np.abs(got - expected)))
    print(f"{path.name}: onnxruntime vs torch max abs diff {diff:.2e}")
    if diff >= MAX_ORT_DIFF:
        raise SystemExit(f"{path}: onnxruntime differs from torch by {diff} (limit {MAX_ORT_DIFF})")
    return got


def write_batches(folder: Path, x: np.ndarray) -> int:
    """Write x as batch_00.npy, batch_01.npy, ... of FILE_BATCH samples each."""
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("batch_*.npy"):
        old.unlink()
    count = 0
    for count, start in enumerate(range(0, len(x), FILE_BATCH), start=1):
        chunk = np.ascontiguousarray(x[start : start + FILE_BATCH], dtype=np.float32)
        np.save(folder / f"batch_{count - 1:02d}.npy", chunk)
    return count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"output folder (default: {DEFAULT_OUT})")
    out: Path = parser.parse_args().out
    out.mkdir(parents=True, exist_ok=True)

    started = time.perf_counter()
    seed_everything(SEED)
    x_train, y_train, x_val, y_val = load_data()
    model = DigitsCNN()
    train(model, x_train, y_train)

    val_logits = predict(model, x_val)
    accuracy = float(np.mean(val_logits.argmax(axis=1) == y_val))
    print(f"validation accuracy (torch): {accuracy:.4f} ({len(y_val)} samples)")
    if accuracy <= MIN_ACCURACY:
        raise SystemExit(f"validation accuracy {accuracy:.4f} is not above {MIN_ACCURACY}")

    dynamic_path = out / "digits_cnn.onnx"
    static_path = out / "digits_cnn_static.onnx"
    export(model, dynamic_path, dynamic_batch=True)
    export(model, static_path, dynamic_batch=False)
    ort_logits = check_against_onnxruntime(dynamic_path, x_val, val_logits)
    check_against_onnxruntime(static_path, x_val, val_logits)
    session = ort.InferenceSession(str(dynamic_path), providers=["CPUExecutionProvider"])
    batched = session.run(["logits"], {"input": x_val})[0]
    if float(np.max(np.abs(batched - val_logits))) >= MAX_ORT_DIFF:
        raise SystemExit(f"{dynamic_path}: batched onnxruntime output differs from torch")
    ort_accuracy = float(np.mean(ort_logits.argmax(axis=1) == y_val))
    print(f"validation accuracy (onnxruntime): {ort_accuracy:.4f}")

    n_train_files = write_batches(out / "train", x_train[:N_CALIBRATION])
    n_val_files = write_batches(out / "val", x_val)
    np.save(out / "val-labels.npy", y_val.astype(np.int64))
    print(
        f"wrote {dynamic_path.name}, {static_path.name}, {n_train_files} train files "
        f"({N_CALIBRATION} samples), {n_val_files} val files ({len(y_val)} samples) and "
        f"val-labels.npy to {out} in {time.perf_counter() - started:.1f} s"
    )


if __name__ == "__main__":
    main()
