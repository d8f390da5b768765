"""Engines: what the server runs for each model id, knowing nothing of HTTP.

    registry = Registry(image={"incasa-emoji-small": IncasaImageEngine(None)})   # None = the shipped default
    registry.chat["my-lm"] = engine       # anything with .chat(messages, ...) -> iterator of token texts
    registry.speech["my-voice"] = engine  # anything with .speak(text, voice=..., speed=...) -> (samples, rate)

An image engine turns a *batch* of compatible jobs into pictures: `batch_key(job)` says which jobs may share a
batch, `run_batch(jobs)` renders them all in one pass of the sampler. `IncasaImageEngine` is the adapter onto
incasa.image: it builds one noise tensor from every job's own seeds (job j, image i uses seed_j + i, exactly as
`generate_images` does), one text batch from the jobs' prompts, and calls `flow.sample` once; the results equal
the one-request-at-a-time results up to float rounding (tests/serve/test_engines.py checks it).

Pipelines load lazily and stay resident (`ResidentPipelines`): least recently used first out when their weights
exceed the memory budget, and any unused for `idle_ttl_s` unloaded.

Chat and speech engines are Protocols: the text and voice models plug in by putting an object in the registry;
nothing else in the server changes.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

# Shapes: B = images in a batch (sum of the jobs' n), C = channels, H, W = the model's image size, L = text tokens.


@dataclass
class Rendered:
    """A job's pictures at the model's size, with the parameters to embed (one dict per picture)."""

    images: list
    params: list[dict]


@dataclass
class ImageJob:
    """One request's worth of pictures. init_image + mask: inpainting; init_image alone: img2img at `strength`."""

    prompt: str
    n: int = 1
    seed: int = 0
    steps: int = 25
    guidance: float = 4.0
    init_image: object | None = None  # PIL.Image (model-independent, so the engine can resize it)
    mask: object | None = None  # PIL.Image, OpenAI semantics (transparent or white = repaint)
    strength: float = 1.0
    partial_images: int = 0  # how many previews to hand to on_preview while sampling
    on_preview: Callable[[int, Rendered], None] | None = None  # (preview index, the noisy state), from the worker


class ImageEngine(Protocol):
    name: str

    def batch_key(self, job: ImageJob) -> tuple: ...

    def run_batch(self, jobs: list[ImageJob]) -> list[Rendered]: ...

    def loaded(self) -> bool: ...


class ChatEngine(Protocol):
    """A text model: `chat` yields the reply one token's text at a time; `count_tokens` measures the prompt."""

    def chat(self, messages: list[dict], *, max_tokens: int, temperature: float, top_p: float,
             seed: int | None) -> Iterator[str]: ...

    def count_tokens(self, text: str) -> int: ...


class SpeechEngine(Protocol):
    """A voice model: float samples in [-1, 1] (a 1-D numpy array) and their sample rate."""

    def speak(self, text: str, *, voice: str, speed: float) -> tuple[object, int]: ...


class ResidentPipelines:
    """Lazily loaded image pipelines kept in memory under an LRU + idle-TTL policy and a weight budget."""

    def __init__(self, *, device: str = "auto", memory_budget_mb: float = 8192.0, idle_ttl_s: float = 1800.0,
                 clock: Callable[[], float] = time.monotonic):
        self.device, self.budget, self.ttl, self.clock = device, memory_budget_mb * 2**20, idle_ttl_s, clock
        self._lock = threading.Lock()
        self._loaded: OrderedDict[str, tuple[object, int, float]] = OrderedDict()  # key -> (pipeline, bytes, last use)

    def get(self, checkpoint: Path | None):
        from incasa.image.generate import load_pipeline

        key = str(checkpoint or "default")
        with self._lock:
            self._expire()
            if key in self._loaded:
                pipe, size, _ = self._loaded.pop(key)
            else:
                pipe = load_pipeline(checkpoint, device=self.device)
                size = sum(t.numel() * t.element_size() for m in (pipe.model, pipe.encoder)
                           for t in list(m.parameters()) + list(m.buffers()))
            self._loaded[key] = (pipe, size, self.clock())  # most recently used last
            while len(self._loaded) > 1 and sum(s for _, s, _ in self._loaded.values()) > self.budget:
                self._loaded.popitem(last=False)  # the one just used stays even if alone it exceeds the budget
            return pipe

    def _expire(self) -> None:
        now = self.clock()
        for key in [k for k, (_, _, used) in self._loaded.items() if now - used > self.ttl]:
            del self._loaded[key]

    def expire(self) -> None:
        with self._lock:
            self._expire()

    def is_loaded(self, checkpoint: Path | None) -> bool:
        with self._lock:
            return str(checkpoint or "default") in self._loaded

    def resident_bytes(self) -> int:
        with self._lock:
            return sum(s for _, s, _ in self._loaded.values())


def _image_meta(checkpoint: Path | None) -> dict:
    from incasa.image.generate import DEFAULT_CHECKPOINT
    from incasa.train.checkpoint import read_metadata

    meta = read_metadata(checkpoint or DEFAULT_CHECKPOINT)
    if meta.get("kind") != "incasa-image-dit":
        raise ValueError(f"{checkpoint} is not an incasa image checkpoint (kind={meta.get('kind')!r})")
    return meta


