"""Properties of the stat-keyed digest cache (issue 16): whatever happens to a file (rewritten in
place, its mtime set back, truncated, renamed or linked over, deleted and made again, chmod-ed), the
digest trtforge gives is hashlib's of the bytes there now, in this process and in the next one that
reads the cache on disk; two processes writing the cache at once leave it readable; and a damaged
cache file is a miss, never an exception nor a wrong digest.

The oracle is ``hashlib.sha256`` of the file's current bytes. The cache is what is asked, by the
functions the CLI uses (:func:`trtforge.digests.sha256_file`, ``read_hashed``, ``prefetch_digest``,
:func:`trtforge.model.content_sha256`), never a copy of its rules; ``test_digest_cache.py`` holds the
example-based cases."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule, run_state_machine_as_test

from trtforge import digests
from trtforge.digests import FileStamp, digest_dir, known_digest, prefetch_digest, read_hashed, sha256_file

#: files settle after this long in these tests (default 2 s): still many times the kernel's
#: timestamp tick (a jiffy, 1-10 ms), which is what settling guards against
SETTLE_NS = 30_000_000
NAMES = ("a.onnx", "b.npy", "c.engine", "d.bin")

#: a second process asks the cache on disk for every file's digest (the way the next ``ci`` or
#: ``build`` does), prints them as JSON; argv: settle ns, then the paths
CHILD = (
    "import json, sys\n"
    "from pathlib import Path\n"
    "from trtforge import digests\n"
    "digests.SETTLE_NS = int(sys.argv[1])\n"
    "answers = {}\n"
    "for path in sys.argv[2:]:\n"
    "    stamp = digests.FileStamp.current(path)\n"
    "    answers[path] = [digests.known_digest(stamp) if stamp else None, digests.sha256_file(Path(path))]\n"
    "print(json.dumps(answers))\n"
)


def truth(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(autouse=True)
def quick_settle(monkeypatch: pytest.MonkeyPatch) -> None:
    """Files settle after :data:`SETTLE_NS`, and each test starts with an empty in-process memory."""
    monkeypatch.setattr(digests, "SETTLE_NS", SETTLE_NS)
    monkeypatch.setattr(digests, "_memory", {})
    monkeypatch.setattr(digests, "_from_disk", {})


#: counts, over every run of the machine, of answers the cache gave without reading the file: the
#: property must be tested on a cache that answers, not on one that always misses
served = {"memory_or_disk": 0, "other_process": 0}


class DigestCache(RuleBasedStateMachine):
    """A few files, each changed in every way a user or a tool changes a file; after any of them the
    digest asked of trtforge is hashlib's. ``settle`` lets time pass so that the cache records."""

    def __init__(self) -> None:
        super().__init__()
        self.folder = Path(tempfile.mkdtemp(prefix="trtforge-digest-props-"))
        self.spare = 0
        self.children = 0
        for index, name in enumerate(NAMES):
            (self.folder / name).write_bytes(bytes([index]) * (100 + index))

    def teardown(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)

    def path(self, index: int) -> Path:
        return self.folder / NAMES[index % len(NAMES)]

    def staged(self, data: bytes) -> Path:
        """A new file beside the others (another inode), to be renamed or linked over one of them."""
        self.spare += 1
        spare = self.folder / f".spare{self.spare}"
        spare.write_bytes(data)
        return spare

    def regular(self, index: int) -> bool:
        return not self.path(index).is_symlink()

    # ---------------------------------------------------------------- changes

    @rule(index=st.integers(0, 3), data=st.binary(max_size=300))
    def write_new_bytes(self, index: int, data: bytes) -> None:
        self.path(index).write_bytes(data)

    @rule(index=st.integers(0, 3), other=st.integers(0, 3), data=st.binary(min_size=1, max_size=200))
    def write_two_alike(self, index: int, other: int, data: bytes) -> None:
        """Two files of one size written back to back, usually within one timestamp tick: the same
        size, mtime and ctime, told apart by path and inode alone (a symbolic link from one to the
        other, later, gives the first path the second's inode)."""
        if index % 4 == other % 4 or not (self.regular(index) and self.regular(other)):
            return
        self.path(index).write_bytes(data)
        self.path(other).write_bytes(bytes((byte + 1) % 256 for byte in data))

    @rule(index=st.integers(0, 3), set_mtime_back=st.booleans())
    def rewrite_same_size(self, index: int, set_mtime_back: bool) -> None:
        """Other bytes in place (same inode, same size), its mtime set back as ``cp -p`` would."""
        path = self.path(index)
        before = path.stat()
        old = path.read_bytes()
        with open(path, "r+b") as handle:
            handle.write(bytes((byte + 1) % 256 for byte in old))
        if set_mtime_back:
            os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))

    @rule(index=st.integers(0, 3), size=st.integers(0, 120), set_mtime_back=st.booleans())
    def truncate(self, index: int, size: int, set_mtime_back: bool) -> None:
        path = self.path(index)
        before = path.stat()
        os.truncate(path, size)
        if set_mtime_back:
            os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))

    @rule(index=st.integers(0, 3), data=st.binary(min_size=1, max_size=50))
    def append(self, index: int, data: bytes) -> None:
        with open(self.path(index), "ab") as handle:
            handle.write(data)

    @rule(index=st.integers(0, 3), same_bytes_length=st.booleans(), set_mtime_back=st.booleans())
    def rename_over(self, index: int, same_bytes_length: bool, set_mtime_back: bool) -> None:
        """Another file renamed over it (an atomic writer's way), of the same size and, if asked, the
        same mtime: only the inode and ctime tell them apart."""
        path = self.path(index)
        before = path.stat()
        old = path.read_bytes()
        spare = self.staged(bytes((byte + 7) % 256 for byte in old) if same_bytes_length else old + b"!")
        if set_mtime_back:
            os.utime(spare, ns=(before.st_atime_ns, before.st_mtime_ns))
        os.replace(spare, path)

    @rule(index=st.integers(0, 3), source=st.integers(0, 3))
    def hardlink_over(self, index: int, source: int) -> None:
        """Another of the files hard-linked over this one: both names are then one inode."""
        if index % 4 == source % 4 or not self.regular(source):
            return
        self.spare += 1
        link = self.folder / f".link{self.spare}"
        os.link(self.path(source), link)
        os.replace(link, self.path(index))

    @rule(index=st.integers(0, 3), source=st.integers(0, 3))
    def symlink_over(self, index: int, source: int) -> None:
        """A symbolic link to another (regular) file replaces it: the path reads the target's bytes."""
        if index % 4 == source % 4 or not self.regular(source):
            return
        self.spare += 1
        link = self.folder / f".symlink{self.spare}"
        link.symlink_to(self.path(source).name)
        os.replace(link, self.path(index))

    @rule(index=st.integers(0, 3), data=st.binary(max_size=120), set_mtime_back=st.booleans())
    def delete_and_make_again(self, index: int, data: bytes, set_mtime_back: bool) -> None:
        """Removed, then made again (the file system may give it the freed inode back)."""
        path = self.path(index)
        before = path.stat()
        path.unlink()
        path.write_bytes(data)
        if set_mtime_back:
            os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))

    @rule(index=st.integers(0, 3))
    def chmod(self, index: int) -> None:
        """Its mode changes (so its ctime), its bytes do not."""
        path = self.path(index)
        os.chmod(path, 0o600 if path.stat().st_mode & 0o044 else 0o644)

    @rule(index=st.integers(0, 3))
    def touch(self, index: int) -> None:
        os.utime(self.path(index))

    @rule(index=st.integers(0, 3))
    def settle_and_ask(self, index: int) -> None:
        """Time passes, then the file is hashed: its digest is recorded (in memory and on disk), so
        that the changes that follow are made to a file the cache knows."""
        time.sleep(SETTLE_NS * 1.5 / 1e9)
        path = self.path(index)
        self.check_answer(path, sha256_file(path))

    @rule()
    def forget_in_process(self) -> None:
        """A new run: only the cache on disk remembers."""
        digests.forget_digests()

    # ---------------------------------------------------------------- questions

    def check_answer(self, path: Path, answer: str) -> None:
        assert answer == truth(path), f"{path.name}: {answer} served for bytes whose sha256 is {truth(path)}"

    @invariant()
    def every_answer_is_the_current_bytes_sha256(self) -> None:
        """After any step, what the cache knows for each file's current stamp, if anything, is its
        digest; and ``sha256_file`` (cache keys, ci's "unchanged") answers hashlib's."""
        for index in range(len(NAMES)):
            path = self.path(index)
            stamp = FileStamp.current(path)
            assert stamp is not None
            known = known_digest(stamp)
            if known is not None:
                self.check_answer(path, known)
                served["memory_or_disk"] += 1
            self.check_answer(path, sha256_file(path))

    @rule(index=st.integers(0, 3))
    def ask_after_a_prefetch(self, index: int) -> None:
        """``check``'s way: a hash started ahead on a thread, then waited for."""
        path = self.path(index)
        prefetch_digest(path)
        self.check_answer(path, sha256_file(path))

    @rule(index=st.integers(0, 3))
    def read_as_the_loader_does(self, index: int) -> None:
        path = self.path(index)
        data, digest = read_hashed(path, path.stat().st_size)
        assert bytes(data) == path.read_bytes()
        self.check_answer(path, digest)

    @precondition(lambda self: self.children < 1)  # a process costs ~0.2 s: once a run
    @rule()
    def ask_another_process(self) -> None:
        """The next run (``ci``, ``build``) reads the cache on disk this one wrote."""
        self.children += 1
        paths = [str(self.path(index)) for index in range(len(NAMES))]
        done = subprocess.run(
            [sys.executable, "-c", CHILD, str(SETTLE_NS), *paths], capture_output=True, text=True, env=os.environ
        )
        assert done.returncode == 0, done.stderr
        for name, (known, digest) in json.loads(done.stdout).items():
            self.check_answer(Path(name), digest)
            if known is not None:
                self.check_answer(Path(name), known)
                served["other_process"] += 1

    @invariant()
    def every_entry_on_disk_is_whole(self) -> None:
        """Each entry file in ``digests/`` is a JSON object (writes are atomic): never a torn one."""
        folder = digest_dir()
        if folder.is_dir():
            for entry in folder.glob("*.json"):
                with contextlib.suppress(FileNotFoundError):
                    assert isinstance(json.loads(entry.read_bytes()), dict), entry


