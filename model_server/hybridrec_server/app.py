"""FastAPI app factory: routes, error handlers, metrics middleware and the load/drain lifecycle."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator, Awaitable, Callable, Coroutine, MutableMapping

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from . import __doc__ as package_doc
from .batcher import DynamicBatcher, QueueFullError, ShuttingDownError
from .errors import ApiError, ModelNotFoundError, ModelNotReadyError, describe, spec_for, v2_error
from .metrics import ServerMetrics
from .predictor import Query, Recommendation, RecommenderModel
from .schema import (
    API_ENDPOINTS, ERROR_RESPONSES, INLINE_PARSE_BYTES, BatchRecommendRequest, BatchRecommendResponse, ErrorResponse,
    RecommendRequest, RecommendResponse, body_doc, load_json, parse_batch, parse_single, read_body,
)
from .settings import Settings
from .v2 import InferRequest, model_metadata, parse_infer, render_infer, split_binary

log = logging.getLogger(__name__)



class MetricsMiddleware:
    """Pure ASGI middleware (no per-request task like BaseHTTPMiddleware): latency, status, in-flight."""

    def __init__(
        self, app: Callable[..., Awaitable[None]], metrics: ServerMetrics, endpoints: dict[str, str] | None = None
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.endpoints = endpoints or API_ENDPOINTS

    async def __call__(self, scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
        endpoint = self.endpoints.get(scope.get("path", "")) if scope["type"] == "http" else None
        if endpoint is None:
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_wrapper(message: MutableMapping[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        self.metrics.inflight.inc()
        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            self.metrics.inflight.dec()
            self.metrics.observe_request(endpoint, status, time.perf_counter() - started)


def query_weight(query: Query) -> int:
    """Ids one query makes the forward score: its user row plus its candidates, exclusions and history."""
    return 1 + len(query.candidates or ()) + len(query.exclude) + len(query.history or ())


def render(model: RecommenderModel, rec: Recommendation) -> dict[str, Any]:
    """Response document for one recommendation."""
    return {
        "model": model.name,
        "version": model.version,
        "user_id": rec.user_id,
        "items": [{"item_id": item, "score": score} for item, score in rec.items],
        "fallback": rec.fallback,
    }


class AsciiJSONResponse(JSONResponse):
    """JSON with non-ASCII escaped: an error naming a client's odd key (a lone surrogate) still renders."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=True, allow_nan=False, separators=(",", ":")).encode("ascii")


def _error_response(exc: BaseException) -> JSONResponse:
    spec, body, headers = describe(exc)
    if spec.status >= 500 and not isinstance(exc, (ApiError, ShuttingDownError, StarletteHTTPException)):
        log.error("unhandled error: %r", exc, exc_info=exc)
    return AsciiJSONResponse(body, status_code=spec.status, headers=headers)


_HANDLED = (RequestValidationError, StarletteHTTPException, ApiError, QueueFullError, ShuttingDownError)


