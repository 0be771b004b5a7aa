"""``trtforge bench``: the JSON document, the human table, bad input, and the pure helpers."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from models import need_rtx
from typer.testing import CliRunner

import trtforge.bench
from trtforge.bench import (
    MAX_FAILURE_KINDS,
    OTHER_FAILURES,
    BenchConfig,
    Latency,
    burst,
    failure_text,
    most_frequent,
    request_shapes,
)
from trtforge.cli import app
from trtforge.environment import usable_cores
from trtforge.errors import InvalidInputError, TrtforgeError
from trtforge.model import TensorDesc
from trtforge.shapes import parse_inputs, parse_shape

REPO = Path(__file__).resolve().parent.parent
DIGITS = REPO / "calibration" / "digits" / "digits_cnn.onnx"
STATIC = REPO / "calibration" / "digits" / "digits_cnn_static.onnx"

runner = CliRunner()


def _trtforge(*args: str) -> subprocess.CompletedProcess[str]:
    """A real process, so stdout holds exactly what a CI script would read."""
    return subprocess.run(
        [sys.executable, "-m", "trtforge", *args], capture_output=True, text=True, timeout=300, check=False
    )


def test_bench_json_document_shape() -> None:
    done = _trtforge("bench", str(DIGITS), "--pool", "2", "--concurrency", "3", "--requests", "40", "--cold", "--json")
    assert done.returncode == 0, done.stderr
    document = json.loads(done.stdout)  # exactly one JSON document on stdout
    assert set(document) == {
        "artifact", "backend", "providers", "pool", "concurrency", "requests", "shapes",
        "baseline_p50_ms", "scenarios", "device_memory", "suggested_pool_size", "metrics",
    }  # fmt: skip
    assert document["backend"] == "onnxruntime" and document["providers"] == ["CPUExecutionProvider"]
    assert (document["pool"], document["concurrency"], document["requests"]) == (2, 3, 40)
    assert document["shapes"] == {"input": [1, 1, 8, 8]}
    cold, warm = document["scenarios"]
    assert (cold["name"], warm["name"]) == ("cold", "warm")  # cold first: no warm state of the process helps it
    for scenario in (cold, warm):
        assert scenario["burst"]["count"] == 40 and scenario["serial"]["count"] == 40
        assert scenario["errors"] == 0 and scenario["exhausted"] == 0 and scenario["failures"] == {}
        assert 0 < scenario["burst"]["p50"] <= scenario["burst"]["p99"] <= scenario["burst"]["max"]
        assert set(scenario["ratios"]) == {
            "first_request_to_p50", "first_response_to_p50", "burst_p50_to_p50", "burst_p99_to_p50"
        }  # fmt: skip
        assert scenario["startup_ms"] > 0 and scenario["first_request_ms"] > 0
    assert document["baseline_p50_ms"] == warm["serial"]["p50"]
    assert warm["ratios"]["first_request_to_p50"] == pytest.approx(warm["first_request_ms"] / warm["serial"]["p50"])
    # a cold start waits for loading: its first response includes the startup
    assert cold["first_response_ms"] == pytest.approx(cold["startup_ms"] + cold["first_request_ms"])
    assert warm["first_response_ms"] == warm["first_request_ms"]
    assert (cold["warm_runs"], warm["warm_runs"]) == (0, 2)  # one shape on each of the two contexts
    assert document["device_memory"] == {"per_context": None, "shared": None, "total": None, "method": "none"}
    assert document["suggested_pool_size"] is None  # nothing to size by on the CPU
    metrics = document["metrics"]  # the warm pool: first request + burst + serial run
    assert metrics["requests_ok"] == 1 + 40 + 40
    assert metrics["hits"] + metrics["waits"] == 81 and metrics["in_flight"] == 0


def test_bench_table_goes_to_stderr_and_batch_sets_the_shape() -> None:
    done = _trtforge("bench", str(DIGITS), "--pool", "1", "--concurrency", "2", "--requests", "10", "--batch", "8")
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""
    assert "warm" in done.stderr and "p50" in done.stderr and "cold" not in done.stderr.split("p50")[-1]
    assert "burst of 10 from 2 threads" in done.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["missing.onnx"], "model file not found; pass the path of an .onnx file"),  # no spec to point at
        ([str(DIGITS), "--shape", "input=1xx8"], "write NAME=DIMS"),
        ([str(DIGITS), "--shape", "inptu=1x1x8x8"], "did you mean 'input'"),
        ([str(DIGITS), "--shape", "input=1x3x8x8"], "dim 1 is 3, the model needs 1"),
        ([str(DIGITS), "--shape", "input=1x8x8"], "the input has rank 4"),
        ([str(DIGITS), "--provider", "cuda"], "CUDAExecutionProvider is not available"),
        ([str(DIGITS), "--provider", "tpu"], "--provider 'tpu': use cpu or cuda"),
        ([str(DIGITS), "--provider", "CUDA"], "--provider 'CUDA': use cpu or cuda — did you mean 'cuda'?"),
        # onnxruntime made its 100000 threads for minutes, growing memory, deaf to Ctrl-C
        ([str(DIGITS), "--threads", "100000"], "--threads 100000: at most"),
        # the way out names the limit it states (it said "at most 8", then "pass 2 or fewer")
        ([str(DIGITS), "--threads", "100000"], f"pass at most {4 * usable_cores()}, or leave it out"),
        # every latency is kept: memory grew until the process was killed
        ([str(DIGITS), "--requests", "99999999999999999999"], "--requests 99999999999999999999: at most 1,000,000"),
        # one client thread each: they were started until the process was killed
        ([str(DIGITS), "--concurrency", "100000"], "--concurrency 100000: at most 1024 client threads"),
        ([str(REPO / "README.md")], "not an engine artifact"),
        ([str(STATIC), "--batch", "4"], "--batch 4: nothing to apply it to, the model has no dynamic input"),
        ([str(DIGITS), "--shape", "input=2x1x8x8", "--batch", "3"], "its dynamic inputs all have a --shape"),
        (
            [str(DIGITS), "--shape", "input=2x1x8x8", "--shape", "input=3x1x8x8"],
            "--shape input=3x1x8x8: input 'input' already has --shape input=2x1x8x8",
        ),
    ],
)
def test_bench_bad_input_exits_2_with_one_line(tmp_path: Path, args: list[str], message: str) -> None:
    result = runner.invoke(app, ["bench", "--requests", "2", *args, "--json"])
    assert result.exit_code == 2, result.output
    document = json.loads(result.stdout)  # --json: one document, also on failure
    assert document["error"]["exit_code"] == 2 and message in document["error"]["message"]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and message in errors[0], result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [
        ("--pool", "0", "Invalid value for '--pool': Input should be greater than or equal to 1"),
        ("--concurrency", "0", "Invalid value for '--concurrency': Input should be greater than or equal to 1"),
        ("--timeout", "-1", "Invalid value for '--timeout': Input should be greater than or equal to 0"),
    ],
)
def test_bench_usage_errors_exit_2(flag: str, value: str, message: str) -> None:
    """A value the parser refuses never starts the command: exit 2, the parser's one error line
    naming the flag and the range, and no document, --json or not (README "Commands")."""
    result = runner.invoke(app, ["bench", str(DIGITS), flag, value, "--json"])
    assert result.exit_code == 2 and result.stdout == ""
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error: ")]
    assert errors == [f"Error: {message}"], result.stderr
    assert "Traceback" not in result.stderr


def test_bench_refuses_an_engine_this_host_cannot_run(tmp_path: Path, model_dir: Path) -> None:
    need_rtx()
    from trtforge.compat import NO_GPU_MESSAGE
    from trtforge.environment import detect_gpus, detect_platform

    if detect_gpus():
        pytest.skip("a GPU is present: the engine may well load here")
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        f"name: conv\nmodel: {model_dir / 'conv.onnx'}\nbackend: tensorrt-rtx\ntargets: ['8.6']\n"
        "profiles:\n  - input: {min: [1, 3, 16, 16], opt: [4, 3, 16, 16], max: [8, 3, 16, 16]}\n",
        encoding="utf-8",
    )
    built = runner.invoke(app, ["build", str(spec), "--out", str(tmp_path / "out"), "--json"])
    assert built.exit_code == 0, built.stderr
    engine = json.loads(built.stdout)["results"][0]["engine"]
    result = runner.invoke(app, ["bench", engine, "--requests", "2", "--json"])
    assert result.exit_code == 5
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "Traceback" not in result.stderr, result.stderr
    # the engine, the rule and its reason, on the line: not only that it was refused
    assert errors[0].startswith(f"error: {engine}: refused on TensorRT-RTX "), errors[0]
    assert errors[0].endswith(f", no GPU, {detect_platform().tag}: [gpu] {NO_GPU_MESSAGE}"), errors[0]
    assert json.loads(result.stdout) == {"error": {"exit_code": 5, "message": errors[0].removeprefix("error: ")}}


def _runs_nowhere(path: Path) -> Path:
    """x [N, 4] reshaped to [3]: onnxruntime loads it and every run fails, so no context of a pool
    can be warmed (the model of test_pool's ``test_start_error_names_each_context_once``)."""
    from onnx import TensorProto, helper, numpy_helper, save

    graph = helper.make_graph(
        [helper.make_node("Reshape", ["x", "shape"], ["y"])],
        "bad",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3])],
        [numpy_helper.from_array(np.array([3], np.int64), "shape")],
    )
    save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), path)
    return path