def test_the_digest_is_always_the_current_bytes_sha256() -> None:
    served.update(memory_or_disk=0, other_process=0)
    run_state_machine_as_test(DigestCache, settings=settings(max_examples=20, stateful_step_count=25))
    # the runs exercised a cache that answers, in this process and in the next one
    assert served["memory_or_disk"] > 0 and served["other_process"] > 0, served


# ---------------------------------------------------------------- concurrent writers

#: a writer process: forgets, removes entries and hashes the files again, over and over, with a
#: small bound so that it also removes the other writer's entries (``_bound``); argv: rounds, paths
WRITER = (
    "import contextlib, os, sys\n"
    "from pathlib import Path\n"
    "from trtforge import digests\n"
    "digests.SETTLE_NS = 1\n"
    "digests.MAX_DIGESTS = 6\n"
    "paths = [Path(p) for p in sys.argv[2:]]\n"
    "for round in range(int(sys.argv[1])):\n"
    "    digests.forget_digests()\n"
    "    for path in paths:\n"
    "        if round % 3 == 0:\n"
    "            with contextlib.suppress(FileNotFoundError):\n"
    "                os.unlink(digests.digest_dir() / digests.FileStamp.current(path).entry_name())\n"
    "        digests.sha256_file(path)\n"
)


def test_two_processes_writing_the_cache_at_once_leave_it_whole(tmp_path: Path) -> None:
    """Two runs (two ``ci`` jobs on one runner) record, re-record and bound the same entries at the
    same time: each entry left is whole and right, the next reader gets every digest right, and no
    temporary of theirs stays."""
    files = []
    for index in range(10):
        path = tmp_path / f"f{index}.onnx"
        path.write_bytes(os.urandom(2000 + index))
        files.append(path)
    time.sleep(0.05)
    writers = [
        subprocess.Popen([sys.executable, "-c", WRITER, "40", *map(str, files)], env=os.environ, stderr=subprocess.PIPE)
        for _ in range(2)
    ]
    for writer in writers:
        _, err = writer.communicate(timeout=120)
        assert writer.returncode == 0, err.decode()
    folder = digest_dir()
    names = os.listdir(folder)
    assert all(name.endswith(".json") for name in names), names  # no temporary left
    for name in names:
        entry = json.loads((folder / name).read_bytes())
        path = Path(entry["path"])
        if FileStamp.current(path) == FileStamp(**{key: entry[key] for key in FileStamp.__dataclass_fields__}):
            assert entry["sha256"] == truth(path)
    digests.forget_digests()
    for path in files:
        assert sha256_file(path) == truth(path)


