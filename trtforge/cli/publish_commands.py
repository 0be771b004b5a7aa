"""``publish``, ``pull``: engines into registries, and the one that fits out of them."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from trtforge.cli.common import (
    AllowHostCodeOption,
    CcOption,
    Failure,
    FlavorOption,
    InsecureOption,
    JsonOption,
    PlatformOption,
    RequireSignatureOption,
    TrtVersionOption,
    TrustedKeyOption,
    emit_json,
    exits_cleanly,
    load_policy,
    path_option,
    reporter,
    target_from_flags,
)
from trtforge.errors import InvalidInputError

app = typer.Typer()


def _publish_failure(failure: Failure) -> dict[str, Any]:
    from trtforge.publish.base import redacted

    return {"status": "failed", "to": redacted(failure.arguments["to"]), "engine": str(failure.arguments["engine"])}


@app.command("publish")
@exits_cleanly(error_document=_publish_failure)
def publish_command(
    engine: Annotated[
        Path,
        typer.Argument(metavar="ENGINE", help="An .engine file (its .manifest.json sits beside it), or the manifest."),
    ],
    to: Annotated[
        str, typer.Option("--to", help="oci://HOST[:PORT]/REPO, dir://PATH or triton://PATH.", show_default=False)
    ],
    insecure: InsecureOption = False,
    force: Annotated[
        bool, typer.Option("--force", help="Replace a different engine already published under the same tag.")
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Publish ENGINE and its manifest; the same engine again is a no-op, another one needs --force (else exit 6)."""
    from trtforge.publish import load_local_artifact

    registry = _open_registry(to, insecure)
    artifact = load_local_artifact(engine)
    outcome = registry.publish(artifact, force=force)
    console = reporter()
    for note in outcome.notes:
        console.info(note)
    for warning in outcome.warnings:
        console.warn(warning)
    if as_json:
        emit_json(
            {
                "status": outcome.status,
                "to": registry.uri,
                "reference": outcome.reference,
                "name": artifact.manifest.name,
                "precision": artifact.manifest.precision,
                "tag": artifact.manifest.tag,
                "sha256": artifact.manifest.artifact.sha256,
                "detail": outcome.detail,
                "warnings": list(outcome.warnings),
                **outcome.extra,
            }
        )
        return
    if outcome.status == "unchanged":
        console.info(f"unchanged: {outcome.detail}")
        return
    console.success(f"{outcome.status} {outcome.reference}" + (f" ({outcome.detail})" if outcome.detail else ""))


def _pull_failure(failure: Failure) -> dict[str, Any]:
    """A refusal lists what the registry holds and why each candidate did not fit."""
    from trtforge.publish import NoCompatibleArtifactError
    from trtforge.publish.base import redacted

    exc, source = failure.error, redacted(failure.arguments["uri"])
    if not isinstance(exc, NoCompatibleArtifactError):
        return {"status": "failed", "from": source}
    return {
        "status": "incompatible",
        "from": source,
        "environment": exc.environment,
        "available": list(exc.available),
        "rejected": _rejected(exc.rejections),
    }


@app.command()
@exits_cleanly(error_document=_pull_failure)
def pull(
    uri: Annotated[str, typer.Argument(metavar="URI", help="oci://HOST[:PORT]/REPO, dir://PATH or triton://PATH.")],
    name: Annotated[str, typer.Option("--name", help="Artifact name (the spec's name).", show_default=False)],
    precision: Annotated[
        str | None, typer.Option(help="fp32 | fp16 | int8 (default: any; needed when several fit).")
    ] = None,
    for_this_machine: Annotated[
        bool,
        typer.Option(
            "--for-this-machine", help="Pick for this host's runtimes and GPU (the default without target flags)."
        ),
    ] = False,
    flavor: FlavorOption = None,
    trt_version: TrtVersionOption = None,
    cc: CcOption = None,
    platform: PlatformOption = None,
    require_signature: RequireSignatureOption = False,
    trusted_key: TrustedKeyOption = None,
    allow_host_code: AllowHostCodeOption = False,
    out: Annotated[Path, path_option("--out", "-o", help_text="Where the engine and its manifest go.")] = Path("."),
    insecure: InsecureOption = False,
    as_json: JsonOption = False,
) -> None:
    """Download the best artifact for this machine (or the target the flags describe); exit 5 if none fits."""
    request = _pull_request(
        name,
        precision,
        for_this_machine,
        flavor,
        trt_version,
        cc,
        platform,
        require_signature,
        trusted_key,
        allow_host_code,
    )
    outcome = _pull(uri, request, out, insecure)
    rejected = _rejected(outcome.rejected)
    for note in outcome.notes:
        reporter().info(note)
    for warning in outcome.warnings:
        reporter().warn(warning)
    if as_json:
        emit_json(
            {
                "status": outcome.status,
                "from": uri,
                "source": outcome.source,
                "engine": str(outcome.engine),
                "manifest": str(outcome.manifest_path),
                "tag": outcome.manifest.tag,
                "sha256": outcome.manifest.artifact.sha256,
                "attestation": str(outcome.attestation) if outcome.attestation else None,
                "report": str(outcome.report) if outcome.report else None,
                "environment": outcome.environment.to_dict(),
                "rejected": rejected,
                "warnings": list(outcome.warnings),
            }
        )
        return
    console = reporter()
    verb = "already here" if outcome.status == "unchanged" else "pulled"
    console.success(f"{verb}: {outcome.engine} (from {outcome.source}, for {outcome.environment.describe()})")
    if rejected:
        console.info(f"{len(rejected)} other candidate(s) did not fit: " + ", ".join(r["reference"] for r in rejected))


def _pull_request(
    name: str,
    precision: str | None,
    for_this_machine: bool,
    flavor: str | None,
    trt_version: str | None,
    cc: str | None,
    platform: str | None,
    require_signature: bool,
    trusted_key: list[Path] | None,
    allow_host_code: bool,
) -> Any:
    """Validate the flags (exit 2 with the flag named) and describe what to pull for which target."""
    from trtforge.manifest import check_precision
    from trtforge.publish.pulling import PullRequest, target_environments

    check_precision(precision)
    flags = {"--flavor": flavor, "--trt-version": trt_version, "--cc": cc, "--platform": platform}
    given = [flag for flag, value in flags.items() if value is not None]
    if for_this_machine and given:
        raise InvalidInputError(f"--for-this-machine and {', '.join(given)} exclude each other: pick one")
    target = target_from_flags(flavor, trt_version, cc, platform)
    return PullRequest(
        name=name,
        precision=precision,
        environments=target_environments(target),
        policy=load_policy(require_signature, trusted_key, allow_host_code),
    )


def _pull(uri: str, request: Any, out: Path, insecure: bool) -> Any:
    from trtforge.publish.pulling import pull_artifact

    return pull_artifact(_open_registry(uri, insecure), request, out)


def _open_registry(uri: str, insecure: bool) -> Any:
    """The registry at ``uri`` (``--insecure`` with a folder is exit 2: ``open_registry``'s rule)."""
    from trtforge.publish import open_registry, parse_location

    return open_registry(parse_location(uri), insecure=insecure)


def _rejected(rejections: Any) -> list[dict[str, Any]]:
    return [{"reference": ref, "problems": [p.to_dict() for p in found]} for ref, found in rejections]
