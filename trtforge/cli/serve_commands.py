"""``serve``: the warm pool as a KServe v2 HTTP service (see trtforge.serve.server)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated

import typer

from trtforge.cli.common import (
    AllowHostCodeOption,
    InsecureOption,
    ProviderOption,
    RequireSignatureOption,
    ThreadsOption,
    TrustedKeyOption,
    exits_cleanly,
    load_policy,
    path_option,
    reporter,
)
from trtforge.errors import InvalidInputError

app = typer.Typer()


@app.command()
@exits_cleanly
def serve(
    artifacts: Annotated[
        list[str],
        typer.Argument(
            metavar="ARTIFACT...",
            help="An .engine, an .onnx (onnxruntime), a folder, or oci:// dir:// triton:// (with --name); "
            "NAME=ARTIFACT serves it under NAME.",
        ),
    ],
    host: Annotated[str, typer.Option("--host", help="Address to listen on (0.0.0.0 in a container).")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=0, max=65535, help="Port (0: any free one).")] = 8000,
    pool: Annotated[int, typer.Option("--pool", min=1, help="Warm contexts per model.")] = 2,
    warmup_shape: Annotated[
        list[str] | None,
        typer.Option(
            "--warmup-shape",
            help="A shape set warmed besides the defaults, [MODEL:]NAME=DIMS[,NAME=DIMS] (e.g. "
            "digits:input=16x1x8x8; without MODEL: every model with that input; a shape tensor's values as "
            "NAME=[V,...]); repeatable.",
        ),
    ] = None,
    name: Annotated[str | None, typer.Option("--name", help="Artifact name to pull from a registry reference.")] = None,
    precision: Annotated[
        str | None,
        typer.Option(help="Precision from a folder or a registry: fp32 | fp16 | int8 (needed when several fit)."),
    ] = None,
    pull_dir: Annotated[
        Path | None,
        path_option("--pull-dir", help_text="Where pulled engines go (default $TRTFORGE_CACHE_DIR/serve)."),
    ] = None,
    insecure: InsecureOption = False,
    require_signature: RequireSignatureOption = False,
    trusted_key: TrustedKeyOption = None,
    allow_host_code: AllowHostCodeOption = False,
    max_queue: Annotated[
        int, typer.Option("--max-queue", min=0, help="Requests per model that may wait for a context; more get 503.")
    ] = 8,
    queue_timeout: Annotated[
        float, typer.Option("--queue-timeout", min=0, help="Seconds a request waits for a context before 503.")
    ] = 5.0,
    max_body_mib: Annotated[
        float, typer.Option("--max-body-mib", min=0, help="Largest request body in MiB; larger is 413.")
    ] = 64.0,
    min_contexts: Annotated[
        int,
        typer.Option(
            "--min-contexts", min=1, help="Healthy contexts per pool (at most --pool) below which /ready is 503."
        ),
    ] = 1,
    health_interval: Annotated[
        float, typer.Option("--health-interval", min=0, help="Seconds between context health probes (0: off).")
    ] = 30.0,
    grace: Annotated[
        float, typer.Option("--grace", min=0, help="Seconds SIGTERM waits for in-flight requests; then they get 503.")
    ] = 30.0,
    client_timeout: Annotated[
        float,
        typer.Option(
            "--client-timeout",
            min=0,
            help="Seconds a client may keep the server waiting for its request (before its first one, in its "
            "headers, between bytes of its body); then its connection is closed.",
        ),
    ] = 10.0,
    no_warmup: Annotated[
        bool, typer.Option("--no-warmup", help="Load without warming (only to measure a cold start's first requests).")
    ] = False,
    provider: ProviderOption = "cpu",
    threads: ThreadsOption = None,
) -> None:
    """Serve models over KServe v2 HTTP; an engine this host would refuse: exit 5 before the port opens."""
    from trtforge.manifest import check_precision
    from trtforge.serve.app import Limits
    from trtforge.serve.server import PullOptions, ServeConfig, run_server

    check_precision(precision)
    if not math.isfinite(max_body_mib):
        raise InvalidInputError(f"--max-body-mib {max_body_mib}: give a size in MiB (default 64)")
    config = ServeConfig(
        artifacts=tuple(artifacts),
        policy=load_policy(require_signature, trusted_key, allow_host_code),
        host=host,
        port=port,
        limits=Limits(
            pool_size=pool,
            max_queue=max_queue,
            queue_timeout=queue_timeout,
            max_body_bytes=int(max_body_mib * 2**20),
            min_contexts=min_contexts,
            grace_s=grace,
            client_timeout=client_timeout,
        ),
        warmup_shapes=tuple(warmup_shape or ()),
        threads=threads,
        provider=provider,
        health_interval=health_interval or None,
        warmup=not no_warmup,
        pull=PullOptions(name, precision, pull_dir, insecure),
    )
    code = run_server(config, reporter().info)
    if code:
        raise typer.Exit(code)