# ---------------------------------------------------------------- damaged cache files


def _valid_entry(path: Path) -> bytes:
    return json.dumps({**dataclasses.asdict(FileStamp.of(path, path.stat())), "sha256": "0" * 64}).encode()


#: what a damaged entry may hold: any bytes; a torn or cut entry; JSON of the wrong shape; JSON nested
#: deeper than Python's recursion limit (a few KB of brackets)
damaged = st.one_of(
    st.binary(max_size=200),
    st.integers(0, 200).map(lambda cut: ("cut", cut)),
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=5),
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
        max_leaves=8,
    ).map(lambda value: json.dumps(value).encode()),
    st.integers(1, 3000).map(lambda depth: b"[" * depth),
    st.integers(1, 1500).map(lambda depth: b'{"path":' * depth + b"1" + b"}" * depth),
)


@settings(max_examples=60)
@given(garbage=damaged)
def test_a_damaged_digest_entry_is_a_miss_never_an_error_nor_a_wrong_digest(
    tmp_path: Path, garbage: bytes | tuple[str, int]
) -> None:
    path = tmp_path / "model.onnx"
    if not path.exists():
        path.write_bytes(b"the model" * 50)
        time.sleep(SETTLE_NS * 1.5 / 1e9)
    entry = digest_dir() / FileStamp.of(path, path.stat()).entry_name()
    entry.parent.mkdir(parents=True, exist_ok=True)
    data = _valid_entry(path)[: garbage[1]] if isinstance(garbage, tuple) else garbage
    entry.write_bytes(data)
    digests.forget_digests()
    assert known_digest(FileStamp.of(path, path.stat())) in (None, "0" * 64)
    if isinstance(garbage, tuple) and garbage[1] >= len(_valid_entry(path)):
        return  # the whole forged entry for the exact stamp: served, as designed (test_digest_cache.py)
    assert sha256_file(path) == truth(path)