def test_bench_exits_5_naming_why_no_context_could_run_the_model(tmp_path: Path) -> None:
    """PoolStartError at the CLI: exit 5, one line naming the pool, the context and onnxruntime's
    reason, and the same message in the --json document; no burst is run."""
    model = _runs_nowhere(tmp_path / "broken.onnx")
    result = runner.invoke(app, ["bench", str(model), "--pool", "2", "--requests", "2", "--json"])
    assert result.exit_code == 5, result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "Traceback" not in result.stderr, result.stderr
    assert errors[0].startswith(
        "error: pool 'broken': no context could be created and warmed (broken/0: onnxruntime failed: "
    ), errors[0]
    assert "The input tensor cannot be reshaped to the requested shape" in errors[0]
    assert json.loads(result.stdout) == {"error": {"exit_code": 5, "message": errors[0].removeprefix("error: ")}}


def test_bench_timeout_is_how_long_a_burst_request_waits_for_a_context(tmp_path: Path) -> None:
    """--timeout from the CLI reaches the pool: one context, four client threads and requests of
    tens of ms. At --timeout 0 a request that finds the context busy gives up at once (counted as
    ``exhausted``, with its warning line); at --timeout 60 every request waits its turn."""
    import models

    model = models.deep_net(tmp_path / "slow.onnx", layers=40)
    common = ["bench", str(model), "--pool", "1", "--concurrency", "4", "--requests", "8", "--batch", "8", "--json"]
    result = runner.invoke(app, [*common, "--timeout", "0"])
    assert result.exit_code == 0, result.stderr
    [warm] = json.loads(result.stdout)["scenarios"]
    assert warm["exhausted"] >= 1 and warm["burst"]["count"] == 8 - warm["exhausted"] and warm["errors"] == 0
    assert f"warning: warm: {warm['exhausted']} request(s) found no context within --timeout 0 s" in result.stderr
    result = runner.invoke(app, [*common, "--timeout", "60"])
    assert result.exit_code == 0, result.stderr
    [warm] = json.loads(result.stdout)["scenarios"]
    assert (warm["exhausted"], warm["burst"]["count"], warm["errors"]) == (0, 8, 0)
    assert "found no context" not in result.stderr


