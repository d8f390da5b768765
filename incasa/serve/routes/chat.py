"""POST /v1/chat/completions: any ChatEngine in the registry, streamed as server-sent events with usage.

No text model installed -> 404 model_not_found in the OpenAI shape. A chat engine's `chat(...)` is a plain
iterator of token texts; each `next()` runs in a worker thread, so a slow model never blocks the event loop.
At most `queue_size` requests per chat model are in flight; beyond that, 429 with Retry-After.
"""

import json
import time
import uuid

from anyio import to_thread
from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from incasa.serve.protocol import (APIError, ChatChoice, ChatChoiceMessage, ChatCompletion, ChatCompletionChunk,
                                   ChatCompletionRequest, ChunkChoice, ChunkDelta, Usage, model_not_found)

router = APIRouter(tags=["chat"])
_END = object()


def _engine(ctx, model: str):
    engine = ctx.registry.chat.get(model)
    if engine is None:
        raise model_not_found(model, "chat")
    return engine


def _usage(engine, req: ChatCompletionRequest, completion_tokens: int) -> Usage:
    prompt_tokens = sum(engine.count_tokens(m.text()) for m in req.messages)
    return Usage(prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
                 total_tokens=prompt_tokens + completion_tokens)


class _Slot:
    """Counts a request in flight for one chat model; refuses past the bound."""

    def __init__(self, ctx, model: str):
        self.ctx, self.model = ctx, model
        if ctx.chat_in_flight.get(model, 0) >= ctx.settings.queue_size:
            ctx.metrics.rejected.labels("queue_full").inc()
            raise APIError(429, f"Too many requests in flight for `{model}`.", type="rate_limit_error",
                           code="queue_full", headers={"Retry-After": "1"})
        ctx.chat_in_flight[model] = ctx.chat_in_flight.get(model, 0) + 1

    def release(self) -> None:
        self.ctx.chat_in_flight[self.model] -= 1


@router.post("/v1/chat/completions", response_model=ChatCompletion, summary="Chat with a text model")
async def chat_completions(req: ChatCompletionRequest, request: Request):
    ctx = request.app.state.ctx
    engine = _engine(ctx, req.model)
    messages = [{"role": m.role, "content": m.text()} for m in req.messages]
    # the same guardrail as image prompts, on what the user asks (the latest user turn); refusal -> 400
    last_user = next((m["content"] for m in reversed(messages) if m["role"] == "user"), "")
    if last_user.strip():
        ctx.guard.check_prompt(last_user, source="serve-chat")
    slot = _Slot(ctx, req.model)
    limit = req.token_limit()
    try:
        tokens = iter(engine.chat(messages, max_tokens=limit, top_p=req.top_p or 1.0, seed=req.seed,
                                  temperature=1.0 if req.temperature is None else req.temperature))
    except ValueError as e:
        slot.release()
        raise APIError(400, str(e), code="invalid_value") from None
    completion_id, created = f"chatcmpl-{uuid.uuid4().hex[:24]}", int(time.time())

    def step():
        return next(tokens, _END)

    if not req.stream:
        try:
            pieces = []
            while (piece := await to_thread.run_sync(step)) is not _END:
                pieces.append(piece)
        except ValueError as e:
            raise APIError(400, str(e), code="invalid_value") from None
        finally:
            slot.release()
        finish = "length" if len(pieces) >= limit else "stop"
        return ChatCompletion(id=completion_id, created=created, model=req.model,
                              choices=[ChatChoice(message=ChatChoiceMessage(content="".join(pieces)),
                                                  finish_reason=finish)],
                              usage=_usage(engine, req, len(pieces)))

    include_usage = bool(req.stream_options and req.stream_options.include_usage)

    def chunk(delta: ChunkDelta, finish=None, usage=None, choices=True) -> bytes:
        c = ChatCompletionChunk(id=completion_id, created=created, model=req.model,
                                choices=[ChunkChoice(delta=delta, finish_reason=finish)] if choices else [],
                                usage=usage)
        return f"data: {c.model_dump_json(exclude_none=True)}\n\n".encode()

    async def events():
        count = 0
        try:
            yield chunk(ChunkDelta(role="assistant", content=""))
            while (piece := await to_thread.run_sync(step)) is not _END:
                count += 1
                yield chunk(ChunkDelta(content=piece))
            yield chunk(ChunkDelta(), finish="length" if count >= limit else "stop")
            if include_usage:
                yield chunk(ChunkDelta(), usage=_usage(engine, req, count), choices=False)
            yield b"data: [DONE]\n\n"
        except ValueError as e:
            body = APIError(400, str(e), code="invalid_value").body()
            yield f"data: {json.dumps(body)}\n\n".encode()
        finally:
            slot.release()

    return StreamingResponse(events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
