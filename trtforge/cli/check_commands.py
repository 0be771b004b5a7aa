"""``check``, ``keygen``, ``sign``: would this engine load there, and who vouches for it."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from trtforge.cli.common import (
    AllowHostCodeOption,
    CcOption,
    Failure,
    FlavorOption,
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
    said,
    target_from_flags,
    triton_option,
)
from trtforge.errors import IncompatibleEngineError, InvalidInputError

app = typer.Typer()

TritonOption = Annotated[str | None, triton_option("Check against a Triton container release (e.g. 24.08).")]
EngineArgument = Annotated[
    Path,
    typer.Argument(
        metavar="ENGINE",
        help="An .engine file (its .manifest.json sits beside it), or the manifest.",
        show_default=False,
    ),
]


def _check_failure(failure: Failure) -> dict[str, Any] | None:
    """An engine refused before it could be judged as a whole (exit 5: with ``--triton``, which
    reads the manifest first, a missing one, or a release that cannot load it) is not compatible,
    each reason under its rule; any other failure (a mistyped path or flag, exit 2) gets the plain
    error document."""
    from trtforge.compat import Problem, Rule

    error = failure.error
    if not isinstance(error, IncompatibleEngineError):
        return None
    # read_manifest's refusal names no rule: it is the only exit 5 besides a Refused's
    found = getattr(error, "problems", None) or [Problem(Rule.MANIFEST, reason) for reason in error.reasons]
    return {
        "engine": str(failure.arguments["engine"]),
        "compatible": False,
        "problems": [problem.to_dict() for problem in found],
    }


@app.command()
@exits_cleanly(error_document=_check_failure)
def check(
    engine: EngineArgument,
    flavor: FlavorOption = None,
    trt_version: TrtVersionOption = None,
    cc: CcOption = None,
    platform: PlatformOption = None,
    require_signature: RequireSignatureOption = False,
    trusted_key: TrustedKeyOption = None,
    allow_host_code: AllowHostCodeOption = False,
    triton: TritonOption = None,
    as_json: JsonOption = False,
) -> None:
    """Would ENGINE load here (or on the target the flags describe)? Exit 0 if yes, 5 with every reason if not."""
    from trtforge.runtime.loader import check_compatibility

    # every flag is checked (exit 2) before the engine's path, and that before its manifest is read
    release = None
    if triton is not None:
        from trtforge.triton_releases import triton_flag, triton_target

        release = triton_flag(triton, given=(flavor, trt_version))
    target = target_from_flags(flavor, trt_version, cc, platform)
    policy = load_policy(require_signature, trusted_key, allow_host_code)
    if release is not None:
        target = triton_target(engine, release, target)
    result = check_compatibility(engine, policy, target=target)
    if as_json:
        emit_json(result.to_dict())
    else:
        _render(result)
    if not result.compatible:
        raise typer.Exit(result.exit_code)


def _render(result: Any) -> None:
    from trtforge.compat import signature_text

    console = reporter()
    where = result.engine.name
    if result.compatible:
        console.success(f"compatible: {where} loads on {result.environment.describe()}")
    else:
        count = len(result.problems)
        console.error(f"refused: {where} on {result.environment.describe()}: {count} problem{'s' * (count > 1)}")
        for problem in result.problems:
            console.info(f"  - [{problem.rule.value}] {problem.message}")
    console.info(f"signature: {signature_text(result.facts)}")
    for note in result.notes:
        console.info(note)


@app.command()
@exits_cleanly
def keygen(
    out: Annotated[  # text: Path would drop the slash of ``keys/``, which names a folder
        str, typer.Argument(metavar="OUT", help="Private key file to create (OUT.pub gets the public key).")
    ],
    key_type: Annotated[
        str,
        typer.Option("--type", metavar="ed25519|ecdsa-p256", help="Key type (ecdsa-p256: what cosign uses)."),
    ] = "ed25519",
    as_json: JsonOption = False,
) -> None:
    """Create a key pair (Ed25519 or ECDSA P-256): OUT (private, mode 0600) and OUT.pub; never overwrites."""
    from trtforge.signing import generate_keypair

    pair = generate_keypair(out, key_type)
    if as_json:
        emit_json(
            {
                "private_key": str(pair.private_path),
                "public_key": str(pair.public_path),
                "key_id": pair.key_id,
                "type": key_type,
            }
        )
        return
    reporter().success(
        f"{key_type} key {pair.key_id}: private {pair.private_path} (keep it secret), public {pair.public_path}"
    )


@app.command()
@exits_cleanly
def sign(
    engine: EngineArgument,
    key: Annotated[
        Path | None,
        path_option("--key", help_text="Private key (PEM) from trtforge keygen (default: $TRTFORGE_SIGNING_KEY)."),
    ] = None,
    attest: Annotated[
        bool,
        typer.Option("--attest", help="Also write {stem}.intoto.jsonl: signed SLSA provenance (DSSE, in-toto)."),
    ] = False,
    spec: Annotated[
        Path | None,
        typer.Option("--spec", help="With --attest: the spec that built ENGINE, to list every input file it read."),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Sign ENGINE's manifest (over its canonical JSON, which pins the engine's sha256); --attest adds provenance."""
    from trtforge.provenance import sign_and_attest, stale_attestation
    from trtforge.signing import load_signing_key, sign_artifact
    from trtforge.spec import load_spec

    if spec is not None and not attest:
        raise InvalidInputError("--spec lists the inputs of an attestation: pass --attest too")
    built_by = load_spec(spec) if spec is not None else None
    signing_key = said(load_signing_key(key))
    if attest:
        outcome, attestation = sign_and_attest(engine, signing_key, built_by)
    else:
        outcome, attestation = sign_artifact(engine, signing_key), None
    replaced = outcome.replaced_key_id
    if as_json:
        emit_json(
            {
                "manifest": str(outcome.manifest_path),
                "key_id": signing_key.key_id,
                "replaced_key_id": replaced,
                "signature": outcome.manifest.signature,
                "attestation": str(attestation.path) if attestation else None,
            }
        )
        return
    note = f" (replaced the signature by key {replaced})" if replaced and replaced != signing_key.key_id else ""
    console = reporter()
    console.success(f"signed {outcome.manifest_path} with key {signing_key.key_id}{note}")
    stale = None if attest else stale_attestation(outcome.manifest_path, outcome.manifest_path.read_bytes())
    if stale is not None:
        console.warn(
            f"{stale} covers the manifest as it was before this signature, so it no longer verifies and is not "
            "published: re-create it with trtforge sign ENGINE --attest (--spec SPEC to list the build's inputs)"
        )
    if attestation is not None:
        roles = ", ".join(sorted({item.role for item in attestation.inputs}))
        console.success(f"provenance: {attestation.path} (inputs: {roles})")