# ---------------------------------------------------------------- pure helpers


def test_parse_shape() -> None:
    assert parse_shape("input=8x1x8x8") == ("input", (8, 1, 8, 8))
    assert parse_shape(" image = 1,3,224,224") == ("image", (1, 3, 224, 224))
    for bad in ("input", "=1x2", "input=", "input=1x-2", "input=axb"):
        with pytest.raises(InvalidInputError):
            parse_shape(bad)


def test_request_shapes() -> None:
    inputs = (TensorDesc("image", "float32", ("N", 3, 16, 16)), TensorDesc("meta", "float32", (1, 4)))
    profiles = ({"image": {"min": [1, 3, 16, 16], "opt": [4, 3, 16, 16], "max": [8, 3, 16, 16]}},)
    assert request_shapes(inputs, ()) == {"image": (1, 3, 16, 16), "meta": (1, 4)}
    assert request_shapes(inputs, (), batch=8) == {"image": (8, 3, 16, 16), "meta": (1, 4)}
    assert request_shapes(inputs, profiles) == {"image": (4, 3, 16, 16), "meta": (1, 4)}  # the profile's opt
    assert request_shapes(inputs, profiles, batch=2)["image"] == (2, 3, 16, 16)
    assert request_shapes(inputs, profiles, overrides={"image": (5, 3, 16, 16)})["image"] == (5, 3, 16, 16)
    with pytest.raises(InvalidInputError, match="did you mean 'meta'"):
        request_shapes(inputs, (), overrides={"mata": (1, 4)})
    with pytest.raises(InvalidInputError, match="dim 0 is 0, an empty request"):
        request_shapes(inputs, (), overrides={"image": (0, 3, 16, 16)})


