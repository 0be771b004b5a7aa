"""The life of ``trtforge serve``: resolve the artifacts (pulling registry references), refuse what
this host would refuse, listen, warm every pool, answer, and on SIGTERM finish in-flight requests
(for up to ``--grace`` seconds, then cut them off) before closing the pools; a Ctrl-C during that
grace cuts them off at once and exits.

Only ``trtforge serve`` imports this module (and so uvicorn and Starlette).

Order matters for the probes: an engine the compatibility rules refuse is never deserialized and
the port never opens (exit 5, every reason on one line); once listening, liveness is 200 at once
and readiness only when every pool is warm, so a Kubernetes readiness probe can trust it.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import math
import os
import re
import signal
import socket
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any, NoReturn

import uvicorn

from trtforge.errors import (
    INTERRUPTED_EXIT,
    IncompatibleEngineError,
    InvalidInputError,
    TrtforgeError,
    did_you_mean,
    first_line,
    one_line,
)
from trtforge.manifest import ENGINE_SUFFIX, MANIFEST_SUFFIX, ArtifactPaths, Manifest, read_manifest
from trtforge.runtime.sources import (
    ShapeTensors,
    ShapeValuesNeeded,
    WarmupSet,
    check_threads,
    manifest_inputs,
    onnx_shape_tensors,
    provider_name,
)
from trtforge.serve.app import Limits, ModelPlan, ServeState, build_app
from trtforge.serve.protocol import (
    DATATYPES,
    HEADER_LENGTH,
    ModelSignature,
    TensorMeta,
    datatype_of,
    probe_request,
    warmup_problem,
)

if TYPE_CHECKING:
    from trtforge.compat import LoadPolicy

#: ``NAME=ARTIFACT``: a name the URL path can carry as it is
_MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
#: a comma that starts the next NAME= of a shape set (commas also separate dims)
_SET_SPLIT = re.compile(r",(?=\s*[A-Za-z_][^=,]*=)")
#: where the server reaches itself when it listens on every address
_LOOPBACK = {"0.0.0.0": "127.0.0.1", "::": "::1"}
#: requests the server sends each model through its own HTTP path before it reports ready
SELF_REQUESTS = 2
#: requests one model may admit at once (``--pool`` + ``--max-queue``)
MAX_ADMITTED = 1024
#: seconds uvicorn waits for connections past ``--grace`` before it cancels them itself: by then every
#: request was answered or cut off (503), and only a client slow to read its answer is left; also
#: what a stop at once (a second signal) gives the 503s of the requests it cuts off to go out
SHUTDOWN_BACKSTOP_S = 1
#: how a request cut off by a second signal was still running (its 503 says it)
SECOND_SIGNAL = "when a second signal (Ctrl-C) stopped the server at once"
#: KServe/Triton platform names by backend
PLATFORMS = {"onnxruntime": "onnxruntime_onnx", "tensorrt": "tensorrt_plan", "tensorrt-rtx": "tensorrt_rtx_plan"}


@dataclass(frozen=True)
class PullOptions:
    """How registry references (``oci://``, ``dir://``, ``triton://``) are pulled."""

    name: str | None = None  # the artifact name in the registry (``--name``)
    precision: str | None = None  # ``--precision``: for folders too
    into: Path | None = None  # default: $TRTFORGE_CACHE_DIR/serve
    insecure: bool = False


@dataclass(frozen=True)
class ServeConfig:
    artifacts: tuple[str, ...]
    policy: LoadPolicy
    host: str = "127.0.0.1"
    port: int = 8000
    limits: Limits = field(default_factory=Limits)
    warmup_shapes: tuple[str, ...] = ()  # ``--warmup-shape`` texts, see parse_warmup_shape
    threads: int | None = None
    provider: str = "cpu"
    health_interval: float | None = 30.0
    warmup: bool = True  # False: load only, the first requests pay for the warm-up (to measure cold starts)
    pull: PullOptions = field(default_factory=PullOptions)


def split_named(text: str) -> tuple[str | None, str]:
    """``NAME=ARTIFACT`` -> (NAME, ARTIFACT); anything else -> (None, text). Pure."""
    name, sep, rest = text.partition("=")
    if sep and rest and _MODEL_NAME.match(name):
        return name, rest
    return None, text


# ---------------------------------------------------------------- resolving artifacts


def engine_plan(path: Path, name: str | None, manifest: Manifest | None = None) -> ModelPlan:
    """An engine artifact as a served model: name, signature and profiles from its manifest
    (``manifest``: the one a folder's listing already read; default: read here)."""
    paths = ArtifactPaths.of(path).must_exist()
    if manifest is None:
        manifest = read_manifest(paths.manifest)
    metas = {
        mode: tuple(
            TensorMeta(t.name, datatype_of(t.dtype), tuple(d if d >= 0 else -1 for d in t.shape))
            for t in manifest.io
            if t.mode == mode
        )
        for mode in ("input", "output")
    }
    signature = ModelSignature(metas["input"], metas["output"], tuple(manifest.profiles))
    flavor = manifest.tensorrt.flavor
    tensors = ShapeTensors(manifest_inputs(manifest), tuple(manifest.profiles))
    return ModelPlan(name or manifest.name, paths.engine, flavor, PLATFORMS[flavor], signature, tensors)


def onnx_plan(path: Path, name: str | None) -> ModelPlan:
    """An ONNX model served by onnxruntime: the file stem is its name unless one is given."""
    from trtforge.model import inspect_model

    info = inspect_model(path)
    signature = ModelSignature(
        tuple(TensorMeta.of(t) for t in info.inputs), tuple(TensorMeta.of(t) for t in info.outputs)
    )
    tensors = onnx_shape_tensors(path, info.inputs)
    return ModelPlan(name or path.stem, path, "onnxruntime", PLATFORMS["onnxruntime"], signature, tensors)


def _folder_plans(
    folder: Path, name: str | None, precision: str | None, policy: LoadPolicy, log: Callable[[str], None]
) -> list[ModelPlan]:
    """Every model in a folder: for each engine name the artifact of ``precision`` (``--precision``)
    that fits this host best, and each .onnx; entries with an unreadable manifest are skipped, and said.
    The folder is listed once (``selection.list_artifacts``: hidden entries, a writer's temporaries
    among them, never looked at), and each manifest read once, whatever the number of names."""
    from trtforge.runtime.loader import find_artifacts, select_artifact
    from trtforge.selection import listed_name

    listing = find_artifacts(folder, precision=precision)
    for reason in listing.skipped:
        log(f"skipped: {reason}")
    manifests = {engine: manifest for manifest, engine in listing.found}
    plans = []
    for engine_name in sorted({manifest.name for manifest in manifests.values()}):
        chosen = select_artifact(folder, engine_name, precision=precision, policy=policy, listing=listing)
        plans.append(engine_plan(chosen, None, manifests[chosen]))
    plans += [onnx_plan(model, None) for model in sorted(folder.glob("*.onnx")) if listed_name(model.name)]
    if not plans:
        engines = f"no {precision} engine artifacts" if precision else "no engine artifacts"
        raise InvalidInputError(
            f"{folder}: {engines} (.engine + .manifest.json) and no .onnx models in it{listing.note}"
        )
    if name is not None:
        if len(plans) != 1:
            raise InvalidInputError(
                f"{name}={folder}: the folder holds {len(plans)} models ({', '.join(p.name for p in plans)}); "
                "name a file instead of the folder"
            )
        plans = [replace(plans[0], name=name)]
    return plans


def _pulled(uri: str, name: str | None, pull: PullOptions, policy: LoadPolicy, log: Callable[[str], None]) -> Path:
    """The engine of a registry reference that fits this host, pulled (as ``trtforge pull --for-this-machine``)."""
    from trtforge.cache import default_cache_dir
    from trtforge.publish import OciLocation, open_registry, parse_location
    from trtforge.publish.pulling import PullRequest, pull_artifact, target_environments

    artifact = name or pull.name
    if artifact is None:
        raise InvalidInputError(f"{uri}: a registry reference needs --name NAME (or NAME={uri})")
    location = parse_location(uri)
    # one --insecure serves every reference: it is for the oci:// ones (resolve_artifacts refuses it with none)
    registry = open_registry(location, insecure=pull.insecure and isinstance(location, OciLocation))
    log(f"pulling {artifact} from {uri} for this machine")
    request = PullRequest(artifact, pull.precision, target_environments(), policy)
    into = pull.into or default_cache_dir() / "serve"
    return pull_artifact(registry, request, into).engine


def resolve_artifacts(
    artifacts: Sequence[str], policy: LoadPolicy, pull: PullOptions, log: Callable[[str], None]
) -> tuple[list[ModelPlan], list[IncompatibleEngineError]]:
    """Each ARTIFACT as models to serve, and every refusal met on the way (a registry or folder
    with nothing that fits). Other errors (a missing file, a registry that does not answer) raise."""
    if pull.insecure and not any(split_named(text)[1].startswith("oci://") for text in artifacts):
        raise InvalidInputError("--insecure (plain HTTP) is for oci:// registries, and none is served: drop --insecure")
    plans: list[ModelPlan] = []
    refused: list[IncompatibleEngineError] = []
    for text in artifacts:
        name, target = split_named(text)
        try:
            if "://" in target:
                plans.append(engine_plan(_pulled(target, name, pull, policy, log), name))
                continue
            path = Path(target)
            if path.is_dir():
                plans += _folder_plans(path, name, pull.precision, policy, log)
            elif path.name.endswith(".onnx"):
                plans.append(onnx_plan(path, name))
            elif path.name.endswith((ENGINE_SUFFIX, MANIFEST_SUFFIX)):
                plans.append(engine_plan(path, name))
            else:
                raise InvalidInputError(
                    f"{target}: not an .engine, a .manifest.json, an .onnx, a folder or a registry reference "
                    "(oci://, dir://, triton://)"
                )
        except IncompatibleEngineError as exc:
            refused.append(exc)
    seen: dict[str, Path] = {}
    for plan in plans:
        if plan.name in seen:
            raise InvalidInputError(
                f"two models named '{plan.name}' ({seen[plan.name]} and {plan.path}): give one another name "
                f"with NAME=ARTIFACT"
            )
        seen[plan.name] = plan.path
        check_datatypes(plan)
    return plans, refused


def check_datatypes(plan: ModelPlan) -> None:
    """Every input and output of a KServe datatype this server decodes and encodes: a string input
    (an ONNX model's; TensorRT takes none) or an FP8/INT4 tensor would fail the first request, or
    send its binary data as numpy holds it. String outputs go out as BYTES. Pure."""
    for role, metas in (("input", plan.signature.inputs), ("output", plan.signature.outputs)):
        for meta in metas:
            if meta.datatype not in DATATYPES and (role, meta.datatype) != ("output", "BYTES"):  # strings go out
                held = "strings" if meta.datatype == "BYTES" else meta.datatype.lower()
                raise InvalidInputError(
                    f"{plan.path}: {role} '{meta.name}' holds {held}, which has no KServe datatype here "
                    f"(trtforge serve serves {', '.join(DATATYPES)}): serve a model without such a tensor"
                )


def refusals(plans: Sequence[ModelPlan], policy: LoadPolicy) -> list[IncompatibleEngineError]:
    """What the compatibility rules (the same function as ``check`` and the loader) refuse, without
    deserializing anything."""
    from trtforge.runtime.loader import check_compatibility

    found: list[IncompatibleEngineError] = []
    for plan in plans:
        if plan.backend != "onnxruntime":
            result = check_compatibility(plan.path, policy)
            if not result.compatible:
                found.append(result.error())
    return found


def combined_refusal(errors: Sequence[IncompatibleEngineError]) -> IncompatibleEngineError:
    """Every refusal as one error: one line, every reason of every artifact."""
    return IncompatibleEngineError(
        "refusing to serve, nothing was deserialized and no port opened: " + " | ".join(str(e) for e in errors),
        reasons=[reason for error in errors for reason in error.reasons],
    )


# ---------------------------------------------------------------- warming and serving


def parse_warmup_shape(text: str, models: Sequence[str]) -> tuple[str | None, WarmupSet]:
    """``[MODEL:]NAME=DIMS[,NAME=DIMS]`` -> (MODEL or None for every model, one shape per input);
    ``NAME=[V,...]`` gives a shape tensor's values (its shape follows from them).

    ``MODEL:`` counts only when MODEL is a served model (input names such as ``input:0`` stay whole);
    dims may use commas too (``input=1,3,8,8``). Pure."""
    from trtforge.shapes import parse_inputs

    model, sep, rest = text.partition(":")
    chosen = model if sep and model in models else None
    body = rest if chosen is not None else text
    try:
        shapes, values = parse_inputs([part for part in _SET_SPLIT.split(body) if part.strip()])
    except InvalidInputError:
        raise InvalidInputError(
            f"--warmup-shape '{text}': write [MODEL:]NAME=DIMS[,NAME=DIMS], e.g. --warmup-shape digits:input=16x1x8x8 "
            "(a shape tensor's values: NAME=[V,...], e.g. 'shape=[2,3,4]')"
        ) from None
    return chosen, WarmupSet(shapes, values)


def check_warmup_shapes(texts: Sequence[str], plans: Sequence[ModelPlan]) -> None:
    """Every ``--warmup-shape`` names inputs of the model it is for (of some served model when it
    names none), in shapes that model takes, within a request's input budget, with values for its
    shape tensors the model takes; and each model can be warmed (and probed: ``--no-warmup`` too)
    with values for its shape tensors: a typo, or values only the caller knows, is exit 2 before
    the port opens, not a shape that is silently not warmed or a warm-up that fails once the port is
    open (there a shape too large to allocate would exit 1, zeros for a Reshape's shape 5). Pure."""
    inputs = {plan.name: [meta.name for meta in plan.signature.inputs] for plan in plans}
    parsed = [parse_warmup_shape(text, list(inputs)) for text in texts]
    for text, (model, entry) in zip(texts, parsed, strict=True):
        known = inputs[model] if model is not None else sorted({name for names in inputs.values() for name in names})
        for name in [*entry.shapes, *entry.values]:
            if name not in known:
                listed = f"(inputs: {', '.join(known) or 'none'}; models: {', '.join(inputs)})"
                prefix = text.partition(":")[0]
                if model is None and name.startswith(f"{prefix}:"):  # MODEL: naming no served model
                    raise InvalidInputError(
                        f"--warmup-shape '{text}': no served model has an input '{name}', nor is one named "
                        f"'{prefix}'{did_you_mean(prefix, inputs)} {listed}"
                    )
                owner = f"model '{model}'" if model is not None else "no served model"
                has = "does not have" if model is not None else "has"
                raise InvalidInputError(
                    f"--warmup-shape '{text}': {owner} {has} an input '{name}'"
                    f"{did_you_mean(name, [*known, *(f'{m}:' for m in inputs)])} {listed}"
                )
    for plan in plans:
        sets = model_warmup_sets(plan, parsed)
        for entry in sets:
            try:
                completed = plan_warmup_set(plan, entry)
            except InvalidInputError as exc:
                raise InvalidInputError(f"--warmup-shape for model '{plan.name}': {exc}") from None
            problem = warmup_problem(completed.shapes, plan.signature)
            if problem is not None:
                raise InvalidInputError(f"--warmup-shape for model '{plan.name}': {problem}; pass shapes it takes")
        if plan.shape_tensors is not None and not sets:
            try:
                plan.shape_tensors.defaults("--warmup-shape", plan.name)
            except ShapeValuesNeeded as exc:
                raise InvalidInputError(f"model '{plan.name}' cannot be warmed or probed: {exc}") from None


def plan_warmup_set(plan: ModelPlan, entry: WarmupSet) -> WarmupSet:
    """``entry`` with values for the model's shape tensors, as its pool will complete it. Pure."""
    if plan.shape_tensors is None:
        return entry
    return plan.shape_tensors.complete(entry, "--warmup-shape", plan.name)


def model_warmup_sets(plan: ModelPlan, shape_sets: Sequence[tuple[str | None, WarmupSet]]) -> list[WarmupSet]:
    """The ``--warmup-shape`` sets for this model (its own, and unprefixed ones naming one of its
    inputs), its other inputs at their default shape (dynamic dims 1; a shape tensor's values are
    its pool's to complete). Pure."""
    names = {meta.name for meta in plan.signature.inputs}
    kept = []
    for model, entry in shape_sets:
        given = {*entry.shapes, *entry.values}
        if model not in (None, plan.name) or not names & given:
            continue
        shapes = {
            meta.name: tuple(entry.shapes.get(meta.name) or meta.default_shape)
            for meta in plan.signature.inputs
            if meta.name not in entry.values
        }
        kept.append(WarmupSet(shapes, {name: v for name, v in entry.values.items() if name in names}))
    return kept


def check_limits(limits: Limits, health_interval: float | None = None) -> None:
    """The serving flags, refused with their fix before anything is resolved or listens (the pools
    would refuse a health interval only once listening). Pure."""
    if limits.pool_size + limits.max_queue > MAX_ADMITTED:  # each admitted request holds a worker thread
        raise InvalidInputError(
            f"--pool {limits.pool_size} + --max-queue {limits.max_queue}: "
            f"at most {MAX_ADMITTED} requests per model at once"
        )
    if limits.min_contexts > limits.pool_size:
        raise InvalidInputError(
            f"--min-contexts {limits.min_contexts} is above --pool {limits.pool_size}: the server could never be "
            f"ready; pass --min-contexts {limits.pool_size} or less, or --pool {limits.min_contexts} or more"
        )
    if not math.isfinite(limits.grace_s):
        raise InvalidInputError(
            f"--grace {limits.grace_s}: give a number of seconds (default 30), "
            "below the pod's terminationGracePeriodSeconds"
        )
    if not (math.isfinite(limits.client_timeout) and limits.client_timeout > 0):
        raise InvalidInputError(
            f"--client-timeout {limits.client_timeout}: give the seconds a client may keep the server waiting "
            "for its request (default 10), above 0"
        )
    if health_interval is not None and not (math.isfinite(health_interval) and health_interval > 0):
        raise InvalidInputError(
            f"--health-interval {health_interval}: give a number of seconds between probes (default 30), or 0 for none"
        )


def check_body_limit(max_body_bytes: int, plans: Sequence[ModelPlan]) -> None:
    """``--max-body-mib`` holds each model's smallest request (each input at its smallest shape,
    binary), which the warm-up sends through HTTP: below it the model could never be warmed. Pure."""
    for plan in plans:
        needed = len(probe_request(plan.signature)[0])
        if needed > max_body_bytes:
            mib = math.ceil(needed / 2**20 * 1000) / 1000  # int(mib * 2**20) >= needed
            raise InvalidInputError(
                f"--max-body-mib allows {max_body_bytes} bytes, fewer than the smallest request of model "
                f"'{plan.name}' ({needed} bytes: each input at its smallest shape, as the warm-up sends it); "
                f"pass --max-body-mib {mib:g} or more (default 64)"
            )


class WarmupError(TrtforgeError):
    """A model that could not be warmed; its exit code is that of the error underneath."""

    def __init__(self, model: str, error: BaseException) -> None:
        super().__init__(f"model '{model}' did not warm up, stopping: {first_line(error)}")
        self.exit_code = error.exit_code if isinstance(error, TrtforgeError) else 1


@dataclass
class _Outcome:
    """How the server ended: a warm-up failure to report, or the signal that stopped it."""

    error: TrtforgeError | None = None
    signal: int | None = None
    interrupted: bool = False  # stopped before every pool was warm


def warm_http_path(
    address: tuple[str, int],
    plans: Sequence[ModelPlan],
    requests: int = SELF_REQUESTS,
    probes: Mapping[str, Mapping[str, Any]] | None = None,
) -> None:
    """Send each model ``requests`` real inference requests over loopback, through uvicorn, Starlette,
    the worker threads and the protocol code: their first use costs tens of milliseconds (lazy
    imports, the first worker thread; measured 45-60 ms against a 1 ms steady request on the
    digits CNN), which the first user request would otherwise pay. ``probes``: per model its pool's
    health probe, sent instead of zeros (a shape tensor's values are what its pool warmed with)."""
    probes = probes or {}
    import http.client
    from urllib.parse import quote

    connection = http.client.HTTPConnection(*address, timeout=60)
    try:
        for plan in plans:
            body, length = probe_request(plan.signature, probes.get(plan.name))
            for _ in range(requests):
                connection.request(
                    "POST",
                    f"/v2/models/{quote(plan.name, safe='')}/infer",  # a file stem may hold ' ', '#', '%'
                    body=body,
                    headers={HEADER_LENGTH: str(length)},
                )
                response = connection.getresponse()
                answer = response.read()
                if response.status != 200:
                    raise TrtforgeError(
                        f"model '{plan.name}': the warm-up request got {response.status}: {answer[:300]!r}"
                    )
    finally:
        connection.close()


def _warmer(
    config: ServeConfig,
    outcome: _Outcome,
    stop: Callable[[], None],
    log: Callable[[str], None],
    address: Callable[[], tuple[str, int]],
) -> Callable[[ServeState], None]:
    """The warm-up thread's body: start each pool in turn, then warm the HTTP path on every model;
    a failure stops the server with its error."""
    from trtforge.runtime.lending import PoolClosed

    def warm(state: ServeState) -> None:
        began = time.perf_counter()
        shape_sets = [parse_warmup_shape(text, list(state.plans)) for text in config.warmup_shapes]
        plan = None
        try:
            for plan in state.plans.values():
                state.manager.add(
                    plan.name,
                    plan.path,
                    config.limits.pool_size,
                    warmup_also=model_warmup_sets(plan, shape_sets),
                    warmup=config.warmup,
                    timeout=config.limits.queue_timeout,
                    providers=(provider_name(config.provider),),
                    threads=config.threads,
                    policy=config.policy,
                    health_interval=config.health_interval,
                )
            if config.warmup:
                plan = None
                probes = {pool.name: pool.probe_feed for pool in state.manager.pools() if pool.probe_feed is not None}
                warm_http_path(address(), list(state.plans.values()), probes=probes)
                for pool in state.manager.pools():
                    pool.metrics.forget_requests()  # the server's own requests are not traffic
                # start-up garbage would be scanned by a collection during an early request: collect
                # now, and keep what survives (models, sessions, modules) out of later collections
                gc.collect()
                gc.freeze()
            log(f"ready: {len(state.plans)} model(s) warm in {time.perf_counter() - began:.1f} s")
        except PoolClosed:
            outcome.interrupted = True  # shutting down while warming: the manager closed the pool starting
            return
        except Exception as exc:  # a model that fails to warm: stop with its reason rather than serve half
            if outcome.signal is not None:
                outcome.interrupted = True  # stopping anyway: the pools or the HTTP path closed under it
                return
            outcome.error = (
                WarmupError(plan.name, exc) if plan else TrtforgeError(f"warming up failed: {first_line(exc)}")
            )
        finally:
            state.warming = False
        if outcome.error is not None:
            state.failure = str(outcome.error)
            stop()

    return warm


def run_server(config: ServeConfig, log: Callable[[str], None]) -> int:
    """Run the server until SIGTERM/SIGINT; returns the exit code (0 after a graceful stop, 130 for Ctrl-C)."""
    if not config.host.strip():  # an unset $HOST: listening on every interface would expose the server
        raise InvalidInputError(
            "--host is empty: pass the address to listen on (127.0.0.1, the default, or 0.0.0.0 for every "
            "interface); an empty one would listen on every interface"
        )
    provider_name(config.provider)  # before any pull: a typo is exit 2 at once
    check_threads(config.threads, "--threads")
    check_limits(config.limits, config.health_interval)
    plans, refused = resolve_artifacts(config.artifacts, config.policy, config.pull, log)
    check_warmup_shapes(config.warmup_shapes, plans)
    check_body_limit(config.limits.max_body_bytes, plans)
    refused += refusals(plans, config.policy)
    if refused:
        raise combined_refusal(refused)
    if not plans:
        raise InvalidInputError("no model to serve: pass an .engine, an .onnx, a folder or a registry reference")
    from trtforge.runtime.manager import PoolManager

    outcome = _Outcome()
    server: _Server | None = None

    def stop() -> None:
        if server is not None:
            server.should_exit = True

    def exit_at_once() -> NoReturn:
        log(_cut_off_line(state, server is not None and server.force_exit, config.limits.grace_s))
        _exit_now(outcome)

    bound: list[tuple[str, int]] = []
    warm = _warmer(config, outcome, stop, log, lambda: bound[0])
    state = ServeState({plan.name: plan for plan in plans}, PoolManager(), config.limits, warm)
    uv_config = uvicorn.Config(
        build_app(state),
        host=config.host,
        port=config.port,
        log_level="warning",
        access_log=False,
        # httptools (C) parses and writes HTTP in a third of h11's time, and uvloop (where it
        # installs; "auto") runs the loop in C: less code per request, so less to fetch again
        # after an idle pause (measured on the digits CNN: steady p50 -25 %, after idle -0.5 ms)
        http=_client_clock(config.limits.client_timeout),
        loop="auto",
        timeout_graceful_shutdown=math.ceil(config.limits.grace_s) + SHUTDOWN_BACKSTOP_S,  # ours cuts off first
        lifespan="on",
    )
    server = _Server(uv_config, outcome, state, exit_at_once)
    with _bound(config) as sock:
        host, port = sock.getsockname()[:2]
        bound.append((_LOOPBACK.get(host, host), port))
        names = ", ".join(f"{p.name} ({p.backend})" for p in plans)
        log(f"listening on http://{host}:{port}: {names}; ready once every pool is warm (GET /v2/health/ready)")
        server.run(sockets=[sock])  # a stop at once (a second signal) never returns: it exits in there
    if state.cut_off:  # their inference still runs in worker threads, which the interpreter would wait for
        exit_at_once()
    if outcome.error is not None:
        raise outcome.error
    if outcome.interrupted:
        log("stopped while warming up: warm-up ended, pools closed")
    else:
        log("stopped: in-flight requests answered, pools closed")
    return INTERRUPTED_EXIT if outcome.signal == signal.SIGINT else 0  # a Ctrl-C's stop says what it did too


def _cut_off_line(state: ServeState, at_once: bool, grace_s: float) -> str:
    """The log line of a stop that leaves inference running: what was cut off, and what of the pools
    was closed (a context still running a request cut off is never freed before the exit)."""
    if at_once:
        head = f"stopped at once by a second signal: {state.cut_off} request(s) still running cut off (answered 503)"
    else:
        head = f"stopped: {state.cut_off} request(s) still running after --grace {grace_s:g} s cut off (answered 503)"
    if not state.pools_closed:
        return f"{head}; pools not closed"
    return f"{head}; pools closed" + (" but for the contexts still running those requests" if state.cut_off else "")


def _exit_now(outcome: _Outcome) -> NoReturn:
    """End the process with its exit code (as ``exits_cleanly`` would print and return it) without
    waiting for the worker threads: the inferences cut off still run in them, and the interpreter
    would wait for them at exit, for as long as they take."""
    code = INTERRUPTED_EXIT if outcome.signal == signal.SIGINT else 0
    if outcome.error is not None:
        print(f"error: {one_line(str(outcome.error))}", file=sys.stderr)
        code = outcome.error.exit_code
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


@contextlib.contextmanager
def _bound(config: ServeConfig) -> Iterator[socket.socket]:
    """The listening socket, bound before uvicorn starts so the chosen port (``--port 0``) is known.

    Bound as ``uvicorn.Config.bind_socket`` binds a host and port (IPv6 for a host with ':',
    SO_REUSEADDR), not through it: on a taken port it logs its own line and exits the process."""
    family = socket.AF_INET6 if ":" in config.host else socket.AF_INET
    sock = socket.socket(family=family, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((config.host, config.port))
    except OSError as exc:
        sock.close()
        raise InvalidInputError(
            f"cannot listen on {config.host}:{config.port} ({exc.strerror}): pick another --port or --host"
        ) from exc
    sock.set_inheritable(True)
    try:
        yield sock
    finally:
        sock.close()


def _client_clock(timeout: float) -> type[asyncio.Protocol]:
    """uvicorn's httptools protocol, closing a connection whose client keeps the server waiting
    for its request over ``timeout`` seconds (``--client-timeout``): before its first request or
    inside its headers (counted from when the wait began, however the bytes trickle in), or inside
    its body (counted from its last bytes, also after an answer given before it was all read: a 404,
    a 413). uvicorn times out only a connection idle after an answer (keep-alive, 5 s): one that
    never sent a request, or stopped inside it (slowloris), held its socket forever, so enough of
    them used up the process's file descriptors and no one else could connect; and one stopped
    inside its body held a SIGTERM for the whole ``--grace``, then counted as a request cut off.
    Closed, its request ends as a client that disconnected does."""
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    class ClientClock(HttpToolsProtocol):
        _timer: asyncio.TimerHandle | None = None
        #: between a request's headers and the end of its body, which the client may still be sending
        #: after its answer (a 404 or 413 the server gave before reading it all)
        _in_body = False

        def _waiting_for_client(self) -> bool:
            """Whether the next bytes are the client's to send: its next request's headers, or more
            of the body of the request being answered (not one queued behind it, nor a body the
            server stopped reading while its buffer is full)."""
            cycle = self.cycle
            if cycle is None or cycle.response_complete:
                return True
            return cycle.more_body and not self.pipeline and not self.flow.read_paused

        def _arm(self) -> None:
            if self._timer is not None:
                self._timer.cancel()
            self._timer = self.loop.call_later(timeout, self._timed_out)

        def _timed_out(self) -> None:
            self._timer = None
            if self._waiting_for_client():
                if not self.transport.is_closing():
                    self.transport.close()
            elif self.cycle.more_body:
                self._arm()  # the server is the one not reading this body now: look again later

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            super().connection_made(transport)  # type: ignore[arg-type]
            self._arm()

        def on_headers_complete(self) -> None:
            super().on_headers_complete()
            self._in_body = True

        def on_message_complete(self) -> None:
            self._in_body = False  # uvicorn's own flag (``more_body``) stays set once the answer is sent
            super().on_message_complete()

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            cycle = self.cycle
            if cycle is None or (cycle.response_complete and not self._in_body):
                return  # still in its headers: the wait counts from when it began
            if self._waiting_for_client():
                self._arm()  # in its body: silence counts from its last bytes
            elif self._timer is not None:
                self._timer.cancel()
                self._timer = None

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing():
                self._arm()  # the next request's headers (or the body of one queued) are the client's now

        def connection_lost(self, exc: Exception | None) -> None:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            super().connection_lost(exc)

    return ClientClock


class _Server(uvicorn.Server):
    """uvicorn re-raises the stopping signal after its graceful shutdown, so the process would die by
    SIGTERM; trtforge's contract is an exit code (0 after a graceful stop, 130 for Ctrl-C). And
    ``--grace`` counts from the signal, in fractions of a second too (uvicorn's own limit is whole
    seconds from when its loop notices the signal, and answers a request it cuts off with a
    plain-text 500): at its end the app answers every request still running 503.

    A Ctrl-C during the grace is uvicorn's force exit, which skips the wait and the lifespan's
    shutdown: the app answers every request still running 503 at once, and the process exits 130
    from the loop (``exit_at_once``), before ``asyncio.run`` would cancel the lifespan (a traceback,
    then closing the pools would wait for the contexts cut off)."""

    def __init__(
        self, config: uvicorn.Config, outcome: _Outcome, state: ServeState, exit_at_once: Callable[[], NoReturn]
    ) -> None:
        super().__init__(config)
        self.outcome = outcome
        self.state = state
        self.exit_at_once = exit_at_once

    async def serve(self, sockets: list[socket.socket] | None = None) -> None:
        await super().serve(sockets)
        if self.force_exit:
            tasks = self.server_state.tasks
            if tasks:  # the requests cut off, sending their 503
                await asyncio.wait(tasks, timeout=SHUTDOWN_BACKSTOP_S)
            self.exit_at_once()

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        delay = max(0.0, self.state.start_grace() - time.monotonic())
        when = f"after --grace {self.state.limits.grace_s:g} s"
        cut_off = asyncio.get_running_loop().call_later(delay, self.state.cut_off_in_flight, when)
        try:
            await super().shutdown(sockets)
        finally:
            cut_off.cancel()

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        previous = {sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self.outcome.signal = self.outcome.signal or sig
        self.state.start_grace()
        super().handle_exit(sig, frame)
        if self.force_exit:  # a Ctrl-C after the first signal: exit 130, cutting off what still runs now
            self.outcome.signal = sig
            # on the loop's thread, which this handler interrupted anywhere: the loop calls it next
            asyncio.get_running_loop().call_soon_threadsafe(self.state.cut_off_in_flight, SECOND_SIGNAL)
