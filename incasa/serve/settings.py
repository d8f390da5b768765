"""Server configuration: one typed object, filled from flags (the CLI), then INCASA_SERVE_* environment variables,
then the defaults below (pydantic-settings; init arguments beat the environment).

    INCASA_SERVE_API_KEYS="key-one,key-two"      # Authorization: Bearer key-one; empty = no auth (loopback use)
    INCASA_SERVE_IMAGE_MODELS="emoji=/models/emoji.safetensors,other=/models/b.safetensors"
    INCASA_SERVE_QUEUE_SIZE=64

Only the CLI and `create_app` read this; the engines get plain arguments.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

CommaList = Annotated[list[str], NoDecode]  # "a,b" in the environment, a list in Python


class ServeSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="INCASA_SERVE_", frozen=True, extra="forbid")

    host: str = Field("127.0.0.1", description="interface to listen on (0.0.0.0 for all)")
    port: int = Field(8000, ge=0, le=65535)
    api_keys: CommaList = Field(default_factory=list, description="accepted Bearer keys; empty = no authentication")
    image_models: CommaList = Field(default_factory=list, description="NAME=PATH or PATH of image checkpoints; "
                                                                      "empty = the shipped default")
    text_models: CommaList = Field(default_factory=list, description="NAME=PATH or PATH of text (chat) "
                                                                     "checkpoints; empty = the shipped default; "
                                                                     "'none' = no chat model")
    voice_models: CommaList = Field(default_factory=list, description="NAME=PATH or PATH of voice (speech) "
                                                                      "checkpoints; empty = the shipped default; "
                                                                      "'none' = no speech model")
    device: str = Field("auto", description="auto, cpu or cuda")
    queue_size: int = Field(64, ge=1, description="waiting requests per model before answering 429")
    max_batch_images: int = Field(16, ge=10, description="images per micro-batch (>= 10, the largest n)")
    batch_wait_ms: float = Field(0.0, ge=0.0, description="how long a batch waits for compatible requests to "
                                                          "arrive; 0 = take what is waiting (under load, requests "
                                                          "queue up while the previous batch renders)")
    request_timeout_s: float = Field(300.0, gt=0.0, description="a request not done by then gets a 504")
    idle_ttl_s: float = Field(1800.0, gt=0.0, description="unload a model unused for this long")
    memory_budget_mb: float = Field(8192.0, gt=0.0, description="resident model weights; least recently used "
                                                                 "models are unloaded beyond it")
    store_dir: Path | None = Field(None, description="where response_format=url images are kept (default: a "
                                                     "temporary folder)")
    public_url: str | None = Field(None, description="base of returned image URLs (default: the request's own)")
    policy: str | None = Field(None, description="guardrail policy file (TOML/JSON); default policy when empty")
    keys_dir: Path | None = Field(None, description="C2PA signing keys (default: $INCASA_KEYS_DIR or ~/.config)")
    audit_log: Path | None = Field(None, description="guardrail audit log (default: $INCASA_AUDIT_LOG or ~/.local)")
    idempotency_ttl_s: float = Field(3600.0, gt=0.0)
    idempotency_max_entries: int = Field(1024, ge=1)
    graceful_timeout_s: float = Field(30.0, ge=0.0, description="how long shutdown waits for in-flight requests")
    access_log: bool = True
    studio: bool = True

    @field_validator("api_keys", "image_models", "text_models", "voice_models", mode="before")
    @classmethod
    def _split(cls, v):
        if isinstance(v, str):
            return [s.strip() for s in v.split(",") if s.strip()]
        return v

    def image_checkpoints(self) -> list[tuple[str, Path | None]]:
        """[(model id, checkpoint path)]; an empty id is named by the checkpoint's own metadata, a None path is the
        shipped default. The PATHs `default` and `default-fast` name the two shipped image checkpoints (the model
        and its distilled 4-step student)."""
        from incasa.image.generate import DEFAULT_FAST_CHECKPOINT

        if not self.image_models:
            return [("", None)]
        shipped = {"default": None, "default-fast": DEFAULT_FAST_CHECKPOINT}
        return [(name, shipped[path] if path in shipped else Path(path))
                for name, _, path in (item.rpartition("=") for item in self.image_models)]

    def text_checkpoints(self) -> list[tuple[str, Path | None]]:
        """[(model id, checkpoint path)] of the chat models, as image_checkpoints; [] when text_models is 'none'."""
        return _checkpoints(self.text_models)

    def voice_checkpoints(self) -> list[tuple[str, Path | None]]:
        """[(model id, checkpoint path)] of the speech models; [] when voice_models is 'none'."""
        return _checkpoints(self.voice_models)


def _checkpoints(items: list[str]) -> list[tuple[str, Path | None]]:
    if items == ["none"]:
        return []
    if not items:
        return [("", None)]
    return [(name, Path(path)) for name, _, path in (item.rpartition("=") for item in items)]