def test_a_request_no_profile_of_the_engine_takes_is_refused_before_loading() -> None:
    """--batch 300 past the max, 12 between two profiles, image and meta of two profiles: nothing
    looked at the profiles, so the engine was loaded and each context refused its warm-up (exit 5,
    'no context could be created'), where a bad shape is exit 2."""
    inputs = (TensorDesc("image", "float32", ("N", 3, 8, 8)), TensorDesc("meta", "float32", ("N", 4)))
    profiles = (
        {
            "image": {"min": [1, 3, 8, 8], "opt": [4, 3, 8, 8], "max": [8, 3, 8, 8]},
            "meta": {"min": [1, 4], "opt": [4, 4], "max": [8, 4]},
        },
        {
            "image": {"min": [16, 3, 8, 8], "opt": [64, 3, 8, 8], "max": [256, 3, 8, 8]},
            "meta": {"min": [16, 4], "opt": [64, 4], "max": [256, 4]},
        },
    )
    assert request_shapes(inputs, profiles, batch=32) == {"image": (32, 3, 8, 8), "meta": (32, 4)}
    for batch in (300, 12):
        with pytest.raises(InvalidInputError, match=rf"^request: input shapes image \[{batch}, 3, 8, 8\], meta "):
            request_shapes(inputs, profiles, batch=batch)
    with pytest.raises(InvalidInputError) as refused:
        request_shapes(inputs, profiles, overrides={"image": (4, 3, 8, 8), "meta": (32, 4)})
    assert str(refused.value) == (
        "request: input shapes image [4, 3, 8, 8], meta [32, 4] fit no one profile together (profile 0: image "
        "[1, 3, 8, 8]..[8, 3, 8, 8], meta [1, 4]..[8, 4]; profile 1: image [16, 3, 8, 8]..[256, 3, 8, 8], meta "
        "[16, 4]..[256, 4]); pass a --shape or --batch within one profile"
    )


def test_a_batch_or_a_shape_that_would_be_ignored_is_refused() -> None:
    """``--batch`` on fixed shapes and a second ``--shape`` for one input changed nothing, silently."""
    static = (TensorDesc("image", "float32", (1, 3, 16, 16)),)
    with pytest.raises(InvalidInputError, match="--batch 8: nothing to apply it to, the model has no dynamic input"):
        request_shapes(static, (), batch=8)
    dynamic = (TensorDesc("image", "float32", ("N", 3, 16, 16)), TensorDesc("meta", "float32", (1, 4)))
    with pytest.raises(InvalidInputError, match="its dynamic inputs all have a --shape; drop --batch"):
        request_shapes(dynamic, (), batch=8, overrides={"image": (2, 3, 16, 16)})
    assert parse_inputs(["image=2x3x16x16", "meta=1x4"]) == ({"image": (2, 3, 16, 16), "meta": (1, 4)}, {})
    with pytest.raises(InvalidInputError, match="input 'image' already has --shape image=2x3x16x16; give it once"):
        parse_inputs(["image=2x3x16x16", "image=4x3x16x16"])


