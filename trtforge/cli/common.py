"""What every command shares: error-to-exit-code mapping, JSON output, the reporter, options."""

from __future__ import annotations

import functools
import json
import os
import sys
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar, overload

import typer

from trtforge.cli import early
from trtforge.environment import Target
from trtforge.errors import (
    INTERRUPTED_EXIT,
    InvalidInputError,
    TrtforgeError,
    did_you_mean,
    interrupted_by_user,
    one_line,
    unexpected_error,
)
from trtforge.tags import FLAVORS, TRT_VERSION_RULE, ComputeCapability, Platform, parse_trt_version

if TYPE_CHECKING:
    from trtforge.compat import LoadPolicy
    from trtforge.keys import SigningKey

F = TypeVar("F", bound=Callable[..., Any])

#: The line Ctrl-C prints (exit 130). It holds wherever the interrupt lands: every write is a commit
#: (trtforge.artifact), rolled back when interrupted before its commit point and whole once past it.
INTERRUPTED = "interrupted: no artifact was left half-written (each is the previous one or a complete new one)"

JsonOption = Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout.")]


def reporter() -> Any:
    from trtforge.console import Reporter

    return Reporter()


#: whether the running command printed its ``--json`` document (exits_cleanly prints one otherwise)
_json_printed: ContextVar[bool] = ContextVar("json_printed", default=False)


#: a signing key, or None where none is asked for (``ci`` without ``$TRTFORGE_SIGNING_KEY``)
MaybeKey = TypeVar("MaybeKey", bound="SigningKey | None")


def said(key: MaybeKey) -> MaybeKey:
    """The signing key a command loaded, after its warning (a key file other users may read) is
    on stderr: once, before any work, by every command that signs."""
    if key is not None and key.warning:
        reporter().warn(key.warning)
    return key


def emit_json(document: Any) -> None:
    """``--json`` prints exactly one document on stdout; everything human goes to stderr. It is
    tried once: where stdout cannot take it, the command's error line (stderr) says why."""
    _json_printed.set(True)
    write_stdout(json.dumps(document, indent=2, default=str) + "\n")


def write_stdout(text: str) -> None:
    """``text`` on stdout. Where stdout cannot take it (a full disk, a closed pipe) the OSError goes
    on to ``exits_cleanly`` (one line, exit 2), and stdout is pointed at /dev/null first, as
    Python's docs advise, so that nothing is left buffered for the interpreter's exit to fail on."""
    try:
        sys.stdout.write(text)
        sys.stdout.flush()
    except OSError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        raise


@dataclass(frozen=True)
class Failure:
    """A command that failed, as its ``--json`` error document sees it."""

    exit_code: int
    message: str
    error: BaseException
    arguments: Mapping[str, Any]  # the command's parameters, by name


#: A command's own ``--json`` document for a failure (None: the plain error document); exits_cleanly
#: adds ``exit_code`` and ``error``.
ErrorDocument = Callable[[Failure], dict[str, Any] | None]


@overload
def exits_cleanly(command: F, *, error_document: ErrorDocument | None = None) -> F: ...


@overload
def exits_cleanly(command: None = None, *, error_document: ErrorDocument | None = None) -> Callable[[F], F]: ...


def exits_cleanly(command: F | None = None, *, error_document: ErrorDocument | None = None) -> Any:
    """Every failure is one line on stderr and its exit code: TrtforgeError's own, 130 for Ctrl-C,
    2 for a write the disk refused (full, read-only, over quota), 1 for anything else (a bug
    or an unwrapped library error; TRTFORGE_DEBUG=1 adds the traceback). With ``--json`` (the
    parameter ``as_json``) a command that failed before printing its document prints one here,
    so there is always exactly one: the command's own
    (``error_document``, with ``exit_code`` and ``error`` added) or
    ``{"error": {"exit_code": N, "message": "..."}}``."""
    if command is None:
        return functools.partial(exits_cleanly, error_document=error_document)

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        early.start_command()
        _json_printed.set(False)
        try:
            _refuse_empty_paths(kwargs)
            return command(*args, **kwargs)
        except (typer.Exit, typer.Abort, typer.TyperException):
            raise  # the command chose its exit code; usage errors are typer's to print
        except TrtforgeError as exc:
            failure = Failure(exc.exit_code, str(exc), exc, kwargs)
        except KeyboardInterrupt as exc:
            failure = Failure(INTERRUPTED_EXIT, INTERRUPTED, exc, kwargs)
        except Exception as exc:  # a full disk (exit 2), or a bug or an unwrapped library error (exit 1)
            if interrupted_by_user(exc):
                failure = Failure(INTERRUPTED_EXIT, INTERRUPTED, exc, kwargs)
            else:
                error = unexpected_error(exc)
                failure = Failure(error.exit_code, str(error), exc, kwargs)
        fsutil = sys.modules.get("trtforge.fsutil")  # not loaded: the command made no temporary
        if fsutil is not None:
            fsutil.discard_stranded_temps()
        message = one_line(failure.message)  # a value it repeats may hold a line break, or be huge
        typer.echo(message if failure.exit_code == INTERRUPTED_EXIT else f"error: {message}", err=True)
        if kwargs.get("as_json") and not _json_printed.get():
            code, whole = failure.exit_code, failure.message  # JSON escapes what breaks a line: nothing cut
            own = error_document(failure) if error_document is not None else None
            emit_json(
                {**own, "exit_code": code, "error": whole}
                if own is not None
                else {"error": {"exit_code": code, "message": whole}}
            )
        raise typer.Exit(failure.exit_code) from None

    return wrapper


