"""``build``, ``inspect``, ``schema``."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from trtforge.cli.common import (
    BackendOption,
    CacheDirOption,
    JsonOption,
    backend_value,
    cache_dir_value,
    emit_json,
    exits_cleanly,
    reporter,
)
from trtforge.errors import TrtforgeError, internal_error, most_severe

app = typer.Typer()


@app.command()
@exits_cleanly
def build(
    specs: Annotated[list[Path], typer.Argument(metavar="SPEC", help="Model spec YAML files.", show_default=False)],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output directory.")] = Path("out"),
    backend: BackendOption = None,
    cache_dir: CacheDirOption = None,
    junit: Annotated[
        Path | None, typer.Option("--junit", help="Write the accuracy gate's checks as JUnit XML to this file.")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Build each spec: check, prepare precision, build, run the accuracy gate, stamp the manifest."""
    console = reporter()
    cache = cache_dir_value(cache_dir)
    results: list[dict[str, Any]] = []
    suites: list[Any] = []
    for spec_path in specs:
        try:
            outcome = _build_one(spec_path, out, console, backend_value(backend), cache)
        except TrtforgeError as exc:
            suites.append(_junit_failure(spec_path, exc))
            if len(specs) == 1 and not as_json:
                _write_junit(junit, suites)
                raise
            console.error(str(exc))
            results.append({"spec": str(spec_path), "status": "failed", "exit_code": exc.exit_code, "error": str(exc)})
            continue
        suites.append(_junit_success(outcome))
        results.append(
            {
                "spec": str(spec_path),
                "status": "built",
                "exit_code": 0,
                "engine": str(outcome.engine),
                "manifest": str(outcome.manifest_path),
                "backend": outcome.backend.flavor,
                "tag": outcome.manifest.tag,
                "notes": list(outcome.notes),
                "accuracy": outcome.manifest.accuracy,
            }
        )
    _write_junit(junit, suites)
    if as_json:
        emit_json({"results": results})
    code = most_severe(result["exit_code"] for result in results)
    if code:
        raise typer.Exit(code)


def _build_one(spec_path: Path, out: Path, console: Any, backend: str | None, cache: Path) -> Any:
    """One spec of a batch: whatever it raises is a TrtforgeError, so one bad spec (a bug, an
    unwrapped onnxruntime or TensorRT exception) costs that spec only and the batch goes on."""
    from trtforge.build import build_spec
    from trtforge.spec import load_spec

    try:
        return build_spec(load_spec(spec_path), out, console, backend=backend, cache_dir=cache)
    except TrtforgeError:
        raise
    except Exception as exc:  # a bug or an unwrapped library error: this spec fails with exit 1
        raise internal_error(exc, str(spec_path)) from exc


def _junit_failure(spec_path: Path, exc: TrtforgeError) -> Any:
    from trtforge.accuracy.gate import GateFailed
    from trtforge.accuracy.report import junit_problem_suite, junit_suite

    if isinstance(exc, GateFailed):
        return junit_suite(exc.report)
    return junit_problem_suite(spec_path.stem, str(exc), exc.exit_code)


def _junit_success(outcome: Any) -> Any:
    from trtforge.accuracy.report import junit_skipped_suite, junit_suite

    if outcome.accuracy is None:
        return junit_skipped_suite(outcome.manifest.stem, "accuracy.enabled is false in the spec")
    return junit_suite(outcome.accuracy)


def _write_junit(path: Path | None, suites: list[Any]) -> None:
    if path is not None:
        from trtforge.accuracy.report import write_junit

        write_junit(path, suites)


@app.command()
@exits_cleanly
def calibrate(
    spec_path: Annotated[Path, typer.Argument(metavar="SPEC", help="An int8 model spec.")],
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Also copy the Q/DQ ONNX and the scales here.")
    ] = None,
    trt_version: Annotated[
        str | None,
        typer.Option(help="Also write TensorRT's calibration cache for this TensorRT version (needs --out)."),
    ] = None,
    cache_dir: CacheDirOption = None,
    as_json: JsonOption = False,
) -> None:
    """INT8 calibration only: the Q/DQ ONNX and the calibration scales (cached by content)."""
    from trtforge.calibration import calibrate as run_calibration
    from trtforge.errors import InvalidInputError, SpecError
    from trtforge.model import inspect_model
    from trtforge.spec import check_profiles, load_spec

    spec = load_spec(spec_path)
    if spec.calibration is None:
        raise SpecError(
            f"{spec.origin.where('precision')}: precision {spec.precision} and no 'calibration:' section: "
            "calibrate takes an int8 spec (see trtforge schema)"
        )
    if trt_version is not None and out is None:
        raise InvalidInputError("--trt-version writes a file: pass --out too")
    model = inspect_model(spec.model_path)
    check_profiles(spec, model)
    console = reporter()
    result = run_calibration(spec, model, cache_dir_value(cache_dir) / "calibration", log=console.info)
    files = {"qdq_model": str(result.qdq_model), "scales": str(result.cache_file)}
    if out is not None:
        files = _export_calibration(result, spec.name, out, trt_version)
    for label, path in files.items():
        console.info(f"{spec.name}: {label} {path}")
    if as_json:
        emit_json({**result.manifest_section(), "reused": result.reused, "files": files})


def _export_calibration(result: Any, name: str, out: Path, trt_version: str | None) -> dict[str, str]:
    from trtforge.fsutil import atomic_write_bytes, ensure_writable_dir

    ensure_writable_dir(out)
    files = {"qdq_model": out / f"{name}-int8.qdq.onnx", "scales": out / f"{name}-int8.scales.json"}
    atomic_write_bytes(files["qdq_model"], result.qdq_model.read_bytes())
    atomic_write_bytes(files["scales"], result.cache_file.read_bytes())
    if trt_version is not None:
        files["tensorrt_cache"] = out / f"{name}-int8.trt{trt_version}.calibration.cache"
        atomic_write_bytes(files["tensorrt_cache"], result.trt_cache(trt_version))
    return {label: str(path) for label, path in files.items()}


@app.command()
@exits_cleanly
def inspect(
    engine: Annotated[
        Path, typer.Argument(metavar="ENGINE", help="An .engine file (its .manifest.json sits beside it).")
    ],
    as_json: JsonOption = False,
) -> None:
    """Show an engine's manifest and file facts."""
    from trtforge.inspection import engine_facts, render_facts

    facts = engine_facts(engine)
    if as_json:
        emit_json(facts)
    else:
        render_facts(facts, reporter())


@app.command()
def schema() -> None:
    """Print the JSON Schema of the spec (for editors and CI linting)."""
    from importlib import resources

    sys.stdout.write(resources.files("trtforge").joinpath("spec.schema.json").read_text("utf-8"))
