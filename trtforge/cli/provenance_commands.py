"""``verify-provenance``: which inputs built this engine, are they these files, who signed it."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from trtforge.cli.common import JsonOption, TrustedKeyOption, emit_json, exits_cleanly, reporter
from trtforge.errors import IncompatibleEngineError

if TYPE_CHECKING:
    from trtforge.provenance import ProvenanceReport

app = typer.Typer()


@app.command("verify-provenance")
@exits_cleanly
def verify_provenance_command(
    engine: Annotated[
        Path,
        typer.Argument(
            metavar="ENGINE",
            help="An .engine file; its .intoto.jsonl and .manifest.json sit beside it.",
            show_default=False,
        ),
    ],
    trusted_key: TrustedKeyOption = None,
    inputs: Annotated[
        list[Path] | None,
        typer.Option("--input", help="A file that should be an input of ENGINE (model, spec, data); repeatable."),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Verify ENGINE's signed provenance: signer, subjects, and every input hashed again. Exit 0, or 5."""
    from trtforge.provenance import verify_provenance
    from trtforge.signing import load_trusted_keys

    report = verify_provenance(engine, load_trusted_keys(trusted_key or ()), inputs or ())
    if as_json:
        emit_json(report.to_dict())
        if not report.verified:
            raise typer.Exit(IncompatibleEngineError.exit_code)
        return
    _render(report)
    if not report.verified:
        raise IncompatibleEngineError(f"{report.engine.name}: {'; '.join(report.problems)}", report.problems)


def _render(report: ProvenanceReport) -> None:
    console = reporter()
    builder = report.builder
    versions = ", ".join(f"{name} {value}" for name, value in builder.get("version", {}).items())
    console.info(f"attestation: {report.attestation}")
    console.info(f"signed by key {report.key_id} ({report.algorithm}), a trusted key")
    console.info(f"subjects: {', '.join(name for name, _ in report.subjects)} (engine and manifest match)")
    console.info(f"builder: {builder.get('id')} ({versions})")
    for check in report.inputs:
        where = f" ({check.file})" if check.file and check.file != check.input.path else ""
        console.info(
            f"  {check.input.role}: {check.input.path or '-'} sha256 {check.input.sha256[:12]}… {check.status}{where}"
        )
    accuracy = report.accuracy
    if accuracy is not None:
        from trtforge.accuracy.junit import summary_verdict

        where = f"report {accuracy['report']}" if accuracy.get("report") else accuracy.get("reason", "-")
        console.info(f"accuracy gate: {summary_verdict(accuracy)}; {where}")
        if accuracy.get("emulation"):
            console.info(f"candidate emulated: {accuracy['emulation']}")
    if report.verified:
        console.success(f"provenance verified: {report.engine.name}")
