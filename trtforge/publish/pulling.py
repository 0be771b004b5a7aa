"""Pull: list a registry, pick with the loader's own rules, download, verify, then rename into place.

Selection is ``trtforge.selection.select_engine`` on the manifests alone (platform, runtime, GPU,
signature, host-code policy), exactly what the runtime loader would accept; the chosen engine's bytes are then
checked with ``compat.problems`` (size and sha256) before anything appears under its final name.
A damaged download is refused, never replaced by the next-best candidate (like pip on a hash
mismatch): a registry serving wrong bytes is a problem to see, not to route around.

``--require-signature`` from a registry that keeps attestations (OCI referrers): every referrer
that claims to be the engine's trtforge attestation is verified with ``trtforge.provenance``
against the downloaded engine and manifest (a trusted key's signature, subjects = these bytes)
before anything is committed; one that does not verify refuses the pull (exit 5). The first one
that verifies is written beside the engine (``{stem}.intoto.jsonl``). Without one, the manifest's
embedded signature (already required by the policy) stands, and a note says so. Such a pull
always downloads (an engine already here is no proof that its referrers still verify).

From a registry that keeps accuracy reports (``oci://``, ``dir://``), the chosen artifact's report
comes along in the same commit when its manifest describes it (``base.report_problem``, the rule
publish applies); one that is not, or that the registry serves damaged, is skipped with a warning.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Literal

from trtforge.artifact import ArtifactWriter, sweep
from trtforge.compat import DEFAULT_POLICY, Environment, LoadPolicy, Problem, policy_problems
from trtforge.digests import sha256_bytes, sha256_file
from trtforge.environment import Target, file_problem, measure_engine
from trtforge.errors import IncompatibleEngineError, InvalidInputError, TrtforgeError
from trtforge.fsutil import check_inside, ensure_writable_dir
from trtforge.manifest import Manifest, attestation_path, manifest_path_for, report_path
from trtforge.provenance import verify_provenance
from trtforge.publish.base import (
    AttestationSource,
    Candidate,
    NoCompatibleArtifactError,
    Registry,
    ReportSource,
    check_name,
    pulled_report,
)
from trtforge.selection import select_engine, signature_facts, skipped_note
from trtforge.tags import FLAVORS


@dataclass(frozen=True)
class PullRequest:
    name: str
    precision: str | None
    environments: tuple[Environment, ...]
    policy: LoadPolicy = DEFAULT_POLICY


@dataclass(frozen=True)
class PullOutcome:
    status: Literal["pulled", "unchanged"]
    source: str
    engine: Path
    manifest_path: Path
    manifest: Manifest
    environment: Environment
    rejected: tuple[tuple[str, tuple[Problem, ...]], ...]
    notes: tuple[str, ...] = ()  # info lines, e.g. stale temporaries of dead runs removed
    attestation: Path | None = None  # the verified attestation written beside the engine
    report: Path | None = None  # the accuracy report beside the engine, when the registry gave one
    warnings: tuple[str, ...] = ()  # e.g. a report skipped, and why


def target_environments(target: Target | None = None) -> tuple[Environment, ...]:
    """This host with the target's values put over it: one environment per runtime flavor unless
    ``--flavor`` names one. Each candidate is then judged against its own flavor's runtime, as the
    loader judges an engine; enterprise TensorRT first (the order ``backend: auto`` prefers)."""
    target = target or Target()
    if target.flavor is not None:
        return (target.environment(),)
    if target.version is not None:  # paired with each flavor, it chose an engine of a runtime not meant
        raise InvalidInputError(
            f"--trt-version {target.version} without --flavor: a version is one runtime's, and pull chooses "
            f"among both; pass --flavor {' or --flavor '.join(FLAVORS)} with it"
        )
    return tuple(target.environment(flavor) for flavor in FLAVORS)


def describe_environments(environments: Sequence[Environment]) -> str:
    with_runtime = [env for env in environments if env.flavor and env.version] or list(environments[:1])
    return " or ".join(env.describe() for env in with_runtime)


def choose(
    candidates: Sequence[Candidate], environments: Sequence[Environment], policy: LoadPolicy, what: str = ""
) -> tuple[Candidate | None, Environment, list[tuple[Candidate, list[Problem]]]]:
    """The first environment (in preference order) that accepts a candidate decides, with ``select_engine``
    (``what``: the model and registry its messages name); then every candidate that does not fit,
    with why (``_refusals``)."""
    pairs = [(candidate.manifest, candidate) for candidate in candidates]
    for env in environments:
        chosen, _ = select_engine(pairs, env, policy, what=what)
        if chosen is not None:
            return chosen[1], env, _refusals(candidates, environments, policy)
    return None, environments[0], _refusals(candidates, environments, policy)


def _refusals(
    candidates: Sequence[Candidate], environments: Sequence[Environment], policy: LoadPolicy
) -> list[tuple[Candidate, list[Problem]]]:
    """Each candidate that cannot load, with the problems of the environment of its own flavor (else the
    first one): a TensorRT engine is refused for the TensorRT the target has, never for not being
    TensorRT-RTX, and one that fits is no refusal where the other runtime's engine was chosen."""
    found: list[tuple[Candidate, list[Problem]]] = []
    for candidate in candidates:
        flavor = candidate.manifest.tensorrt.flavor
        env = next((env for env in environments if env.flavor == flavor), environments[0])
        _, rejected = select_engine([(candidate.manifest, candidate)], env, policy)
        found.extend((candidate, rejection.problems) for rejection in rejected)
    return found


