import io

import numpy as np
import pytest
from PIL import Image, ImageEnhance

from incasa.safety.watermark import MIN_SIDE, SYNC_CORRELATION, detect, embed, make_payload, strength_for

PAYLOAD = make_payload("incasa-image-tiny 0.1", "0123456789abcdef")


@pytest.fixture(scope="module")
def marked(photo):
    return embed(photo, PAYLOAD)


def jpeg(img: Image.Image, quality: int) -> Image.Image:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=quality)
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")


def psnr(a: Image.Image, b: Image.Image) -> float:
    mse = np.mean((np.asarray(a, float) - np.asarray(b, float)) ** 2)
    return 10 * np.log10(255**2 / mse)


def attacks(img: Image.Image) -> dict[str, Image.Image]:
    w, h = img.size
    return {
        "none": img,
        "jpeg q50": jpeg(img, 50),
        "resize 0.5x": img.resize((w // 2, h // 2), Image.Resampling.BICUBIC),
        "crop 10%": img.crop((w // 22, h // 17, w // 22 + int(w * 0.9), h // 17 + int(h * 0.9))),
        "colour jitter": ImageEnhance.Color(
            ImageEnhance.Contrast(ImageEnhance.Brightness(img).enhance(1.08)).enhance(0.92)
        ).enhance(1.1),
    }


def test_mark_is_faint(photo, marked):
    assert psnr(photo, marked) > 35.0  # dB, at 512 px (the mark is fainter there than on small images)


def test_payload_round_trip_and_attacks(marked):
    for name, img in attacks(marked).items():
        found, payload, confidence = detect(img)
        assert found and payload == PAYLOAD, name
        assert confidence >= 0.85, name


def test_small_images_survive_the_same_edits(photo):
    small = photo.resize((256, 256), Image.Resampling.LANCZOS)
    marked = embed(small, PAYLOAD)
    assert psnr(small, marked) > 32.0
    for name, img in attacks(marked).items():
        assert detect(img)[:2] == (True, PAYLOAD), name


def test_small_rotations_are_turned_back(marked):
    for degrees in (3, -5):
        assert detect(marked.rotate(degrees, resample=Image.Resampling.BICUBIC))[:2] == (True, PAYLOAD), degrees


def test_tiny_images_are_marked_more_strongly(photo):
    tiny = photo.resize((MIN_SIDE, MIN_SIDE), Image.Resampling.LANCZOS)
    assert detect(embed(tiny, PAYLOAD))[:2] == (True, PAYLOAD)
    assert strength_for(128) > strength_for(256) > strength_for(512) == strength_for(2048)
    assert strength_for(181) == pytest.approx((strength_for(128) + strength_for(256)) / 2, abs=0.05)


def test_large_images_are_read_from_a_crop(photo):
    big = embed(photo.resize((1536, 1280), Image.Resampling.BICUBIC), PAYLOAD)
    assert detect(big)[:2] == (True, PAYLOAD)


def test_unmarked_and_other_key_are_not_detected(photo, marked):
    for img in (photo, jpeg(photo, 50), photo.resize((256, 256), Image.Resampling.BICUBIC)):
        found, payload, confidence = detect(img)
        assert (found, payload) == (False, None) and confidence < SYNC_CORRELATION
    assert detect(marked, key="someone else")[0] is False


def test_modes_and_payload_rules(photo):
    grey = embed(photo.convert("L"), "ab")
    assert grey.mode == "L" and detect(grey) == (True, b"ab\0\0", pytest.approx(detect(grey)[2]))
    rgba = embed(photo.convert("RGBA"), PAYLOAD)
    assert rgba.mode == "RGBA" and np.all(np.asarray(rgba)[..., 3] == 255)
    with pytest.raises(ValueError, match="at most 4 bytes"):
        embed(photo, b"too long payload")
    with pytest.raises(ValueError, match="upscale"):
        embed(photo.resize((MIN_SIDE - 1, MIN_SIDE)), PAYLOAD)
    assert make_payload("m", "k") == make_payload("m", "k") != make_payload("m2", "k")
