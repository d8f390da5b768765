"""Test helpers: small procedural images (distinct by seed), JPEGs with camera EXIF and GPS, 16-bit depth maps."""

from __future__ import annotations

import io
import random

import numpy as np
from PIL import Image, ImageDraw


def picture(seed: int, size: tuple[int, int] = (64, 48)) -> Image.Image:
    """A random composition of shapes on a random background: different seeds give clearly different images."""
    r = random.Random(seed)
    im = Image.new("RGB", size, tuple(r.randint(0, 255) for _ in range(3)))
    draw = ImageDraw.Draw(im)
    w, h = size
    for _ in range(6):
        x0, y0 = r.randint(0, w - 8), r.randint(0, h - 8)
        box = (x0, y0, x0 + r.randint(6, w // 2), y0 + r.randint(6, h // 2))
        fill = tuple(r.randint(0, 255) for _ in range(3))
        (draw.ellipse if r.random() < 0.5 else draw.rectangle)(box, fill=fill)
    return im


def png_bytes(im: Image.Image) -> bytes:
    buf = io.BytesIO()
    im.save(buf, "PNG")
    return buf.getvalue()


def jpeg_with_exif(im: Image.Image, make: str = "Canon", gps: bool = True) -> bytes:
    exif = Image.Exif()
    exif[0x010F] = make
    exif[0x0110] = "EOS 5D"
    exif[0x013B] = "Jane Doe"  # Artist: personal
    inner = exif.get_ifd(0x8769)
    inner[0x829A] = 0.004
    inner[0xA431] = "SN123456"  # BodySerialNumber: personal
    if gps:
        g = exif.get_ifd(0x8825)
        g[1], g[2], g[3], g[4] = "N", (45.0, 27.0, 0.0), "E", (9.0, 11.0, 0.0)
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=92, exif=exif.tobytes())
    return buf.getvalue()


def depth_png(size: tuple[int, int]) -> bytes:
    w, h = size
    d = (np.linspace(0, 60000, w * h).reshape(h, w)).astype(np.uint16)
    return png_bytes(Image.fromarray(d))