@settings(max_examples=25)
@given(garbage=damaged)
def test_a_damaged_external_data_names_entry_is_a_miss(tmp_path: Path, garbage: bytes | tuple[str, int]) -> None:
    """The names of a model's external data files, cached under the .onnx file's sha256 beside the
    digests: damaged, they are read from the graph again, and the content digest is the model's."""
    import models

    from trtforge.model import content_sha256, model_files

    model = tmp_path / "conv.onnx"
    if not model.exists():
        models.conv_net(model)
    entry = digest_dir() / "external-data" / f"{truth(model)}.json"
    entry.parent.mkdir(parents=True, exist_ok=True)
    entry.write_bytes(b'["conv.onnx.data"]'[: garbage[1]] if isinstance(garbage, tuple) else garbage)
    digests.forget_digests()
    assert model_files(model) == [model]  # conv_net keeps its weights inside the .onnx
    with contextlib.suppress(ValueError, RecursionError):
        names = json.loads(entry.read_bytes())
        if isinstance(names, list) and names and all(isinstance(name, str) for name in names):
            return  # an entry naming files for this exact content is taken at its word, as designed
    assert content_sha256(model) == truth(model)


# ---------------------------------------------------------------- regressions (example-based)

#: brackets nested past Python's recursion limit: what a damaged or planted cache file may hold,
#: which ``json.loads`` answers with RecursionError (not a ValueError)
TOO_DEEP = b"[" * 3000