def pull_artifact(registry: Registry, request: PullRequest, out_dir: Path) -> PullOutcome:
    """Fetch the best compatible artifact into ``out_dir``; raise NoCompatibleArtifactError when none fits."""
    check_name(request.name, "--name")
    listing = registry.candidates(request.name, request.precision)
    wanted = f"'{request.name}'" + (f" ({request.precision})" if request.precision else "")
    if not listing.candidates:
        held = ", ".join(listing.others) if listing.others else "nothing"
        raise NoCompatibleArtifactError(
            f"no artifact named {wanted} in {registry.uri}; it holds: {held}" + skipped_note(listing.skipped),
            describe_environments(request.environments),
            available=listing.others,
        )
    chosen, env, rejected = choose(
        listing.candidates, request.environments, request.policy, what=f"{wanted} in {registry.uri}"
    )
    rejections = tuple((c.reference, tuple(found)) for c, found in rejected)
    if chosen is None:
        each = " | ".join(f"{c.manifest.stem}: {'; '.join(p.message for p in found)}" for c, found in rejected)
        raise NoCompatibleArtifactError(  # one line, as serve's refusal of several artifacts
            f"{_count(listing.candidates, 'artifact')} named {wanted} in {registry.uri}, none fits "
            f"{describe_environments(request.environments)}: {each}",
            describe_environments(request.environments),
            rejections=rejections,
            available=tuple(c.manifest.stem for c in listing.candidates) + listing.others,
        )
    engine_final = out_dir / chosen.manifest.artifact.file
    manifest_final = manifest_path_for(engine_final)
    check_inside(out_dir, engine_final, f"{chosen.reference}: artifact.file")
    report_final = report_path(out_dir, chosen.manifest.stem)
    report, warning = pulled_report(registry, chosen) if isinstance(registry, ReportSource) else (None, None)
    outcome = partial(
        PullOutcome,
        source=chosen.reference,
        engine=engine_final,
        manifest_path=manifest_final,
        manifest=chosen.manifest,
        environment=env,
        rejected=rejections,
        report=report_final if report is not None else None,
        warnings=(warning,) if warning else (),
    )
    # the one place the rule lives: --require-signature on a registry that keeps attestations
    referrers = registry if request.policy.require_signature and isinstance(registry, AttestationSource) else None
    if referrers is None and _already_here(chosen, engine_final, manifest_final, report, report_final):
        return outcome("unchanged")
    created = not out_dir.exists()
    ensure_writable_dir(out_dir)
    swept = sweep(out_dir)
    try:
        with ArtifactWriter(out_dir, chosen.manifest.name, chosen.manifest.precision) as writer:
            writer.replace_whole(chosen.manifest.stem)  # a report or attestation of another build would stay
            staged = writer.stage(engine_final.name)
            _download_verified(registry, chosen, env, request.policy, staged)
            writer.write(manifest_final.name, chosen.manifest_bytes)
            attested = (
                Attested()
                if referrers is None
                else _attestation(referrers, chosen, request.policy, staged, engine_final.name)
            )
            if attested.envelope is not None:
                writer.write(attestation_path(engine_final).name, attested.envelope)
            if report is not None:
                writer.write(report_final.name, report)
            swept += writer.commit()  # the artifact's whole set: the old one or the new one
    except BaseException:
        if created:
            _remove_if_empty(out_dir)
        raise
    notes = ((swept.note,) if swept.note else ()) + attested.notes
    attestation = attestation_path(engine_final) if attested.envelope is not None else None
    return outcome("pulled", notes=notes, attestation=attestation)


