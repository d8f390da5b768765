"""POST /v1/images/generations and /v1/images/edits (OpenAI shapes), and GET /v1/files/images/{name} for
response_format=url. The work happens in incasa/serve/image_service.py; here: parsing, Idempotency-Key, SSE."""

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, Response, StreamingResponse
from pydantic import ValidationError

from incasa.serve import image_service
from incasa.serve.delivery import MEDIA_TYPES
from incasa.serve.protocol import APIError, ImageEditRequest, ImageGenerationRequest, ImagesResponse

router = APIRouter(tags=["images"])

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}  # no proxy buffering of the previews

EDIT_FORM_SCHEMA = {
    "type": "object",
    "required": ["image", "prompt"],
    "properties": {
        "image": {"type": "string", "format": "binary", "description": "PNG, JPEG or WebP; one image"},
        "prompt": {"type": "string"},
        "mask": {"type": "string", "format": "binary",
                 "description": "same size as image; fully transparent (or white) pixels are repainted"},
        "model": {"type": "string"},
        "n": {"type": "integer", "minimum": 1, "maximum": 10},
        "size": {"type": "string"},
        "response_format": {"type": "string", "enum": ["url", "b64_json"]},
        "output_format": {"type": "string", "enum": ["png", "jpeg", "webp"]},
        "output_compression": {"type": "integer", "minimum": 0, "maximum": 100},
        "partial_images": {"type": "integer", "minimum": 0, "maximum": 3},
        "stream": {"type": "boolean"},
        "seed": {"type": "integer", "minimum": 0, "description": "incasa extension"},
        "steps": {"type": "integer", "minimum": 1, "maximum": 200, "description": "incasa extension"},
        "guidance": {"type": "number", "minimum": 1, "maximum": 20, "description": "incasa extension"},
        "strength": {"type": "number", "exclusiveMinimum": 0, "maximum": 1,
                     "description": "incasa extension: img2img strength when there is no mask"},
    },
}


def _base_url(request: Request) -> str:
    return request.app.state.ctx.settings.public_url or str(request.base_url).rstrip("/")


async def _idempotent(request: Request, fingerprint: str, compute) -> Response:
    """Run `compute` (-> ImagesResponse) at most once per Idempotency-Key and request fingerprint."""
    key = request.headers.get("idempotency-key")

    async def run():
        response = await compute()
        return 200, response.model_dump_json(exclude_none=True).encode(), "application/json"

    if not key:
        status, body, media = await run()
    else:
        scope = (request.headers.get("authorization", ""), request.url.path, key)
        status, body, media = await request.app.state.ctx.idempotency.run(scope, fingerprint, run)
    return Response(body, status_code=status, media_type=media)


@router.post("/v1/images/generations", response_model=ImagesResponse, response_model_exclude_none=True,
             summary="Create images from a prompt")
async def generations(body: ImageGenerationRequest, request: Request):
    ctx = request.app.state.ctx
    if body.stream:
        events = await image_service.stream(ctx, body, prefix="image_generation")
        return StreamingResponse(events, media_type="text/event-stream", headers=SSE_HEADERS)
    return await _idempotent(request, body.model_dump_json(),
                             lambda: image_service.create(ctx, body, _base_url(request)))


@router.post("/v1/images/edits", response_model=ImagesResponse, response_model_exclude_none=True,
             summary="Repaint the masked region of an image (or all of it, img2img, without a mask)",
             openapi_extra={"requestBody": {"required": True,
                                            "content": {"multipart/form-data": {"schema": EDIT_FORM_SCHEMA}}}})
async def edits(request: Request):
    ctx = request.app.state.ctx
    fields, files = await _read_form(request)
    images = files.pop("image", []) + files.pop("image[]", [])
    masks = files.pop("mask", [])
    if len(images) != 1:
        raise APIError(400, f"Send exactly one image to edit (got {len(images)}).", param="image")
    if len(masks) > 1:
        raise APIError(400, "Send at most one mask.", param="mask")
    try:
        body = ImageEditRequest.model_validate(fields)
    except ValidationError as e:
        first = e.errors()[0]
        param = ".".join(str(p) for p in first["loc"]) or None
        raise APIError(400, f"Invalid value for {param}: {first['msg'].removeprefix('Value error, ')}",
                       param=param, code="invalid_value") from None
    image = image_service.decode_upload(images[0], "image")
    mask = image_service.decode_upload(masks[0], "mask", keep_alpha=True) if masks else None
    edit = image_service.Edit(image, mask, image_service.png_of(image))
    if body.stream:
        events = await image_service.stream(ctx, body, prefix="image_edit", edit=edit)
        return StreamingResponse(events, media_type="text/event-stream", headers=SSE_HEADERS)
    fingerprint = image_service.edit_fingerprint(fields, {"image": images[0], "mask": masks[0] if masks else b""})
    return await _idempotent(request, fingerprint, lambda: image_service.create(ctx, body, _base_url(request), edit))


async def _read_form(request: Request) -> tuple[dict, dict[str, list[bytes]]]:
    """Multipart fields as strings (lists for repeated names), files as bytes by field name."""
    content_type = request.headers.get("content-type", "")
    if not content_type.startswith("multipart/form-data"):
        raise APIError(400, "Send the edit as multipart/form-data with an `image` file and a `prompt` field.",
                       param="image")
    try:
        form = await request.form(max_files=4, max_fields=64)
    except Exception as e:  # noqa: BLE001 - starlette/multipart raise several kinds for malformed bodies
        raise APIError(400, f"Malformed multipart body: {e}") from None
    fields: dict = {}
    files: dict[str, list[bytes]] = {}
    for name, value in form.multi_items():
        if hasattr(value, "read"):
            files.setdefault(name, []).append(await value.read())
        else:
            fields[name] = value
    return fields, files


@router.get("/v1/files/images/{name}", summary="An image returned earlier with response_format=url")
async def stored_image(name: str, request: Request):
    path = request.app.state.ctx.store.path(name)
    if path is None:
        raise APIError(404, f"No stored image named {name!r}.", param="name", code="not_found")
    return FileResponse(path, media_type=MEDIA_TYPES[path.suffix[1:]],
                        headers={"Cache-Control": "public, max-age=31536000, immutable"})