def test_latency_percentiles() -> None:
    stats = Latency.of([0.001 * i for i in range(1, 101)])
    assert stats.count == 100
    assert stats.p50 == pytest.approx(50.5)
    assert stats.p99 == pytest.approx(99.01)
    assert stats.max == pytest.approx(100.0) and stats.mean == pytest.approx(50.5)
    with pytest.raises(ValueError):
        Latency.of([])


# ---------------------------------------------------------------- shape tensors


def _bench_json(*args: object) -> tuple[int, dict, str]:
    result = runner.invoke(app, ["bench", *map(str, args), "--pool", "2", "--requests", "8", "--json"])
    return result.exit_code, json.loads(result.stdout), result.stderr


def test_bench_gives_a_shape_tensor_values(tmp_path: Path) -> None:
    """x [N, 12] reshaped to the input ``shape`` int64 [3]. Before: random integers as its values,
    so the warm-up failed (exit 5); now the values the graph tells, or ``--shape NAME=[V,...]``,
    and the pool warms its default and the request (values too) as for any model."""
    from test_pool import reshape_net

    final = reshape_net(tmp_path / "st3.onnx")  # the Reshape makes the output: [-1, 1, 1] runs
    code, document, stderr = _bench_json(final)
    assert code == 0, stderr
    warm = document["scenarios"][0]
    assert warm["errors"] == 0 and warm["warm_runs"] == 2  # the default is the request: one set per context
    assert document["shapes"] == {"x": [1, 12], "shape": [3]}
    code, document, stderr = _bench_json(final, "--shape", "x=2x12", "--shape", "shape=[2,3,4]")
    assert code == 0, stderr
    assert document["scenarios"][0]["errors"] == 0 and document["scenarios"][0]["warm_runs"] == 4  # default + request
    assert document["shapes"] == {"x": [2, 12], "shape": [3]}
    # a Reshape feeding a MatMul: no values are guessed; the refusal says what to pass
    code, document, _ = _bench_json(reshape_net(tmp_path / "st4.onnx", then="MatMul"))
    assert code == 2
    assert "input 'shape' is a shape tensor (the shape of Reshape 'reshape')" in document["error"]["message"]
    assert "pass the values your requests use: --shape 'shape=[v1,v2,v3]'" in document["error"]["message"]
    code, document, _ = _bench_json(final, "--shape", "shape=[5,3,4]")
    assert code == 2 and "values [5, 3, 4] of 'shape' cannot reshape 'x' of shape 1x12" in document["error"]["message"]
    code, document, _ = _bench_json(final, "--shape", "shape=[2,3,4]", "--shape", "shape=[4,3,2]")
    assert code == 2 and "input 'shape' already has --shape shape=[2,3,4]" in document["error"]["message"]


def test_parse_inputs_takes_shapes_and_shape_tensor_values() -> None:
    from trtforge.shapes import parse_inputs, parse_values

    assert parse_values("shape=[2, -1,4]") == ("shape", (2, -1, 4)) and parse_values("k=[3]") == ("k", (3,))
    assert parse_values("x=2x12") is None and parse_values("shape=[2,,4]") is None
    assert parse_inputs(["x=2x12", "shape=[2,3,4]"]) == ({"x": (2, 12)}, {"shape": (2, 3, 4)})
    with pytest.raises(InvalidInputError, match=r"a shape tensor's values: NAME=\[V,\.\.\.\]"):
        parse_inputs(["shape=[2,3"])


