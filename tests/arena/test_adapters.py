"""Adapters: the stand-in is deterministic, the OpenAI-compatible one talks to a real HTTP server on loopback,
the in-process one calls incasa.image.generate.generate_images with the documented signature."""

import base64
import io
import sys
import types

import pytest
from fastapi import FastAPI, Request
from PIL import Image

from incasa.arena.adapters import IncasaImageAdapter, OpenAIImagesAdapter, StandInAdapter, build_adapter


def test_standin_is_deterministic_png():
    a = StandInAdapter("rings", size=32)
    png = a.generate("a cat", 7)
    assert png.startswith(b"\x89PNG") and Image.open(io.BytesIO(png)).size == (32, 32)
    assert a.generate("a cat", 7) == png
    assert a.generate("a cat", 8) != png and a.generate("a dog", 7) != png
    assert StandInAdapter("stripes", size=32).generate("a cat", 7) != png
    with pytest.raises(ValueError, match="style"):
        StandInAdapter("blobs").generate("x", 0)


def test_build_adapter_errors():
    with pytest.raises(ValueError, match="unknown adapter 'dalle'"):
        build_adapter("dalle", {})
    with pytest.raises(ValueError, match="bad configuration for adapter 'standin'"):
        build_adapter("standin", {"colour": "red"})


def images_server(received: list) -> FastAPI:
    """A minimal OpenAI-compatible images endpoint (a real HTTP server for the adapter to talk to)."""
    app = FastAPI()

    @app.post("/v1/images/generations")
    async def generations(request: Request):
        body = await request.json()
        received.append((body, request.headers.get("authorization")))
        if body["prompt"] == "fail":
            return {"error": {"message": "no"}}
        buffer = io.BytesIO()
        fmt = "JPEG" if body["prompt"] == "jpeg" else "PNG"
        Image.new("RGB", (8, 8), (body.get("seed", 0) % 256, 0, 0)).save(buffer, format=fmt)
        return {"created": 0, "data": [{"b64_json": base64.b64encode(buffer.getvalue()).decode()}]}

    return app


def test_openai_adapter_against_a_real_server(live_server, monkeypatch):
    received = []
    server = live_server(images_server(received))
    monkeypatch.setenv("ARENA_TEST_KEY", "sk-test")
    adapter = OpenAIImagesAdapter(base_url=server.url, model="tiny", api_key_env="ARENA_TEST_KEY")
    png = adapter.generate("a lemon", 42)
    assert Image.open(io.BytesIO(png)).getpixel((0, 0)) == (42, 0, 0)
    body, auth = received[0]
    assert body == {"prompt": "a lemon", "n": 1, "size": "256x256", "response_format": "b64_json", "model": "tiny",
                    "seed": 42}
    assert auth == "Bearer sk-test"
    assert OpenAIImagesAdapter(base_url=server.url + "/v1").generate("jpeg", 1).startswith(b"\x89PNG")  # re-encoded
    OpenAIImagesAdapter(base_url=server.url, send_seed=False).generate("x", 3)
    assert "seed" not in received[-1][0]
    with pytest.raises(ValueError, match="without data"):
        adapter.generate("fail", 0)
    monkeypatch.delenv("ARENA_TEST_KEY")
    with pytest.raises(ValueError, match="ARENA_TEST_KEY"):
        adapter.generate("a lemon", 1)


def test_incasa_adapter_keeps_to_the_public_functions(monkeypatch):
    # Checks the adapter's side of the contract with incasa.image.generate - load_pipeline(checkpoint) once, then
    # generate_images(prompt, n=1, seed=..., pipeline=..., steps=..., guidance=...) -> [PIL.Image] - with a module
    # standing in for the real one (the real model is exercised by the slow test below).
    calls = []

    def load_pipeline(checkpoint):
        calls.append(("load", checkpoint))
        return "pipeline"

    def generate_images(prompt, *, n, seed, pipeline, **settings):
        calls.append((prompt, n, seed, pipeline, settings))
        return [Image.new("RGB", (4, 4), (seed, 1, 2)) for _ in range(n)]

    module = types.ModuleType("incasa.image.generate")
    module.load_pipeline, module.generate_images = load_pipeline, generate_images
    monkeypatch.setitem(sys.modules, "incasa.image.generate", module)
    adapter = build_adapter("incasa", {"checkpoint": "runs/ckpt.safetensors", "steps": 8, "guidance": None})
    png = adapter.generate("a star", 9)
    adapter.generate("a moon", 10)
    assert calls == [("load", "runs/ckpt.safetensors"), ("a star", 1, 9, "pipeline", {"steps": 8}),
                     ("a moon", 1, 10, "pipeline", {"steps": 8})]
    assert Image.open(io.BytesIO(png)).getpixel((0, 0)) == (9, 1, 2)
    with pytest.raises(ValueError, match="steps"):
        IncasaImageAdapter(steps=0)


def test_incasa_adapter_with_a_real_tiny_checkpoint(tmp_path):
    # The real incasa.image.generate path end to end: a randomly initialised "tiny" DiT with the test hash encoder,
    # saved the way training saves it, then two battles' worth of generation through the adapter.
    from dataclasses import asdict

    from incasa.image.dit import PRESETS, DiT
    from incasa.train.checkpoint import save_weights

    config = PRESETS["tiny"]
    path = tmp_path / "model.safetensors"
    save_weights(DiT(config), path, {"kind": "incasa-image-dit", "dit": asdict(config), "preset": "tiny",
                                     "text_encoder": "hash", "image_size": [16, 16]})
    adapter = build_adapter("incasa", {"checkpoint": str(path), "steps": 2})
    png = adapter.generate("a red apple", 3)
    assert Image.open(io.BytesIO(png)).size == (16, 16)
    assert adapter.generate("a red apple", 3) == png and adapter.generate("a red apple", 4) != png
    assert b"tEXt" not in png and b"iTXt" not in png  # nothing in the file names the model


def test_metadata_cannot_unblind_a_battle(live_server):
    from PIL import PngImagePlugin

    app = FastAPI()

    @app.post("/v1/images/generations")
    async def generations():
        info = PngImagePlugin.PngInfo()
        info.add_text("parameters", "a cat\nSteps: 25, Model: incasa-emoji-small")
        buffer = io.BytesIO()
        Image.new("RGB", (8, 8), (1, 2, 3)).save(buffer, format="PNG", pnginfo=info)
        return {"data": [{"b64_json": base64.b64encode(buffer.getvalue()).decode()}]}

    server = live_server(app)
    png = OpenAIImagesAdapter(base_url=server.url).generate("a cat", 0)
    assert b"incasa-emoji-small" not in png and b"tEXt" not in png
    assert Image.open(io.BytesIO(png)).getpixel((3, 3)) == (1, 2, 3)
