"""The FastAPI app: one OpenAI-compatible server for every incasa model, plus the studio page.

    app = create_app(ServeSettings())                      # the shipped image model, no API keys
    app = create_app(settings, registry)                   # your own engines (tests, text and voice models)

Layers, outermost first:
- `Gatekeeper`, a plain ASGI middleware: request id, API keys (`Authorization: Bearer`), the access log (one JSON
  line per request on the `incasa.serve.access` logger) and the request metrics. Plain ASGI rather than
  BaseHTTPMiddleware because it adds microseconds, not a task per request, and leaves streaming alone.
- routers (incasa/serve/routes/): thin; parse, call a service function, shape the answer.
- services (image_service.py, chat/speech in their routers): guardrails, queues, delivery.
- engines (engines.py) and the scheduler (scheduler.py): no HTTP.

Errors always leave in the OpenAI shape `{"error": {"message", "type", "param", "code"}}`: `APIError` as raised,
validation errors as 400 with the offending field as `param`, unknown routes as 404, policy refusals as 400
`content_policy_violation`, anything unexpected as 500 `server_error` (and logged with its traceback).

Lifespan: the queues' workers start with the app; on shutdown (uvicorn has stopped accepting and waited for
in-flight requests) the queues finish whatever they accepted, within `graceful_timeout_s`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import time
import uuid
from dataclasses import dataclass, field

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from incasa.serve.delivery import Guard, ImageStore, Refused, Signing
from incasa.serve.engines import Registry, ResidentPipelines, image_registry, text_registry, voice_registry
from incasa.serve.idempotency import IdempotencyCache
from incasa.serve.metrics import Metrics
from incasa.serve.protocol import APIError
from incasa.serve.scheduler import BatchQueue
from incasa.serve.settings import ServeSettings

access_log = logging.getLogger("incasa.serve.access")
log = logging.getLogger("incasa.serve")
OPEN_PATHS = ("/health", "/ready", "/metrics", "/studio", "/v1/files/images/", "/docs", "/openapi.json")
IMAGE_POSTS = ("/v1/images/generations", "/v1/images/edits")


@dataclass
class ServerContext:
    """Everything the routers need, hung on app.state.ctx."""

    settings: ServeSettings
    registry: Registry
    guard: Guard
    signing: Signing
    store: ImageStore
    metrics: Metrics
    idempotency: IdempotencyCache
    resident: ResidentPipelines | None = None
    queues: dict[str, BatchQueue] = field(default_factory=dict)
    chat_in_flight: dict[str, int] = field(default_factory=dict)
    ready: bool = False
    started_at: int = field(default_factory=lambda: int(time.time()))


def replica_id() -> str:
    import os
    import socket

    return f"{socket.gethostname()}:{os.getpid()}"


def error_response(err: APIError) -> JSONResponse:
    return JSONResponse(err.body(), status_code=err.status, headers=err.headers)


class Gatekeeper:
    """ASGI middleware: request id, Bearer auth on /v1, access log, request metrics."""

    def __init__(self, app, ctx: ServerContext):
        self.app, self.ctx = app, ctx
        self.keys = [k.encode() for k in ctx.settings.api_keys]
        self.replica = replica_id().encode()  # which process answered: for load-balancer debugging

    def _authorised(self, scope) -> bool:
        path = scope["path"]
        if not self.keys or not path.startswith("/v1/") or path.startswith(OPEN_PATHS):
            return True
        header = dict(scope["headers"]).get(b"authorization", b"")
        scheme, _, token = header.partition(b" ")
        return scheme.lower() == b"bearer" and any(hmac.compare_digest(token.strip(), k) for k in self.keys)

    def _shed(self, scope) -> JSONResponse | None:
        """Every image queue full: answer 429 at the door, before reading the body. Under a burst this is what
        keeps a refusal fast: the answer leaves in the event-loop turn that received the request, instead of
        waiting behind hundreds of other requests' body parsing (image_service.admit checks per model later)."""
        queues = self.ctx.queues.values()
        if scope["method"] != "POST" or scope["path"] not in IMAGE_POSTS or not queues:
            return None
        if any(q.depth() < q.max_waiting for q in queues):
            return None
        retry = min(q.retry_after() for q in queues)
        self.ctx.metrics.rejected.labels("queue_full").inc()
        return error_response(APIError(429, f"Every image queue is full; retry after {retry} s.",
                                       type="rate_limit_error", code="queue_full", headers={"Retry-After": str(retry)}))

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start = time.perf_counter()
        request_id = uuid.uuid4().hex[:16]
        status = 500

        async def send_with_id(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), (b"x-request-id", request_id.encode()),
                                      (b"x-incasa-replica", self.replica)]
            await send(message)

        try:
            if self._authorised(scope):
                shed = self._shed(scope)
                await (shed(scope, receive, send_with_id) if shed else self.app(scope, receive, send_with_id))
            else:
                err = APIError(401, "Incorrect API key provided. Send it as 'Authorization: Bearer <key>'.",
                               code="invalid_api_key")
                await error_response(err)(scope, receive, send_with_id)
        finally:
            seconds = time.perf_counter() - start
            route = getattr(scope.get("route"), "path", None) or _known_path(scope["path"])
            self.ctx.metrics.requests.labels(route, str(status)).inc()
            self.ctx.metrics.latency.labels(route, str(status)).observe(seconds)
            if self.ctx.settings.access_log and access_log.isEnabledFor(logging.INFO):
                client = scope.get("client") or ("-", 0)
                access_log.info(json.dumps({"time": round(time.time(), 3), "request_id": request_id,
                                            "client": client[0], "method": scope["method"], "path": scope["path"],
                                            "route": route, "status": status, "ms": round(seconds * 1000, 2)}))


