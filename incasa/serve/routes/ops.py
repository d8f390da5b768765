"""Operations: liveness (/health), readiness (/ready: 503 while starting or draining) and Prometheus /metrics."""

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

router = APIRouter(tags=["operations"])


@router.get("/health")
async def health() -> dict:
    return {"status": "ok"}


@router.get("/ready")
async def ready(request: Request):
    ctx = request.app.state.ctx
    body = {"status": "ready" if ctx.ready else "not_ready",
            "queues": {name: {"waiting": q.depth(), "in_flight": q.in_flight()} for name, q in ctx.queues.items()}}
    return JSONResponse(body, status_code=200 if ctx.ready else 503)


@router.get("/metrics")
async def metrics(request: Request) -> Response:
    from prometheus_client import CONTENT_TYPE_LATEST

    ctx = request.app.state.ctx
    for name, queue in ctx.queues.items():
        ctx.metrics.queue_depth.labels(name).set(queue.depth())
    if ctx.resident is not None:
        ctx.resident.expire()  # idle models leave at the latest when someone looks
        ctx.metrics.resident_bytes.set(ctx.resident.resident_bytes())
    return Response(ctx.metrics.render(), media_type=CONTENT_TYPE_LATEST)