def _download_verified(
    registry: Registry, chosen: Candidate, env: Environment, policy: LoadPolicy, staged: Path
) -> None:
    """Download to a hidden staged file, committed to its final name only if compat finds nothing."""
    registry.fetch(chosen, staged)
    signature = signature_facts(chosen.manifest, policy)
    measured, _ = measure_engine(staged, chosen.manifest)
    facts = dataclasses.replace(
        measured,
        engine_file=chosen.manifest.artifact.file,  # the staged file's name is a temporary's
        signature=signature.signature,
        signature_key_id=signature.signature_key_id,
    )
    found = policy_problems(chosen.manifest, env, facts, policy)
    if found:
        raise IncompatibleEngineError(
            f"{chosen.reference}: downloaded engine refused, nothing written: " + "; ".join(p.message for p in found),
            reasons=[p.message for p in found],
        )


@dataclass(frozen=True)
class Attested:
    """What the referrers gave: the verified envelope to write beside the engine (None: none), and notes."""

    envelope: bytes | None = None
    notes: tuple[str, ...] = ()


def _attestation(
    registry: AttestationSource, chosen: Candidate, policy: LoadPolicy, staged: Path, engine_name: str
) -> Attested:
    """Under --require-signature, every referrer that claims to be this engine's attestation must
    verify (exit 5 otherwise); the first is kept."""
    found = registry.attestations(chosen)
    kept: bytes | None = None
    notes = list(found.notes)
    for where, envelope in found.envelopes:
        key_id = _verify_envelope(where, envelope, chosen, policy, staged, engine_name)
        notes.append(f"{where}: attestation verified (signed by trusted key {key_id})")
        kept = kept if kept is not None else envelope
    if kept is None:
        notes.append(
            f"{chosen.reference}: no trtforge attestation among its referrers; its manifest's embedded "
            "signature was verified instead"
        )
    return Attested(kept, tuple(notes))


def _verify_envelope(
    where: str, envelope: bytes, chosen: Candidate, policy: LoadPolicy, staged: Path, engine_name: str
) -> str:
    """``provenance.verify_provenance`` on the downloaded files, laid out under their own names in a
    scratch folder beside them (a hard link for the engine: no copy of a multi-GB file)."""
    with tempfile.TemporaryDirectory(prefix=".trtforge-verify-", dir=staged.parent) as scratch:
        engine = Path(scratch) / engine_name
        try:
            os.link(staged, engine)
        except OSError:
            shutil.copyfile(staged, engine)
        manifest_path_for(engine).write_bytes(chosen.manifest_bytes)
        attestation_path(engine).write_bytes(envelope)
        try:
            report = verify_provenance(engine, policy.trusted_keys)
        except TrtforgeError as exc:
            reason = str(exc).split(": ", 1)[-1] if str(exc).startswith(scratch) else str(exc)
            raise IncompatibleEngineError(
                f"{where}: attestation refused, nothing written: {reason}", reasons=[reason]
            ) from exc
    return report.key_id


def _remove_if_empty(folder: Path) -> None:
    with contextlib.suppress(OSError):
        folder.rmdir()


def _already_here(
    candidate: Candidate, engine: Path, manifest_path: Path, report: bytes | None, report_file: Path
) -> bool:
    """Same manifest bytes, the registry's report (if it gave one) already beside it, and an engine
    that hashes to its sha256: pulling again changes nothing."""
    if not (engine.is_file() and manifest_path.is_file()):
        return False
    if sha256_bytes(manifest_path.read_bytes()) != sha256_bytes(candidate.manifest_bytes):
        return False
    report_here = report is None or (
        report_file.is_file() and sha256_file(report_file, disk_cache=False) == sha256_bytes(report)
    )
    return report_here and file_problem(candidate.manifest, engine) is None


def _count(items: Sequence[object], noun: str) -> str:
    return f"{len(items)} {noun}{'s' * (len(items) != 1)}"
