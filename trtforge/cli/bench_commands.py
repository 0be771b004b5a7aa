"""``bench``: first-request and steady-state latency of a warm engine pool, against a cold start."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from trtforge.cli.common import (
    JsonOption,
    ProviderOption,
    ThreadsOption,
    emit_json,
    exits_cleanly,
    reporter,
)

app = typer.Typer()


@app.command()
@exits_cleanly
def bench(
    artifact: Annotated[
        Path,
        typer.Argument(
            metavar="ENGINE|ONNX", help="An .engine (TensorRT, checked by the loader) or an .onnx (onnxruntime)."
        ),
    ],
    pool: Annotated[int, typer.Option("--pool", min=1, help="Contexts in the pool.")] = 2,
    concurrency: Annotated[int, typer.Option("--concurrency", min=1, help="Client threads in the burst.")] = 4,
    requests: Annotated[
        int, typer.Option("--requests", min=1, help="Requests in the burst (at most 1,000,000).")
    ] = 1000,
    cold: Annotated[
        bool, typer.Option("--cold", help="Also measure a cold start (load on the first request, no warm-up).")
    ] = False,
    batch: Annotated[
        int | None, typer.Option("--batch", min=1, help="First dim of dynamic inputs (default: profile opt, or 1).")
    ] = None,
    shape: Annotated[
        list[str] | None,
        typer.Option(
            "--shape",
            help="Input shape NAME=DIMS, e.g. input=8x1x8x8, or a shape tensor's values NAME=[V,...], "
            "e.g. 'shape=[2,3,4]' (repeatable).",
        ),
    ] = None,
    provider: ProviderOption = "cpu",
    threads: ThreadsOption = None,
    timeout: Annotated[float, typer.Option("--timeout", min=0, help="Seconds a request waits for a context.")] = 30.0,
    as_json: JsonOption = False,
) -> None:
    """Warm pool against cold start: first request and steady-state p50/p99, as ratios to the p50."""
    from trtforge.bench import BenchConfig, render_table, run_bench
    from trtforge.shapes import parse_inputs

    console = reporter()
    shapes, values = parse_inputs(shape or ())
    config = BenchConfig(
        artifact=artifact,
        pool=pool,
        concurrency=concurrency,
        requests=requests,
        cold=cold,
        batch=batch,
        shapes=shapes,
        values=values,
        provider=provider,
        threads=threads,
        timeout=timeout,
    )
    report = run_bench(config, log=console.info)
    if as_json:
        emit_json(report.to_dict())
    else:
        console.render(render_table(report))
    for scenario in report.scenarios:  # what failed, by message: the counts alone do not say why
        for text, count in scenario.failures.items():
            console.warn(f"{scenario.name}: {count} request(s) failed: {text}")
        if scenario.exhausted:
            console.warn(
                f"{scenario.name}: {scenario.exhausted} request(s) found no context within --timeout {timeout:g} s"
            )
