"""The stat-keyed digest cache (`digests.sha256_file`): it answers for a file whose stamp (path,
inode, size, mtime, ctime) is the one hashed, and never for a file that changed since."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import models
import numpy as np
import pytest
from clitools import cli
from test_startup_imports import manifest_only  # noqa: F401  (the fixture: an engine and its manifest)

from trtforge import digests, fsutil, threads
from trtforge.digests import FileStamp, digest_dir, read_hashed, sha256_file

#: how long a file must rest before it is cached, in these tests (the default is 2 s)
SETTLE_S = 0.05


@pytest.fixture(autouse=True)
def quick_settle(monkeypatch: pytest.MonkeyPatch) -> None:
    """Files settle after 50 ms (the test waits longer than the file system's timestamp tick),
    and each test starts with an empty in-process memory, so the disk layer is what answers."""
    monkeypatch.setattr(digests, "SETTLE_NS", int(SETTLE_S * 1e9))
    monkeypatch.setattr(digests, "_memory", {})
    monkeypatch.setattr(digests, "_from_disk", {})


def _settled_file(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    time.sleep(SETTLE_S * 2)
    return path


def _entry(path: Path) -> Path:
    return digest_dir() / FileStamp.of(path, path.stat()).entry_name()


def _forget_in_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    digests.forget_digests()


def test_an_entry_for_the_exact_stamp_answers_in_another_process(tmp_path: Path) -> None:
    """The cache is what answers (not a new read): a recorded digest is served as recorded."""
    model = _settled_file(tmp_path / "model.onnx", b"a" * 4096)
    assert sha256_file(model) == hashlib.sha256(b"a" * 4096).hexdigest()
    entry = _entry(model)
    recorded = json.loads(entry.read_text())
    entry.write_text(json.dumps({**recorded, "sha256": "0" * 64}))
    code = f"import pathlib, trtforge.digests as f; print(f.sha256_file(pathlib.Path({str(model)!r})))"
    answer = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=os.environ)
    assert answer.stdout.strip() == "0" * 64


def test_same_size_rewrite_with_mtime_set_back_is_never_served(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _settled_file(tmp_path / "engine.engine", b"A" * 1000)
    before = path.stat()
    assert sha256_file(path) == hashlib.sha256(b"A" * 1000).hexdigest()
    assert _entry(path).is_file()
    with open(path, "r+b") as handle:  # in place: same inode, same size
        handle.write(b"B" * 1000)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = path.stat()
    assert (after.st_ino, after.st_size, after.st_mtime_ns) == (before.st_ino, before.st_size, before.st_mtime_ns)
    assert after.st_ctime_ns != before.st_ctime_ns
    wanted = hashlib.sha256(b"B" * 1000).hexdigest()
    assert sha256_file(path) == wanted  # the in-process memory does not serve it
    _forget_in_memory(monkeypatch)
    assert sha256_file(path) == wanted  # nor does the cache on disk
    assert read_hashed(path, 1000) == (bytearray(b"B" * 1000), wanted)


def test_a_changed_file_is_hashed_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _settled_file(tmp_path / "data.npy", b"one")
    assert sha256_file(path) == hashlib.sha256(b"one").hexdigest()
    _settled_file(path, b"other content")
    _forget_in_memory(monkeypatch)
    assert sha256_file(path) == hashlib.sha256(b"other content").hexdigest()


def test_a_replaced_inode_is_hashed_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _settled_file(tmp_path / "model.onnx", b"X" * 512)
    before = path.stat()
    assert sha256_file(path) == hashlib.sha256(b"X" * 512).hexdigest()
    other = _settled_file(tmp_path / "new.onnx", b"Y" * 512)
    os.utime(other, ns=(before.st_atime_ns, before.st_mtime_ns))
    os.replace(other, path)
    assert path.stat().st_ino != before.st_ino
    _forget_in_memory(monkeypatch)
    assert sha256_file(path) == hashlib.sha256(b"Y" * 512).hexdigest()


@pytest.mark.parametrize(
    "garbage",
    [b"{not json", b"[]", b'{"sha256": "00"}', b" " * 10_000, b"\xff\xfe"],
    ids=["truncated", "not-an-object", "no-stamp", "oversized", "not-utf8"],
)
def test_a_corrupt_entry_is_ignored_and_replaced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, garbage: bytes
) -> None:
    path = _settled_file(tmp_path / "model.onnx", b"content")
    sha256_file(path)
    _entry(path).write_bytes(garbage)
    _forget_in_memory(monkeypatch)
    assert sha256_file(path) == hashlib.sha256(b"content").hexdigest()
    assert json.loads(_entry(path).read_text())["sha256"] == hashlib.sha256(b"content").hexdigest()


def test_a_file_that_has_not_settled_is_not_recorded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Written this instant, it could be written again within the same timestamp tick."""
    monkeypatch.setattr(digests, "SETTLE_NS", 2_000_000_000)
    path = tmp_path / "fresh.engine"
    path.write_bytes(b"fresh")
    assert sha256_file(path) == hashlib.sha256(b"fresh").hexdigest()
    assert not _entry(path).exists()


def test_the_entries_stay_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(digests, "MAX_DIGESTS", 4)
    files = [tmp_path / f"f{index}" for index in range(6)]
    for index, path in enumerate(files):
        path.write_bytes(bytes([index]))
    time.sleep(SETTLE_S * 2)
    for path in files:
        sha256_file(path)
    assert 1 <= len(list(digest_dir().glob("*.json"))) <= 4


def test_unchanged_ci_rerun_answers_model_and_engine_from_the_cache(tmp_path: Path) -> None:
    """What keeps an unchanged rerun flat in model size: after one rerun, the model and the
    engine both have their digest recorded, so the next rerun reads neither."""
    models.need_rtx()
    root = tmp_path / "project"
    root.mkdir()
    models.conv_net(root / "conv.onnx")
    (root / "fp32.yaml").write_text(
        "name: conv\nmodel: conv.onnx\nprecision: fp32\ntargets: ['8.6']\n"
        "profiles:\n  - input: {min: [1, 3, 16, 16], opt: [2, 3, 16, 16], max: [4, 3, 16, 16]}\n"
    )
    out = tmp_path / "out"
    assert cli("ci", root, "--out", out)[0] == 0
    time.sleep(SETTLE_S * 2)
    code, _, stderr = cli("ci", root, "--out", out)
    assert code == 0 and "inputs unchanged: skipped" in stderr
    (engine,) = out.glob("*.engine")
    for path in (root / "conv.onnx", engine):
        entry = json.loads(_entry(path).read_text())
        assert entry["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()


def _forged_entry(path: Path, digest: str) -> None:
    """What anyone who writes the cache folder (this user, a CI cache restored from another job)
    can plant: an entry for the file's exact stamp, with a digest of their choice."""
    entry = {**dataclasses.asdict(FileStamp.of(path, path.stat())), "sha256": digest}
    _entry(path).parent.mkdir(parents=True, exist_ok=True)
    _entry(path).write_text(json.dumps(entry))


def test_a_forged_entry_never_makes_a_tampered_engine_trusted(manifest_only: Path) -> None:  # noqa: F811
    """check, inspect, the loader's read and verify-provenance's inputs hash the bytes in this
    process; only ci's question "is my own artifact unchanged" takes the cache's word."""
    from trtforge.environment import file_problem, measure_engine
    from trtforge.manifest import read_manifest

    engine = manifest_only
    manifest = read_manifest(engine)
    _settled_file(engine, b"engine bytez")  # tampered, same size
    _forged_entry(engine, manifest.artifact.sha256)
    real = hashlib.sha256(b"engine bytez").hexdigest()
    assert file_problem(manifest, engine, disk_cache=True) is None  # ci's own bookkeeping: the stamp decides

    code, stdout, _ = cli("check", engine, "--cc", "8.6", "--json")
    assert code == 5 and json.loads(stdout)["sha256"]["engine"] == real
    code, stdout, stderr = cli("inspect", engine)
    assert code == 5 and "not the engine this manifest describes" in stdout + stderr
    facts, data = measure_engine(engine, manifest, keep_bytes=True)
    assert (facts.engine_sha256, bytes(data or b"")) == (real, b"engine bytez")
    assert file_problem(manifest, engine) is not None
    assert sha256_file(engine, disk_cache=False) == real


def _forged(path: Path, digest: str, padding: int = 0) -> bytes:
    """An entry for ``path``'s exact stamp giving ``digest``, followed by ``padding`` spaces."""
    entry = {**dataclasses.asdict(FileStamp.of(path, path.stat())), "sha256": digest}
    return json.dumps(entry).encode() + b" " * padding


@pytest.mark.parametrize(
    ("digest", "padding"),
    [("0" * 64, 5000), ("Z" * 64, 0), ("A" * 64, 0), ("0" * 63, 0)],
    ids=["oversized-but-whole", "not-hex", "upper-case", "short"],
)
def test_an_entry_for_the_exact_stamp_that_is_no_digest_entry_is_not_served(
    tmp_path: Path, digest: str, padding: int
) -> None:
    """Only a small entry holding 64 lower-case hex digits answers: one whose first 4 KiB read as an
    entry but go on (whitespace a JSON reader skips), or whose digest is no sha256, is ignored."""
    path = _settled_file(tmp_path / "model.onnx", b"content")
    _entry(path).parent.mkdir(parents=True, exist_ok=True)
    _entry(path).write_bytes(_forged(path, digest, padding))
    assert sha256_file(path) == hashlib.sha256(b"content").hexdigest()


def test_an_entry_another_user_owns_is_not_served(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The cache folder answers for this user alone: an entry someone else wrote there is ignored."""
    path = _settled_file(tmp_path / "model.onnx", b"content")
    _forged_entry(path, "0" * 64)
    stamp = FileStamp.of(path, path.stat())
    assert digests.known_digest(stamp) == "0" * 64  # this user's entry answers (the stamp decides)
    digests.forget_digests()
    real_uid = os.getuid()
    monkeypatch.setattr(os, "getuid", lambda: real_uid + 1)
    assert digests.known_digest(stamp) is None


def test_a_file_changed_while_hashed_or_not_settled_is_not_recorded(tmp_path: Path) -> None:
    """A digest is kept only for a stamp the file held from the start of its hash to the end, and
    only once neither its mtime nor its ctime is recent (``os.utime`` sets mtime back, not ctime)."""
    path = _settled_file(tmp_path / "data.npy", b"one")
    before = FileStamp.of(path, path.stat())
    after = dataclasses.replace(before, ctime_ns=before.ctime_ns + 1)
    digests.remember_digest(before, after, "0" * 64)
    assert digests.known_digest(before) is None and digests.known_digest(after) is None
    assert not _entry(path).exists()
    now = time.time_ns()
    assert not dataclasses.replace(before, mtime_ns=0, ctime_ns=now).settled()
    assert not dataclasses.replace(before, mtime_ns=now, ctime_ns=0).settled()
    assert dataclasses.replace(before, mtime_ns=0, ctime_ns=0).settled()


def test_the_loaders_read_never_takes_the_digest_cache_on_disk(tmp_path: Path) -> None:
    """``read_hashed`` (the bytes the loader deserializes) asks this process's own hashes only: a
    forged entry for the file's exact stamp is not its digest."""
    path = _settled_file(tmp_path / "x.engine", b"engine bytez")
    _forged_entry(path, "0" * 64)
    digests.forget_digests()
    assert read_hashed(path, 12) == (bytearray(b"engine bytez"), hashlib.sha256(b"engine bytez").hexdigest())


def test_bytes_written_during_the_read_are_the_ones_hashed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """This process hashed the file already, then another writer rewrites it in place (same inode,
    same size) while ``read_hashed`` reads it: the digest is the bytes read, never the one known for
    the stamp the file had when the read began."""
    path = _settled_file(tmp_path / "x.engine", b"A" * 1000)
    assert sha256_file(path, disk_cache=False) == hashlib.sha256(b"A" * 1000).hexdigest()

    class WrittenMeanwhile(io.FileIO):
        def readinto(self, buffer: Any) -> int | None:
            with open(path, "r+b") as writer:
                writer.write(b"B" * 1000)
            return super().readinto(buffer)

    monkeypatch.setattr(digests, "open", lambda file, mode, buffering: WrittenMeanwhile(file, "r"), raising=False)
    assert read_hashed(path, 1000) == (bytearray(b"B" * 1000), hashlib.sha256(b"B" * 1000).hexdigest())


def test_a_file_grown_past_its_expected_size_is_read_and_hashed_whole(tmp_path: Path) -> None:
    """A manifest's size is what ``read_hashed`` expects; the file holds more: all of it is kept and
    hashed (its digest then differs from the manifest's), never the expected part alone."""
    path = _settled_file(tmp_path / "x.engine", b"engine" + b"+grown")
    assert read_hashed(path, 6) == (bytearray(b"engine+grown"), hashlib.sha256(b"engine+grown").hexdigest())


def test_entries_are_written_whole_without_fsync_and_artifacts_with_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A digest entry can be derived again (a torn one is ignored), so recording it costs no
    fsync; a durable write (an artifact's file) still syncs before its rename."""
    synced: list[Path] = []
    real_fsync = fsutil.fsync_file

    def recording_fsync(path: Path) -> None:
        synced.append(path)
        real_fsync(path)

    monkeypatch.setattr(fsutil, "fsync_file", recording_fsync)
    model = _settled_file(tmp_path / "model.onnx", b"m" * 4096)
    sha256_file(model)
    assert json.loads(_entry(model).read_text())["sha256"] == hashlib.sha256(b"m" * 4096).hexdigest()
    assert synced == []
    fsutil.atomic_write_text(tmp_path / "x.manifest.json", "{}")
    assert len(synced) == 1 and (tmp_path / "x.manifest.json").read_text() == "{}"
    assert not [path for path in digest_dir().iterdir() if path.name.endswith(fsutil.TEMP_SUFFIX)]


@pytest.mark.parametrize("size", [0, 1, 5000, 9 * 1024 * 1024 + 7])
def test_a_file_of_any_size_hashes_right_and_bytes_hashed_beside_too(tmp_path: Path, size: int) -> None:
    """The read buffer follows the file's size (no 8 MiB buffer for a small model), and a build's
    engine bytes hashed on their own thread give hashlib's digest."""
    data = os.urandom(size)
    path = tmp_path / "f.bin"
    path.write_bytes(data)
    expected = hashlib.sha256(data).hexdigest()
    assert digests._hash_file(path) == expected
    assert digests._hash_file(path, chunk=4096) == expected
    assert digests.sha256_beside(memoryview(data))() == expected


def test_work_beside_gives_its_value_or_raises_its_error_where_it_is_waited_for() -> None:
    assert threads.beside(lambda: 42, "t")() == 42

    def lost() -> None:
        raise OSError(5, "disk gone")

    with pytest.raises(OSError, match="disk gone"):
        threads.beside(lost, "t")()
    failed = threads.beside(lambda: 1 / 0, "t")
    with pytest.raises(ZeroDivisionError):
        failed()


def test_a_models_content_digest_covers_every_external_data_file_it_names(tmp_path: Path) -> None:
    """``model.content_sha256``, which every cache key and ci's "unchanged" rest on: a model
    without external data keeps its file's sha256 (and so its keys); one with external data changes
    when any data file it names does (an initializer's, or a Constant node's tensor saved apart),
    its .onnx byte for byte the same; each file once, in the order of their names."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from trtforge.model import content_sha256, model_files

    plain = models.conv_net(tmp_path / "conv.onnx")
    assert content_sha256(plain) == sha256_file(plain) and model_files(plain) == [plain]

    folder = tmp_path / "external"
    folder.mkdir()
    shift = numpy_helper.from_array(np.arange(16, dtype=np.float32).reshape(1, 16), "shift")
    graph = helper.make_graph(
        [
            helper.make_node("Constant", [], ["scale"], value=numpy_helper.from_array(np.full((1, 16), 2, np.float32))),
            helper.make_node("Mul", ["x", "scale"], ["scaled"]),
            helper.make_node("Add", ["scaled", "shift"], ["y"]),
        ],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 16])],
        [shift],
    )
    model = folder / "m.onnx"
    onnx.save(  # one file per tensor, named after it; the Constant's value too
        helper.make_model(graph),
        str(model),
        save_as_external_data=True,
        all_tensors_to_one_file=False,
        size_threshold=0,
        convert_attribute=True,
    )
    names = sorted(path.name for path in folder.iterdir() if path != model)
    assert len(names) == 2 and [path.name for path in model_files(model)] == ["m.onnx", *names]
    graph_bytes = model.read_bytes()
    seen = {content_sha256(model)}
    for name in names:
        data = folder / name
        data.write_bytes(bytes(data.stat().st_size))  # every weight zeroed, the same size
        assert model.read_bytes() == graph_bytes
        seen.add(content_sha256(model))
    assert len(seen) == 3


def test_a_models_external_data_names_are_read_once_per_content(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ci's unchanged check parsed every spec's graph (protobuf imported, tens of ms on a large
    graph) to find its data files: the names are kept by the .onnx file's sha256, so an unchanged
    model costs its stat. Another .onnx content is read again."""
    import onnx

    import trtforge.model
    from trtforge.model import content_sha256

    model = models.conv_net(tmp_path / "conv.onnx")
    onnx.save_model(onnx.load(str(model)), str(model), save_as_external_data=True, location="w.bin", size_threshold=0)
    time.sleep(SETTLE_S * 2)
    first = content_sha256(model)
    _forget_in_memory(monkeypatch)
    with monkeypatch.context() as patched:
        patched.setattr(trtforge.model, "read_onnx", lambda path: pytest.fail("the graph was parsed again"))
        assert content_sha256(model) == first
    models.conv_net(model, seed=3)  # another graph, its weights inline
    assert content_sha256(model) == sha256_file(model) != first


def test_names_read_from_a_file_replaced_meanwhile_are_not_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The .onnx is hashed, then parsed: replaced in between (a checkout, an editor's save), the
    names parsed were kept under the first content's sha256 for good, and that model's data file
    then counted for nothing in its digest."""
    import shutil

    import onnx

    import trtforge.model
    from trtforge.digests import data_sha256
    from trtforge.model import content_sha256

    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
    external = models.conv_net(tmp_path / "a" / "m.onnx")
    onnx.save_model(
        onnx.load(str(external)), str(external), save_as_external_data=True, location="w.bin", size_threshold=0
    )
    inline = models.conv_net(tmp_path / "b" / "m.onnx", seed=3)
    model = tmp_path / "m.onnx"
    shutil.copy(external, model)
    shutil.copy(tmp_path / "a" / "w.bin", tmp_path / "w.bin")
    time.sleep(SETTLE_S * 2)
    read = trtforge.model.read_onnx

    def replaced_first(path: Path) -> object:
        shutil.copy(inline, path)
        return read(path)

    with monkeypatch.context() as patched:
        patched.setattr(trtforge.model, "read_onnx", replaced_first)
        content_sha256(model)
    shutil.copy(external, model)  # the first content again
    time.sleep(SETTLE_S * 2)
    assert content_sha256(model) == data_sha256([model, tmp_path / "w.bin"]) != sha256_file(model)