class IncasaImageEngine:
    """The adapter onto incasa.image: a checkpoint (None = the shipped default) rendered in micro-batches."""

    def __init__(self, checkpoint: Path | None, resident: ResidentPipelines | None = None, name: str | None = None):
        self.checkpoint = checkpoint
        self.resident = resident or ResidentPipelines()
        meta = _image_meta(checkpoint)
        self.name = name or meta.get("name") or f"incasa-{meta.get('preset', 'dit')}"
        # a distilled student names its own sampler (e.g. 4 steps, guidance 1.0 = none); None: the server's defaults
        own = meta.get("sampler") or {}
        self.sampler = (int(own["steps"]), float(own.get("guidance", 1.0))) if "steps" in own else None

    def batch_key(self, job: ImageJob) -> tuple:
        # One sampler call needs one schedule (steps, strength) and one guidance scale; the mode decides whether
        # the known region is re-imposed after each step. Prompts, seeds and n may differ freely.
        mode = "inpaint" if job.mask is not None else ("img2img" if job.init_image is not None else "txt2img")
        return (mode, job.steps, float(job.guidance), float(job.strength) if mode == "img2img" else 1.0)

    def loaded(self) -> bool:
        return self.resident.is_loaded(self.checkpoint)

    def run_batch(self, jobs: list[ImageJob]) -> list[Rendered]:
        return generate_batch(self.resident.get(self.checkpoint), jobs)


