"""Package-level promises: `trtforge --help` imports nothing heavy, public names resolve."""

from __future__ import annotations

import subprocess
import sys

import trtforge.runtime

HEAVY = ("onnx", "onnxruntime", "tensorrt", "tensorrt_rtx", "numpy", "prometheus_client", "oras")


def test_cli_import_stays_light() -> None:
    code = f"import sys, trtforge.cli; print([m for m in {HEAVY!r} if m in sys.modules])"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_runtime_exports_resolve() -> None:
    assert sorted(trtforge.runtime.__all__) == sorted(trtforge.runtime._MODULE_OF)
    for name in trtforge.runtime.__all__:
        assert getattr(trtforge.runtime, name) is not None


def test_type_hints_and_lazy_names_reach_users() -> None:
    """PEP 561: the package says it is typed (and ships the marker); ``dir()`` lists the names that
    resolve on first use, as tab completion reads them."""
    from pathlib import Path

    package = Path(trtforge.runtime.__file__).parent.parent
    assert (package / "py.typed").is_file()
    pyproject = (package.parent / "pyproject.toml").read_text(encoding="utf-8")
    assert 'trtforge = ["*.json", "py.typed"]' in pyproject
    assert set(trtforge.runtime.__all__) <= set(dir(trtforge.runtime))
