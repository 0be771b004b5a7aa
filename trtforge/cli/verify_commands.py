"""``verify``: the accuracy gate on artifacts that already exist."""

from __future__ import annotations

import itertools
from functools import partial
from pathlib import Path
from typing import Annotated, Any

import typer

from trtforge.cli.batch import BatchSteps, ItemReport, run_batch
from trtforge.cli.common import (
    CacheDirOption,
    JsonOption,
    JunitOption,
    cache_dir_value,
    exits_cleanly,
    path_option,
    reporter,
)
from trtforge.errors import InvalidInputError, TrtforgeError

app = typer.Typer()

SPEC_SUFFIXES = (".yaml", ".yml")

#: ``verify SPEC``'s ``--out``: the folder ``build --out`` wrote the engines to (reports go beside them)
EnginesOption = Annotated[
    Path | None,
    path_option("--out", "-o", help_text="Where `verify SPEC` looks for the engines (default: out; not with ENGINE)."),
]
#: where ``verify SPEC`` looks without ``--out``: where ``build`` writes without it
DEFAULT_OUT = Path("out")


@app.command()
@exits_cleanly
def verify(
    target: Annotated[
        Path,
        typer.Argument(
            metavar="SPEC|ENGINE",
            help="A spec (verifies its engines in --out), or an ENGINE with --spec.",
            show_default=False,
        ),
    ],
    spec: Annotated[
        Path | None, typer.Option("--spec", help="With ENGINE: the spec it was built from (ONNX model and data).")
    ] = None,
    out: EnginesOption = None,
    cache_dir: CacheDirOption = None,
    junit: JunitOption = None,
    as_json: JsonOption = False,
) -> None:
    """Run the accuracy gate on built engines (or their ONNX simulation where they cannot run here)."""
    from trtforge.spec import load_spec, spec_input_files
    from trtforge.verify import spec_artifacts, verify_engine

    if target.suffix in SPEC_SUFFIXES:
        if spec is not None:
            raise InvalidInputError(f"{target} is a spec; pass either SPEC or ENGINE --spec SPEC, not both")
        loaded = load_spec(target)
        engines = spec_artifacts(loaded, out or DEFAULT_OUT)
    else:
        if spec is None:
            raise InvalidInputError(
                f"{target}: verify ENGINE needs --spec SPEC (the spec gives the ONNX model and the accuracy data)"
            )
        if out is not None:  # it was ignored: the report goes beside the engine, wherever --out pointed
            raise InvalidInputError(
                f"--out {out}: verify ENGINE writes its report beside the engine; --out is where verify SPEC "
                "looks for engines: drop --out"
            )
        loaded = load_spec(spec)
        engines = [target]
    console = reporter()
    cache = cache_dir_value(cache_dir)

    def verify_one(engine: Path) -> Any:
        return verify_engine(loaded, engine, console, cache_dir=cache)

    batch = BatchSteps(key="engine", run=verify_one, passed=_passed, failed=_verify_failed, status="passed")
    inputs = itertools.chain(
        spec_input_files(loaded.origin.path), engines
    )  # model, data, labels: read where --junit exists
    run_batch(batch, engines, console, junit, as_json, inputs)


def _passed(outcome: Any) -> ItemReport:
    from trtforge.accuracy.junit import junit_suite
    from trtforge.accuracy.report import summary

    fields = {
        "engine": str(outcome.engine),
        "report": str(outcome.report_file),
        "manifest_updated": outcome.manifest_updated,
        "report_written": outcome.report_written,
        "accuracy": summary(outcome.report, outcome.report_file.name),
    }
    status = None if outcome.report.measured else "not measured"  # an identical candidate proves nothing
    return ItemReport(partial(junit_suite, outcome.report), fields, status)


def _verify_failed(engine: Path, exc: TrtforgeError) -> ItemReport:
    from trtforge.accuracy.gate import GateFailed
    from trtforge.accuracy.junit import junit_problem_suite, junit_suite
    from trtforge.accuracy.report import summary
    from trtforge.manifest import ENGINE_SUFFIX, report_path

    if isinstance(exc, GateFailed):
        report = exc.report
        report_file = report_path(engine.parent, report.stem)  # its name, written or (signed) left as it was
        return ItemReport(partial(junit_suite, report), {"accuracy": summary(report, report_file.name)})
    stem = engine.name.removesuffix(ENGINE_SUFFIX)  # the suite a passing verify of it writes
    return ItemReport(partial(junit_problem_suite, stem, str(exc), exc.exit_code, "verify"), {"accuracy": None})
