"""``trtforge ci`` says the truth about what it did (a Hypothesis state machine on real TensorRT-RTX
builds): a spec is ``unchanged`` only when nothing it reads changed since its last good build and
its artifact in ``--out`` is that build's, byte for byte; ``restored`` when its inputs are those of
an earlier build whose artifact in ``--out`` was damaged, removed or replaced; ``built`` when its
inputs were never built. Every artifact ``ci`` reports verifies (``trtforge check``, and the
engine's sha256 is its manifest's), and a run with nothing changed touches nothing in ``--out``.

The oracle is this file's own model of what a spec reads, from the README ("CI pipelines", "Spec
reference", "Artifacts"): the spec file's bytes, the ONNX file and the external data file it names,
the contents of the files its calibration and accuracy globs match in sorted order, the labels
file, the targets (``--cc`` narrows them to one), the backend flavor and, when ``ci`` signs
(``TRTFORGE_SIGNING_KEY``), which key. ``trtforge.yaml``'s runners decide no artifact. Nothing of
trtforge's own input listing (``build_input_paths``, ``build_inputs``) is used.

The files change the ways files change under a CI checkout: other bytes (with the mtime set back,
so only ctime tells), the same bytes again (in place, or a new inode), a data file added, removed or
renamed, a spec's meaning or only a comment, an artifact deleted or one engine byte flipped, an
attestation added after the build (``trtforge sign --attest`` by the run's key or another, or one
whose signature was then flipped or dropped), the flags and signing key of the run, and no change
at all. The one set in ``--out`` other than its build's that is ``unchanged``: the build's after
``sign --attest`` by the key the run signs with (README "CI pipelines"); any other is restored.
Steps run ~0.1 s apart with files settling after 50 ms, so the digest cache and the replay of an
all-unchanged run (``trtforge.rerun``) answer as they would after a real pause, and are held to
the same truth.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import models
import numpy as np
import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule
from typer.testing import CliRunner

from trtforge.cli import app
from trtforge.keys import SIGNING_KEY_ENV

models.need_rtx()

runner = CliRunner()
PROFILE = "profiles:\n  - input: {min: [1, 3, 16, 16], opt: [4, 3, 16, 16], max: [8, 3, 16, 16]}\n"
SPECS = ("fp32.yaml", "fp16.yaml", "int8.yaml")
#: each spec's targets, as its text below lists them (``--cc`` narrows them to one)
TARGETS = {"fp32.yaml": ("8.6", "8.9"), "fp16.yaml": ("8.6",), "int8.yaml": ("8.6",)}
#: the files of one artifact, by the README's names ("Artifacts")
ARTIFACT_SUFFIXES = (".engine", ".manifest.json", ".accuracy.json", ".intoto.jsonl")
SAMPLE = (8, 3, 16, 16)
ACCURACY_SAMPLE = (4, 3, 16, 16)


def _spec_text(spec: str, level: int, comment: bool) -> str:
    """The spec's YAML: ``level`` changes what it means (build.optimization_level), ``comment``
    only its bytes (a comment line and a blank line)."""
    targets = ", ".join(f"'{target}'" for target in TARGETS[spec])
    note = "# tuned by hand\n\n" if comment else ""
    head = f"{note}name: conv\nprecision: {spec.removesuffix('.yaml')}\n"
    body = {
        "fp32.yaml": "model: conv.onnx\naccuracy: {data: acc/*.npy, labels: acc-labels.npy}\n",
        "fp16.yaml": "model: ext.onnx\n",
        "int8.yaml": (
            "model: conv.onnx\ncalibration: {data: cal/*.npy, batch_size: 8}\n"
            "accuracy: {tolerances: {'*': {cosine_min: 0.5, top1_min: 0.0}}}\n"
        ),
    }[spec]
    return f"{head}targets: [{targets}]\n{body}{PROFILE}build: {{optimization_level: {level}}}\n"


def _array_bytes(shape: tuple[int, ...], seed: int) -> bytes:
    """A seeded float32 .npy file's bytes (one size for every seed: a rewrite keeps the size)."""
    scratch = Path(tempfile.mkdtemp())
    try:
        np.save(scratch / "a.npy", np.random.default_rng(seed).normal(0, 1, shape).astype(np.float32))
        return (scratch / "a.npy").read_bytes()
    finally:
        shutil.rmtree(scratch)


