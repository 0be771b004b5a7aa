"""How the benchmarks measure: each baseline does the work trtforge does, rows compared in a goal
are timed in the same rounds, and a run that failed never counts as a goal met.

The scripts in ``benchmarks/`` are loaded as modules from their files (the folder is no package);
their expensive steps are replaced, so these tests time nothing.
"""

from __future__ import annotations

import argparse
import ast
import importlib.util
import json
import subprocess
import sys
import threading
from pathlib import Path
from types import ModuleType, SimpleNamespace

import pytest
from models import need_rtx

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def load(name: str, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """``benchmarks/NAME.py`` as a module; the folder is on ``sys.path`` for this test only (the
    scripts import each other)."""
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    spec = importlib.util.spec_from_file_location(f"benchmark_{name}", BENCHMARKS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_ci_cache_times_both_sizes_in_the_same_rounds_after_an_untimed_warm_up(monkeypatch: pytest.MonkeyPatch) -> None:
    """The first size's cold run once compiled every module a build imports (the bytecode folder
    starts empty): 1.36 s against 1.05 s for the 20 MB model. And the flatness ratio compared
    steady reruns timed minutes apart, one size after the other."""
    ci_cache = load("ci_cache", monkeypatch)
    order: list[str] = []

    def run_ci(root: Path, out: Path, cache: Path, jobs: int) -> tuple[float, dict[str, int]]:
        order.append(root.parent.name)
        return 0.2, {"unchanged": 2}

    monkeypatch.setattr(ci_cache, "run_ci", run_ci)
    monkeypatch.setattr(ci_cache, "seconds_of", lambda command: order.append("help") or 0.1)
    monkeypatch.setattr(ci_cache, "time", SimpleNamespace(sleep=lambda seconds: None, perf_counter=lambda: 0.0))
    measured = ci_cache.measure([("fp32", ["8.6"]), ("fp32", ["8.9"])], (1, 2), jobs=1, rounds=3, quick=True)
    assert order == [
        *("warm-up", "warm-up"),  # untimed: a cold run and a rerun of a project of its own
        *("1mb", "2mb"),  # cold
        *("1mb", "2mb"),  # 1st unchanged rerun
        *("help", "1mb", "2mb", "help", "2mb", "1mb", "help", "1mb", "2mb"),  # rounds, sizes in turn first
        *("1mb", "2mb"),  # one spec changed
    ]
    assert measured["steady"] == {1: [0.2] * 3, 2: [0.2] * 3} and len(measured["help"]) == 3


def calibration_row(samples: int, ranges: dict[str, object]) -> dict[str, object]:
    floor = {"seconds": 1.0, "cpu_seconds": 1.0, "rss_mib": 300.0, "result": "ok", "runs": 1}
    return {"samples": samples, "floor": floor, "trtforge-ranges": ranges}


def test_calibration_run_out_of_memory_misses_the_goals(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A run of trtforge that died for memory at the largest count once read "not measured" for
    time and "met" for memory: its peak RSS is where it was stopped, as flat as the others."""
    calibration = load("calibration", monkeypatch)
    finished = {"seconds": 0.9, "cpu_seconds": 0.9, "rss_mib": 310.0, "result": "ok", "runs": 1}
    killed = {"seconds": None, "rss_mib": 311.0, "result": "out of memory", "runs": 1}
    rows = [calibration_row(64, finished), calibration_row(1024, killed)]
    calibration.report(rows, argparse.Namespace(size=64, memory_limit_gib=1))
    captured = capsys.readouterr()
    goals = json.loads(captured.out)["goals"]
    assert goals["floor_goal_met"] is False and goals["memory_goal_met"] is False
    assert goals["failed_runs"] == {"64": [], "1024": ["trtforge-ranges"]}
    assert "(ours ranges)/floor None <= 1.0: MISSED" in captured.err and "<= 1.1: MISSED" in captured.err


def test_calibration_memory_growth_is_from_the_smallest_count_whatever_the_order(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--samples 1024 64`` once made the 1024 row the base of ``rss_vs_smallest``."""
    calibration = load("calibration", monkeypatch)
    rows = [
        calibration_row(1024, {"seconds": 0.9, "cpu_seconds": 0.9, "rss_mib": 400.0, "result": "ok", "runs": 1}),
        calibration_row(64, {"seconds": 0.9, "cpu_seconds": 0.9, "rss_mib": 320.0, "result": "ok", "runs": 1}),
    ]
    calibration.report(rows, argparse.Namespace(size=64, memory_limit_gib=0))
    document = json.loads(capsys.readouterr().out)
    assert [(row["samples"], row["rss_vs_smallest"]) for row in document["rows"]] == [(64, 1.0), (1024, 1.25)]
    assert document["goals"]["memory_growth"] == 1.25


def test_a_figure_beside_its_verdict_shows_which_side_of_the_bound_it_is_on(monkeypatch: pytest.MonkeyPatch) -> None:
    """A ratio just over its bound printed as the bound itself ("1.20x (<= 1.2x): MISSED"): the
    table rounded, the verdict did not. The verdict stays on the value; the figure gets the digits
    that show why."""
    check_speed = load("check_speed", monkeypatch)
    values = (2.004, 2.0, 1.996, 2.0000001)
    assert [check_speed.figure(value, 2.0) for value in values] == ["2.004", "2.00", "2.00", "2.0000001"]
    assert [check_speed.verdict(value, 2.0) for value in values] == ["MISSED", "met", "met", "MISSED"]
    assert check_speed.figure(150.04, 150.0, 0) == "150.04" and check_speed.figure(149.6, 150.0, 0) == "150"


@pytest.mark.parametrize(
    ("first", "shown"),
    [
        (2.0, "goal: digits warm first request / steady p50: 2.00x (<= 1.2x): MISSED; trials 1.50..3.00x"),
        (1.2004, "goal: digits warm first request / steady p50: 1.2004x (<= 1.2x): MISSED; trials"),
    ],
)
def test_serve_prints_the_verdict_its_json_records_with_its_spread(
    first: float, shown: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    serve = load("serve", monkeypatch)
    timing = {"start_to_ready_s": 0.5, "first_request_ms": 2.0, "steady_p50_ms": 1.0, "after_idle_ms": 2.0}
    ratios = {"first_over_p50": first, "first_over_after_idle": 1.0}
    row = {
        "model": "digits",
        **timing,
        **ratios,
        "first_request_goal_met": False,
        "cold": {**timing, **ratios},
        "load": {"c1": {"p50_ms": 1.0, "p99_ms": 2.0, "requests_per_s": 900.0}},
        "in_process_p50_ms": 0.1,
        "http_over_in_process": 10.0,
        "trials": {"warm": [{"first_over_p50": ratio} for ratio in (1.5, 2.0, 3.0)]},
    }
    host = {"steady_p50_ms": 0.2, "after_idle_ms": 1.0, "after_idle_over_p50": 5.0}
    serve.render([row], host, argparse.Namespace(pool=2, trials=3))
    assert shown in capsys.readouterr().err


def test_serve_load_exits_saying_why_when_a_client_fails_before_the_start(monkeypatch: pytest.MonkeyPatch) -> None:
    """A client that failed to connect left the others, and the script, waiting at the start
    barrier forever: it breaks the barrier, and the script exits (non-zero) saying why."""
    serve = load("serve", monkeypatch)

    def refused(port: int) -> None:
        raise ConnectionRefusedError(111, "Connection refused")

    monkeypatch.setattr(serve, "client_infer", refused)
    ended: list[SystemExit] = []

    def measure() -> None:
        try:
            serve.under_load(1, {}, requests=4, concurrency=2)
        except SystemExit as exc:
            ended.append(exc)

    worker = threading.Thread(target=measure, daemon=True)  # a hang fails the test, not the suite
    worker.start()
    worker.join(timeout=10)
    assert not worker.is_alive(), "under_load still waits at its start barrier"
    assert [str(exc.code) for exc in ended] == [
        "2 of 2 clients failed before the start at concurrency 2, the first with ConnectionRefusedError: "
        "[Errno 111] Connection refused"
    ]


def test_the_direct_build_writes_its_engine_without_copying_it(tmp_path: Path) -> None:
    """trtforge writes TensorRT's buffer itself; the baseline copied it first (``bytes(engine)``:
    ~20 ms more for ResNet-18 224's 47 MB engine, on the baseline's side of the ratio). The real
    TensorRT-RTX's serialized engine is written as it is, whole."""
    need_rtx()
    source = (BENCHMARKS / "build_overhead.py").read_text()
    direct = next(
        ast.literal_eval(node.value)
        for node in ast.parse(source).body
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "DIRECT" for t in node.targets)
    )
    assert "write_bytes(bytes(" not in direct
    (tmp_path / "direct.py").write_text(direct)
    engine = tmp_path / "direct.engine"
    profile = json.dumps({"input": [[1, 1, 8, 8], [16, 1, 8, 8], [32, 1, 8, 8]]})
    model = BENCHMARKS.parent / "calibration" / "digits" / "digits_cnn.onnx"
    done = subprocess.run(
        [sys.executable, str(tmp_path / "direct.py"), str(model), str(engine), "fp32", profile, "[]"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert engine.stat().st_size > 100_000  # the digits CNN's engine: ~440 KB


def test_pool_judges_the_first_request_beside_its_spread_over_trials(monkeypatch: pytest.MonkeyPatch) -> None:
    """The first-request ratio is one request per fresh process: the verdict on its median comes
    with every trial's ratio in the JSON and their range in the table."""
    pool = load("pool", monkeypatch)
    row = pool_row(pool, 1.1, 1.0, trials=(1.0, 1.1, 1.9))
    assert row["warm_first_request_to_p50_trials"] == [1.0, 1.1, 1.9] and row["first_request_ok"]
    assert "1.00..1.90" in pool.goals_table([row])


def test_pool_shows_a_figure_just_over_its_bound_with_the_digits_that_missed(monkeypatch: pytest.MonkeyPatch) -> None:
    pool = load("pool", monkeypatch)
    row = pool_row(pool, 1.2004, 5.001, trials=(1.2004,))
    assert not row["first_request_ok"] and not row["overhead_ok"]
    table = pool.goals_table([row])
    assert "1.2004 (<= 1.2)" in table and "5.001 (<= 5)" in table and "first request MISSED" in table


def pool_row(pool: ModuleType, first: float, overhead_us: float, trials: tuple[float, ...]) -> dict[str, object]:
    """``pool.goals``'s row of one model: its first-request ratio, its overhead, each trial's ratio."""
    runs = [{"scenarios": [{"name": "warm", "ratios": {"first_request_to_p50": ratio}}]} for ratio in trials]
    summary = {"warm": {"first_request_to_p50": first}}
    overhead = {"overhead_us": overhead_us, "overhead_spread_us": {"min": 0.5, "max": 2.0}, "bare_p50_us": 10.0}
    overhead |= {"pool_p50_us": 11.0, "diff_of_medians_us": 1.0, "ort_run_us": 3.0, "pool_path_us": 4.0}
    return pool.goals("digits", summary, runs, overhead)


def test_calibration_peak_rss_is_the_childs_own_not_its_parents(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Linux keeps a parent's peak RSS in the ``ru_maxrss`` of the child it starts (across exec):
    every kind once reported at least the benchmark's own peak (316 MiB after building the model),
    the plain-inference floor included, and "peak memory flat in the samples" was flat by
    construction."""
    calibration = load("calibration", monkeypatch)
    model, data = tmp_path / "model.onnx", tmp_path / "data"
    calibration.resnet18(model, 8)
    calibration.write_data(data, 16, 8)
    ballast = bytearray(b"\1") * (700 << 20)  # written: every page resident in this process
    measured = calibration.measure("floor", model, data, 16, tmp_path / "out", 0)
    del ballast
    assert measured["result"] == "ok" and measured["rss_mib"] < 600, measured
