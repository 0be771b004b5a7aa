"""``trtforge inspect``: what the manifest says, and whether the engine file still matches it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from trtforge.console import Reporter, Styled, Table
from trtforge.fsutil import sha256_file
from trtforge.manifest import ArtifactPaths, read_manifest


def engine_facts(path: Path) -> dict[str, Any]:
    """The manifest, and the engine's size and sha256 as measured now (``inspect`` shows both)."""
    paths = ArtifactPaths.of(path)
    engine = paths.existing_engine("pass an .engine that trtforge build wrote")
    manifest = read_manifest(paths.manifest)
    size = engine.stat().st_size
    sha256 = sha256_file(engine)
    return {
        "engine": {
            "path": str(engine),
            "size": size,
            "sha256": sha256,
            "matches_manifest": sha256 == manifest.artifact.sha256 and size == manifest.artifact.size,
        },
        "manifest": manifest.to_dict(),
    }


def render_facts(facts: dict[str, Any], reporter: Reporter) -> None:
    manifest = facts["manifest"]
    engine = facts["engine"]
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
        (
            "sha256",
            engine["sha256"]
            + ("  (verified: matches the manifest)" if engine["matches_manifest"] else "  (DIFFERS from the manifest)"),
        ),
        (
            "built",
            f"{manifest['build']['created_utc']} in {manifest['build']['seconds']} s "
            f"by trtforge {manifest['build']['trtforge_version']}",
        ),
        ("signed", "yes" if manifest.get("signature") else "no"),
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
            else ", ".join(f"{k} {v}" for k, v in accuracy.items() if not isinstance(v, (dict, list))),
        )
    )
    for key, value in rows:
        table.add_row(Styled(key, "bold"), str(value))
    reporter.render(table)