#: What an empty path option (``--out ''``: often an unset shell variable) parses to. ``Path("")``
#: is ``Path(".")``, so without it the command would write into the current folder unasked; this
#: very object (told apart by identity) is refused by ``exits_cleanly`` before the command runs.
_EMPTY_PATH = Path()


def _parse_path(text: str) -> Path:
    return Path(text) if text else _EMPTY_PATH


def path_option(*flags: str, help_text: str) -> Any:
    """``typer.Option`` of a path a command writes: an empty value is refused (``_EMPTY_PATH``);
    help shows ``<path>``, as typer does for the paths it parses itself."""
    return typer.Option(*flags, parser=_parse_path, metavar="<path>", help=help_text)


def _refuse_empty_paths(arguments: Mapping[str, Any]) -> None:
    """An empty path option is exit 2 (one line), not the current folder (see ``_EMPTY_PATH``); the
    flag is the parameter's name, as typer spells it."""
    for name, value in arguments.items():
        if value is _EMPTY_PATH:
            flag = "--" + name.replace("_", "-")
            raise InvalidInputError(f"{flag} is empty: pass a path (an empty one is not the current folder)")


# Options shared by several commands: one definition each, so flags read the same everywhere.
CacheDirOption = Annotated[
    Path | None,
    path_option(
        "--cache-dir",
        help_text="Cache directory: calibration, FP16 graphs, builds "
        "(default $TRTFORGE_CACHE_DIR or ~/.cache/trtforge).",
    ),
]


OutOption = Annotated[Path, path_option("--out", "-o", help_text="Output directory.")]


def junit_option(what: str) -> Any:
    """``--junit PATH``: ``what`` (the command's own report) as JUnit XML; empty is refused (``path_option``)."""
    return path_option("--junit", help_text=f"Write {what} as JUnit XML to this file.")


#: ``build`` and ``verify``: one suite per artifact, the gate's checks its test cases
JunitOption = Annotated[Path | None, junit_option("the accuracy gate's checks")]


def triton_option(help_text: str) -> Any:
    """``--triton RELEASE``: a Triton container release by its table name (``trtforge.triton_releases``);
    what the command does with it is its help."""
    return typer.Option("--triton", metavar="RELEASE", help=help_text)


ProviderOption = Annotated[str, typer.Option("--provider", help="onnxruntime execution provider: cpu | cuda.")]
ThreadsOption = Annotated[
    int | None,
    typer.Option("--threads", min=1, help="onnxruntime intra-op threads per context (at most 4 per CPU core)."),
]


def cache_dir_value(cache_dir: Path | None, in_use: tuple[str, ...] = ()) -> Path:
    """``--cache-dir`` (or its default), created and writable, with nothing in the way of the
    folders ``in_use`` (the command's own), before any work starts."""
    from trtforge.cache import default_cache_dir, refuse_files_in_the_way
    from trtforge.fsutil import ensure_writable_dir

    folder = ensure_writable_dir(cache_dir or default_cache_dir(), "--cache-dir", "cache directory")
    refuse_files_in_the_way(folder, in_use)
    return folder


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


def target_from_flags(
    flavor: str | None = None,
    trt_version: str | None = None,
    cc: str | None = None,
    platform: str | None = None,
) -> Target:
    """Parse ``--flavor --trt-version --cc --platform``; a bad value names its flag and the fix."""
    if flavor is not None and flavor not in FLAVORS:
        raise InvalidInputError(f"--flavor '{flavor}': use {' or '.join(FLAVORS)}{did_you_mean(flavor, FLAVORS)}")
    if trt_version is not None:
        try:
            parse_trt_version(trt_version.strip())
        except ValueError:
            raise InvalidInputError(f"--trt-version '{trt_version}': write it as {TRT_VERSION_RULE}") from None
    try:
        capability = ComputeCapability.parse(cc) if cc is not None else None
    except ValueError as exc:
        raise InvalidInputError(f"--cc: {exc}") from exc
    try:
        parsed_platform = Platform.parse(platform) if platform is not None else None
    except ValueError as exc:
        raise InvalidInputError(f"--platform: {exc}") from exc
    return Target(flavor, trt_version.strip() if trt_version else None, capability, parsed_platform)


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


def load_policy(require_signature: bool, trusted_key: list[Path] | None, allow_host_code: bool) -> LoadPolicy:
    """``--require-signature --trusted-key --allow-host-code`` as the loader's policy, before any work:
    the keys are read, and a signature required with no key to check it is exit 2 (``LoadPolicy``)."""
    from trtforge.compat import LoadPolicy
    from trtforge.signing import load_trusted_keys

    return LoadPolicy(
        require_signature=require_signature,
        trusted_keys=load_trusted_keys(trusted_key or ()),
        allow_host_code=allow_host_code,
    )
