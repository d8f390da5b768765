"""Image requests from validated protocol objects to delivered bytes: the steps `incasa generate` takes, for HTTP.

    prompt guardrail -> ImageJob -> the model's bounded queue (micro-batched) -> deliver every picture
    (output guardrail, upscale + watermark, parameters, C2PA) -> b64_json or a URL into the local store

`create` answers a whole request; `stream` yields server-sent events: `partial_images` previews while the sampler
runs (the noisy state after evenly spaced Euler steps, watermarked and signed like any picture we return), then
one `*.completed` event per picture. Everything that can refuse a request (model, prompt policy, full queue,
shutdown) refuses before the first byte of a stream, so those keep their HTTP status codes.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import secrets
import time
from collections.abc import AsyncIterator

from anyio import to_thread

from incasa.serve.delivery import Refused, deliver, png_of
from incasa.serve.engines import ImageJob, Rendered
from incasa.serve.protocol import (QUALITY_STEPS, APIError, ImageData, ImageEditRequest, ImageGenerationRequest,
                                   ImagesResponse, model_not_found, parse_size)
from incasa.serve.scheduler import QueueFull, ShuttingDown

DEFAULT_SIZE = 512
DEFAULT_GUIDANCE = 4.0
DEFAULT_STRENGTH = 0.7
MAX_UPLOAD_BYTES = 25 * 2**20
MAX_UPLOAD_PIXELS = 4096 * 4096


class Edit:
    """The decoded input of an edit: the image, the optional mask, and the image's bytes (the C2PA ingredient)."""

    def __init__(self, image, mask, ingredient: bytes):
        self.image, self.mask, self.ingredient = image, mask, ingredient


def resolve_model(ctx, model: str | None) -> str:
    registry = ctx.registry
    name = model or registry.default_image_model()
    if name is None or name not in registry.image:
        if name in registry.chat or name in registry.speech:
            raise APIError(400, f"`{name}` is not an image model.", param="model", code="model_not_found")
        raise model_not_found(name or "(default)", "image")
    return name


def decode_upload(data: bytes, what: str, *, keep_alpha: bool = False):
    """Bytes from a multipart upload -> PIL image, refusing non-images, truncated files and decompression bombs."""
    from PIL import Image, UnidentifiedImageError

    if not data:
        raise APIError(400, f"{what} is empty; send a PNG, JPEG or WebP file.", param=what)
    if len(data) > MAX_UPLOAD_BYTES:
        raise APIError(400, f"{what} is {len(data) / 2**20:.0f} MB; the limit is 25 MB.", param=what)
    try:
        with Image.open(io.BytesIO(data)) as img:
            if img.width * img.height > MAX_UPLOAD_PIXELS:
                raise APIError(400, f"{what} is {img.width}x{img.height}; the limit is 4096x4096.", param=what)
            img.load()
            if keep_alpha:  # masks: transparency if there is any (OpenAI), else grey levels (white = repaint)
                has_alpha = "A" in img.getbands() or "transparency" in img.info
                return img.convert("RGBA") if has_alpha else img.convert("L")
            return img.convert("RGB")
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise APIError(400, f"{what} is not a readable PNG, JPEG or WebP image ({e.__class__.__name__}).",
                       param=what) from None


def check_prompt(ctx, prompt: str) -> None:
    # On the event loop: the decision takes ~0.1 ms and the fsync'ed audit line is written by the guard's own
    # writer thread. Raises Refused -> 400 content_policy_violation.
    ctx.guard.check_prompt(prompt, source="serve")


def _refused(ctx, err: QueueFull | ShuttingDown, model: str) -> APIError:
    if isinstance(err, QueueFull):
        ctx.metrics.rejected.labels("queue_full").inc()
        return APIError(429, f"The queue of `{model}` is full; retry after {err.retry_after_s} s.",
                        type="rate_limit_error", code="queue_full", headers={"Retry-After": str(err.retry_after_s)})
    ctx.metrics.rejected.labels("shutting_down").inc()
    return APIError(503, "The server is shutting down; retry on another replica.", type="server_error",
                    code="shutting_down", headers={"Retry-After": "1"})