FP16_SPEC = (
    "name: conv\nmodel: {models}/conv.onnx\nprecision: fp16\nbackend: tensorrt-rtx\ntargets: ['8.6']\n"
    "profiles:\n  - input: {min: [1, 3, 16, 16], opt: [2, 3, 16, 16], max: [4, 3, 16, 16]}\n"
)


def dead_pid() -> int:
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def test_cache_files_nested_past_the_recursion_limit_are_misses_not_exit_1(
    tmp_path: Path, write_spec: Any, model_dir: Path, isolated_cache: Path
) -> None:
    """Every cache file a build or ci reads (the digest entry, the external data names, the overflow
    guard's choice, the rerun record, a dead commit's journal in --out, calibration scales) holding
    brackets nested 3000 deep: was exit 1 (RecursionError: an internal error); now a miss."""
    import models
    from clitools import cli

    from trtforge.calibration.cache import read_scales
    from trtforge.rerun import RERUN_DIR

    models.need_rtx()
    spec = write_spec(FP16_SPEC)
    out = tmp_path / "out"
    model = model_dir / "conv.onnx"
    assert cli("build", spec, "--out", out)[0] == 0
    (digest_dir() / "external-data").mkdir(parents=True, exist_ok=True)
    planted = [
        digest_dir() / FileStamp.of(model, model.stat()).entry_name(),
        digest_dir() / "external-data" / f"{truth(model)}.json",
        *(isolated_cache / "fp16-guard").glob("*.json"),
        out / f".trtforge-commit@conv-fp16.{dead_pid()}-abcd1234.journal.tmp",
    ]
    assert len(planted) == 4
    for path in planted:
        path.write_bytes(TOO_DEEP)
    digests.forget_digests()
    code, _, err = cli("build", spec, "--out", out)
    assert code == 0, err
    (engine,) = out.glob("*.engine")
    assert cli("check", engine, "--cc", "8.6")[0] == 0

    for _ in range(2):  # the second, unchanged, records the run
        assert cli("ci", spec, "--out", out, "--jobs", "1")[0] == 0
    (record,) = (isolated_cache / RERUN_DIR).glob("*.json")
    record.write_bytes(TOO_DEEP)
    code, _, err = cli("ci", spec, "--out", out, "--jobs", "1")
    assert code == 0 and "unchanged" in err, err

    scales = tmp_path / "scales.json"
    scales.write_bytes(TOO_DEEP)
    assert read_scales(scales, "key") is None


def test_a_dead_runs_temporaries_in_the_digest_cache_go_with_the_next_build(
    tmp_path: Path, write_spec: Any, isolated_cache: Path
) -> None:
    """A run killed while it wrote a digest entry or a model's external data names leaves a
    temporary in ``digests/`` or ``digests/external-data/``: the next build removes it (README: the
    temporaries of dead runs go), also with ``--cache-dir`` elsewhere (the digest cache is the host's).
    The external data names one was never removed (two folders down, past the cache sweep's depth)."""
    import models
    from clitools import cli

    models.need_rtx()
    spec = write_spec(FP16_SPEC.replace("fp16", "fp32") + "accuracy: {enabled: false}\n")
    names = digest_dir() / "external-data"
    names.mkdir(parents=True)
    for cache_dir in (isolated_cache, tmp_path / "elsewhere"):
        left = [
            names / f".{'a' * 64}.json.{dead_pid()}-abcd1234.tmp",
            digest_dir() / f".b.json.{dead_pid()}-efgh5678.tmp",
        ]
        for path in left:
            path.write_bytes(b"torn")
        code, _, err = cli("build", spec, "--out", tmp_path / "out", "--cache-dir", cache_dir)
        assert code == 0, err
        assert not [path for path in left if path.exists()], cache_dir
        assert "removed 2 stale temporaries of dead runs" in err