class _FailingPool:
    """A pool whose requests after the first raise what ``fail(n)`` gives for the n-th one."""

    def __init__(self, *args: object, fail: object = None, **kwargs: object) -> None:
        self.calls = 0
        self.fail = fail or (lambda n: RuntimeError("CUDA error: an illegal memory access\nat frame 3"))

    def infer(self, feed: object, timeout: float) -> None:
        self.calls += 1
        if self.calls > 1:
            raise self.fail(self.calls)

    def contexts(self) -> list[object]:
        return []


def test_a_burst_counts_its_failures_by_message() -> None:
    """Every failed request was one ``errors`` count and its reason was dropped: the report could
    not say what failed. Each message (its first line, the type named) is counted; a message that
    varies per request stops adding kinds at MAX_FAILURE_KINDS."""
    pool = _FailingPool()
    pool.calls = 1  # past the first request: every one fails
    measured = burst(pool, {}, requests=12, concurrency=3, timeout=1.0)  # type: ignore[arg-type]
    assert measured.failures == {"RuntimeError: CUDA error: an illegal memory access": 12}
    assert measured.errors == 12 and measured.latencies == []
    varying = _FailingPool(fail=lambda n: TrtforgeError(f"request {n} failed"))
    varying.calls = 1
    measured = burst(varying, {}, requests=40, concurrency=2, timeout=1.0)  # type: ignore[arg-type]
    kinds = [text for text in measured.failures if text != OTHER_FAILURES]
    assert len(kinds) == MAX_FAILURE_KINDS and all(measured.failures[text] == 1 for text in kinds)
    assert measured.failures[OTHER_FAILURES] == 40 - MAX_FAILURE_KINDS and measured.errors == 40


def test_a_scenario_where_every_request_failed_says_what_failed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(trtforge.bench, "EnginePool", _FailingPool)
    config = BenchConfig(artifact=DIGITS, requests=8, concurrency=2)
    with pytest.raises(TrtforgeError) as raised:
        trtforge.bench._scenario("warm", config, trtforge.bench.WarmupSet({}), {}, [])
    message = str(raised.value)
    assert message == (
        "warm: none of the 8 burst requests succeeded (8 failed, 0 found no context within --timeout 30 s); "
        "8 failed with: RuntimeError: CUDA error: an illegal memory access"
    )


def test_bench_warns_with_what_failed(monkeypatch: pytest.MonkeyPatch) -> None:
    """The warning said "N requests failed or timed out; see the errors and exhausted counts",
    and no count said why: now one line per failure kind, and the timeouts apart."""
    latency = Latency.of([0.001, 0.002])
    scenario = trtforge.bench.Scenario(
        name="warm",
        startup_ms=1.0,
        first_request_ms=1.0,
        first_response_ms=1.0,
        burst=latency,
        serial=latency,
        throughput_rps=1.0,
        errors=3,
        exhausted=2,
        warm_runs=2,
        failures={"RuntimeError: CUDA error": 3},
    )
    report = trtforge.bench.BenchReport(
        str(DIGITS), "onnxruntime", (), 2, 4, 7, {}, (scenario,), {}, None, {}
    )  # fmt: skip
    monkeypatch.setattr(trtforge.bench, "run_bench", lambda config, log: report)
    result = runner.invoke(app, ["bench", str(DIGITS), "--timeout", "0.5", "--json"])
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["scenarios"][0]["failures"] == {"RuntimeError: CUDA error": 3}
    assert "warm: 3 request(s) failed: RuntimeError: CUDA error" in result.stderr
    assert "warm: 2 request(s) found no context within --timeout 0.5 s" in result.stderr


def test_the_most_frequent_failure_is_a_message_and_an_empty_one_names_its_type() -> None:
    """The bucket of failures past ``MAX_FAILURE_KINDS`` is no message to name; an exception with
    no message is its type alone, not "RuntimeError: "."""
    assert most_frequent({OTHER_FAILURES: 30, "request 1: boom": 3}) == "3 failed with: request 1: boom"
    assert most_frequent({OTHER_FAILURES: 30}) == f"30 failed with: {OTHER_FAILURES}"
    assert failure_text(RuntimeError()) == "RuntimeError"
    assert failure_text(RuntimeError("no context")) == "RuntimeError: no context"


