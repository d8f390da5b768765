"""The OpenAI REST shapes the server speaks, as pydantic models in the spec's field order.

Requests accept and ignore fields they do not know (`extra="ignore"`): real clients send fields from newer API
versions, and refusing them would break `openai.OpenAI(base_url=...)` for no gain. Fields we add are fenced under
an `# --- incasa extensions ---` line in each model; clients pass them with `extra_body={...}`.

Errors travel as `APIError` (an exception the app turns into `{"error": {"message", "type", "param", "code"}}`
with the right status), so the engines and the delivery code never build HTTP responses themselves.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

MAX_PROMPT_CHARS = 4000
SIZE_PATTERN = re.compile(r"^(\d{2,4})x(\d{2,4})$")
QUALITY_STEPS = {"low": 12, "medium": 25, "standard": 25, "auto": 25, "high": 50, "hd": 50}


class APIError(Exception):
    """An error the client should see, in the OpenAI shape. `headers` e.g. Retry-After on a 429."""

    def __init__(self, status: int, message: str, *, type: str = "invalid_request_error", param: str | None = None,
                 code: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code
        self.headers = headers or {}

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


def model_not_found(model: str, kind: str) -> APIError:
    return APIError(404, f"The model `{model}` does not exist or is not installed on this server (no {kind} model "
                         f"is served under that name; GET /v1/models lists what is).", param="model",
                    code="model_not_found")


class _Request(BaseModel):
    model_config = ConfigDict(extra="ignore", protected_namespaces=())


# --- images ----------------------------------------------------------------------------------------------------


class ImageGenerationRequest(_Request):
    prompt: str = Field(min_length=1, max_length=MAX_PROMPT_CHARS)
    model: str | None = None
    n: int = Field(default=1, ge=1, le=10)
    quality: Literal["low", "medium", "high", "auto", "standard", "hd"] | None = None
    response_format: Literal["url", "b64_json"] | None = None
    size: str | None = Field(default=None, description="auto or WxH, square, 64-2048 (the model's image is upscaled)")
    style: str | None = None  # vivid / natural: DALL-E 3 only; accepted and ignored
    user: str | None = None
    background: Literal["auto", "opaque", "transparent"] | None = None
    moderation: str | None = None  # our guardrails always apply; the field is accepted and ignored
    output_compression: int | None = Field(default=None, ge=0, le=100)
    output_format: Literal["png", "jpeg", "webp"] | None = None
    partial_images: int | None = Field(default=None, ge=0, le=3)
    stream: bool | None = None
    # --- incasa extensions ---
    seed: int | None = Field(default=None, ge=0, le=2**31 - 1,
                             description="seed of the first image; image i uses seed + i")
    steps: int | None = Field(default=None, ge=1, le=200, description="Euler steps (default: from quality, else 25)")
    guidance: float | None = Field(default=None, ge=1.0, le=20.0, description="classifier-free guidance scale")

    @field_validator("prompt")
    @classmethod
    def _not_blank(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("the prompt is empty")
        return v

    @field_validator("size")
    @classmethod
    def _square(cls, v: str | None) -> str | None:
        if v is None or v == "auto":
            return v
        side = parse_size(v)
        return f"{side}x{side}"

    @field_validator("background")
    @classmethod
    def _opaque(cls, v: str | None) -> str | None:
        if v == "transparent":
            raise ValueError("transparent backgrounds are not supported by incasa image models; use opaque or auto")
        return v


class ImageEditRequest(ImageGenerationRequest):
    """The form fields of POST /v1/images/edits (the image and mask files travel beside them)."""
    # --- incasa extensions ---
    strength: float | None = Field(default=None, gt=0.0, le=1.0,
                                   description="no mask (img2img): how far to re-noise the image, default 0.7")


def parse_size(size: str) -> int:
    m = SIZE_PATTERN.match(size)
    if not m:
        raise ValueError(f"size must be 'auto' or WxH such as 512x512, got {size!r}")
    w, h = int(m.group(1)), int(m.group(2))
    if w != h:
        raise ValueError(f"size must be square (the models draw square pictures), got {size}")
    if not 64 <= w <= 2048:
        raise ValueError(f"size must be between 64x64 and 2048x2048, got {size}")
    return w


class ImageData(BaseModel):
    b64_json: str | None = None
    url: str | None = None
    revised_prompt: str | None = None
    # --- incasa extensions ---
    parameters: dict[str, Any] | None = None  # seed, steps, guidance, model, ... (also inside the PNG and C2PA)


class ImagesResponse(BaseModel):
    created: int
    data: list[ImageData]
    background: Literal["opaque"] | None = "opaque"
    output_format: Literal["png", "jpeg", "webp"] | None = None
    size: str | None = None


# --- models ----------------------------------------------------------------------------------------------------


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "incasa"
    # --- incasa extensions ---
    kind: Literal["image", "chat", "speech"]
    loaded: bool = False


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


# --- chat ------------------------------------------------------------------------------------------------------


class ChatMessage(_Request):
    role: Literal["system", "user", "assistant", "developer", "tool"]
    content: str | list[dict[str, Any]] | None = None
    name: str | None = None

    def text(self) -> str:
        """The message's text; a list of parts keeps its text parts (images and audio are not understood)."""
        if self.content is None or isinstance(self.content, str):
            return self.content or ""
        return "".join(p.get("text", "") for p in self.content if p.get("type") == "text")


class StreamOptions(_Request):
    include_usage: bool | None = None


class ChatCompletionRequest(_Request):
    messages: list[ChatMessage] = Field(min_length=1)
    model: str
    frequency_penalty: float | None = None
    logprobs: bool | None = None
    max_completion_tokens: int | None = Field(default=None, ge=1, le=32768)
    max_tokens: int | None = Field(default=None, ge=1, le=32768)
    n: int | None = Field(default=None, ge=1, le=1)
    presence_penalty: float | None = None
    seed: int | None = None
    stop: str | list[str] | None = None
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    user: str | None = None

    def token_limit(self) -> int:
        return self.max_completion_tokens or self.max_tokens or 256


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class ChatChoiceMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class ChatChoice(BaseModel):
    index: int = 0
    message: ChatChoiceMessage
    finish_reason: Literal["stop", "length"]


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage


class ChunkDelta(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None


class ChunkChoice(BaseModel):
    index: int = 0
    delta: ChunkDelta
    finish_reason: Literal["stop", "length"] | None = None


class ChatCompletionChunk(BaseModel):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChunkChoice]
    usage: Usage | None = None


# --- audio -----------------------------------------------------------------------------------------------------


class SpeechRequest(_Request):
    model: str
    input: str = Field(min_length=1, max_length=4096)
    voice: str | dict[str, Any] = "default"
    instructions: str | None = None
    response_format: Literal["mp3", "opus", "aac", "flac", "wav", "pcm"] | None = None
    speed: float | None = Field(default=None, ge=0.25, le=4.0)
    stream_format: Literal["sse", "audio"] | None = None
