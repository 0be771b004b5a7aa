"""The command line: parse, call one function, render, map errors to exit codes.

Each command group lives in its own module with its own ``typer.Typer``, merged here with
``add_typer``. Heavy modules (onnx, onnxruntime, TensorRT) are imported inside the commands so
that ``trtforge --help`` stays instant.
"""

from __future__ import annotations

# first: hashing the engine that `check`/`inspect` is given starts while the rest imports
from trtforge.cli import early  # noqa: F401

# isort: split
from typing import Annotated

import typer

from trtforge import __version__
from trtforge.cli import (
    bench_commands,
    build_commands,
    check_commands,
    ci_commands,
    diagnose_commands,
    provenance_commands,
    publish_commands,
    serve_commands,
    verify_commands,
)

app = typer.Typer(
    name="trtforge",
    help="Build verified, stamped TensorRT engines from ONNX models in CI.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # Plain help: typer's rich help imports rich's markdown and syntax modules (~0.2 s), and
    # `trtforge --help` must be instant.
    rich_markup_mode=None,
)
app.add_typer(build_commands.app)
app.add_typer(check_commands.app)
app.add_typer(bench_commands.app)
app.add_typer(verify_commands.app)
app.add_typer(diagnose_commands.app)
app.add_typer(ci_commands.app)
app.add_typer(publish_commands.app)
app.add_typer(provenance_commands.app)
app.add_typer(serve_commands.app)


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"trtforge {__version__}")
        raise typer.Exit()


@app.callback()
def main_callback(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version_callback, is_eager=True, help="Show the version."),
    ] = False,
) -> None:
    """Build verified, stamped TensorRT engines from ONNX models in CI."""


def main() -> None:
    app()
