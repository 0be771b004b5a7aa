"""What every command shares: error-to-exit-code mapping, JSON output, the reporter, options."""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

import typer

from trtforge.errors import TrtforgeError

F = TypeVar("F", bound=Callable[..., Any])

JsonOption = Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout.")]


def reporter() -> Any:
    from trtforge.console import Reporter

    return Reporter()


def emit_json(document: Any) -> None:
    """``--json`` prints exactly one document on stdout; everything human goes to stderr."""
    sys.stdout.write(json.dumps(document, indent=2, default=str) + "\n")
    sys.stdout.flush()


def exits_cleanly(command: F) -> F:
    """Map TrtforgeError to its exit code with one line on stderr (no traceback), Ctrl-C to 130."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except TrtforgeError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            typer.echo("interrupted: nothing was written under a final name", err=True)
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]