class GuardedRoute(APIRoute):
    """Turns unexpected exceptions into the JSON 500 inside the route, so they never propagate further
    (Starlette's outermost error middleware would re-raise them after answering)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        original = super().get_route_handler()

        async def handler(request: Request) -> Response:
            try:
                return await original(request)
            except _HANDLED:
                raise
            except Exception as exc:  # noqa: BLE001 - mapped to internal_error, details only in the log
                return _error_response(exc)

        return handler


def create_app(settings: Settings, model: RecommenderModel | None = None) -> FastAPI:
    """Build the app. ``model`` may be injected (already loaded or not); otherwise it is built from settings.

    The model loads in the background after start-up so ``/healthz`` answers at once and ``/readyz``
    reports 503 until load + warm-up finish. If loading fails, ``app.state.load_error`` is set and
    ``app.state.on_fatal`` (installed by ``__main__``) is called so the process exits non-zero.
    """
    metrics = ServerMetrics(settings.namespace, settings.model_name, settings.pool)
    model = model or RecommenderModel(
        settings.model_name,
        settings.model_uri,
        expected_sha256=settings.model_sha256,
        cache_dir=settings.model_cache_dir,
        s3_endpoint_url=settings.s3_endpoint_url,
        device=settings.device,
        precision=settings.precision,
    )
    batch_size = settings.max_batch_size if settings.batching else 1
    batcher: DynamicBatcher[Query, Recommendation] = DynamicBatcher(
        model.predict,
        max_batch_size=batch_size,
        max_batch_delay_ms=settings.max_batch_delay_ms if settings.batching else 0.0,
        max_queue=settings.max_queue,
        on_batch=metrics.batch_size.observe,
        on_queue_depth=metrics.queue_depth.set,
        weight=query_weight,
        max_batch_weight=settings.max_forward_ids,
    )

    def is_ready() -> bool:
        return model.ready and not app.state.shutting_down and batcher.accepting

    async def load_in_background() -> None:
        try:
            if not model.ready:
                await asyncio.to_thread(model.load)
                await asyncio.to_thread(model.warmup, batch_size)
            metrics.set_model_info(model.version, model.architecture, str(model.device))
            if model.device.type == "cuda":
                metrics.enable_gpu(model.device.index or 0)
            if not app.state.shutting_down:
                metrics.ready.set(1)
            log.info("ready: %s", model.describe())
        except Exception as exc:  # noqa: BLE001 - reported to main, which exits non-zero
            app.state.load_error = exc
            log.error("model load failed, not serving: %s", exc)
            if app.state.on_fatal is not None:
                app.state.on_fatal(exc)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        batcher.start()
        app.state.load_task = asyncio.create_task(load_in_background())
        try:
            yield
        finally:
            begin_shutdown()
            await batcher.stop(settings.shutdown_timeout_s)

    def begin_shutdown() -> None:
        """Flip readiness off at once (SIGTERM); in-flight requests still complete."""
        app.state.shutting_down = True
        metrics.ready.set(0)

    app = FastAPI(
        title="hybridrec model server",
        description=package_doc or "",
        version="1",
        lifespan=lifespan,
    )
    app.router.route_class = GuardedRoute
    app.state.settings = settings
    app.state.model = model
    app.state.batcher = batcher
    app.state.metrics = metrics
    app.state.shutting_down = False
    app.state.load_error = None
    app.state.on_fatal = None
    app.state.begin_shutdown = begin_shutdown
    app.state.is_ready = is_ready
    v2_infer_path = f"/v2/models/{settings.model_name}/infer"
    app.add_middleware(MetricsMiddleware, metrics=metrics, endpoints={**API_ENDPOINTS, v2_infer_path: "v2_infer"})

    async def handle_error(_: Request, exc: Exception) -> Response:
        # async on purpose: Starlette runs sync handlers in a thread pool, too slow for 429s under overload
        return _error_response(exc)

    for exc_type in (*_HANDLED, Exception):
        app.add_exception_handler(exc_type, handle_error)

    def require_ready() -> None:
        if not model.ready:
            raise ModelNotReadyError("model is loading; retry shortly")

    def single_query(raw: bytes) -> Query:
        body = parse_single(raw)
        require_ready()
        return model.prepare(body.user_id, body.k, body.candidates, body.exclude, history=body.history)

    def batch_queries(raw: bytes) -> list[Query]:
        bodies = parse_batch(raw)
        require_ready()
        return [
            model.prepare(r.user_id, r.k, r.candidates, r.exclude, field_prefix=f"requests[{i}].", history=r.history)
            for i, r in enumerate(bodies)
        ]

    def count_skipped(queries: list[Query]) -> None:
        skipped = sum(q.skipped for q in queries)
        if skipped:
            metrics.unknown_items.inc(skipped)

    async def off_loop(fn: Callable[[bytes], Any], raw: bytes) -> Any:
        """Parse small bodies inline, large ones on a worker thread (see INLINE_PARSE_BYTES)."""
        if len(raw) <= INLINE_PARSE_BYTES:
            return fn(raw)
        return await asyncio.to_thread(fn, raw)

    @app.post("/v1/recommend", response_model=RecommendResponse, responses=ERROR_RESPONSES,
              openapi_extra=body_doc(RecommendRequest))
    async def recommend(request: Request) -> Response:
        """Top-k items for a user; unknown users get popular items with ``fallback: true``."""
        raw = await read_body(request, settings.max_body_bytes)
        query = await off_loop(single_query, raw)
        count_skipped([query])
        rec = await batcher.submit(query)
        if rec.fallback:
            metrics.fallback.inc()
        return JSONResponse(render(model, rec))

    @app.post("/v1/recommend:batch", response_model=BatchRecommendResponse, responses=ERROR_RESPONSES,
              openapi_extra=body_doc(BatchRecommendRequest))
    async def recommend_batch(request: Request) -> Response:
        """Several requests at once; answered in order. Any invalid entry rejects the whole call (422)."""
        raw = await read_body(request, settings.max_body_bytes)
        queries = await off_loop(batch_queries, raw)
        count_skipped(queries)
        recs = await batcher.submit_many(queries)
        n_fallback = sum(1 for rec in recs if rec.fallback)
        if n_fallback:
            metrics.fallback.inc(n_fallback)
        return JSONResponse({"responses": [render(model, rec) for rec in recs]})

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        """Liveness: the process and its event loop are alive."""
        return {"status": "ok"}

    @app.get("/readyz", responses={503: {"model": ErrorResponse}})
    async def readyz() -> Response:
        """Readiness: 200 only after model load + warm-up, 503 before and while shutting down."""
        if is_ready():
            return JSONResponse({"status": "ready", "model": model.name, "version": model.version})
        if app.state.shutting_down or not batcher.accepting:
            exc: BaseException = ShuttingDownError("shutting down")
        else:
            exc = ModelNotReadyError("model failed to load" if app.state.load_error else "model is loading")
        spec = spec_for(exc)
        _, body, _ = describe(exc)
        return JSONResponse(body, status_code=spec.status)

    # ------------------------------------------------------------------ Open Inference Protocol (KServe V2, REST)
    def v2_response(exc: BaseException) -> Response:
        status, body, headers = v2_error(exc)
        if status >= 500 and not isinstance(exc, (ApiError, ShuttingDownError, StarletteHTTPException)):
            log.error("unhandled error: %r", exc, exc_info=exc)
        return AsciiJSONResponse(body, status_code=status, headers=headers)

    def v2_model(name: str) -> None:
        if name != settings.model_name:
            raise ModelNotFoundError(f"unknown model '{name}'; this server serves '{settings.model_name}'", "model")

    def v2_queries(raw: bytes, header_length: str | None) -> tuple[InferRequest, list[Query]]:
        require_ready()
        head, binary = split_binary(raw, header_length)
        request = parse_infer(load_json(head), model.sequential, binary)
        # a row of padding only is no history: the user id's stored one is used (as when the input is absent)
        histories = request.histories or [None] * len(request.user_ids)
        return request, [
            model.prepare(user, request.k, history=history or None)
            for user, history in zip(request.user_ids, histories)
        ]

    @app.get("/v2")
    async def v2_server_metadata() -> Response:
        """Open Inference Protocol: server metadata."""
        return JSONResponse({"name": "hybridrec-server", "version": "1", "extensions": []})

    @app.get("/v2/health/live")
    async def v2_live() -> Response:
        """Open Inference Protocol liveness (as ``/healthz``)."""
        return JSONResponse({"live": True})

    @app.get("/v2/health/ready")
    async def v2_ready() -> Response:
        """Open Inference Protocol readiness: 200 when ready, 400 (the protocol's 4xx for false) otherwise."""
        ready = is_ready()
        return JSONResponse({"ready": ready}, status_code=200 if ready else 400)

    @app.get("/v2/models/{name}")
    async def v2_model_metadata(name: str) -> Response:
        """Open Inference Protocol model metadata: inputs and outputs with datatype and shape."""
        try:
            v2_model(name)
            require_ready()  # the signature depends on the loaded architecture
        except Exception as exc:  # noqa: BLE001 - every error in the protocol's format
            return v2_response(exc)
        return JSONResponse(model_metadata(model.name, model.version, model.sequential))

    @app.get("/v2/models/{name}/ready")
    async def v2_model_ready(name: str) -> Response:
        """Open Inference Protocol model readiness: 200 when ready, 400 otherwise, 404 for another model."""
        try:
            v2_model(name)
        except Exception as exc:  # noqa: BLE001
            return v2_response(exc)
        ready = is_ready()
        return JSONResponse({"name": name, "ready": ready}, status_code=200 if ready else 400)

    @app.post("/v2/models/{name}/infer")
    async def v2_infer(name: str, request: Request) -> Response:
        """Open Inference Protocol inference: same batcher, queue limit (429 + Retry-After) and metrics as v1."""
        try:
            v2_model(name)
            raw = await read_body(request, settings.max_body_bytes)
            header_length = request.headers.get("inference-header-content-length")
            infer, queries = await off_loop(lambda body: v2_queries(body, header_length), raw)
            count_skipped(queries)
            recs = await batcher.submit_many(queries)
        except Exception as exc:  # noqa: BLE001
            return v2_response(exc)
        n_fallback = sum(1 for rec in recs if rec.fallback)
        if n_fallback:
            metrics.fallback.inc(n_fallback)
        body = render_infer(model.name, model.version, infer, [(rec.items, rec.fallback) for rec in recs])
        return Response(body, media_type="application/json")

    @app.get("/metrics", include_in_schema=False)
    async def metrics_endpoint() -> Response:
        body, content_type = metrics.render()
        return Response(body, media_type=content_type)

    @app.get("/")
    async def root() -> dict[str, Any]:
        """Identity of the served model."""
        return model.describe()

    return app
