import io

import numpy as np
import pytest
from PIL import Image, ImageEnhance

from incasa.safety.watermark import MIN_SIDE, detect, embed, make_payload

PAYLOAD = make_payload("incasa-image-tiny 0.1", "0123456789abcdef")


@pytest.fixture(scope="module")
def marked(photo):
    return embed(photo, PAYLOAD)


def jpeg(img: Image.Image, quality: int) -> Image.Image:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=quality)
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")


def test_mark_is_faint(photo, marked):
    mse = np.mean((np.asarray(photo, float) - np.asarray(marked, float)) ** 2)
    assert 10 * np.log10(255**2 / mse) > 33.0  # PSNR in dB


def test_payload_round_trip_and_attacks(marked):
    w, h = marked.size
    attacked = {
        "none": marked,
        "jpeg q50": jpeg(marked, 50),
        "resize 0.5x": marked.resize((w // 2, h // 2), Image.Resampling.BICUBIC),
        "crop 10%": marked.crop((23, 31, 23 + int(w * 0.9), 31 + int(h * 0.9))),
        "colour jitter": ImageEnhance.Color(
            ImageEnhance.Contrast(ImageEnhance.Brightness(marked).enhance(1.08)).enhance(0.92)
        ).enhance(1.1),
    }
    for name, img in attacked.items():
        found, payload, confidence = detect(img)
        assert found and payload == PAYLOAD, name
        assert confidence >= 0.78


def test_large_images_are_read_from_a_crop(photo):
    big = embed(photo.resize((1536, 1280), Image.Resampling.BICUBIC), PAYLOAD)
    assert detect(big)[:2] == (True, PAYLOAD)


def test_unmarked_and_other_key_are_not_detected(photo, marked):
    assert detect(photo)[0] is False
    assert detect(jpeg(photo, 50))[0] is False
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