def _labels_bytes(seed: int) -> bytes:
    scratch = Path(tempfile.mkdtemp())
    try:
        np.save(scratch / "l.npy", np.random.default_rng(seed).integers(0, 10, 2 * ACCURACY_SAMPLE[0]).astype(np.int64))
        return (scratch / "l.npy").read_bytes()
    finally:
        shutil.rmtree(scratch)


def _model_bytes(seed: int, external: bool) -> dict[str, bytes]:
    """conv_net of ``seed``: ``{"onnx": ...}``, or with its weights in ``ext.onnx.data`` beside it."""
    scratch = Path(tempfile.mkdtemp())
    try:
        model = models.conv_net(scratch / ("ext.onnx" if external else "conv.onnx"), seed=seed)
        if not external:
            return {"onnx": model.read_bytes()}
        data = models.externalize(model)
        return {"onnx": model.read_bytes(), "data": data.read_bytes()}
    finally:
        shutil.rmtree(scratch)


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _write_keeping_mtime(path: Path, data: bytes, keep_mtime: bool) -> None:
    """Write ``data`` into ``path`` in place (same inode); with ``keep_mtime`` its mtime is set
    back, so that only its ctime says it was written."""
    before = path.stat()
    with open(path, "r+b") as handle:
        handle.write(data)
        handle.truncate()
    if keep_mtime:
        os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))


@dataclass(frozen=True)
class Built:
    """What a build left in --out: its engine's file name and every file of its set, by name."""

    engine: str
    files: tuple[tuple[str, bytes], ...]


def _artifact(out: Path, engine: str) -> tuple[tuple[str, bytes], ...]:
    stem = engine.removesuffix(".engine")
    return tuple(
        (stem + suffix, (out / (stem + suffix)).read_bytes())
        for suffix in ARTIFACT_SUFFIXES
        if (out / (stem + suffix)).is_file()
    )