def admit(ctx, model: str, req: ImageGenerationRequest, edit: Edit | None, on_preview=None, finish=None):
    """Take a place in the model's queue first (a full queue refuses before any work), then check the prompt and
    queue the job; the place is given back if the prompt is refused. `finish` runs on the scheduler's delivery
    threads once the pictures exist. Returns the job and its future."""
    queue = ctx.queues[model]
    try:
        queue.reserve()
    except (QueueFull, ShuttingDown) as e:
        raise _refused(ctx, e, model) from None
    submitted = False
    try:
        check_prompt(ctx, req.prompt)
        job = make_job(req, edit, on_preview, sampler=getattr(ctx.registry.image.get(model), "sampler", None))
        submitted = True  # from here on, submit() owns the reservation
        return job, queue.submit(job, reserved=True, finish=finish)
    except (QueueFull, ShuttingDown) as e:
        raise _refused(ctx, e, model) from None
    finally:
        if not submitted:
            queue.release()


def make_job(req: ImageGenerationRequest, edit: Edit | None, on_preview=None,
             sampler: tuple[int, float] | None = None) -> ImageJob:
    """sampler: the model's own (steps, guidance), e.g. a distilled few-step student's; `quality` then scales its
    steps (low = about half, high = twice) instead of naming the 12/25/50 of an ordinary checkpoint."""
    quality_steps = QUALITY_STEPS[req.quality or "auto"]
    if req.steps:
        steps = req.steps
    elif sampler is not None:
        steps = max(1, round(sampler[0] * quality_steps / QUALITY_STEPS["auto"]))
    else:
        steps = quality_steps
    default_guidance = sampler[1] if sampler is not None else DEFAULT_GUIDANCE
    seed = req.seed if req.seed is not None else secrets.randbelow(2**31 - 16)
    strength = 1.0
    if edit is not None and edit.mask is None:
        strength = req.strength if isinstance(req, ImageEditRequest) and req.strength else DEFAULT_STRENGTH
    if edit is not None and edit.mask is not None and edit.mask.size != edit.image.size:
        raise APIError(400, f"The mask is {edit.mask.size[0]}x{edit.mask.size[1]} but the image is "
                            f"{edit.image.size[0]}x{edit.image.size[1]}; they must be the same size.", param="mask")
    return ImageJob(prompt=req.prompt, n=req.n, seed=seed, steps=steps,
                    guidance=req.guidance if req.guidance is not None else default_guidance,
                    init_image=edit.image if edit else None, mask=edit.mask if edit else None, strength=strength,
                    partial_images=(req.partial_images or 0) if req.stream else 0, on_preview=on_preview)


def _engine_error(ctx, err: BaseException) -> APIError:
    if isinstance(err, (asyncio.TimeoutError, TimeoutError)):
        ctx.metrics.rejected.labels("timeout").inc()
        return APIError(504, f"The request took longer than {ctx.settings.request_timeout_s:.0f} s.",
                        type="server_error", code="timeout")
    if isinstance(err, ValueError):
        return APIError(400, str(err), code="invalid_value")
    raise err


async def wait(ctx, future, deadline: float):
    try:
        return await asyncio.wait_for(asyncio.wrap_future(future), max(deadline - time.monotonic(), 0.001))
    except (asyncio.TimeoutError, TimeoutError, ValueError) as e:
        future.cancel()  # still waiting: never rendered; already running: its result is dropped
        raise _engine_error(ctx, e) from None


def _deliver_all(ctx, rendered: Rendered, req: ImageGenerationRequest, edit: Edit | None, *, check: bool = True):
    size = parse_size(req.size) if req.size and req.size != "auto" else DEFAULT_SIZE
    fmt = req.output_format or "png"
    return [deliver(img, p, guard=ctx.guard, signing=ctx.signing, size=size, fmt=fmt,
                    compression=req.output_compression, init_image=edit.image if edit else None,
                    mask=edit.mask if edit else None, ingredient=edit.ingredient if edit else None, check=check)
            for img, p in zip(rendered.images, rendered.params, strict=True)]


def _image_data(ctx, data: bytes, params: dict, fmt: str, response_format: str, base_url: str) -> ImageData:
    if response_format == "url":
        name = ctx.store.put(data, fmt)
        return ImageData(url=f"{base_url}/v1/files/images/{name}", parameters=params)
    return ImageData(b64_json=base64.b64encode(data).decode("ascii"), parameters=params)


