"""What every command shares: error-to-exit-code mapping, JSON output, the reporter, options."""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from contextvars import ContextVar
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from typer.exceptions import TyperException

from trtforge.errors import TrtforgeError, internal_error

F = TypeVar("F", bound=Callable[..., Any])

#: True after an interrupt at any point: every write is a commit (trtforge.artifact) that is
#: rolled back when interrupted before its commit point, and whole once past it.
INTERRUPTED = "interrupted: no artifact was left half-written (each is the previous one or a complete new one)"

JsonOption = Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout.")]


def reporter() -> Any:
    from trtforge.console import Reporter

    return Reporter()


#: whether the running command printed its ``--json`` document (exits_cleanly prints one otherwise)
_json_printed: ContextVar[bool] = ContextVar("json_printed", default=False)


def emit_json(document: Any) -> None:
    """``--json`` prints exactly one document on stdout; everything human goes to stderr."""
    sys.stdout.write(json.dumps(document, indent=2, default=str) + "\n")
    sys.stdout.flush()
    _json_printed.set(True)


def exits_cleanly(command: F) -> F:
    """Every failure is one line on stderr and its exit code: TrtforgeError's own, 130 for Ctrl-C,
    1 for anything else (a bug or an unwrapped library error; TRTFORGE_DEBUG=1 adds the
    traceback). With ``--json`` (the parameter ``as_json``) a command that failed before printing
    its document prints ``{"error": {"exit_code": N, "message": "..."}}``: always one document."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        _json_printed.set(False)
        try:
            return command(*args, **kwargs)
        except (typer.Exit, typer.Abort, TyperException):
            raise  # the command chose its exit code; usage errors are typer's to print
        except TrtforgeError as exc:
            code, message = exc.exit_code, str(exc)
        except KeyboardInterrupt:
            code, message = 130, INTERRUPTED
        except Exception as exc:  # a bug or an unwrapped library error: one line, exit 1
            code, message = 1, str(internal_error(exc))
        typer.echo(message if code == 130 else f"error: {message}", err=True)
        if kwargs.get("as_json") and not _json_printed.get():
            emit_json({"error": {"exit_code": code, "message": message}})
        raise typer.Exit(code) from None

    return wrapper  # type: ignore[return-value]


# Options shared by several commands: one definition each, so flags read the same everywhere.
CacheDirOption = Annotated[
    Path | None,
    typer.Option(
        help="Cache directory: calibration, FP16 graphs, builds (default $TRTFORGE_CACHE_DIR or ~/.cache/trtforge)."
    ),
]


def cache_dir_value(cache_dir: Path | None) -> Path:
    """``--cache-dir`` (or its default), created and writable before any work starts."""
    from trtforge.build import default_cache_dir
    from trtforge.fsutil import ensure_writable_dir

    return ensure_writable_dir(cache_dir or default_cache_dir(), "--cache-dir", "cache directory")


class BackendName(str, Enum):
    auto = "auto"
    tensorrt = "tensorrt"
    tensorrt_rtx = "tensorrt-rtx"


BackendOption = Annotated[BackendName | None, typer.Option(help="Overrides the spec's backend.")]


def backend_value(choice: BackendName | None) -> str | None:
    return choice.value if choice is not None else None


FlavorOption = Annotated[
    str | None, typer.Option(help="Target runtime: tensorrt | tensorrt-rtx (default: the engine's).")
]
TrtVersionOption = Annotated[
    str | None, typer.Option("--trt-version", help="Target runtime version (default: the installed one).")
]
CcOption = Annotated[
    str | None, typer.Option("--cc", help="Target GPU compute capability: 8.6, sm86 or sm_86 (default: GPU 0).")
]
PlatformOption = Annotated[str | None, typer.Option(help="Target platform: linux_x86_64, linux_aarch64, win_amd64.")]
RequireSignatureOption = Annotated[
    bool, typer.Option("--require-signature", help="Refuse artifacts whose manifest no trusted key signed.")
]
TrustedKeyOption = Annotated[
    list[Path] | None,
    typer.Option("--trusted-key", help="Public key (PEM) that may sign; repeatable (default: $TRTFORGE_TRUSTED_KEY)."),
]
InsecureOption = Annotated[
    bool, typer.Option("--insecure", help="Plain HTTP for oci:// (a local registry); HTTPS otherwise.")
]
AllowHostCodeOption = Annotated[
    bool, typer.Option("--allow-host-code", help="Accept version-compatible engines (they run embedded host code).")
]
