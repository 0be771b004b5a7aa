"""`trtforge ci` reruns answered from the record of the last all-unchanged run (`trtforge.rerun`):
an untouched project is answered without parsing a spec, and any change to what a verdict rests
on (model, data, spec, artifact, the spec folder, the project file) runs the full check, whose
answer is the one reported."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import models
import numpy as np
import pytest

models.need_rtx()

PROFILE = "profiles:\n  - input: {min: [1, 3, 16, 16], opt: [4, 3, 16, 16], max: [8, 3, 16, 16]}\n"
COMMON = f"model: conv.onnx\ntargets: ['8.6']\n{PROFILE}"
#: files settle after 50 ms here (the default is 2 s); the last stderr line says whether the
#: process parsed a spec (imported trtforge.spec), which a replayed rerun never does
_RUN = """
import json, runpy, sys
from trtforge import digests
digests.SETTLE_NS = 50_000_000
sys.argv = ["trtforge", *sys.argv[1:]]
try:
    runpy.run_module("trtforge", run_name="__main__", alter_sys=True)
finally:
    print(json.dumps("trtforge.spec" in sys.modules), file=sys.stderr)
"""


def _ci(
    project: Path | None, out: Path, cwd: Path | None = None, home: Path | None = None
) -> tuple[dict[str, str], bool, dict]:
    """Statuses by spec file, whether a spec was parsed, and the JSON document (``project``
    None: ``ci`` without a folder, in ``cwd``; ``home``: its ``$HOME``)."""
    time.sleep(0.1)  # what the previous step wrote has settled
    folder = [str(project)] if project is not None else []
    done = subprocess.run(
        [sys.executable, "-c", _RUN, "ci", *folder, "--out", str(out), "--json"],
        capture_output=True,
        text=True,
        env={**os.environ, "HOME": str(home)} if home is not None else os.environ,
        cwd=cwd,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    document = json.loads(done.stdout)
    statuses = {Path(result["spec"]).name: result["status"] for result in document["results"]}
    return statuses, json.loads(done.stderr.strip().splitlines()[-1]), document


@pytest.fixture
def recorded(tmp_path: Path) -> tuple[Path, Path]:
    """A project of an fp32 spec and an int8 spec calibrated on data/*.npy, built, then rerun
    once unchanged (which records the rerun)."""
    root = tmp_path / "project"
    (root / "data").mkdir(parents=True)
    models.conv_net(root / "conv.onnx")
    for index in range(2):
        np.save(root / "data" / f"batch{index}.npy", np.random.default_rng(index).random((8, 3, 16, 16), np.float32))
    (root / "fp32.yaml").write_text(f"name: conv\nprecision: fp32\n{COMMON}")
    (root / "int8.yaml").write_text(
        f"name: conv\nprecision: int8\n{COMMON}calibration: {{data: data/*.npy, batch_size: 8}}\n"
        "accuracy: {tolerances: {'*': {cosine_min: 0.9, top1_min: 0.5}}}\n"
    )
    out = tmp_path / "out"
    assert _ci(root, out)[0] == {"fp32.yaml": "built", "int8.yaml": "built"}
    statuses, parsed, _ = _ci(root, out)
    assert statuses == {"fp32.yaml": "unchanged", "int8.yaml": "unchanged"} and parsed
    return root, out


def test_an_untouched_project_is_answered_without_parsing_a_spec(recorded: tuple[Path, Path]) -> None:
    root, out = recorded
    statuses, parsed, document = _ci(root, out)
    assert statuses == {"fp32.yaml": "unchanged", "int8.yaml": "unchanged"} and not parsed
    again, parsed_again, same = _ci(root, out)
    assert again == statuses and not parsed_again
    for result in (*document["results"], *same["results"]):
        assert result["message"] == "inputs unchanged: skipped" and Path(result["engine"]).is_file()
    assert [r["key"] for r in document["results"]] == [r["key"] for r in same["results"]]


def _rewrite_model(root: Path, out: Path) -> None:
    (root / "conv.onnx").write_bytes((root / "conv.onnx").read_bytes())  # same bytes: a new ctime


def _add_data(root: Path, out: Path) -> None:
    np.save(root / "data" / "batch2.npy", np.random.default_rng(9).random((8, 3, 16, 16), np.float32))


def _rewrite_data_in_place_with_its_mtime_set_back(root: Path, out: Path) -> None:
    """Other values in the same file (same inode, same size), its mtime put back with os.utime:
    only its ctime, which no user tool sets back, says it changed."""
    path = root / "data" / "batch0.npy"
    before = path.stat()
    with open(path, "r+b") as handle:
        np.save(handle, np.random.default_rng(99).random((8, 3, 16, 16), np.float32))
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = path.stat()
    assert (after.st_ino, after.st_size, after.st_mtime_ns) == (before.st_ino, before.st_size, before.st_mtime_ns)


def _edit_spec(root: Path, out: Path) -> None:
    (root / "fp32.yaml").write_text((root / "fp32.yaml").read_text() + "# edited\n")


def _delete_engine(root: Path, out: Path) -> None:
    next(out.glob("conv-fp32-*.engine")).unlink()


def _edit_report(root: Path, out: Path) -> None:
    report = next(out.glob("conv-fp32-*.accuracy.json"))
    report.write_text(report.read_text() + " ")


def _leave_a_dead_writer_s_temporary_in_out(root: Path, out: Path) -> None:
    """What a build killed while staging leaves: the next run's sweep removes it (the replay saw
    only the artifacts' own files, so it stayed while every rerun was replayed)."""
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (out / f".conv-fp32.engine.{int(gone.stdout)}-a1b2c3d4.tmp").write_bytes(b"partial")


def _add_spec(root: Path, out: Path) -> None:
    (root / "fp16.yaml").write_text(f"name: conv\nprecision: fp16\n{COMMON}")


def _add_project_file(root: Path, out: Path) -> None:
    (root / "trtforge.yaml").write_text("runners:\n  cpu: [linux]\n")


def _add_subfolder_spec(root: Path, out: Path) -> None:
    (root / "more").mkdir()
    (root / "more" / "fp16.yaml").write_text(
        f"name: conv\nprecision: fp16\nmodel: ../conv.onnx\ntargets: ['8.6']\n{PROFILE}"
    )


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (_rewrite_model, {"fp32.yaml": "unchanged", "int8.yaml": "unchanged"}),
        (_add_data, {"fp32.yaml": "unchanged", "int8.yaml": "built"}),
        (_rewrite_data_in_place_with_its_mtime_set_back, {"fp32.yaml": "unchanged", "int8.yaml": "built"}),
        (_edit_spec, {"fp32.yaml": "built", "int8.yaml": "unchanged"}),
        (_delete_engine, {"fp32.yaml": "restored", "int8.yaml": "unchanged"}),
        (_edit_report, {"fp32.yaml": "restored", "int8.yaml": "unchanged"}),
        (_add_spec, {"fp16.yaml": "built", "fp32.yaml": "unchanged", "int8.yaml": "unchanged"}),
        (_add_project_file, {"fp32.yaml": "unchanged", "int8.yaml": "unchanged"}),
        (_leave_a_dead_writer_s_temporary_in_out, {"fp32.yaml": "unchanged", "int8.yaml": "unchanged"}),
        (_add_subfolder_spec, {"fp16.yaml": "built", "fp32.yaml": "unchanged", "int8.yaml": "unchanged"}),
    ],
    ids=lambda value: getattr(value, "__name__", "").strip("_") or None,
)
def test_any_change_runs_the_full_check(
    recorded: tuple[Path, Path], change: Callable[[Path, Path], None], expected: dict[str, str]
) -> None:
    root, out = recorded
    change(root, out)
    statuses, parsed, _ = _ci(root, out)
    assert parsed and statuses == expected
    assert not list(out.glob(".*.tmp"))


@pytest.mark.parametrize("name", ["fp32.yaml", "conv.onnx", "data/batch0.npy"])
def test_a_replay_refuses_a_junit_that_is_one_of_the_files_it_rests_on(
    recorded: tuple[Path, Path], tmp_path: Path, name: str
) -> None:
    """The record holds every file the run rests on: a ``--junit`` that is one of them (a spec, the
    model, a calibration data file; here under another name, a hard link outside the watched
    folders) is refused without parsing a spec, and left as it was (the replayed run wrote its
    report over it)."""
    root, out = recorded
    junit = tmp_path / "junit.xml"
    os.link(root / name, junit)
    statuses, parsed, _ = _ci(root, out)  # the new link changed the file's ctime: run in full, recorded again
    assert parsed and statuses == {"fp32.yaml": "unchanged", "int8.yaml": "unchanged"}
    before = junit.read_bytes()
    time.sleep(0.1)  # settled
    done = subprocess.run(
        [sys.executable, "-c", _RUN, "ci", str(root), "--out", str(out), "--junit", str(junit)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    *lines, parsed_now = done.stderr.strip().splitlines()
    assert done.returncode == 2 and json.loads(parsed_now) is False, done.stderr
    assert lines == [
        f"error: --junit {junit} is an input of this command ({root / name}): the report would replace it; "
        f"point it at another file, e.g. {tmp_path / 'report.xml'}"
    ]
    assert junit.read_bytes() == before and (root / name).samefile(junit)


def test_a_corrupt_record_runs_the_full_check(recorded: tuple[Path, Path]) -> None:
    root, out = recorded
    (record,) = (Path(os.environ["TRTFORGE_CACHE_DIR"]) / "ci-reruns").glob("*.json")
    record.write_text("{not json")
    statuses, parsed, _ = _ci(root, out)
    assert parsed and statuses == {"fp32.yaml": "unchanged", "int8.yaml": "unchanged"}


def test_without_a_folder_the_default_root_is_recorded_and_watched(recorded: tuple[Path, Path]) -> None:
    root, out = recorded
    unchanged = {"fp32.yaml": "unchanged", "int8.yaml": "unchanged"}
    assert _ci(None, out, cwd=root)[:2] == (unchanged, True)  # another command line: recorded now
    assert _ci(None, out, cwd=root)[:2] == (unchanged, False)
    (root / "configs").mkdir()  # where trtforge.yaml could now appear: the default root may move
    assert _ci(None, out, cwd=root)[:2] == (unchanged, True)


def test_weights_edited_in_external_data_are_not_replayed(tmp_path: Path) -> None:
    """A model's external data file is among what a replay rests on: its weights zeroed (the .onnx
    the same) run the full check, which builds."""
    import onnx

    root, out = tmp_path / "project", tmp_path / "out"
    root.mkdir()
    model = models.conv_net(root / "conv.onnx")
    onnx.save(
        onnx.load(str(model)), str(model), save_as_external_data=True, location="conv.onnx.data", size_threshold=0
    )
    (root / "fp32.yaml").write_text(f"name: conv\nprecision: fp32\n{COMMON}")
    assert _ci(root, out)[0] == {"fp32.yaml": "built"}
    assert _ci(root, out)[:2] == ({"fp32.yaml": "unchanged"}, True)
    assert _ci(root, out)[:2] == ({"fp32.yaml": "unchanged"}, False)
    data = root / "conv.onnx.data"
    data.write_bytes(bytes(data.stat().st_size))
    assert _ci(root, out)[:2] == ({"fp32.yaml": "built"}, True)


def test_a_home_relative_model_is_replayed_only_under_the_same_home(tmp_path: Path) -> None:
    """``model: ~/m/conv.onnx`` is another file under another ``$HOME``: the record of one home
    never answers for the other, whose model differs."""
    root, out = tmp_path / "project", tmp_path / "out"
    root.mkdir()
    homes = [tmp_path / "home-a", tmp_path / "home-b"]
    for seed, home in enumerate(homes):
        (home / "m").mkdir(parents=True)
        models.conv_net(home / "m" / "conv.onnx", seed=seed)
    (root / "fp32.yaml").write_text(f"name: conv\nprecision: fp32\nmodel: ~/m/conv.onnx\ntargets: ['8.6']\n{PROFILE}")
    assert _ci(root, out, home=homes[0])[0] == {"fp32.yaml": "built"}
    assert _ci(root, out, home=homes[0])[:2] == ({"fp32.yaml": "unchanged"}, True)
    assert _ci(root, out, home=homes[0])[:2] == ({"fp32.yaml": "unchanged"}, False)
    assert _ci(root, out, home=homes[1])[:2] == ({"fp32.yaml": "built"}, True)