async def create(ctx, req: ImageGenerationRequest, base_url: str, edit: Edit | None = None) -> ImagesResponse:
    """The whole non-streaming request: refuse early, queue, wait, deliver."""
    model = resolve_model(ctx, req.model)
    deadline = time.monotonic() + ctx.settings.request_timeout_s
    _, future = admit(ctx, model, req, edit, finish=lambda rendered: _deliver_all(ctx, rendered, req, edit))
    delivered = await wait(ctx, future, deadline)
    fmt = req.output_format or "png"
    if edit is not None:  # an edit keeps the input's size (so that the kept region stays pixel for pixel)
        size = f"{edit.image.size[0]}x{edit.image.size[1]}"
    else:
        size = req.size if req.size and req.size != "auto" else f"{DEFAULT_SIZE}x{DEFAULT_SIZE}"
    data = [_image_data(ctx, d, p, fmt, req.response_format or "b64_json", base_url) for d, p in delivered]
    return ImagesResponse(created=int(time.time()), data=data, output_format=fmt, size=size)


def _sse(event: str, payload: dict) -> bytes:
    return f"event: {event}\ndata: {json.dumps(payload, separators=(',', ':'))}\n\n".encode()


async def stream(ctx, req: ImageGenerationRequest, *, prefix: str, edit: Edit | None = None) -> AsyncIterator[bytes]:
    """Refuses synchronously (raises APIError/Refused), then returns the event iterator of a started job."""
    model = resolve_model(ctx, req.model)
    deadline = time.monotonic() + ctx.settings.request_timeout_s
    loop = asyncio.get_running_loop()
    previews: asyncio.Queue = asyncio.Queue()
    job, future = admit(ctx, model, req, edit,
                              on_preview=lambda i, r: loop.call_soon_threadsafe(previews.put_nowait, (i, r)))
    fmt = req.output_format or "png"
    common = {"background": "opaque", "output_format": fmt, "quality": req.quality or "auto",
              "size": req.size or "auto"}

    async def events() -> AsyncIterator[bytes]:
        done = asyncio.wrap_future(future)
        try:
            while not (done.done() and previews.empty()):
                getter = asyncio.ensure_future(previews.get())
                finished, _ = await asyncio.wait({getter, done}, timeout=max(deadline - time.monotonic(), 0.001),
                                                 return_when=asyncio.FIRST_COMPLETED)
                if not finished:
                    getter.cancel()
                    raise asyncio.TimeoutError()
                if getter not in finished:
                    getter.cancel()
                    continue
                index, rendered = getter.result()
                for k, (data, _) in enumerate(await to_thread.run_sync(
                        lambda: _deliver_all(ctx, rendered, req, edit, check=False))):
                    yield _sse(f"{prefix}.partial_image", {
                        "type": f"{prefix}.partial_image", "b64_json": base64.b64encode(data).decode("ascii"),
                        "created_at": int(time.time()), **common, "partial_image_index": index, "image_index": k})
            rendered = done.result()
            delivered = await to_thread.run_sync(lambda: _deliver_all(ctx, rendered, req, edit))
            for k, (data, params) in enumerate(delivered):
                yield _sse(f"{prefix}.completed", {
                    "type": f"{prefix}.completed", "b64_json": base64.b64encode(data).decode("ascii"),
                    "created_at": int(time.time()), **common, "image_index": k, "parameters": params,
                    "usage": {"input_tokens": 0, "input_tokens_details": {"image_tokens": 0, "text_tokens": 0},
                              "output_tokens": 0, "total_tokens": 0}})
        except Refused as e:
            from incasa.safety.policy import openai_error

            yield _sse("error", openai_error(e.decision))
        except (asyncio.TimeoutError, TimeoutError, ValueError) as e:
            future.cancel()
            yield _sse("error", _engine_error(ctx, e).body())
        except asyncio.CancelledError:  # the client went away: do not render for nobody
            future.cancel()
            raise

    return events()


def edit_fingerprint(fields: dict, files: dict[str, bytes]) -> str:
    import hashlib

    h = hashlib.sha256(json.dumps(fields, sort_keys=True, default=str).encode())
    for name in sorted(files):
        h.update(name.encode() + hashlib.sha256(files[name]).digest())
    return h.hexdigest()


__all__ = ["Edit", "create", "stream", "decode_upload", "edit_fingerprint", "png_of"]
