"""The HTTP side of ``trtforge serve``: a Starlette app speaking KServe v2 over the warm pools.

Inference runs in worker threads (``anyio.to_thread``), so the event loop keeps answering health
probes and metrics scrapes while contexts compute. Each model admits at most its pool size plus
``max_queue`` requests at once; one more gets 503 with ``Retry-After`` at once instead of joining
an unbounded queue, and an admitted request that waits longer than ``queue_timeout`` for a context
gets the same. When the server stops, requests still running ``grace_s`` later (or at a second
signal) are answered 503 (``ServeState.cut_off_in_flight``). The server runs on asyncio (uvicorn):
a request is cut off by cancelling its task.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
import time
import zlib
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from trtforge import __version__
from trtforge.errors import InvalidInputError, first_line
from trtforge.runtime.lending import PoolClosed, PoolExhausted, PoolState, SlotState
from trtforge.serve.protocol import (
    HEADER_LENGTH,
    ModelSignature,
    TensorMeta,
    check_request,
    encode_infer_response,
    error_body,
    header_length,
    parse_infer_request,
)

if TYPE_CHECKING:
    from pathlib import Path

    from trtforge.runtime.manager import PoolManager
    from trtforge.runtime.pool import EnginePool
    from trtforge.runtime.sources import ShapeTensors

log = logging.getLogger(__name__)

#: The version every model is served as: an artifact is one build, so there is one version.
MODEL_VERSION = "1"


@dataclass(frozen=True)
class ModelPlan:
    """One model to serve: its name, artifact, backend, the signature requests are checked against,
    and its shape tensors (where warm-up requests get their values; none known: an empty one)."""

    name: str
    path: Path
    backend: str  # onnxruntime | tensorrt | tensorrt-rtx
    platform: str  # KServe/Triton platform name, e.g. onnxruntime_onnx
    signature: ModelSignature
    shape_tensors: ShapeTensors | None = None

    def metadata(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "versions": [MODEL_VERSION],
            "platform": self.platform,
            "inputs": [meta.to_dict() for meta in self.signature.inputs],
            "outputs": [meta.to_dict() for meta in self.signature.outputs],
        }

    def config(self) -> dict[str, Any]:
        """Triton's model configuration as JSON (``GET .../config``, a Triton extension of KServe v2
        that ``tritonclient``'s ``get_model_config`` reads): no batching dim, ``-1`` where dynamic."""

        def tensors(metas: tuple[TensorMeta, ...]) -> list[dict[str, Any]]:
            return [{"name": m.name, "data_type": _config_type(m.datatype), "dims": list(m.shape)} for m in metas]

        return {
            "name": self.name,
            "platform": self.platform,
            "max_batch_size": 0,
            "input": tensors(self.signature.inputs),
            "output": tensors(self.signature.outputs),
        }


def _config_type(datatype: str) -> str:
    """A KServe datatype as Triton's model configuration names it: ``TYPE_`` and the same name,
    but for strings (KServe's BYTES is Triton's TYPE_STRING)."""
    return "TYPE_STRING" if datatype == "BYTES" else f"TYPE_{datatype}"


@dataclass(frozen=True)
class Limits:
    """Back-pressure and size limits (``trtforge serve`` flags)."""

    pool_size: int = 2  # contexts per model (--pool)
    max_queue: int = 8  # requests per model waiting for a context beyond the pool size
    queue_timeout: float = 5.0  # seconds an admitted request waits for a context
    max_body_bytes: int = 64 * 2**20
    min_contexts: int = 1  # healthy contexts per pool below which the server is not ready
    retry_after_s: int = 1
    grace_s: float = 30.0  # once the server stops, seconds requests in flight have before they are cut off
    client_timeout: float = 10.0  # seconds a client may keep the server waiting for its request (see serve.server)


