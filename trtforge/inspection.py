"""``trtforge inspect``: what the manifest says, whether the engine file still matches it, and
whether a trusted key vouches for the manifest (only then is what it says more than a claim)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trtforge.accuracy.junit import summary_verdict
from trtforge.compat import (
    ArtifactFacts,
    Problem,
    Rule,
    content_problem,
    signature_problem,
    signature_text,
)
from trtforge.console import Reporter, Styled, Table
from trtforge.digests import sha256_file
from trtforge.manifest import ArtifactPaths, Manifest, read_manifest

if TYPE_CHECKING:
    from trtforge.keys import TrustedKey


@dataclass(frozen=True)
class EngineFacts:
    """What ``inspect`` found: the manifest, the engine file as measured now (its size and sha256
    always, unlike the loader's measure, which stops at a wrong size: here they are shown), the
    signature as the trusted keys judge it, and the problems (``inspect`` exits 5 on any)."""

    engine: Path
    manifest: Manifest
    measured: ArtifactFacts
    problems: tuple[Problem, ...]

    @property
    def matches_manifest(self) -> bool:
        artifact = self.manifest.artifact
        return self.measured.engine_sha256 == artifact.sha256 and self.measured.engine_size == artifact.size

    def to_dict(self) -> dict[str, Any]:
        """``inspect --json``."""
        return {
            "engine": {
                "path": str(self.engine),
                "size": self.measured.engine_size,
                "sha256": self.measured.engine_sha256,
                "matches_manifest": self.matches_manifest,
            },
            "signature": {"status": self.measured.signature.value, "key_id": self.measured.signature_key_id},
            "problems": [problem.to_dict() for problem in self.problems],
            "manifest": self.manifest.to_dict(),
        }


def engine_facts(path: Path, trusted_keys: Sequence[TrustedKey] = ()) -> EngineFacts:
    """The manifest, the engine's size and sha256 as measured now, the signature as ``trusted_keys``
    judge it (``check``'s rules 5 and 6), and the problems found: an engine that is not the one its
    manifest describes, or a signature that does not verify."""
    from trtforge.signing import verify_manifest

    paths = ArtifactPaths.of(path)
    engine = paths.existing_engine("copy or download the .engine together with its .manifest.json")
    manifest = read_manifest(paths.manifest)
    signature = verify_manifest(manifest, trusted_keys)
    measured = ArtifactFacts(
        engine_file=engine.name,
        engine_size=engine.stat().st_size,
        engine_sha256=sha256_file(engine, disk_cache=False),
        signature=signature.status,
        signature_key_id=signature.key_id,
    )
    found = (
        Problem(rule, message)
        for rule, message in (
            (Rule.SHA256, content_problem(manifest, measured)),
            (Rule.SIGNATURE, signature_problem(measured, required=False)),
        )
        if message
    )
    return EngineFacts(engine, manifest, measured, tuple(found))


def render_facts(facts: EngineFacts, reporter: Reporter) -> None:
    manifest = facts.manifest.to_dict()
    table = Table((str(facts.engine),), ("fact", "value"), header=False)
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
        ("size", f"{facts.measured.engine_size:,} bytes"),
        (
            "sha256",
            f"{facts.measured.engine_sha256}  ({'matches' if facts.matches_manifest else 'DIFFERS from'} the manifest)",
        ),
        (
            "built",
            f"{manifest['build']['created_utc']} in {manifest['build']['seconds']} s "
            f"by trtforge {manifest['build']['trtforge_version']}",
        ),
        ("signature", signature_text(facts.measured)),
    ]
    for tensor in manifest["io"]:
        rows.append((tensor["mode"], f"{tensor['name']}  {tensor['dtype']}  {tensor['shape']}"))
    for index, profile in enumerate(manifest["profiles"]):
        for name, shapes in profile.items():
            rows.append((f"profile {index}", f"{name}  min {shapes['min']}  opt {shapes['opt']}  max {shapes['max']}"))
    if manifest["calibration"]:
        cal = manifest["calibration"]
        rows.append(("calibration", ", ".join(f"{k} {v}" for k, v in cal.items() if not isinstance(v, dict))))
    rows += accuracy_rows(manifest["accuracy"])
    for key, value in rows:
        table.add_row(Styled(key, "bold"), str(value))
    reporter.render(table)
    for problem in facts.problems:
        reporter.error(f"[{problem.rule.value}] {problem.message}")


#: the gate's data source (``AccuracyReport.data.source``) as ``inspect`` says it
_DATA_WORDS = {"files": "from the spec's data files", "random": "of seeded random inputs"}


def accuracy_rows(accuracy: Mapping[str, Any] | None) -> list[tuple[str, str]]:
    """The manifest's ``accuracy`` in words, its candidate named on a row of its own: a simulated
    candidate's verdict is the emulation's (no engine ran), an identical one's measured nothing,
    and a reader of ``inspect`` sees which before the metrics (as every other report says it)."""
    if accuracy is None:
        return [("accuracy", "not checked")]
    if accuracy.get("skipped"):
        return [("accuracy", f"skipped: {accuracy.get('reason', 'no reason recorded')}")]
    rows = [
        (
            "accuracy",
            f"{summary_verdict(accuracy)} on {accuracy.get('samples', '?')} samples "
            f"{_DATA_WORDS.get(str(accuracy.get('data')), 'of unrecorded data')}, "
            f"checked {accuracy.get('checked_utc', '?')}",
        )
    ]
    candidate = accuracy.get("candidate")
    if accuracy.get("candidate_reason"):
        rows.append(("candidate", f"{candidate}: {accuracy['candidate_reason']}"))
    elif accuracy.get("emulation"):
        rows.append(("candidate", f"{candidate}, no engine ran; emulated: {accuracy['emulation']}"))
    elif candidate is not None:
        rows.append(("candidate", str(candidate)))
    named = "candidate" if candidate == "engine" else f"candidate ({candidate})"
    for output, task in (accuracy.get("task_accuracy") or {}).items():
        rows.append(
            (
                "task accuracy",
                f"{output}: reference {task['reference']:.2%}, {named} {task['candidate']:.2%} "
                f"on {task['samples']} labelled samples",
            )
        )
    if accuracy.get("report"):
        rows.append(("report", str(accuracy["report"])))
    return rows