def _tree(folder: Path) -> dict[str, tuple[bytes, int]]:
    """Every file below ``folder``: its bytes and mtime."""
    return {
        str(path.relative_to(folder)): (path.read_bytes(), path.stat().st_mtime_ns)
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


class Shared:
    """What the examples share: the folder they work in and the signing keys (``key-a``, ``key-b``
    and their ``.pub``)."""

    keys: dict[str, bytes]
    base: Path


class CiMachine(RuleBasedStateMachine):
    shared: Shared

    @initialize()
    def project(self) -> None:
        shared = self.shared
        self.root = Path(tempfile.mkdtemp(dir=shared.base, prefix="project-"))
        self.out = self.root.parent / f"{self.root.name}-out"
        self.cache = self.root.parent / f"{self.root.name}-cache"  # each example's own: a shrunk one replays alike
        self.builds: dict[tuple[Any, ...], Built] = {}  # what each set of inputs built, as the cache holds it
        #: the set ``sign --attest`` by the run's own key made of each inputs' build: unchanged too
        self.attested: dict[tuple[Any, ...], Built] = {}
        #: each spec's inputs and artifact at the last run
        self.last: dict[str, tuple[tuple[Any, ...], str]] = {}
        self.spec_state = {spec: (3, False) for spec in SPECS}
        (self.root / "cal").mkdir()
        (self.root / "acc").mkdir()
        (self.root / "conv.onnx").write_bytes(_model_bytes(0, external=False)["onnx"])
        ext = _model_bytes(0, external=True)
        (self.root / "ext.onnx").write_bytes(ext["onnx"])
        (self.root / "ext.onnx.data").write_bytes(ext["data"])
        for index in range(2):
            (self.root / "cal" / f"batch_{index}.npy").write_bytes(_array_bytes(SAMPLE, index))
            (self.root / "acc" / f"part_{index}.npy").write_bytes(_array_bytes(ACCURACY_SAMPLE, 10 + index))
        (self.root / "acc-labels.npy").write_bytes(_labels_bytes(0))
        for spec in SPECS:
            (self.root / spec).write_text(_spec_text(spec, *self.spec_state[spec]))
        (self.root / "trtforge.yaml").write_text("runners:\n  cpu: [linux]\n")
        self.cc: str | None = None
        self.backend: str | None = None
        self.signer: str | None = None
        self.key = self.root.parent / f"{self.root.name}-signing.key"
        self._run("the first run")

    # ------------------------------------------------------------ the oracle

    def _inputs(self, spec: str) -> tuple[Any, ...]:
        """What ``spec`` reads, by content, as the README lists it (see the module's docstring)."""
        root = self.root
        model = ("ext.onnx", "ext.onnx.data") if spec == "fp16.yaml" else ("conv.onnx",)

        def glob(pattern: str) -> tuple[str, ...]:
            return tuple(_sha(path.read_bytes()) for path in sorted(root.glob(pattern)))

        return (
            spec,
            _sha((root / spec).read_bytes()),
            tuple(_sha((root / name).read_bytes()) for name in model),
            glob("cal/*.npy") if spec == "int8.yaml" else None,
            glob("acc/*.npy") if spec == "fp32.yaml" else None,
            _sha((root / "acc-labels.npy").read_bytes()) if spec == "fp32.yaml" else None,
            (self.cc,) if self.cc else TARGETS[spec],
            "tensorrt-rtx",  # --backend tensorrt-rtx, or auto on a host without a GPU
            self.signer,
        )

    def _expected(self, spec: str, inputs: tuple[Any, ...]) -> str:
        known = self.builds.get(inputs)
        if known is None:
            return "built"
        found = Built(known.engine, _artifact(self.out, known.engine))
        return "unchanged" if found in (known, self.attested.get(inputs)) else "restored"

    # ------------------------------------------------------------ one run and its invariant

    def _run(self, why: str) -> None:
        time.sleep(0.1)  # what the step wrote has settled (50 ms here): the digest cache may answer
        inputs = {spec: self._inputs(spec) for spec in SPECS}
        expected = {spec: self._expected(spec, inputs[spec]) for spec in SPECS}
        before = _tree(self.out) if self.out.is_dir() else {}
        flags = [*(["--cc", self.cc] if self.cc else []), *(["--backend", self.backend] if self.backend else [])]
        env = {SIGNING_KEY_ENV: str(self.key) if self.signer else None, "TRTFORGE_CACHE_DIR": str(self.cache)}
        done = runner.invoke(app, ["ci", str(self.root), "--out", str(self.out), "--json", *flags], env=env)
        assert done.exit_code == 0, f"{why}: {done.stderr}"
        results = {Path(result["spec"]).name: result for result in json.loads(done.stdout)["results"]}
        statuses = {spec: results[spec]["status"] for spec in SPECS}
        assert statuses == expected, f"{why}: ci said {statuses}, the inputs say {expected}\n{done.stderr}"
        after = _tree(self.out)
        for spec in SPECS:
            engine = Path(results[spec]["engine"])
            assert engine.parent == self.out
            files = _artifact(self.out, engine.name)
            self.last[spec] = (inputs[spec], engine.name)
            if statuses[spec] == "built":
                self.builds[inputs[spec]] = Built(engine.name, files)
                self.attested.pop(inputs[spec], None)
            elif statuses[spec] == "restored":  # the very build of these inputs, byte for byte
                assert Built(engine.name, files) == self.builds[inputs[spec]], f"{why}: {spec}"
            else:  # that, or it attested by the run's own key since
                assert Built(engine.name, files) in (self.builds[inputs[spec]], self.attested.get(inputs[spec]))
            if statuses[spec] == "unchanged":  # not even rewritten with the same bytes
                stem = engine.name.removesuffix(".engine")
                names = [stem + suffix for suffix in ARTIFACT_SUFFIXES]
                assert {n: before.get(n) for n in names} == {n: after.get(n) for n in names}, f"{why}: {spec}"
            self._verifies(engine)
        if all(status == "unchanged" for status in statuses.values()):
            assert after == before, f"{why}: an all-unchanged run modified --out"

    def _verifies(self, engine: Path) -> None:
        """The artifact loads on the GPU it was built for, and its engine is its manifest's; a
        signing run's artifact is signed by its key, and its provenance covers engine and manifest
        (its inputs' report is not judged: a data file renamed since keeps the build, not its path)."""
        done = runner.invoke(app, ["check", str(engine), "--cc", "8.6", "--json"])
        assert done.exit_code == 0, done.stdout + done.stderr
        manifest = json.loads(engine.with_name(engine.name.removesuffix(".engine") + ".manifest.json").read_text())
        assert manifest["artifact"]["sha256"] == _sha(engine.read_bytes())
        attestation = engine.with_name(engine.name.removesuffix(".engine") + ".intoto.jsonl")
        assert attestation.is_file() == (self.signer is not None), attestation
        if self.signer is not None:
            public = f"{self.shared.base / f'key-{self.signer}'}.pub"
            done = runner.invoke(
                app, ["check", str(engine), "--cc", "8.6", "--require-signature", "--trusted-key", public]
            )
            assert done.exit_code == 0, done.stderr
            done = runner.invoke(app, ["verify-provenance", str(engine), "--trusted-key", public, "--json"])
            assert "subjects" in json.loads(done.stdout), done.stdout + done.stderr

    # ------------------------------------------------------------ rules: the inputs

    @rule(
        file=st.sampled_from(
            ["conv.onnx", "ext.onnx.data", "cal/first", "acc/first", "acc-labels.npy", "trtforge.yaml"]
        ),
        seed=st.integers(0, 2),
        keep_mtime=st.booleans(),
    )
    def rewrite(self, file: str, seed: int, keep_mtime: bool) -> None:
        """Other bytes (or, for the seed the file has, the same ones) in place, same size."""
        if file == "conv.onnx":
            data = _model_bytes(seed, external=False)["onnx"]
        elif file == "ext.onnx.data":
            data = _model_bytes(seed, external=True)["data"]
        elif file == "acc-labels.npy":
            data = _labels_bytes(seed)
        elif file == "trtforge.yaml":
            data = f"runners:\n  cpu: [linux, pool{seed}]\n".encode()
        else:
            folder, _ = file.split("/")
            file = str(sorted((self.root / folder).glob("*.npy"))[0].relative_to(self.root))
            data = _array_bytes(SAMPLE if folder == "cal" else ACCURACY_SAMPLE, seed)
        _write_keeping_mtime(self.root / file, data, keep_mtime)
        self._run(f"rewrite {file} (seed {seed}, mtime kept: {keep_mtime})")

    @rule(
        file=st.sampled_from(["conv.onnx", "ext.onnx", "ext.onnx.data", "cal/first", "acc-labels.npy", *SPECS]),
        how=st.sampled_from(["in place", "new inode", "touch"]),
    )
    def rewrite_same_bytes(self, file: str, how: str) -> None:
        """The same bytes written again in place, or as a new file renamed over it (a checkout), or
        the file only touched: its content is the same, so is every spec's verdict."""
        if file == "cal/first":
            file = str(sorted((self.root / "cal").glob("*.npy"))[0].relative_to(self.root))
        path = self.root / file
        data = path.read_bytes()
        if how == "new inode":
            staged = path.with_name(f".{path.name}.new")
            staged.write_bytes(data)
            os.replace(staged, path)
        elif how == "touch":
            os.utime(path)
        else:
            path.write_bytes(data)
        self._run(f"the same bytes into {file} ({how})")

    @rule(seed=st.integers(0, 5), name=st.sampled_from(["a_extra.npy", "m_extra.npy", "z_extra.npy"]))
    def add_calibration_file(self, seed: int, name: str) -> None:
        path = self.root / "cal" / name
        path.write_bytes(_array_bytes(SAMPLE, seed))
        self._run(f"add cal/{name} (seed {seed})")

    @precondition(lambda self: len(list((self.root / "cal").glob("*.npy"))) > 1)
    @rule(index=st.integers(0, 3))
    def remove_calibration_file(self, index: int) -> None:
        files = sorted((self.root / "cal").glob("*.npy"))
        victim = files[index % len(files)]
        victim.unlink()
        self._run(f"remove {victim.relative_to(self.root)}")

    @rule(
        folder=st.sampled_from(["cal", "acc"]),
        index=st.integers(0, 3),
        name=st.sampled_from(["0_first.npy", "q_middle.npy", "zz_last.npy"]),
    )
    def rename_data_file(self, folder: str, index: int, name: str) -> None:
        """A data file under another name: the same content, maybe another place in the sorted order."""
        files = sorted((self.root / folder).glob("*.npy"))
        source = files[index % len(files)]
        if (self.root / folder / name).exists():
            name = f"r{index}_{name}"
        source.rename(self.root / folder / name)
        self._run(f"rename {source.relative_to(self.root)} to {folder}/{name}")

    @rule(spec=st.sampled_from(SPECS), meaning=st.booleans())
    def edit_spec(self, spec: str, meaning: bool) -> None:
        """Another optimization level (another meaning), or a comment and a blank line added or
        removed: the README keys a build on the spec file, so both are new inputs."""
        level, comment = self.spec_state[spec]
        self.spec_state[spec] = (5 - level, comment) if meaning else (level, not comment)
        (self.root / spec).write_text(_spec_text(spec, *self.spec_state[spec]))
        self._run(f"edit {spec} ({'meaning' if meaning else 'comment'})")

    # ------------------------------------------------------------ rules: the artifacts

    @rule(
        spec=st.sampled_from(SPECS),
        how=st.sampled_from(
            ["engine", "manifest", "report", "attestation", "flip", "flip-mtime", "reformat", "unsign", "report-flip"]
        ),
    )
    def damage_artifact(self, spec: str, how: str) -> None:
        """An artifact file deleted, one engine or report byte flipped (the engine's mtime set back
        or not), its manifest reformatted (the same JSON value, other bytes) or its signature
        removed (written as trtforge writes a manifest)."""
        engines = sorted(self.out.glob(f"conv-{spec.removesuffix('.yaml')}-*.engine"))
        if not engines:
            return
        engine = engines[-1]
        stem = engine.name.removesuffix(".engine")
        manifest, report = self.out / f"{stem}.manifest.json", self.out / f"{stem}.accuracy.json"
        if how in ("flip", "flip-mtime", "report-flip") and (engine if how != "report-flip" else report).is_file():
            path = engine if how != "report-flip" else report
            data = bytearray(path.read_bytes())
            data[len(data) // 2] ^= 0x01
            _write_keeping_mtime(path, bytes(data), keep_mtime=how == "flip-mtime")
        elif how in ("reformat", "unsign") and manifest.is_file():
            document = json.loads(manifest.read_text())
            if how == "reformat":
                manifest.write_text(json.dumps(document, indent=4))
            else:
                document.pop("signature", None)
                manifest.write_text(json.dumps(document, indent=2) + "\n")
        else:
            suffix = {"engine": ".engine", "manifest": ".manifest.json", "report": ".accuracy.json"}.get(how)
            (self.out / (stem + (suffix or ".intoto.jsonl"))).unlink(missing_ok=True)
        self._run(f"damage {engine.name} ({how})")

    @rule(spec=st.sampled_from(SPECS), by=st.sampled_from(["a", "b"]), forge=st.sampled_from([None, "flip", "drop"]))
    def attest(self, spec: str, by: str, forge: str | None) -> None:
        """``trtforge sign ENGINE --key K --attest`` after the build (another statement than the
        build's: the inputs its manifest records), by the run's key or another; ``forge``: its
        envelope's signature then flipped or dropped, its subject still the manifest. An unsigned
        run trusts no key here (no ``--trusted-key``): its build's set is restored at once, so an
        unsigned set left with only the signature ``sign`` added (its build's, by the README, which
        this model does not follow) never comes of it."""
        inputs, name = self.last[spec]
        engine = self.out / name
        if not engine.is_file():
            return
        key = self.shared.base / f"key-{by}"
        done = runner.invoke(app, ["sign", str(engine), "--key", str(key), "--attest"])
        assert done.exit_code == 0, done.stderr
        attestation = engine.with_name(name.removesuffix(".engine") + ".intoto.jsonl")
        if forge is not None:
            envelope = json.loads(attestation.read_text())
            if forge == "flip":
                signature = bytearray(base64.b64decode(envelope["signatures"][0]["sig"]))
                signature[0] ^= 0x01
                envelope["signatures"][0]["sig"] = base64.b64encode(bytes(signature)).decode()
            else:
                envelope["signatures"] = []
            attestation.write_text(json.dumps(envelope) + "\n")
        elif by == self.signer and inputs == self._inputs(spec):
            self.attested[inputs] = Built(name, _artifact(self.out, name))
        self._run(f"sign --attest {name} by key {by}" + (f", signature {forge}" if forge else ""))

    # ------------------------------------------------------------ rules: the run

    @rule(
        cc=st.sampled_from([None, "8.6"]),
        backend=st.sampled_from([None, "tensorrt-rtx"]),
        signer=st.sampled_from([None, "a", "b"]),
    )
    def flags(self, cc: str | None, backend: str | None, signer: str | None) -> None:
        """Another ``--cc``, ``--backend`` or signing key (one key file, rotated in place)."""
        self.cc, self.backend, self.signer = cc, backend, signer
        if signer is not None:  # written again when it is that key already: the same bytes, a new ctime
            self.key.write_bytes(self.shared.keys[signer])
            self.key.chmod(0o600)
        self._run(f"flags --cc {cc} --backend {backend}, signing key {signer}")

    @rule()
    def no_change(self) -> None:
        self._run("a run with nothing changed")

    @invariant()
    def nothing_partial(self) -> None:
        """No temporaries left in --out between runs."""
        if self.out.is_dir():
            assert not list(self.out.glob(".*.tmp"))

    def teardown(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)
        shutil.rmtree(self.out, ignore_errors=True)
        shutil.rmtree(self.cache, ignore_errors=True)


@pytest.mark.slow
def test_ci_says_what_it_did(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from trtforge import digests
    from trtforge.environment import choose_backend
    from trtforge.signing import generate_keypair

    if choose_backend("auto").flavor != "tensorrt-rtx":
        pytest.skip("the oracle takes --backend auto for TensorRT-RTX (a host without enterprise TensorRT and a GPU)")
    monkeypatch.setattr(digests, "SETTLE_NS", 50_000_000)  # files settle in 50 ms: the steps' pauses
    shared = Shared()
    shared.base = tmp_path
    shared.keys = {}
    for name in ("a", "b"):
        generate_keypair(tmp_path / f"key-{name}")
        shared.keys[name] = (tmp_path / f"key-{name}").read_bytes()
    CiMachine.shared = shared
    machine = CiMachine.TestCase
    machine.settings = settings(max_examples=8, stateful_step_count=6)
    machine().runTest()