def _known_path(path: str) -> str:
    """The metrics label of a request no route matched (shed at the door, static files, 404s): bounded."""
    if path in IMAGE_POSTS:
        return path
    return "/studio" if path.startswith("/studio") else "unmatched"


def _validation_param(loc) -> str | None:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header", "form")]
    return ".".join(parts) or None


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(APIError)
    async def _api_error(request: Request, err: APIError):
        return error_response(err)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, err: RequestValidationError):
        first = err.errors()[0] if err.errors() else {"loc": (), "msg": "invalid request"}
        param = _validation_param(first.get("loc", ()))
        message = first.get("msg", "invalid request").removeprefix("Value error, ")
        return error_response(APIError(400, f"Invalid value for {param}: {message}" if param else message,
                                       param=param, code="invalid_value"))

    @app.exception_handler(Refused)
    async def _refused(request: Request, err: Refused):
        from incasa.safety.policy import openai_error

        return JSONResponse(openai_error(err.decision), status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, err: StarletteHTTPException):
        if err.status_code == 404:
            message = f"Invalid URL ({request.method} {request.url.path})"
        else:
            message = str(err.detail)
        return error_response(APIError(err.status_code, message, code=None))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, err: Exception):
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(APIError(500, "The server had an error while processing your request.",
                                       type="server_error", code="internal_error"))


def build_context(settings: ServeSettings, registry: Registry | None = None) -> ServerContext:
    from incasa.safety.cli import resolve_audit_log, resolve_keys_dir

    resident = None
    if registry is None:
        resident = ResidentPipelines(device=settings.device, memory_budget_mb=settings.memory_budget_mb,
                                     idle_ttl_s=settings.idle_ttl_s)
        registry = Registry(image=image_registry(settings.image_checkpoints(), resident),
                            chat=text_registry(settings.text_checkpoints(), settings.device),
                            speech=voice_registry(settings.voice_checkpoints(), settings.device))
    else:  # engines supplied by the caller: find their shared pipeline cache, if any, for /metrics and /ready
        resident = next((e.resident for e in registry.image.values() if hasattr(e, "resident")), None)
    metrics = Metrics()
    ctx = ServerContext(settings=settings, registry=registry,
                        guard=Guard.load(settings.policy, resolve_audit_log(settings.audit_log)),
                        signing=Signing.load(resolve_keys_dir(settings.keys_dir)),
                        store=ImageStore(settings.store_dir), metrics=metrics,
                        idempotency=IdempotencyCache(ttl_s=settings.idempotency_ttl_s,
                                                     max_entries=settings.idempotency_max_entries),
                        resident=resident)
    for name, engine in registry.image.items():
        ctx.queues[name] = BatchQueue(engine, max_waiting=settings.queue_size,
                                      max_batch_images=settings.max_batch_images,
                                      batch_wait_s=settings.batch_wait_ms / 1000, on_batch=metrics.on_batch)
    return ctx


async def _expire_idle(ctx: ServerContext) -> None:
    """Unload idle models even when nobody sends a request (checked every minute, or every ttl if shorter)."""
    if ctx.resident is None:
        return
    while True:
        await asyncio.sleep(min(60.0, ctx.settings.idle_ttl_s))
        ctx.resident.expire()


def create_app(settings: ServeSettings | None = None, registry: Registry | None = None) -> FastAPI:
    from incasa.serve.routes import audio, chat, images, models, ops, studio

    settings = settings or ServeSettings()
    ctx = build_context(settings, registry)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        for queue in ctx.queues.values():
            queue.start()
        ctx.ready = True
        janitor = asyncio.create_task(_expire_idle(ctx))
        try:
            yield
        finally:
            ctx.ready = False
            janitor.cancel()
            for name, queue in ctx.queues.items():
                if not queue.close(settings.graceful_timeout_s):
                    log.warning("queue %s still had work after %.0f s at shutdown", name, settings.graceful_timeout_s)
            ctx.guard.close()  # the audit lines still pending

    app = FastAPI(title="incasa", version=_version(), lifespan=lifespan,
                  description="OpenAI-compatible API for every incasa model: images (generations, edits), chat, "
                              "speech. Every image carries an invisible watermark and signed C2PA credentials.")
    app.state.ctx = ctx
    _install_error_handlers(app)
    for module in (models, images, chat, audio, ops):
        app.include_router(module.router)
    if settings.studio:
        studio.mount(app)
    app.add_middleware(Gatekeeper, ctx=ctx)
    return app


def create_app_from_env() -> FastAPI:
    """The app from INCASA_SERVE_* variables alone: what each `incasa serve --workers N` process builds."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    return create_app(ServeSettings())


def _version() -> str:
    from incasa import __version__

    return __version__

