"""Model adapters: one small class per way of turning (prompt, seed) into PNG bytes for a battle.

The arena knows nothing of tensors or HTTP details of the models it compares: every variant names an adapter kind
and a JSON config, and `build_adapter(kind, config)` turns them into an object with one method,
`generate(prompt, seed) -> bytes` (a PNG). Three kinds:

- "incasa": an in-process incasa image model through its public functions `incasa.image.generate.load_pipeline`
  (once per variant) and `generate_images(prompt, n=1, seed=..., steps=..., guidance=..., pipeline=...)`, imported
  on first use (so the arena, and its tests, do not pull torch in until a battle needs it).
- "openai": any server that speaks the OpenAI Images API (`POST {base_url}/v1/images/generations` with
  `response_format="b64_json"`): incasa's own `incasa serve`, or a hosted endpoint. Answers are re-encoded as bare
  PNGs (`clean_png`) so that no metadata can unblind a battle. The API key, if any, is read from the environment
  variable the variant names (never stored in the database).
- "standin": a deterministic TEST STAND-IN that draws a coloured pattern from a hash of the prompt, the seed and
  its `style`. It exists so tests, the demo (`incasa arena serve --demo`) and the load benchmark can run battles
  without a trained model; its `quality` dial makes some stand-ins systematically "better" for simulations.

To add a kind: write a class with `generate`, and add it to ADAPTERS.
"""

import base64
import hashlib
import io
import os
import threading
from dataclasses import dataclass
from typing import Protocol


class Adapter(Protocol):
    def generate(self, prompt: str, seed: int) -> bytes:
        """One image for the prompt, as PNG bytes. Raises on any failure (the battle is then marked an error)."""
        ...


def _png_bytes(image) -> bytes:
    """A bare PNG (Pillow writes no text chunks unless given pnginfo): nothing in the file names the model."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


@dataclass(frozen=True)
class StandInAdapter:
    """TEST STAND-IN, not a model: rings, stripes or checks coloured from sha256(prompt, seed, style)."""

    style: str = "rings"  # "rings" | "stripes" | "checks"
    size: int = 64
    quality: float = 1.0  # in [0, 1]; lower values add noise (used by simulations to make a "worse" stand-in)

    def generate(self, prompt: str, seed: int) -> bytes:
        import numpy as np
        from PIL import Image

        if self.style not in ("rings", "stripes", "checks"):
            raise ValueError(f"stand-in style must be rings, stripes or checks, got {self.style!r}")
        digest = hashlib.sha256(f"{prompt}\0{seed}\0{self.style}".encode()).digest()
        palette = np.frombuffer(digest[:12], np.uint8).reshape(4, 3).astype(np.float32)
        y, x = np.mgrid[0 : self.size, 0 : self.size].astype(np.float32) / self.size
        if self.style == "rings":
            band = (np.hypot(x - 0.5, y - 0.5) * (4 + digest[12] % 6)).astype(np.int64) % 4
        elif self.style == "stripes":
            band = ((x + y * (digest[13] % 3)) * (3 + digest[12] % 5)).astype(np.int64) % 4
        else:
            band = ((x * 4).astype(np.int64) + (y * 4).astype(np.int64)) % 4
        pixels = palette[band]  # [H, W, 3]
        noise = np.random.default_rng(int.from_bytes(digest[14:22], "little")).normal(size=pixels.shape)
        pixels = pixels + (1.0 - self.quality) * 80.0 * noise
        return _png_bytes(Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB"))


@dataclass(frozen=True)
class OpenAIImagesAdapter:
    """Any OpenAI-compatible images endpoint. base_url is the server root (…/v1 is added unless present)."""

    base_url: str
    model: str = ""
    size: str = "256x256"
    api_key_env: str = ""  # name of an environment variable holding the API key; "" for none
    send_seed: bool = True  # incasa serve honours `seed`; switch off for servers that reject unknown fields
    timeout_s: float = 120.0

    def generate(self, prompt: str, seed: int) -> bytes:
        import httpx

        url = self.base_url.rstrip("/")
        url = url + ("/images/generations" if url.endswith("/v1") else "/v1/images/generations")
        body = {"prompt": prompt, "n": 1, "size": self.size, "response_format": "b64_json"}
        if self.model:
            body["model"] = self.model
        if self.send_seed:
            body["seed"] = seed
        headers = {}
        if self.api_key_env:
            key = os.environ.get(self.api_key_env)
            if not key:
                raise ValueError(f"environment variable {self.api_key_env} (the API key) is not set")
            headers["Authorization"] = f"Bearer {key}"
        response = httpx.post(url, json=body, headers=headers, timeout=self.timeout_s)
        response.raise_for_status()
        data = response.json().get("data") or []
        if not data or "b64_json" not in data[0]:
            raise ValueError(f"{url} answered without data[0].b64_json")
        return clean_png(base64.b64decode(data[0]["b64_json"]))


def clean_png(data: bytes) -> bytes:
    """Decode any image and write it back as a bare PNG.

    Two reasons: servers may answer JPEG or WebP, and - more important in a blind test - images often carry their
    origin in metadata (incasa's own PNGs have `parameters` and `incasa` text chunks naming the model), which a
    voter could read to unblind the battle. The re-encoded PNG keeps the pixels and nothing else.
    """
    from PIL import Image

    with Image.open(io.BytesIO(data)) as img:
        img.load()
        return _png_bytes(img.convert("RGBA" if "A" in img.getbands() else "RGB"))


class IncasaImageAdapter:
    """An incasa image checkpoint in this process (None = the shipped default), loaded once on the first battle.

    steps / guidance: sampler settings of this variant (None = generate_images' defaults). Generation holds a lock:
    one model on one device serves one battle at a time, and concurrent requests queue instead of thrashing memory.
    """

    def __init__(self, checkpoint: str | None = None, steps: int | None = None, guidance: float | None = None):
        if steps is not None and steps < 1:
            raise ValueError("steps must be >= 1")
        self.checkpoint, self.steps, self.guidance = checkpoint, steps, guidance
        self._pipeline = None
        self._lock = threading.Lock()

    def generate(self, prompt: str, seed: int) -> bytes:
        # Lazy: torch and the model load on the first battle, so the arena (and its tests) start without them.
        from incasa.image.generate import generate_images, load_pipeline

        settings = {k: v for k, v in (("steps", self.steps), ("guidance", self.guidance)) if v is not None}
        with self._lock:
            if self._pipeline is None:
                self._pipeline = load_pipeline(self.checkpoint)
            images = generate_images(prompt, n=1, seed=seed, pipeline=self._pipeline, **settings)
        return _png_bytes(images[0])


ADAPTERS = {"standin": StandInAdapter, "openai": OpenAIImagesAdapter, "incasa": IncasaImageAdapter}


def build_adapter(kind: str, config: dict) -> Adapter:
    """Instantiate adapter `kind` with keyword arguments `config`; ValueError names what is wrong."""
    if kind not in ADAPTERS:
        raise ValueError(f"unknown adapter {kind!r}; choose one of {', '.join(ADAPTERS)}")
    try:
        return ADAPTERS[kind](**config)
    except TypeError as e:
        raise ValueError(f"bad configuration for adapter {kind!r}: {e}") from None
