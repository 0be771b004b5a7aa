"""``build``, ``calibrate``, ``inspect``, ``schema``."""

from __future__ import annotations

import itertools
from functools import partial
from pathlib import Path
from typing import Annotated, Any

import typer

from trtforge.cli.batch import BatchSteps, ItemReport, run_batch
from trtforge.cli.common import (
    BackendOption,
    CacheDirOption,
    JsonOption,
    JunitOption,
    OutOption,
    TrustedKeyOption,
    backend_value,
    cache_dir_value,
    emit_json,
    exits_cleanly,
    path_option,
    reporter,
    said,
    triton_option,
    write_stdout,
)
from trtforge.errors import IncompatibleEngineError, TrtforgeError

app = typer.Typer()


@app.command()
@exits_cleanly
def build(
    specs: Annotated[list[Path], typer.Argument(metavar="SPEC", help="Model spec YAML files.", show_default=False)],
    out: OutOption = Path("out"),
    backend: BackendOption = None,
    cache_dir: CacheDirOption = None,
    junit: JunitOption = None,
    triton: Annotated[
        str | None,
        triton_option(
            "Refuse (exit 5, before building) a spec whose engine this Triton release (e.g. 24.08) cannot load."
        ),
    ] = None,
    sign_key: Annotated[
        Path | None,
        path_option(
            "--sign-key",
            help_text="Sign the manifest and write signed provenance ({stem}.intoto.jsonl) with this private key "
            "(default: $TRTFORGE_SIGNING_KEY when set).",
        ),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Build each spec: check, prepare precision, build, run the accuracy gate, stamp the manifest."""
    from trtforge.build import build_spec, plan_batch
    from trtforge.fsutil import check_writable_dir
    from trtforge.keys import signing_requested
    from trtforge.spec import spec_input_files

    check_writable_dir(out)  # now, not after the first build (run_batch checks --junit)
    console = reporter()
    cache = cache_dir_value(cache_dir)
    release = None
    if triton is not None:  # the releases' table only when asked: not on every build's start-up
        from trtforge.triton_releases import find_release

        release = find_release(triton)
    signing_key = None
    if signing_requested(sign_key):  # loaded before anything is built: a bad key fails in a second
        from trtforge.signing import load_signing_key

        signing_key = said(load_signing_key(sign_key, "--sign-key"))
    requested = backend_value(backend)
    plan = plan_batch(specs, requested)

    def build_one(spec_path: Path) -> Any:
        spec = plan.spec(spec_path)
        if release is not None:
            from trtforge.triton_releases import refuse_build

            refuse_build(spec, requested, release)  # before building: a refused build leaves --out as it was
        return build_spec(spec, out, console, backend=requested, cache_dir=cache, signing_key=signing_key)

    batch = BatchSteps(key="spec", run=build_one, passed=_built, failed=_build_failed, status="built")
    keys = [sign_key] if sign_key is not None else []
    spec_files = (file for path in plan.paths for file in spec_input_files(path))  # read only where --junit exists
    run_batch(batch, list(plan.paths), console, junit, as_json, itertools.chain(keys, spec_files))


def _built(outcome: Any) -> ItemReport:
    from trtforge.accuracy.junit import junit_skipped_suite, junit_suite
    from trtforge.manifest import SKIPPED_ACCURACY

    if outcome.accuracy is None:
        suite = partial(junit_skipped_suite, outcome.manifest.stem, SKIPPED_ACCURACY["reason"])
    else:
        suite = partial(junit_suite, outcome.accuracy)
    fields = {
        "engine": str(outcome.engine),
        "manifest": str(outcome.manifest_path),
        "backend": outcome.backend.flavor,
        "tag": outcome.manifest.tag,
        "notes": list(outcome.notes),
        "accuracy": outcome.manifest.accuracy,
    }
    return ItemReport(suite, fields)


def _build_failed(spec_path: Path, exc: TrtforgeError) -> ItemReport:
    from trtforge.accuracy.gate import GateFailed
    from trtforge.accuracy.junit import junit_problem_suite, junit_suite

    if isinstance(exc, GateFailed):
        from trtforge.accuracy.report import rejected_summary

        return ItemReport(partial(junit_suite, exc.report), {"accuracy": rejected_summary(exc.report)})
    return ItemReport(partial(junit_problem_suite, spec_path.stem, str(exc), exc.exit_code))


@app.command("calibrate")
@exits_cleanly
def calibrate_command(
    spec_path: Annotated[Path, typer.Argument(metavar="SPEC", help="An int8 model spec.")],
    out: Annotated[
        Path | None,
        path_option("--out", "-o", help_text="Also copy the Q/DQ ONNX and the scales here."),
    ] = None,
    trt_version: Annotated[
        str | None,
        typer.Option(help="Also write TensorRT's calibration cache for this TensorRT version (needs --out)."),
    ] = None,
    cache_dir: CacheDirOption = None,
    as_json: JsonOption = False,
) -> None:
    """INT8 calibration only: the Q/DQ ONNX and the calibration scales (cached by content)."""
    from trtforge.calibration import calibrate_spec
    from trtforge.spec import load_spec

    console = reporter()
    spec = load_spec(spec_path)
    cache = cache_dir_value(cache_dir, in_use=("calibration",))
    result, files = calibrate_spec(spec, cache / "calibration", console.info, out, trt_version)
    for label, path in files.items():
        console.info(f"{spec.name}: {label} {path}")
    if as_json:
        emit_json({**result.manifest_section(), "reused": result.reused, "files": files})


@app.command()
@exits_cleanly
def inspect(
    engine: Annotated[
        Path, typer.Argument(metavar="ENGINE", help="An .engine file (its .manifest.json sits beside it).")
    ],
    trusted_key: TrustedKeyOption = None,
    as_json: JsonOption = False,
) -> None:
    """Show an engine's manifest and file facts; exit 5 if the engine differs or the signature does not verify."""
    from trtforge.inspection import engine_facts, render_facts
    from trtforge.signing import load_trusted_keys

    facts = engine_facts(engine, load_trusted_keys(trusted_key or ()))
    if as_json:
        emit_json(facts.to_dict())
    else:
        render_facts(facts, reporter())
    if facts.problems:
        raise typer.Exit(IncompatibleEngineError.exit_code)  # after the facts: they show what differs


@app.command()
@exits_cleanly
def schema(
    manifest: Annotated[
        bool,
        typer.Option(
            "--manifest",
            help="The engine manifest's JSON Schema instead (trtforge/manifest/v1), for loaders other than trtforge.",
        ),
    ] = False,
) -> None:
    """Print the JSON Schema of the spec (for editors and CI linting), or of the manifest."""
    from importlib import resources

    shipped = "manifest.schema.json" if manifest else "spec.schema.json"
    write_stdout(resources.files("trtforge").joinpath(shipped).read_text("utf-8"))
