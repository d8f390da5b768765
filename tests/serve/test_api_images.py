"""The image API through the official `openai` client: generations in every response and output format, edits with
OpenAI's transparent masks and black-and-white masks, streaming previews, and errors in the OpenAI shape."""

import base64
import io

import httpx
import numpy as np
import openai
import pytest
from PIL import Image

from incasa.safety import provenance, watermark
from incasa.safety.cli import resolve_keys_dir

FAST = {"steps": 3}
MAGIC = {"png": b"\x89PNG\r\n\x1a\n", "jpeg": b"\xff\xd8\xff", "webp": b"RIFF"}


def _decode(b64: str) -> bytes:
    return base64.b64decode(b64)


def test_models_lists_the_image_model(client):
    models = client.models.list().data
    assert [(m.id, m.owned_by) for m in models] == [("tiny", "incasa")]
    assert client.models.retrieve("tiny").id == "tiny"
    with pytest.raises(openai.NotFoundError) as e:
        client.models.retrieve("gpt-4o")
    assert e.value.body["code"] == "model_not_found"


@pytest.mark.parametrize("fmt", ["png", "jpeg", "webp"])
def test_generation_b64_every_format_signed_and_watermarked(client, fmt):
    r = client.images.generate(prompt="a red square", n=2, size="256x256", output_format=fmt,
                               extra_body={"seed": 7, **FAST})
    assert r.output_format == fmt and r.size == "256x256" and len(r.data) == 2
    for k, item in enumerate(r.data):
        data = _decode(item.b64_json)
        assert data.startswith(MAGIC[fmt])
        img = Image.open(io.BytesIO(data))
        assert img.size == (256, 256)
        report = provenance.verify(data, fmt)
        assert report["state"] == "valid" and report["parameters"]["seed"] == 7 + k
        assert report["model"] == "incasa-tiny"
        if fmt == "png":  # lossless: the parameters are in the PNG and the invisible watermark reads back
            assert "Seed: %d" % (7 + k) in img.info["parameters"]
            found, payload, _ = watermark.detect(img.convert("RGB"))
            assert found and payload[2:] == watermark.make_payload("x", provenance.key_id(resolve_keys_dir(None)))[2:]


def test_generation_is_deterministic_by_seed_and_url_format(client, tiny_server):
    a = client.images.generate(prompt="blue", n=1, size="64x64", extra_body={"seed": 3, **FAST})
    b = client.images.generate(prompt="blue", n=1, size="64x64", response_format="url",
                               extra_body={"seed": 3, **FAST})
    assert b.data[0].b64_json is None and b.data[0].url.startswith(tiny_server.url + "/v1/files/images/")
    fetched = httpx.get(b.data[0].url)
    assert fetched.status_code == 200 and fetched.headers["content-type"] == "image/png"
    pixels = [np.asarray(Image.open(io.BytesIO(d)).convert("RGB"))
              for d in (_decode(a.data[0].b64_json), fetched.content)]
    assert (pixels[0] == pixels[1]).all()
    assert httpx.get(tiny_server.url + "/v1/files/images/" + "0" * 64 + ".png").status_code == 404
    assert httpx.get(tiny_server.url + "/v1/files/images/..%2Fsecret.png").status_code == 404


def _picture(size=128) -> Image.Image:
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8))


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


@pytest.mark.parametrize("kind", ["transparent", "black_and_white"])
def test_edit_repaints_only_the_masked_region(client, kind):
    original = _picture()
    if kind == "transparent":  # OpenAI: fully transparent pixels are repainted
        mask = Image.new("RGBA", original.size, (0, 0, 0, 255))
        mask.paste((0, 0, 0, 0), (0, 0, 64, 128))
    else:  # white = repaint
        mask = Image.new("L", original.size, 0)
        mask.paste(255, (0, 0, 64, 128))
    r = client.images.edit(image=("in.png", _png(original), "image/png"), mask=("mask.png", _png(mask), "image/png"),
                           prompt="a green square", n=2, extra_body={"seed": 1, **FAST})
    assert len(r.data) == 2
    for item in r.data:
        data = _decode(item.b64_json)
        out = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
        assert out.shape == (128, 128, 3)
        assert (out[:, 64:] == np.asarray(original)[:, 64:]).all()  # kept, pixel for pixel
        assert (out[:, :64] != np.asarray(original)[:, :64]).any()
        report = provenance.verify(data, "png")
        assert report["state"] == "valid" and report["parameters"]["mode"] == "inpaint"
        assert [i["relationship"] for i in report["ingredients"]] == ["inputTo"]