def generate_batch(pipe, jobs: list[ImageJob]) -> list[Rendered]:
    """Render compatible jobs (same batch_key) in one sampler call; returns one Rendered per job, in order."""
    import torch

    from incasa.image.flow import sample
    from incasa.image.generate import mask_to_tensor, to_pil, to_tensor

    assert jobs and len({(j.mask is None, j.init_image is None, j.steps, j.guidance, j.strength) for j in jobs}) == 1
    first = jobs[0]
    from incasa.image.latent import latent_mask

    dev, (H, W), (Hp, Wp) = pipe.device, pipe.size, pipe.image_size
    C = pipe.model.cfg.in_channels
    counts = [j.n for j in jobs]
    with torch.no_grad():
        noise_BCHW = torch.cat([torch.randn(1, C, H, W, generator=torch.Generator().manual_seed(j.seed + i))
                                for j in jobs for i in range(j.n)])
        index_B = torch.repeat_interleave(torch.arange(len(jobs)), torch.tensor(counts))
        text = pipe.encoder.encode([j.prompt for j in jobs])  # one row per job, padded to the longest prompt
        cond = {k: v[index_B].to(dev) for k, v in text.items()}
        empty = pipe.encoder.encode([""])
        uncond = {k: v.expand(len(index_B), *v.shape[1:]).to(dev) for k, v in empty.items()}
        init = mask = init_px = mask_px = None  # *_px: pixels, for the final paste; else the DiT's space
        if first.init_image is not None:
            init_px = torch.cat([to_tensor(j.init_image, (Hp, Wp)) for j in jobs])[index_B].to(dev)
            init = pipe.encode(init_px)
        if first.mask is not None:
            mask_px = torch.cat([mask_to_tensor(j.mask, (Hp, Wp)) for j in jobs])[index_B].to(dev)
            mask = latent_mask(mask_px, Hp // H)
        strength = first.strength if first.init_image is not None and first.mask is None else 1.0
        with pipe.attention():
            x = sample(pipe.model, noise_BCHW.to(dev), cond, uncond, steps=first.steps, guidance=first.guidance,
                       init=init, strength=strength, mask=mask, on_step=_previewer(pipe, jobs, counts, first.steps))
        x = pipe.decode(x)
        if mask_px is not None:  # paste back only the repainted region, as generate_images does
            x = mask_px * x + (1 - mask_px) * init_px
    mode = "inpaint" if mask is not None else ("img2img" if init is not None else "txt2img")
    out, start = [], 0
    for j in jobs:
        images = [to_pil(xi) for xi in x[start:start + j.n]]
        out.append(Rendered(images, _params(pipe, j, mode, strength)))
        start += j.n
    return out


def _params(pipe, job: ImageJob, mode: str, strength: float, partial: bool = False) -> list[dict]:
    """What goes into each picture's PNG chunks and C2PA manifest (the keys generate_images writes)."""
    from incasa import __version__

    H, W = pipe.image_size
    extra = {"partial": True} if partial else {}
    return [{"prompt": job.prompt, "seed": job.seed + i, "steps": job.steps, "guidance": job.guidance,
             "size": f"{W}x{H}", "sampler": "Euler (rectified flow)", "model": pipe.name,
             "model_hash": pipe.weights_hash, "mode": mode, "strength": strength if mode == "img2img" else None,
             "incasa_version": __version__, **extra} for i in range(job.n)]


def preview_steps(steps: int, partial_images: int) -> list[int]:
    """The Euler step indices after which a job with `partial_images` previews gets one (evenly spaced, last
    preview before the final step so that it is really partial)."""
    if partial_images <= 0 or steps < 2:
        return []
    return sorted({min(max(round((k + 1) * steps / (partial_images + 1)) - 1, 0), steps - 2)
                   for k in range(partial_images)})


def _previewer(pipe, jobs: list[ImageJob], counts: list[int], steps: int):
    from incasa.image.generate import to_pil

    wanted = {i: preview_steps(steps, j.partial_images) for i, j in enumerate(jobs) if j.on_preview is not None}
    if not wanted:
        return None
    starts = [sum(counts[:i]) for i in range(len(jobs))]

    def on_step(step: int, x_BCHW) -> None:
        for i, at in wanted.items():
            if step in at:
                images = [to_pil(xi) for xi in pipe.decode(x_BCHW[starts[i]:starts[i] + counts[i]])]
                jobs[i].on_preview(at.index(step), Rendered(images, _params(pipe, jobs[i], "preview", 1.0, True)))

    return on_step


@dataclass
class Registry:
    """Every model the server answers for, by model id and kind. A dict each: no registration by side effect."""

    image: dict[str, ImageEngine] = field(default_factory=dict)
    chat: dict[str, ChatEngine] = field(default_factory=dict)
    speech: dict[str, SpeechEngine] = field(default_factory=dict)

    def default_image_model(self) -> str | None:
        return next(iter(self.image), None)


def _registry(kind: str, checkpoints: list[tuple[str, Path | None]], make: Callable) -> dict:
    """{id: make(path, name)} for [(id, checkpoint)] ("" = named by the checkpoint's metadata; None = the shipped
    default); a missing file or two models of one name are refused."""
    engines: dict = {}
    for name, path in checkpoints:
        if path is not None and not Path(path).is_file():
            raise ValueError(f"{kind} model checkpoint {path} does not exist")
        engine = make(path, name or None)
        if engine.name in engines:
            raise ValueError(f"two {kind} models are named {engine.name!r}; name them: NAME=PATH")
        engines[engine.name] = engine
    return engines


def image_registry(checkpoints: list[tuple[str, Path | None]], resident: ResidentPipelines) -> dict[str, ImageEngine]:
    return _registry("image", checkpoints, lambda path, name: IncasaImageEngine(path, resident, name))


class IncasaTextEngine:
    """incasa.text's MoE language model as a ChatEngine. Loaded lazily on the first request (load_model caches)."""

    def __init__(self, checkpoint: Path | None, device: str = "auto", name: str | None = None):
        from incasa.text.chat import DEFAULT_CHECKPOINT
        from incasa.train.checkpoint import read_metadata

        self.checkpoint = Path(checkpoint) if checkpoint is not None else DEFAULT_CHECKPOINT
        if not self.checkpoint.is_file():
            raise ValueError(f"text model checkpoint {self.checkpoint} does not exist")
        self.device = device
        meta = read_metadata(self.checkpoint)
        self.name = name or meta.get("name") or f"incasa-text-{meta.get('preset', 'custom')}"

    def _model(self):
        from incasa.text.chat import load_model

        return load_model(self.checkpoint, device=self.device)

    def chat(self, messages: list[dict], *, max_tokens: int, temperature: float, top_p: float,
             seed: int | None) -> Iterator[str]:
        from incasa.text.chat import chat

        # chat() validates the messages when called (ValueError -> 400) and decodes only while iterated
        return chat(messages, model=self._model(), max_tokens=max_tokens, temperature=temperature, top_p=top_p,
                    seed=seed)

    def count_tokens(self, text: str) -> int:
        return len(self._model().tokenizer.encode(text))


def text_registry(checkpoints: list[tuple[str, Path | None]], device: str = "auto") -> dict[str, ChatEngine]:
    return _registry("text", checkpoints, lambda path, name: IncasaTextEngine(path, device, name))


class IncasaVoiceEngine:
    """incasa.voice's text-to-speech model as a SpeechEngine; "default" (or no voice) is the model's first voice."""

    def __init__(self, checkpoint: Path | None, device: str = "cpu", name: str | None = None):
        from incasa.train.checkpoint import read_metadata
        from incasa.voice.speak import DEFAULT_CHECKPOINT

        self.checkpoint = Path(checkpoint) if checkpoint is not None else DEFAULT_CHECKPOINT
        if not self.checkpoint.is_file():
            raise ValueError(f"voice model checkpoint {self.checkpoint} does not exist")
        self.device = "cpu" if device == "auto" else device
        meta = read_metadata(self.checkpoint)
        self.name = name or meta.get("name") or "incasa-voice"

    def speak(self, text: str, *, voice: str, speed: float) -> tuple[object, int]:
        from incasa.voice.speak import synthesize

        return synthesize(text, voice=None if voice in ("", "default") else voice, speed=speed,
                          checkpoint=self.checkpoint, device=self.device)


def voice_registry(checkpoints: list[tuple[str, Path | None]], device: str = "cpu") -> dict[str, SpeechEngine]:
    return _registry("voice", checkpoints, lambda path, name: IncasaVoiceEngine(path, device, name))
