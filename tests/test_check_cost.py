"""`check`/`inspect` cost about one hash of the engine: the CLI starts hashing the engine it is
given before its own imports (`cli.early`), and the command reads the file once, waiting for that
hash instead of hashing again."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_startup_imports import manifest_only  # noqa: F401  (the fixture: an engine and its manifest)

from trtforge import digests, filehash
from trtforge.cli.early import engine_to_hash
from trtforge.digests import prefetch_digest, sha256_bytes, sha256_file

#: counts the engine's opens and the thread of each, then runs `python -m trtforge ARGS`; files
#: settle at once here, so a digest taken in the background is kept for the command itself
_COUNTED_RUN = """
import json, runpy, sys, threading
from trtforge import digests
digests.SETTLE_NS = 0
engine, args = sys.argv[1], sys.argv[2:]
opens = []
def hook(event, payload):
    if event == "open" and str(payload[0]) == engine:
        opens.append(threading.current_thread().name)
sys.addaudithook(hook)
sys.argv = ["trtforge", *args]
try:
    runpy.run_module("trtforge", run_name="__main__", alter_sys=True)
finally:
    print(json.dumps(opens), file=sys.stderr)
"""


def test_engine_to_hash_is_the_engine_check_or_inspect_names(tmp_path: Path) -> None:
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"x")
    manifest = tmp_path / "m.manifest.json"
    main = str(Path("trtforge", "__main__.py"))
    assert engine_to_hash(["trtforge", "check", str(engine), "--cc", "8.6"]) == str(engine)
    assert engine_to_hash([main, "check", "--cc", "8.6", str(engine)]) == str(engine)
    assert engine_to_hash(["/venv/bin/trtforge", "inspect", str(manifest)]) == str(engine)
    # other programs, other commands, help, a missing file, two candidates: nothing is started
    assert engine_to_hash(["pytest", "check", str(engine)]) is None
    assert engine_to_hash(["trtforge", "sign", str(engine)]) is None
    assert engine_to_hash(["trtforge", "check", str(engine), "--help"]) is None
    assert engine_to_hash(["trtforge", "check", str(tmp_path / "gone.engine")]) is None
    assert engine_to_hash(["trtforge", "check", str(engine), str(engine)]) is None


@pytest.mark.parametrize(
    "command", [["check", "--cc", "8.6", "--json"], ["inspect", "--json"]], ids=["check", "inspect"]
)
def test_cli_hashes_the_engine_once_in_the_background(
    manifest_only: Path,  # noqa: F811
    command: list[str],
    tmp_path: Path,
) -> None:
    time.sleep(0.05)  # past the file system's timestamp tick: the stamp taken now is final
    args = [command[0], str(manifest_only), *command[1:]]
    env = {**os.environ, "TRTFORGE_CACHE_DIR": str(tmp_path / "cache")}
    done = subprocess.run(
        [sys.executable, "-c", _COUNTED_RUN, str(manifest_only), *args], capture_output=True, text=True, env=env
    )
    assert done.returncode == 0, done.stderr
    opens = json.loads(done.stderr.strip().splitlines()[-1])
    assert opens == ["trtforge-prefetch-digest"]  # read once, by the hash started before the imports
    report = json.loads(done.stdout)
    digest = sha256_bytes(manifest_only.read_bytes())
    if command[0] == "check":
        assert report["compatible"] is True
        assert report["sha256"]["engine"] == digest
    else:
        assert report["engine"]["sha256"] == digest
        assert report["engine"]["matches_manifest"] is True


def test_prefetched_digest_is_the_files_and_never_served_for_a_changed_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TRTFORGE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(digests, "_memory", {})
    monkeypatch.setattr(digests, "_prefetches", {})  # other tests may leave a prefetch nobody awaited
    path = tmp_path / "a.engine"
    path.write_bytes(b"first" * 1000)
    prefetch_digest(path)
    assert sha256_file(path) == sha256_bytes(b"first" * 1000)
    path.write_bytes(b"second" * 1000)
    prefetch_digest(path)
    path.write_bytes(b"third!" * 1000)  # same size, rewritten while (or after) the background hash ran
    assert sha256_file(path) == sha256_bytes(b"third!" * 1000)
    assert digests._prefetches == {}  # each background hash was waited for by the reader


def test_a_running_prefetch_shortens_the_switch_interval_and_the_last_one_restores_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While a background hash runs, the main thread hands it the GIL within the short interval
    (so the hash keeps pace with the imports); once every prefetch has ended, the interval is the
    one the process had."""
    monkeypatch.setenv("TRTFORGE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(digests, "_memory", {})
    monkeypatch.setattr(digests, "_prefetches", {})
    before = sys.getswitchinterval()
    paths = [tmp_path / f"{index}.engine" for index in range(2)]
    for index, path in enumerate(paths):
        path.write_bytes(bytes([index]) * 32 * 1024 * 1024)  # long enough to be seen running
    threads = []
    for path in paths:
        prefetch_digest(path)
        threads.append(digests._prefetches[os.path.abspath(path)].thread)
        interval = sys.getswitchinterval()
        if threads[0].is_alive():  # so it was running when the interval was read
            assert interval == pytest.approx(filehash.PREFETCH_SWITCH_S)
    for path in paths:
        assert sha256_file(path) == sha256_bytes(path.read_bytes())
    assert not any(thread.is_alive() for thread in threads)
    assert sys.getswitchinterval() == pytest.approx(before)


def test_a_prefetch_of_an_unreadable_file_answers_none_and_restores_the_interval(tmp_path: Path) -> None:
    """The reader that needs the file reports why it cannot be read; the background hash only
    gives up, and hands the switch interval back."""
    before = sys.getswitchinterval()
    prefetch = filehash.Prefetch(str(tmp_path / "gone.engine"))
    assert prefetch.result() is None
    assert sys.getswitchinterval() == pytest.approx(before)
    folder = filehash.Prefetch(str(tmp_path))  # a folder: open() fails with IsADirectoryError
    assert folder.result() is None


def test_a_prefetch_the_digest_cache_makes_needless_is_cancelled(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A warm cache answers at once, and the hash started ahead stops after its chunk instead of
    reading the rest of the file in the background."""
    monkeypatch.setenv("TRTFORGE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(digests, "_memory", {})
    monkeypatch.setattr(digests, "_prefetches", {})
    monkeypatch.setattr(digests, "SETTLE_NS", 0)
    path = tmp_path / "big.engine"
    path.write_bytes(os.urandom(64 * 1024 * 1024))
    time.sleep(0.05)
    digest = sha256_file(path)  # recorded in the digest cache
    prefetch = filehash.Prefetch(str(path))
    digests.adopt_prefetch(path, prefetch)
    assert sha256_file(path) == digest
    assert prefetch.result() is None  # cancelled: no digest for the file it did not finish
    assert digests._prefetches == {}


def test_a_digest_is_recorded_only_for_a_file_settled_when_it_was_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A background hash of a file changed just before the read is never recorded, however long
    after the read its result is taken."""
    monkeypatch.setenv("TRTFORGE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(digests, "_memory", {})
    path = tmp_path / "fresh.engine"
    path.write_bytes(b"fresh" * 100)
    hashed = filehash.hash_file(str(path))
    assert hashed is not None
    later = hashed.read_ns + 2 * digests.SETTLE_NS
    monkeypatch.setattr(digests.time, "time_ns", lambda: later)  # taken long after the read
    digests._remember(path, hashed)
    assert digests._memory == {}
