"""``trtforge serve`` over HTTP with the Triton client, on the digits CNN and a ResNet-18-style ONNX.

Per model, each server is a fresh ``python -m trtforge serve`` process on a free 127.0.0.1 port:

  start->ready  from spawning the process to the first 200 of ``/v2/health/ready``
  1st req       the first inference after ready, as a ratio to the steady p50 (goal <= 1.2x), on one
                kept-alive connection that polled readiness (the client's first-use costs left out),
                after a short pause; "after idle" is the median of 5 requests, each after the same
                pause, once the server has served hundreds: what any request after a quiet moment
                costs (1st/idle ~1: warm). A bare asyncio responder measured the same way shows what
                a pause costs on this host with no server code at all (caches and TLBs gone cold)
  c=N p50/p99   latency of binary-tensor requests from N client threads (one client each), and
                requests/s over the whole run
  in-process    the same feed through ``EnginePool.infer`` in this process, one thread: the
                HTTP overhead is the server's c=1 p50 as a ratio to it
  cold          the same server with ``--no-warmup``: its first request against its own steady p50
                (the first-request spike a warm pool removes)

The baseline of every ratio is measured in the same run. Usage:
  python benchmarks/serve.py [--trials 3] [--requests 300] [--pool 2] [--resnet-size 64] [--quick]
Prints its table on stderr and exactly one JSON document on stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from check_speed import figure

REPO = Path(__file__).resolve().parent.parent
DIGITS = REPO / "calibration" / "digits" / "digits_cnn.onnx"
FIRST_REQUEST_GOAL = 1.2  # x the steady p50
START_TIMEOUT_S = 120.0
#: A pause before the first request and before the idle baseline: any request after a pause pays
#: for cold CPU caches and sleeping threads (measured here: 1.5-2 ms against a 0.7 ms steady p50 on
#: the digits CNN, whether the server is fresh or has served thousands); the baseline shows that part.
IDLE_PAUSE_S = 0.5
#: requests after a pause whose median is the "after idle" baseline (one is too noisy on a shared host)
IDLE_SAMPLES = 5


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def ready_status(port: int) -> int | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/health/ready", timeout=2) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return None


def start_server(model: Path, pool: int, warm: bool, queue: int) -> tuple[subprocess.Popen[bytes], int, float]:
    """Spawn serve, wait for readiness; returns the process, its port and seconds from spawn to ready.

    ``queue`` (``--max-queue``) admits the whole load: this measures latency, not the 503s."""
    port = free_port()
    command = [sys.executable, "-m", "trtforge", "serve", f"model={model}", "--port", str(port), "--pool", str(pool)]
    command += ["--max-queue", str(queue)]
    began = time.perf_counter()
    process = subprocess.Popen(
        [*command, *([] if warm else ["--no-warmup"])], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    while ready_status(port) != 200:
        if process.poll() is not None or time.perf_counter() - began > START_TIMEOUT_S:
            process.kill()
            sys.exit(f"trtforge serve {model.name} did not become ready (exit {process.poll()})")
        time.sleep(0.002)
    return process, port, time.perf_counter() - began


def client_infer(port: int) -> Any:
    """One request function over its own Triton client (the client is not thread-safe)."""
    import tritonclient.http as http

    client = http.InferenceServerClient(f"127.0.0.1:{port}")

    def infer(feed: dict[str, np.ndarray]) -> float:
        inputs = []
        for name, array in feed.items():
            tensor = http.InferInput(name, list(array.shape), "FP32")
            tensor.set_data_from_numpy(array, binary_data=True)
            inputs.append(tensor)
        began = time.perf_counter()
        client.infer("model", inputs)
        return time.perf_counter() - began

    return infer


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def under_load(port: int, feed: dict[str, np.ndarray], requests: int, concurrency: int) -> dict[str, float]:
    """``requests`` requests from ``concurrency`` threads: p50/p99 in ms and requests/s.

    Each thread makes its own client (gevent, which the Triton client uses, binds a client to the
    thread that made it) and sends one untimed request first, so connecting is not measured. A
    client that fails there aborts the start barrier, which the others and this thread would wait
    at forever: the script exits (non-zero), saying which error."""
    latencies: list[float] = []
    failures: list[Exception] = []
    lock = threading.Lock()
    share = [requests // concurrency + (index < requests % concurrency) for index in range(concurrency)]
    start = threading.Barrier(concurrency + 1)

    def run(count: int) -> None:
        try:
            infer = client_infer(port)
            infer(feed)
        except Exception as exc:
            failures.append(exc)
            start.abort()
            return
        try:
            start.wait()
        except threading.BrokenBarrierError:
            return  # another client failed before the start: the main thread says which
        mine = [infer(feed) for _ in range(count)]
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=run, args=(count,)) for count in share]
    for thread in threads:
        thread.start()
    try:
        start.wait()
    except threading.BrokenBarrierError:
        for thread in threads:
            thread.join()
        sys.exit(
            f"{len(failures)} of {concurrency} clients failed before the start at concurrency {concurrency}, "
            f"the first with {type(failures[0]).__name__}: {failures[0]}"
        )
    began = time.perf_counter()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - began
    if len(latencies) != requests:
        sys.exit(f"{requests - len(latencies)} requests failed at concurrency {concurrency}")
    return {
        "p50_ms": percentile(latencies, 50) * 1e3,
        "p99_ms": percentile(latencies, 99) * 1e3,
        "requests_per_s": len(latencies) / wall,
    }


def stop(process: subprocess.Popen[bytes]) -> int:
    process.terminate()
    return process.wait(timeout=60)


def in_process_p50(model: Path, feed: dict[str, np.ndarray], pool: int, requests: int) -> float:
    sys.path.insert(0, str(REPO))
    from trtforge.runtime.pool import EnginePool

    with EnginePool(model, pool) as engine_pool:
        seconds = []
        for _ in range(requests):
            began = time.perf_counter()
            engine_pool.infer(feed)
            seconds.append(time.perf_counter() - began)
    return statistics.median(seconds) * 1e3


def first_and_steady(port: int, feed: dict[str, np.ndarray], requests: int) -> tuple[float, float, float]:
    """The server's first inference after an idle pause, its steady p50 over serial requests, and
    one request after the same pause once it served all those (ms), on one kept-alive stdlib
    connection that polled readiness first: the client's own first-use costs (connecting, gevent's
    hub, tritonclient's first request) are not the server's, so they stay out."""
    import http.client

    header = json.dumps(
        {
            "inputs": [
                {"name": n, "shape": list(a.shape), "datatype": "FP32", "parameters": {"binary_data_size": a.nbytes}}
                for n, a in feed.items()
            ],
            "parameters": {"binary_data_output": True},
        }
    ).encode()
    body = header + b"".join(a.tobytes() for a in feed.values())
    connection = http.client.HTTPConnection("127.0.0.1", port)
    connection.request("GET", "/v2/health/ready")
    connection.getresponse().read()

    def infer() -> float:
        began = time.perf_counter()
        connection.request(
            "POST", "/v2/models/model/infer", body=body, headers={"Inference-Header-Content-Length": str(len(header))}
        )
        response = connection.getresponse()
        response.read()
        if response.status != 200:
            sys.exit(f"inference failed with HTTP {response.status}")
        return time.perf_counter() - began

    time.sleep(IDLE_PAUSE_S)
    first = infer() * 1e3
    steady = statistics.median([infer() for _ in range(requests)]) * 1e3
    after_idle = after_pauses(infer) * 1e3
    connection.close()
    return first, steady, after_idle


def after_pauses(request: Callable[[], float]) -> float:
    """The median of ``IDLE_SAMPLES`` requests, each after an ``IDLE_PAUSE_S`` pause (seconds)."""
    seconds = []
    for _ in range(IDLE_SAMPLES):
        time.sleep(IDLE_PAUSE_S)
        seconds.append(request())
    return statistics.median(seconds)


#: The least an HTTP server can do: asyncio streams answering each request with two bytes.
BARE_SERVER = r"""
import asyncio, contextlib, sys

