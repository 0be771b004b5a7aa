"""``trtforge inspect``: what the manifest says, whether the engine file still matches it, and
whether a trusted key vouches for the manifest (only then is what it says more than a claim)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trtforge.compat import (
    ArtifactFacts,
    Problem,
    Rule,
    SignatureStatus,
    content_problem,
    signature_problem,
    signature_text,
)
from trtforge.console import Reporter, Styled, Table
from trtforge.fsutil import sha256_file
from trtforge.manifest import REPORT_SHA256, ArtifactPaths, read_manifest

if TYPE_CHECKING:
    from trtforge.keys import TrustedKey


def engine_facts(path: Path, trusted_keys: Sequence[TrustedKey] = ()) -> dict[str, Any]:
    """The manifest, the engine's size and sha256 as measured now, the signature as ``trusted_keys``
    judge it (``check``'s rules 5 and 6), and the problems found: an engine that is not the one its
    manifest describes, or a signature that does not verify (``inspect`` exits 5 on either)."""
    from trtforge.signing import verify_manifest

    paths = ArtifactPaths.of(path)
    engine = paths.existing_engine("pass an .engine that trtforge build wrote")
    manifest = read_manifest(paths.manifest)
    size = engine.stat().st_size
    sha256 = sha256_file(engine)
    signature = verify_manifest(manifest, trusted_keys)
    facts = ArtifactFacts(
        engine_file=engine.name,
        engine_size=size,
        engine_sha256=sha256,
        signature=signature.status,
        signature_key_id=signature.key_id,
    )
    found = [
        Problem(rule, message)
        for rule, message in (
            (Rule.SHA256, content_problem(manifest, facts)),
            (Rule.SIGNATURE, signature_problem(facts, required=False)),
        )
        if message
    ]
    return {
        "engine": {
            "path": str(engine),
            "size": size,
            "sha256": sha256,
            "matches_manifest": sha256 == manifest.artifact.sha256 and size == manifest.artifact.size,
        },
        "signature": {"status": signature.status.value, "key_id": signature.key_id},
        "problems": [problem.to_dict() for problem in found],
        "manifest": manifest.to_dict(),
    }


def render_facts(facts: dict[str, Any], reporter: Reporter) -> None:
    manifest = facts["manifest"]
    engine = facts["engine"]
    signature = facts["signature"]
    signed = ArtifactFacts(signature=SignatureStatus(signature["status"]), signature_key_id=signature["key_id"])
    table = Table((engine["path"],), ("fact", "value"), header=False)
    gpu = manifest["gpu"]
    gpus = ", ".join(gpu["compute_capabilities"]) or "-"
    if gpu["and_later_from"]:
        gpus = f"{gpu['and_later_from']} and later"
    rows = [
        ("name", manifest["name"]),
        ("precision", manifest["precision"]),
        ("tag", manifest["tag"]),
        (
            "tensorrt",
            f"{manifest['tensorrt']['flavor']} {manifest['tensorrt']['version']}"
            + (" (version-compatible)" if manifest["tensorrt"]["version_compatible"] else ""),
        ),
        ("gpus", f"{gpus} (hardware_compatibility {gpu['hardware_compatibility']})"),
        ("platform", f"{manifest['platform']['os']} {manifest['platform']['machine']}"),
        ("size", f"{engine['size']:,} bytes"),
        ("sha256", f"{engine['sha256']}  ({'matches' if engine['matches_manifest'] else 'DIFFERS from'} the manifest)"),
        (
            "built",
            f"{manifest['build']['created_utc']} in {manifest['build']['seconds']} s "
            f"by trtforge {manifest['build']['trtforge_version']}",
        ),
        ("signature", signature_text(signed)),
    ]
    for tensor in manifest["io"]:
        rows.append((tensor["mode"], f"{tensor['name']}  {tensor['dtype']}  {tensor['shape']}"))
    for index, profile in enumerate(manifest["profiles"]):
        for name, shapes in profile.items():
            rows.append((f"profile {index}", f"{name}  min {shapes['min']}  opt {shapes['opt']}  max {shapes['max']}"))
    if manifest["calibration"]:
        cal = manifest["calibration"]
        rows.append(("calibration", ", ".join(f"{k} {v}" for k, v in cal.items() if not isinstance(v, dict))))
    accuracy = manifest["accuracy"]
    rows.append(
        (
            "accuracy",
            "not checked"
            if accuracy is None
            else ", ".join(
                f"{k} {v}" for k, v in accuracy.items() if not isinstance(v, (dict, list)) and k != REPORT_SHA256
            ),
        )
    )
    for key, value in rows:
        table.add_row(Styled(key, "bold"), str(value))
    reporter.render(table)
    for problem in facts["problems"]:
        reporter.error(f"[{problem['rule']}] {problem['message']}")
