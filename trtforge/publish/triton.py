"""``triton://PATH``: a Triton model repository, ``PATH/{name}/{version}/model.{tag}.plan``.

Each plan sits beside its trtforge manifest (``model.{tag}.manifest.json``; Triton ignores it,
``pull`` reads it: what it writes, ``{stem}.engine`` beside its manifest, is what ``check``
takes). Engines of one model build for different GPUs share a version
and Triton picks the plan per GPU with ``cc_model_filenames``; an engine joins the newest
version when that version holds builds of the same ONNX, precision, TensorRT version, I/O and
profiles, and otherwise starts the next free version number. ``config.pbtxt`` is regenerated
from the newest version's manifests (Triton serves the newest version by default).

A plan of the same tag in the newest version is decided there only for the same build (same
engine: no-op; another engine: refused unless ``--force``); a plan of another ONNX, precision or
TensorRT version starts the next version, so ``--force`` never puts another model's plan into
a version Triton already serves.

Writes: a new version directory is staged under a hidden name inside the model folder (Triton
ignores version folders that are not integers) and renamed into place; a plan and its manifest
added to an existing version are one commit (:mod:`trtforge.artifact`); ``config.pbtxt`` is
written last, atomically. A repository lock serializes publishers, so two CI jobs never take the
same version number; the publisher holding it removes what dead publishers left.

A repository may declare the Triton release that serves it: ``PATH/.trtforge-triton-release``
holds the release (``24.08``; Triton ignores hidden files). Publishing an engine that release's
TensorRT cannot load then warns (``trtforge.triton_releases.release_problem``): the plan is still
written, since the declaration may be the stale part.
"""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from trtforge.digests import sha256_bytes, sha256_file
from trtforge.errors import InvalidInputError, RegistryError, first_line
from trtforge.fsutil import check_inside, make_temp_dir, release_temp
from trtforge.manifest import Manifest
from trtforge.publish.base import (
    Candidate,
    Existing,
    Listing,
    LocalArtifact,
    PublishOutcome,
    TritonLocation,
    decide,
    matches,
    written_status,
)
from trtforge.publish.local import (
    clean_up,
    commit_pair,
    copy_out,
    io_error,
    place_bytes,
    read_candidate,
    repository_lock,
)
from trtforge.publish.triton_config import (
    build_config,
    check_triton_io,
    config_body,
    edited_by_hand,
    render_config,
)
from trtforge.tags import FLAVOR_RTX

CONFIG_NAME = "config.pbtxt"
#: the file that declares which Triton release serves the repository
RELEASE_FILE = ".trtforge-triton-release"
PLAN_SUFFIX = ".plan"
VERSION_NAME = re.compile(r"[0-9]+")
MANIFEST_SUFFIX = ".manifest.json"
RTX_WARNING = (
    "Triton's tensorrt_plan backend runs enterprise TensorRT plans; it will not load this TensorRT-RTX "
    "engine: build with backend: tensorrt on a GPU runner for Triton"
)


def plan_name(manifest: Manifest) -> str:
    return f"model.{manifest.tag}{PLAN_SUFFIX}"


def plan_manifest_name(manifest: Manifest) -> str:
    return f"model.{manifest.tag}{MANIFEST_SUFFIX}"


def same_build(a: Manifest, b: Manifest) -> bool:
    """Builds of one model for different GPUs: they may share a Triton version (and its config)."""
    return (
        a.name == b.name
        and a.precision == b.precision
        and (a.source.onnx_sha256, a.source.model_sha256) == (b.source.onnx_sha256, b.source.model_sha256)
        and (a.tensorrt.flavor, a.tensorrt.version) == (b.tensorrt.flavor, b.tensorrt.version)
        and a.io == b.io
        and a.profiles == b.profiles
    )


@dataclass(frozen=True, order=True)
class Version:
    """A version folder: its number, and its name as listed (``007`` holds version 7: its path is ``007``)."""

    number: int
    folder: str


def versions(model_dir: Path) -> list[Version]:
    """Triton's version folders, oldest first: names that are plain ASCII integers (``str.isdigit``
    also takes ``²`` and ``٣``, which Triton does not read as versions)."""
    if not model_dir.is_dir():
        return []
    try:
        listed = [p.name for p in model_dir.iterdir() if VERSION_NAME.fullmatch(p.name) and p.is_dir()]
    except OSError as exc:
        raise io_error("list", model_dir, exc) from exc
    return sorted(Version(int(name), name) for name in listed)