def test_edit_without_mask_is_img2img_and_bad_inputs_are_400(client):
    r = client.images.edit(image=("in.png", _png(_picture(64)), "image/png"), prompt="red",
                           extra_body={"strength": 0.5, **FAST})
    assert provenance.verify(_decode(r.data[0].b64_json), "png")["parameters"]["strength"] == 0.5
    with pytest.raises(openai.BadRequestError) as e:
        client.images.edit(image=("in.png", b"not an image", "image/png"), prompt="red")
    assert e.value.body["param"] == "image"
    with pytest.raises(openai.BadRequestError) as e:
        client.images.edit(image=("in.png", _png(_picture(64)), "image/png"),
                           mask=("m.png", _png(Image.new("L", (32, 32))), "image/png"), prompt="red")
    assert e.value.body["param"] == "mask" and "same size" in e.value.body["message"]


def test_streaming_sends_partial_images_then_completed(client):
    events = list(client.images.generate(prompt="a red square", n=2, size="64x64", stream=True, partial_images=2,
                                         extra_body={"seed": 0, "steps": 6}))
    kinds = [e.type for e in events]
    assert kinds.count("image_generation.partial_image") == 4 and kinds[-2:] == ["image_generation.completed"] * 2
    partial = [e for e in events if e.type.endswith("partial_image")]
    assert sorted({e.partial_image_index for e in partial}) == [0, 1]
    final = _decode(events[-1].b64_json)
    assert provenance.verify(final, "png")["state"] == "valid"
    assert provenance.verify(_decode(partial[0].b64_json), "png")["state"] == "valid"  # previews are signed too


def test_streaming_an_edit(client):
    original = _picture(64)
    mask = Image.new("L", original.size, 0)
    mask.paste(255, (0, 0, 32, 64))
    events = list(client.images.edit(image=("in.png", _png(original), "image/png"),
                                     mask=("m.png", _png(mask), "image/png"), prompt="blue", stream=True,
                                     partial_images=1, size="512x512", extra_body={"steps": 4}))
    assert [e.type for e in events] == ["image_edit.partial_image", "image_edit.completed"]
    out = np.asarray(Image.open(io.BytesIO(_decode(events[-1].b64_json))).convert("RGB"))
    assert out.shape == (64, 64, 3) and (out[:, 32:] == np.asarray(original)[:, 32:]).all()


def test_errors_have_the_openai_shape(client, tiny_server):
    with pytest.raises(openai.BadRequestError) as e:
        client.images.generate(prompt="x", n=11)
    assert e.value.body == {"message": e.value.body["message"], "type": "invalid_request_error", "param": "n",
                            "code": "invalid_value"}
    with pytest.raises(openai.BadRequestError) as e:
        client.images.generate(prompt="x", size="256x512")
    assert e.value.body["param"] == "size" and "square" in e.value.body["message"]
    with pytest.raises(openai.NotFoundError) as e:
        client.images.generate(prompt="x", model="dall-e-3")
    assert e.value.body["code"] == "model_not_found" and e.value.body["param"] == "model"
    with pytest.raises(openai.BadRequestError) as e:
        client.images.generate(prompt="how to make a pipe bomb at home, step by step")
    assert e.value.body["code"] == "content_policy_violation"
    r = httpx.post(tiny_server.url + "/v1/images/generations", content=b"{not json",
                   headers={"content-type": "application/json"})
    assert r.status_code == 400 and set(r.json()["error"]) == {"message", "type", "param", "code"}
    r = httpx.get(tiny_server.url + "/v1/nothing/here")
    assert r.status_code == 404 and r.json()["error"]["message"] == "Invalid URL (GET /v1/nothing/here)"


def test_unknown_fields_are_accepted_and_ignored(tiny_server):
    r = httpx.post(tiny_server.url + "/v1/images/generations", timeout=60,
                   json={"prompt": "red", "n": 1, "size": "64x64", "steps": 2, "future_field": {"a": 1},
                         "quality": "low", "style": "vivid", "moderation": "auto"})
    assert r.status_code == 200 and r.headers["x-request-id"]
    assert r.json()["data"][0]["parameters"]["steps"] == 2


def test_chat_and_speech_answer_model_not_found_until_a_model_is_installed(client):
    with pytest.raises(openai.NotFoundError) as e:
        client.chat.completions.create(model="incasa-text", messages=[{"role": "user", "content": "hi"}])
    assert e.value.body["code"] == "model_not_found" and e.value.body["type"] == "invalid_request_error"
    with pytest.raises(openai.NotFoundError) as e:
        client.audio.speech.create(model="incasa-voice", voice="alloy", input="hello")
    assert e.value.body["code"] == "model_not_found"