def _interrupted_import(*args: object, **kwargs: object) -> None:
    """What ``import onnxruntime`` raises when Ctrl-C lands in its C extension's init (pybind11)."""
    raise ImportError("initialization failed") from KeyboardInterrupt()


def test_ctrl_c_while_onnxruntime_imports_is_an_interrupt(monkeypatch: pytest.MonkeyPatch) -> None:
    """bench imports onnxruntime once its inputs are checked: Ctrl-C then was "internal error
    (ImportError: initialization failed); please report it", exit 1, not an interrupt (exit 130)."""
    from trtforge.cli.common import INTERRUPTED

    monkeypatch.setattr(trtforge.bench, "run_bench", _interrupted_import)
    result = runner.invoke(app, ["bench", str(DIGITS), "--json"])
    assert result.exit_code == 130 and result.stderr == f"{INTERRUPTED}\n", result.stderr
    assert json.loads(result.stdout) == {"error": {"exit_code": 130, "message": INTERRUPTED}}


class _SlowPool:
    """Requests of a millisecond each; once closed, each fails at once (as EnginePool's do)."""

    def __init__(self) -> None:
        self.closed = False

    def infer(self, feed: object, timeout: float) -> None:
        if self.closed:
            raise RuntimeError("pool closed")
        time.sleep(0.001)


def test_an_interrupted_burst_stops_its_clients_before_the_interrupt_goes_on() -> None:
    """Ctrl-C in a burst: the clients ran the rest of its requests (seconds, against the closed
    pool) while the process waited to exit, and a second Ctrl-C printed a traceback from
    threading's shutdown. Every client is done once the interrupt leaves ``burst``."""
    pool = _SlowPool()
    ctrl_c = threading.Timer(0.2, signal.pthread_kill, (threading.main_thread().ident, signal.SIGINT))
    ctrl_c.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            burst(pool, {}, requests=100_000, concurrency=4, timeout=1.0)  # type: ignore[arg-type]
        running = [
            thread for thread in threading.enumerate() if thread.name.startswith("bench-client-") and thread.is_alive()
        ]
        assert running == []
    finally:
        ctrl_c.join()
        pool.closed = True


def test_a_pool_larger_than_any_burst_is_refused_before_loading(monkeypatch: pytest.MonkeyPatch) -> None:
    """``--pool`` had no limit: ``--pool 99999999999`` created onnxruntime sessions until the kernel
    killed the process (exit 137). No burst has more requests in flight than --concurrency's 1024."""

    def no_pool(*args: object, **kwargs: object) -> None:
        raise AssertionError("a pool was created")

    monkeypatch.setattr(trtforge.bench, "EnginePool", no_pool)
    result = runner.invoke(app, ["bench", str(DIGITS), "--pool", "99999999999", "--json"])
    message = (
        "--pool 99999999999: at most 1024 contexts (no burst has more than 1024 requests in flight, "
        "one per client thread); pass a smaller --pool"
    )
    assert result.exit_code == 2 and result.stderr == f"error: {message}\n", result.stderr
    assert json.loads(result.stdout) == {"error": {"exit_code": 2, "message": message}}


@pytest.mark.parametrize(
    ("args", "flags"),
    [
        (["--provider", "cuda"], "--provider"),
        (["--threads", "1"], "--threads"),
        (["--provider", "cuda", "--threads", "1"], "--provider and --threads"),
    ],
)
def test_onnxruntime_options_for_an_engine_are_refused(tmp_path: Path, args: list[str], flags: str) -> None:
    """``bench ENGINE --provider cuda --threads 1`` ignored both (an engine runs on TensorRT), as
    ``--batch`` that would change nothing is refused."""
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"an engine")
    result = runner.invoke(app, ["bench", str(engine), *args])
    assert result.exit_code == 2 and result.stderr == (
        f"error: {flags}: onnxruntime's, for an .onnx model; an engine runs on TensorRT: drop {flags}\n"
    ), result.stderr
