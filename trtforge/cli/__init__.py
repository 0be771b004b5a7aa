"""The command line: parse, call one function, render, map errors to exit codes.

Each command group lives in its own module with its own ``typer.Typer``, merged here with
``add_typer``. ``trtforge COMMAND`` imports the one module that defines COMMAND (click's "lazy
subcommands"): every other module, and what it imports, would only add to the start-up of every
command. Heavy modules (onnx, onnxruntime, TensorRT) are imported inside the commands, so that
``trtforge --help`` stays instant.
"""

from __future__ import annotations

# first: hashing the engine that `check`/`inspect` is given starts while the rest imports
from trtforge.cli import early

# isort: split
import importlib
import os
import sys
from collections.abc import Iterable, Sequence
from typing import Annotated

import typer

from trtforge import __version__

#: each command -> the module of ``trtforge.cli`` that defines it (tests/test_startup_imports.py
#: checks that this is every command of the whole app, and nothing else)
COMMAND_MODULES: dict[str, str] = {
    "build": "build_commands",
    "calibrate": "build_commands",
    "inspect": "build_commands",
    "schema": "build_commands",
    "check": "check_commands",
    "keygen": "check_commands",
    "sign": "check_commands",
    "bench": "bench_commands",
    "verify": "verify_commands",
    "diagnose": "diagnose_commands",
    "ci": "ci_commands",
    "matrix": "ci_commands",
    "publish": "publish_commands",
    "pull": "publish_commands",
    "verify-provenance": "provenance_commands",
    "serve": "serve_commands",
}
ALL_MODULES: tuple[str, ...] = tuple(dict.fromkeys(COMMAND_MODULES.values()))


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"trtforge {__version__}")
        raise typer.Exit()


def main_callback(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version_callback, is_eager=True, help="Show the version."),
    ] = False,
) -> None:
    """Build verified, stamped TensorRT engines from ONNX models in CI."""


def make_app(modules: Iterable[str] = ALL_MODULES) -> typer.Typer:
    """The CLI with the commands of ``modules`` (names in ``trtforge.cli``; default: every one)."""
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
    for module in modules:
        app.add_typer(importlib.import_module(f"trtforge.cli.{module}").app)
    app.callback()(main_callback)
    return app


def modules_for(arguments: Sequence[str]) -> tuple[str, ...]:
    """The module of the command ``arguments`` (``sys.argv[1:]``) names; every module where they
    name none or an unknown one, so that help lists every command and a typo gets its suggestion."""
    words = [word for word in arguments if not word.startswith("-")]
    if words and words[0] in COMMAND_MODULES:
        return (COMMAND_MODULES[words[0]],)
    return ALL_MODULES


def __getattr__(name: str) -> typer.Typer:
    """``trtforge.cli.app``: the whole CLI, as tests and other programs invoke it (built once)."""
    if name == "app":
        app = globals()["app"] = make_app()
        return app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def main() -> None:
    # pydantic reads every installed distribution's entry points for plugins when it builds a
    # model (2-5 ms a process, measured); trtforge's models are its own, so the CLI builds them
    # without plugins, as typer does its own (a value already in the environment wins)
    os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")
    try:
        make_app(modules_for(sys.argv[1:]))()
    finally:
        early.exiting()