def version_plans(version_dir: Path) -> list[Candidate]:
    """The plans of a version that carry a readable trtforge manifest (others are left alone: a
    manifest that is not a regular file, as a FIFO would block the read, or cannot be read)."""
    found = []
    for manifest_path in sorted(version_dir.glob(f"model.*{MANIFEST_SUFFIX}")):
        plan = manifest_path.with_name(manifest_path.name.removesuffix(MANIFEST_SUFFIX) + PLAN_SUFFIX)
        if not (manifest_path.is_file() and plan.is_file()):
            continue
        try:
            found.append(read_candidate(manifest_path, plan))
        except (InvalidInputError, OSError):
            continue
    return found


class TritonRegistry:
    def __init__(self, location: TritonLocation) -> None:
        self.root = location.path
        self.uri = location.uri

    def publish(self, artifact: LocalArtifact, *, force: bool = False) -> PublishOutcome:
        artifact = artifact.without_report()  # a model repository is laid out for serving: no report in it
        manifest = artifact.manifest
        check_triton_io(manifest)
        warnings = [RTX_WARNING] if manifest.tensorrt.flavor == FLAVOR_RTX else []
        if self.root.exists() and not self.root.is_dir():
            raise InvalidInputError(f"{self.uri}: {self.root} is a file, not a directory; choose another path")
        warnings.extend(self._release_warnings(manifest))
        model_dir = self.root / manifest.name
        check_inside(self.root, model_dir / "1" / plan_name(manifest), f"{self.uri}: name '{manifest.name}'")
        with repository_lock(self.root):
            notes = clean_up(self.root, depth=3)
            existing = versions(model_dir)
            latest = existing[-1] if existing else None
            version, action, detail = self._place(model_dir, latest, artifact, force)
            version_dir = model_dir / version.folder
            if action == "unchanged":
                # the plan is there; its config too, unless a publish was killed while it wrote it
                repaired = self._write_config(model_dir, version_dir, force, warnings, repair=True)
                return PublishOutcome(
                    "unchanged",
                    str(version_dir / plan_name(manifest)),
                    f"{detail}; {repaired}" if repaired else detail,
                    tuple(warnings),
                    {"version": version.number, "config": str(model_dir / CONFIG_NAME)},
                    notes,
                )
            if version == latest:
                notes += commit_pair(
                    version_dir, artifact, plan_name(manifest), plan_manifest_name(manifest), model_dir
                )
            else:
                self._new_version(model_dir, version.folder, artifact)
            config_note = self._write_config(model_dir, version_dir, force, warnings)
        status = written_status(action)
        extra = {"version": version.number, "config": str(model_dir / CONFIG_NAME)}
        return PublishOutcome(
            status, str(version_dir / plan_name(manifest)), detail or config_note, tuple(warnings), extra, notes
        )

    def _release_warnings(self, manifest: Manifest) -> list[str]:
        """The declared Triton release (RELEASE_FILE) against the engine; an unreadable or unknown
        declaration is a warning too, never a silent pass."""
        from trtforge.triton_releases import find_release, release_problem

        declared = self.root / RELEASE_FILE
        if not declared.is_file():
            return []
        where = f"{self.uri}: {RELEASE_FILE}"
        try:
            name = declared.read_text(encoding="utf-8").strip()
            release = find_release(name, where)
        except (OSError, UnicodeDecodeError, InvalidInputError) as exc:
            return [f"{where} cannot be used ({first_line(exc)}): the engine was not checked against a Triton release"]
        problem = release_problem(manifest, release)
        if problem is None:
            return []
        return [f"{self.uri} is declared for Triton {release.name} ({RELEASE_FILE}): {problem.message}"]

    def _place(
        self, model_dir: Path, latest: Version | None, artifact: LocalArtifact, force: bool
    ) -> tuple[Version, str, str]:
        """Which version the plan goes to, and whether that is new, a no-op or a replacement."""
        manifest = artifact.manifest
        if latest is None:
            return Version(1, "1"), "new", ""
        latest_dir = model_dir / latest.folder
        siblings = version_plans(latest_dir)
        if not siblings or not all(same_build(c.manifest, manifest) for c in siblings):
            held = "holds another build" if siblings else "holds no trtforge plan"
            following = Version(latest.number + 1, str(latest.number + 1))
            return following, "new", f"new version {following.folder} (version {latest.folder} {held})"
        plan = latest_dir / plan_name(manifest)
        manifest_file = latest_dir / plan_manifest_name(manifest)
        if plan.exists() or manifest_file.exists():
            existing = (
                Existing(sha256_file(plan, disk_cache=False), sha256_bytes(manifest_file.read_bytes()))
                if plan.is_file() and manifest_file.is_file()
                else Existing(None, None)
            )
            action, detail = decide(existing, artifact, force, str(plan))
            return latest, action, detail
        return latest, "new", f"added to version {latest} beside {len(siblings)} plan(s) for other GPUs"

    def _new_version(self, model_dir: Path, folder: str, artifact: LocalArtifact) -> None:
        manifest = artifact.manifest
        try:
            model_dir.mkdir(parents=True, exist_ok=True)
            staging = make_temp_dir(model_dir, folder)
        except OSError as exc:
            raise io_error("create", model_dir, exc) from exc
        try:
            # the lock folder lives in the model's folder, whose non-numeric subfolders Triton ignores
            # (its model repository guide): in a version folder Triton would read it, in the
            # repository's root it would be taken for a model
            commit_pair(staging, artifact, plan_name(manifest), plan_manifest_name(manifest), model_dir)
            staging.chmod(0o755)  # mkdtemp makes 0700; Triton may run as another user
            staging.rename(model_dir / folder)
        except OSError as exc:
            raise io_error("write", model_dir / folder, exc) from exc
        finally:
            shutil.rmtree(staging, ignore_errors=True)
            release_temp(staging)

    def _write_config(
        self, model_dir: Path, version_dir: Path, force: bool, warnings: list[str], repair: bool = False
    ) -> str:
        """Write ``config.pbtxt`` for the version's plans unless it describes them already (or was
        edited by hand, unless ``force``); ``repair``: no plan changed, only a config a killed publish
        left stale is rewritten. The note says why it was rewritten."""
        config_path = model_dir / CONFIG_NAME
        current = None
        if config_path.is_file():
            try:
                current = config_path.read_text(encoding="utf-8", errors="replace")
            except OSError as exc:
                raise io_error("read", config_path, exc) from exc
        hand_edited = current is not None and edited_by_hand(current)
        if hand_edited and not force:
            if not repair:
                warnings.append(
                    f"{config_path} was edited by hand: kept as it is; make sure it names the new plan "
                    "(cc_model_filenames), or publish with --force to regenerate it"
                )
            return ""
        listed = version_plans(version_dir)
        plans = [(c.manifest, Path(c.reference).name) for c in listed]
        config = build_config(model_dir.name, plans)
        sources = [f"{version_dir.name}/{plan_manifest_name(c.manifest)}" for c in listed]
        flavor_warnings = [RTX_WARNING] if any(m.tensorrt.flavor == FLAVOR_RTX for m, _ in plans) else []
        rendered = render_config(config, sources, flavor_warnings)
        if current is not None and config_body(current) == config_body(rendered):
            return ""  # it describes these plans already (its header may be another trtforge version's)
        place_bytes(rendered.encode(), config_path)
        if hand_edited:
            return f"{config_path} regenerated (--force: it had been edited by hand)"
        return f"{config_path} regenerated" + (" (it did not describe this version's plans)" if repair else "")

    def candidates(self, name: str, precision: str | None) -> Listing:
        """The newest version's plans (what Triton serves by default)."""
        if not self.root.is_dir():
            problem = "is not a directory" if self.root.exists() else "no such directory"
            raise RegistryError(f"{self.uri}: {problem}; check the path (publish creates it)")
        model_dir = self.root / name
        listed = versions(model_dir)
        others = tuple(
            sorted(p.name for p in self.root.iterdir() if p.is_dir() and p.name != name and not p.name.startswith("."))
        )
        if not listed:
            return Listing((), others)
        latest = listed[-1].folder
        plans = version_plans(model_dir / latest)
        found = tuple(c for c in plans if matches(c.manifest, name, precision))
        rest = tuple(f"{name}/{latest}/{Path(c.reference).name}" for c in plans if c not in found)
        return Listing(found, others + rest)

    def fetch(self, candidate: Candidate, into: Path) -> None:
        copy_out(candidate.locator, into, candidate.manifest.artifact.size)