async def answer(reader, writer):
    with contextlib.suppress(asyncio.IncompleteReadError):
        while True:
            head = (await reader.readuntil(b"\r\n\r\n")).lower()
            length = int(head.split(b"content-length:")[1].split(b"\r\n")[0]) if b"content-length:" in head else 0
            await reader.readexactly(length)
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")

async def main():
    await (await asyncio.start_server(answer, "127.0.0.1", int(sys.argv[1]))).serve_forever()

asyncio.run(main())
"""


def bare_host_baseline(body: bytes, requests: int) -> dict[str, float]:
    """This host's own price of a pause: a bare asyncio responder's steady p50 and its request
    after the same pause (ms), on one kept-alive connection. A server cannot do better than this
    ratio without keeping its memory hot while idle (measured here: no page faults, no context
    switches, and the same slowdown when the pause is a busy loop: the CPU caches and TLBs)."""
    import http.client

    port = free_port()
    process = subprocess.Popen([sys.executable, "-c", BARE_SERVER, str(port)], stderr=subprocess.DEVNULL)
    try:
        deadline = time.perf_counter() + START_TIMEOUT_S
        while True:
            try:
                connection = http.client.HTTPConnection("127.0.0.1", port)
                connection.connect()
                break
            except OSError:
                if time.perf_counter() > deadline:
                    sys.exit("the bare asyncio server did not start")
                time.sleep(0.01)

        def request() -> float:
            began = time.perf_counter()
            connection.request("POST", "/", body=body)
            connection.getresponse().read()
            return time.perf_counter() - began

        steady = statistics.median([request() for _ in range(requests)]) * 1e3
        after_idle = after_pauses(request) * 1e3
        connection.close()
    finally:
        process.kill()
        process.wait()
    return {"steady_p50_ms": steady, "after_idle_ms": after_idle, "after_idle_over_p50": after_idle / steady}


def median_of(trials: list[dict[str, Any]], key: str) -> float:
    return float(statistics.median(trial[key] for trial in trials))


def measure_model(model: Path, label: str, args: argparse.Namespace) -> dict[str, Any]:
    from trtforge.model import inspect_model

    inputs = inspect_model(model).inputs
    rng = np.random.default_rng(0)
    feed = {
        t.name: rng.random(tuple(1 if not isinstance(d, int) else d for d in t.shape), dtype=np.float32) for t in inputs
    }
    warm: list[dict[str, Any]] = []
    cold: list[dict[str, Any]] = []
    loads: dict[str, dict[str, float]] = {}
    exit_codes = []
    for trial in range(args.trials):
        for trials, is_warm in ((warm, True), (cold, False)):
            process, port, start_s = start_server(model, args.pool, is_warm, max(args.concurrency))
            try:
                first, steady, after_idle = first_and_steady(port, feed, args.requests)
                if is_warm and trial == 0:
                    loads = {f"c{c}": under_load(port, feed, args.requests, c) for c in args.concurrency}
            finally:
                code = stop(process)
            if is_warm:
                exit_codes.append(code)
            trials.append(
                {
                    "start_to_ready_s": start_s,
                    "first_request_ms": first,
                    "steady_p50_ms": steady,
                    "after_idle_ms": after_idle,
                    "first_over_p50": first / steady,
                    "first_over_after_idle": first / after_idle,
                }
            )
    pool_p50 = in_process_p50(model, feed, args.pool, args.requests)
    keys = list(warm[0])
    summary = {key: median_of(warm, key) for key in keys}
    return {
        "model": label,
        **summary,
        "first_request_goal_met": summary["first_over_p50"] <= FIRST_REQUEST_GOAL,
        "load": loads,
        "in_process_p50_ms": pool_p50,
        "http_over_in_process": loads[f"c{args.concurrency[0]}"]["p50_ms"] / pool_p50,
        "cold": {key: median_of(cold, key) for key in keys},
        "trials": {"warm": warm, "cold": cold},
        "sigterm_exit_codes": exit_codes,
    }


def render(rows: list[dict[str, Any]], host: dict[str, float], args: argparse.Namespace) -> None:
    out = sys.stderr
    print(f"trtforge serve, tritonclient.http binary tensors, pool {args.pool}, {os.cpu_count()} CPU cores", file=out)
    print(
        f"medians of {args.trials} trial(s); the first request and the idle baseline follow a {IDLE_PAUSE_S} s pause",
        file=out,
    )
    head = (
        f"{'model':<14} {'server':<5} {'start->ready':>12} {'1st req':>9} {'p50':>8} {'1st/p50':>8} "
        f"{'after idle':>10} {'1st/idle':>8}"
    )
    print(head, file=out)
    for row in rows:
        for kind, values in (("warm", row), ("cold", row["cold"])):
            print(
                f"{row['model']:<14} {kind:<5} {values['start_to_ready_s']:>10.2f} s "
                f"{values['first_request_ms']:>6.2f} ms "
                f"{values['steady_p50_ms']:>5.2f} ms {values['first_over_p50']:>7.2f}x "
                f"{values['after_idle_ms']:>7.2f} ms {values['first_over_after_idle']:>7.2f}x",
                file=out,
            )
    for row in rows:
        trials = [trial["first_over_p50"] for trial in row["trials"]["warm"]]
        first = figure(row["first_over_p50"], FIRST_REQUEST_GOAL)
        print(
            f"goal: {row['model']} warm first request / steady p50: {first}x"
            f" (<= {FIRST_REQUEST_GOAL}x): {'met' if row['first_request_goal_met'] else 'MISSED'}"
            f"; trials {min(trials):.2f}..{max(trials):.2f}x",
            file=out,
        )
    print(
        f"this host, a bare asyncio responder: steady {host['steady_p50_ms']:.2f} ms, after the pause "
        f"{host['after_idle_ms']:.2f} ms ({host['after_idle_over_p50']:.1f}x): the pause's price without server code",
        file=out,
    )
    print(
        f"\n{'model':<12} {'conc':>4} {'p50 ms':>8} {'p99 ms':>8} {'req/s':>8}   in-process p50, HTTP/in-process",
        file=out,
    )
    for row in rows:
        for index, (name, load) in enumerate(row["load"].items()):
            extra = f"   {row['in_process_p50_ms']:.3f} ms, {row['http_over_in_process']:.1f}x" if index == 0 else ""
            print(
                f"{row['model']:<12} {name[1:]:>4} {load['p50_ms']:>8.2f} {load['p99_ms']:>8.2f} "
                f"{load['requests_per_s']:>8.0f}{extra}",
                file=out,
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=300, help="requests per measurement")
    parser.add_argument("--pool", type=int, default=2, help="contexts per model")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--resnet-size", type=int, default=64, help="the ResNet-18's input height and width")
    parser.add_argument("--trials", type=int, default=3, help="fresh warm and cold servers per model")
    parser.add_argument("--quick", action="store_true", help="digits only, 1 trial, 30 requests, concurrency 1 and 4")
    args = parser.parse_args()
    if args.quick:
        args.requests, args.concurrency, args.trials = 30, [1, 4], 1
    with tempfile.TemporaryDirectory() as work:
        models = [(DIGITS, "digits")]
        if not args.quick:
            sys.path.insert(0, str(REPO / "benchmarks"))
            from calibration import resnet18

            resnet = Path(work) / f"resnet18_{args.resnet_size}.onnx"
            resnet18(resnet, args.resnet_size)
            models.append((resnet, f"resnet18-{args.resnet_size}"))
        rows = [measure_model(model, label, args) for model, label in models]
    host = bare_host_baseline(b"x" * 400, args.requests)
    render(rows, host, args)
    document = {
        "benchmark": "serve",
        "pool": args.pool,
        "requests": args.requests,
        "concurrency": args.concurrency,
        "trials": args.trials,
        "idle_pause_s": IDLE_PAUSE_S,
        "first_request_goal": FIRST_REQUEST_GOAL,
        "idle_samples": IDLE_SAMPLES,
        "host_baseline": host,
        "models": rows,
    }
    sys.stdout.write(json.dumps(document, indent=2) + "\n")


if __name__ == "__main__":
    main()