@dataclass
class ServeState:
    """What the handlers share: the plans, the pools (added by the warm-up thread), the limits,
    and per model how many requests are admitted (touched only on the event loop's thread)."""

    plans: dict[str, ModelPlan]
    manager: PoolManager
    limits: Limits
    warm: Callable[[ServeState], None]  # starts the pools, one after the other (runs in a thread)
    admitted: dict[str, int] = field(default_factory=dict)
    warming: bool = True
    failure: str | None = None
    stop_by: float | None = None  # time.monotonic() at which requests still in flight are cut off
    in_flight: set[asyncio.Task[Any]] = field(default_factory=set)  # the tasks of the infer requests being handled
    cut_reason: str | None = None  # once requests in flight are cut off: when, for their 503
    cut_off: int = 0  # requests answered 503 because they were still running then
    pools_closed: bool = False  # the lifespan closed the pools (a context still lent is freed on its return)

    def start_grace(self) -> float:
        """The server stops (a signal, a failed warm-up): requests in flight get ``grace_s`` from
        the first call on; returns ``stop_by``. Safe in a signal handler."""
        if self.stop_by is None:
            self.stop_by = time.monotonic() + self.limits.grace_s
        return self.stop_by

    def grace_left(self) -> float:
        """Seconds left of the grace (all of it before the stop), for closing the pools."""
        return self.limits.grace_s if self.stop_by is None else max(0.0, self.stop_by - time.monotonic())

    def cut_off_in_flight(self, when: str) -> None:
        """Every request still in flight is answered 503 now, saying it was still running ``when``
        (on the event loop's thread). Its inference runs on in its worker thread, unheard: a running
        onnxruntime or TensorRT call cannot be stopped."""
        self.cut_reason = when
        for task in self.in_flight:
            task.cancel()

    def pool(self, name: str) -> EnginePool | None:
        return self.manager.get(name) if name in self.manager else None

    def pool_problem(self, name: str) -> str | None:
        """None when the model's pool can serve; else why not (for readiness and 503s)."""
        pool = self.pool(name)
        if pool is None:
            return f"model '{name}' is " + ("warming up" if self.warming and not self.failure else "not loaded")
        healthy = sum(info.state in (SlotState.IDLE, SlotState.BUSY) for info in pool.contexts())
        if pool.state not in (PoolState.READY, PoolState.DEGRADED):
            return f"model '{name}': pool is {pool.state.value}"
        if healthy < self.limits.min_contexts:
            return f"model '{name}': {healthy} healthy contexts, fewer than the minimum {self.limits.min_contexts}"
        return None

    def not_ready(self) -> str | None:
        problems = [problem for name in self.plans if (problem := self.pool_problem(name))]
        if not problems and self.warming:
            problems.append("warming up the HTTP request path")
        return "; ".join(problems) or None


def _error(status: int, message: str, retry: int | None = None) -> Response:
    headers = {"Retry-After": str(retry)} if retry is not None else None
    return Response(error_body(message), status, headers=headers, media_type="application/json")


def _refused(pool: EnginePool | None, status: int, message: str) -> Response:
    """A request refused as the client's fault (400, 413) before any inference, counted as
    ``invalid`` in its model's metrics (as ``EnginePool.infer`` counts the inputs a context refuses)."""
    if pool is not None:
        pool.metrics.invalid()
    return _error(status, message)


def _plan(state: ServeState, request: Request) -> ModelPlan | Response:
    name = request.path_params["name"]
    plan = state.plans.get(name)
    if plan is None:
        return _error(404, f"unknown model '{name}' (models: {', '.join(state.plans)})")
    version = request.path_params.get("version")
    if version is not None and version != MODEL_VERSION:
        return _error(404, f"model '{name}' has no version '{version}' (versions: {MODEL_VERSION})")
    return plan


class _TooLarge(Exception):
    """The body passed ``--max-body-mib``: answered 413 before more of it is read."""


async def _read_body(request: Request, limit: int) -> bytes:
    """The body, decompressed as Content-Encoding says; over ``limit`` bytes raises _TooLarge early."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isascii() and declared.isdigit() and int(declared) > limit:
        raise _TooLarge
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _TooLarge
        chunks.append(chunk)
    body = b"".join(chunks)
    encoding = request.headers.get("content-encoding", "identity").lower()
    if encoding in ("identity", ""):
        return body
    if encoding not in ("gzip", "deflate"):
        raise InvalidInputError(f"Content-Encoding '{encoding}' is not supported (use gzip, deflate or none)")
    return _decompressed(body, encoding, limit)


def _decompressed(body: bytes, encoding: str, limit: int) -> bytes:
    """tritonclient's request compression: one gzip member, or deflate in zlib framing, whole (a
    stream cut short, or bytes after its end, is refused: its request would be a guess), and
    decompressed within ``limit`` (past it: _TooLarge, before more is inflated). A second gzip
    member is refused too: tritonclient sends one, and zlib hands back the rest of the body as a
    copy after each member, so a body of many empty members would take quadratic time."""
    decompressor = zlib.decompressobj(wbits=31 if encoding == "gzip" else 15)
    try:
        plain = decompressor.decompress(body, limit + 1)
    except zlib.error as exc:
        raise InvalidInputError(f"the {encoding} body does not decompress: {exc}") from exc
    if len(plain) > limit:
        raise _TooLarge
    if not decompressor.eof:
        raise InvalidInputError(f"the {encoding} body is cut short: it ends before its end-of-stream marker")
    if decompressor.unused_data:
        raise InvalidInputError(
            f"the {encoding} body has {len(decompressor.unused_data)} bytes after its end: send one {encoding} stream"
        )
    return plain


def _run_inference(
    pool: EnginePool, plan: ModelPlan, body: bytes, header_length: int | None, timeout: float, retry: int
) -> Response:
    """Decode, check, infer and encode, in a worker thread: nothing here runs on the event loop."""
    try:
        parsed = parse_infer_request(body, header_length, plan.signature)
        check_request(parsed, plan.signature)
    except InvalidInputError as exc:
        return _refused(pool, 400, str(exc))
    try:
        outputs = pool.infer(parsed.inputs, timeout=timeout)
        content, json_length = encode_infer_response(plan.name, MODEL_VERSION, parsed, outputs)
    except InvalidInputError as exc:
        # inputs a context refused (the pool counted them invalid), or an output JSON cannot carry: the
        # pool counted that inference ok, and it was (counting it invalid too would count it twice)
        return _error(400, str(exc))
    except PoolExhausted as exc:
        return _error(503, str(exc), retry)
    except PoolClosed as exc:
        return _error(503, f"model '{plan.name}' is shutting down ({exc})", retry)
    except Exception as exc:  # the context failed: the pool heals it; this request gets the reason
        return _error(500, f"model '{plan.name}': inference failed: {first_line(exc)}")
    if json_length is None:
        return Response(content, 200, media_type="application/json")
    return Response(content, 200, headers={HEADER_LENGTH: str(json_length)}, media_type="application/octet-stream")


def build_app(state: ServeState) -> Starlette:
    """The KServe v2 routes over ``state``; the lifespan warms the pools in a thread and closes them."""
    import anyio

    # every admitted request holds a worker thread: admission bounds them, so this never queues
    limiter = anyio.CapacityLimiter(max(len(state.plans) * (state.limits.pool_size + state.limits.max_queue), 1))

    async def live(request: Request) -> Response:
        return JSONResponse({"live": True})

    async def ready(request: Request) -> Response:
        problem = state.failure or state.not_ready()
        if problem:
            return _error(503, f"not ready: {problem}")
        return JSONResponse({"ready": True})

    async def server_metadata(request: Request) -> Response:
        return JSONResponse({"name": "trtforge", "version": __version__, "extensions": ["binary_tensor_data"]})

    async def model_metadata(request: Request) -> Response:
        plan = _plan(state, request)
        return plan if isinstance(plan, Response) else JSONResponse(plan.metadata())

    async def model_config(request: Request) -> Response:
        plan = _plan(state, request)
        return plan if isinstance(plan, Response) else JSONResponse(plan.config())

    async def model_ready(request: Request) -> Response:
        plan = _plan(state, request)
        if isinstance(plan, Response):
            return plan
        problem = state.pool_problem(plan.name)
        return _error(503, f"not ready: {problem}") if problem else JSONResponse({"name": plan.name, "ready": True})

    async def infer(request: Request) -> Response:
        plan = _plan(state, request)
        if isinstance(plan, Response):
            return plan
        # the task, not an anyio CancelScope, is what cut_off_in_flight cancels: 0.25 µs a request, not 2.8
        task = asyncio.current_task()
        assert task is not None
        state.in_flight.add(task)
        try:
            return await answer(request, plan)
        except asyncio.CancelledError:
            if state.cut_reason is None:
                raise  # not a cut-off: uvicorn's or asyncio's own cancellation
            if sys.version_info >= (3, 11):
                task.uncancel()  # handled here: the task goes on to send the 503
        finally:
            state.in_flight.discard(task)
        state.cut_off += 1
        return _error(
            503,
            f"model '{plan.name}': the server is stopping and this request was still running {state.cut_reason}; retry",
            state.limits.retry_after_s,
        )

    async def answer(request: Request, plan: ModelPlan) -> Response:
        """The body read within its limit, the request admitted, then inferred in a worker thread."""
        limits = state.limits
        try:
            body = await _read_body(request, limits.max_body_bytes)
        except ClientDisconnect:  # the client left mid-body: no one to answer, nothing wrong here
            log.debug("model %s: the client disconnected before its request body ended", plan.name)
            return Response(status_code=499)  # nginx's "client closed request"; uvicorn sends nothing now
        except _TooLarge:
            message = f"request body over the limit of {limits.max_body_bytes} bytes (--max-body-mib)"
            return _refused(state.pool(plan.name), 413, message)
        except InvalidInputError as exc:
            return _refused(state.pool(plan.name), 400, str(exc))
        try:
            json_length = header_length(request.headers.get(HEADER_LENGTH), len(body))
        except InvalidInputError as exc:
            return _refused(state.pool(plan.name), 400, str(exc))
        pool = state.pool(plan.name)
        problem = state.pool_problem(plan.name)
        if pool is None or problem:
            return _error(503, f"not ready: {problem}", limits.retry_after_s)
        admitted = state.admitted.get(plan.name, 0)
        if admitted >= pool.size + limits.max_queue:
            pool.metrics.exhausted()
            return _error(
                503,
                f"model '{plan.name}' is busy: {pool.size} contexts and {limits.max_queue} queued requests "
                "(--max-queue); retry later",
                limits.retry_after_s,
            )
        state.admitted[plan.name] = admitted + 1
        try:
            return await anyio.to_thread.run_sync(
                _run_inference,
                pool,
                plan,
                body,
                json_length,
                limits.queue_timeout,
                limits.retry_after_s,
                limiter=limiter,
                abandon_on_cancel=True,  # a request cut off is answered at once; its inference runs on
            )
        finally:
            state.admitted[plan.name] -= 1

    async def metrics(request: Request) -> Response:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return Response(generate_latest(state.manager.registry), media_type=CONTENT_TYPE_LATEST)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        thread = threading.Thread(target=state.warm, args=(state,), name="trtforge-warmup", daemon=True)
        thread.start()
        try:
            yield
        finally:
            # closing stops a warm-up in progress at its next context; then the thread ends, and no
            # pool it was starting outlives the server. Contexts still busy (a health probe, an
            # inference cut off) get what is left of the grace, and are freed as they come back
            await anyio.to_thread.run_sync(state.manager.close, state.grace_left())
            await anyio.to_thread.run_sync(thread.join)
            state.pools_closed = True

    routes = [
        Route("/v2", server_metadata),
        Route("/v2/health/live", live),
        Route("/v2/health/ready", ready),
        Route("/v2/models/{name}", model_metadata),
        Route("/v2/models/{name}/versions/{version}", model_metadata),
        Route("/v2/models/{name}/config", model_config),
        Route("/v2/models/{name}/versions/{version}/config", model_config),
        Route("/v2/models/{name}/ready", model_ready),
        Route("/v2/models/{name}/versions/{version}/ready", model_ready),
        Route("/v2/models/{name}/infer", infer, methods=["POST"]),
        Route("/v2/models/{name}/versions/{version}/infer", infer, methods=["POST"]),
        Route("/metrics", metrics),
    ]

    async def http_error(request: Request, exc: Exception) -> Response:
        """Starlette's own 404 (no such path) and 405 (wrong method) as KServe errors too."""
        assert isinstance(exc, HTTPException)
        return _error(exc.status_code, f"{request.method} {request.url.path}: {exc.detail}")

    return Starlette(routes=routes, lifespan=lifespan, exception_handlers={HTTPException: http_error})
