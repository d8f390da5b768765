"""Metadata: the per-image stage. Decode safely, measure, read EXIF, strip personal fields, pair depth, describe.

:func:`analyse` turns the bytes of one record into either a *sample row* (a flat dict that becomes one row of the
stage's Parquet part file) or a :class:`~incasa.data.ingest.Rejection` with its reason:

- ``decompression_bomb`` — more pixels than ``max_pixels`` (Pillow's DecompressionBombWarning/Error, made fatal);
- ``not_image`` — Pillow cannot identify the bytes; ``corrupt`` — it can, but decoding fails (e.g. truncated);
- ``bad_depth`` — the paired depth map does not decode, has another aspect ratio, or holds NaN/inf.

EXIF: camera (Make, Model), lens, exposure time, f-number, ISO and the original timestamp are kept as metadata. The
stored image has its GPS block, serial numbers, owner name, maker note, user comment, XMP and any extra EXIF
block (Pillow reads only the first; a second one could still hold GPS) removed unless
``keep_personal_exif``. JPEGs are rewritten losslessly (only the APP1 segments change); other formats that carry such
fields are re-encoded as PNG (lossless). An image without personal fields is stored byte-for-byte.

Large JPEGs are decoded with ``draft`` (the decoder's own 1/2..1/8 scaling), which is how the stage keeps its rate on
photos: the descriptors only need 32×32, yet the whole stream is still decoded, so truncation is still caught.
"""

from __future__ import annotations

import hashlib
import io
import json
import struct
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, UnidentifiedImageError

from incasa.data import categories as cat
from incasa.data import dejavu
from incasa.data.ingest import Loaded, Rejection

GPS_IFD, EXIF_IFD = 0x8825, 0x8769
# base-IFD and Exif-IFD tags that identify a person or a device rather than describe the picture
PERSONAL_BASE_TAGS = (0x013B, 0x013C)  # Artist, HostComputer
PERSONAL_EXIF_TAGS = (0x927C, 0x9286, 0xA420, 0xA430, 0xA431, 0xA435)  # MakerNote, UserComment, ImageUniqueID,
# CameraOwnerName, BodySerialNumber, LensSerialNumber
KEPT_EXIF = {"camera_make": (None, 0x010F), "camera_model": (None, 0x0110), "lens": (EXIF_IFD, 0xA434),
             "exposure_time": (EXIF_IFD, 0x829A), "f_number": (EXIF_IFD, 0x829D), "iso": (EXIF_IFD, 0x8827),
             "timestamp": (EXIF_IFD, 0x9003)}
XMP_HEADER = b"http://ns.adobe.com/xap/1.0/\x00"


@dataclass(frozen=True)
class MetadataConfig:
    """Safety limit and privacy choice of the per-image stage."""

    max_pixels: int = 89_478_485  # Pillow's default (~ 0.25 GiB of RGBA)
    keep_personal_exif: bool = False
    thumbnail_px: int = 48


def _json_value(v: object) -> object:
    if isinstance(v, bytes):
        return v.decode("ascii", errors="replace").strip("\x00 ")
    if isinstance(v, str):
        return v.strip("\x00 ")
    if isinstance(v, (int, float)):
        return v
    try:
        return float(v)  # IFDRational
    except (TypeError, ValueError, ZeroDivisionError):
        return str(v)


def read_exif(exif: Image.Exif) -> tuple[dict, bool]:
    """(the kept fields, whether there is anything personal to strip)."""
    sub = {EXIF_IFD: exif.get_ifd(EXIF_IFD) if EXIF_IFD in exif else {}}
    kept = {}
    for name, (ifd, tag) in KEPT_EXIF.items():
        source = exif if ifd is None else sub[ifd]
        if tag in source:
            kept[name] = _json_value(source[tag])
    personal = GPS_IFD in exif or any(t in exif for t in PERSONAL_BASE_TAGS) or \
        any(t in sub[EXIF_IFD] for t in PERSONAL_EXIF_TAGS)
    return kept, personal


def stripped_exif(exif: Image.Exif) -> bytes:
    """The EXIF block without GPS and personal tags, as ``Exif\\0\\0``-prefixed bytes."""
    inner = exif.get_ifd(EXIF_IFD) if EXIF_IFD in exif else None  # materialise before editing the base IFD
    for tag in (GPS_IFD, *PERSONAL_BASE_TAGS):
        if tag in exif:
            del exif[tag]
    if inner is not None:
        for tag in PERSONAL_EXIF_TAGS:
            inner.pop(tag, None)
    return exif.tobytes()


def _jpeg_segments(data: bytes):
    """(marker, segment bytes) up to the start of scan."""
    pos = 2
    while pos + 4 <= len(data) and data[pos] == 0xFF and data[pos + 1] != 0xDA:
        length = int.from_bytes(data[pos + 2:pos + 4], "big")
        yield data[pos + 1], data[pos:pos + 2 + length]
        pos += 2 + length


def jpeg_has_hidden_metadata(data: bytes) -> bool:
    """True when a JPEG carries XMP or more than one EXIF block (Pillow reads only the first: GPS may hide later)."""
    app1 = [seg[4:] for marker, seg in _jpeg_segments(data) if marker == 0xE1]
    return sum(p.startswith(b"Exif\x00\x00") for p in app1) > 1 or any(p.startswith(XMP_HEADER) for p in app1)


def rewrite_jpeg_app1(data: bytes, exif: bytes) -> bytes:
    """Replace the EXIF APP1 segment of a JPEG with ``exif`` and drop XMP APP1 segments; the scan data is untouched."""
    assert data[:2] == b"\xff\xd8", "not a JPEG"
    out, pos = [b"\xff\xd8"], 2
    wrote_exif = False
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            raise ValueError("JPEG marker expected")
        marker = data[pos + 1]
        if marker == 0xDA:  # start of scan: the rest is entropy-coded data and the EOI
            break
        length = int.from_bytes(data[pos + 2:pos + 4], "big")
        segment = data[pos:pos + 2 + length]
        payload = segment[4:]
        if marker == 0xE1 and payload.startswith(b"Exif\x00\x00"):
            if exif and not wrote_exif:
                out.append(b"\xff\xe1" + (len(exif) + 2).to_bytes(2, "big") + exif)
                wrote_exif = True
        elif not (marker == 0xE1 and payload.startswith(XMP_HEADER)):
            out.append(segment)
        pos += 2 + length
    out.append(data[pos:])
    return b"".join(out)


def _strip_personal(data: bytes, image: Image.Image, fmt: str, exif_readable: bool) -> tuple[bytes, str]:
    # EXIF that does not parse cannot be edited field by field: then none of it is kept
    exif = stripped_exif(image.getexif()) if exif_readable else b""
    if fmt == "JPEG":
        return rewrite_jpeg_app1(data, exif), "JPEG"
    buf = io.BytesIO()
    with Image.open(io.BytesIO(data)) as full:  # the descriptor copy may be a draft; store the full image
        full.save(buf, "PNG", exif=exif)
    return buf.getvalue(), "PNG"


def decode_depth(data: bytes, ext: str) -> np.ndarray:
    """A depth map as float32 H×W. 16-bit PNG (or 8-bit) via Pillow, EXR via OpenEXR (channel Z, else the first)."""
    if ext == ".exr":
        import OpenEXR

        with OpenEXR.File(io.BytesIO(data)) as f:
            channels = f.channels()
            name = "Z" if "Z" in channels else sorted(channels)[0]
            return np.asarray(channels[name].pixels, dtype=np.float32)
    with Image.open(io.BytesIO(data)) as im:
        if im.mode not in ("I;16", "I;16B", "I", "L", "F"):
            raise ValueError(f"depth PNG must be single-channel (16-bit or 8-bit), got mode {im.mode}")
        return np.asarray(im, dtype=np.float32)


def check_depth(depth: np.ndarray, width: int, height: int) -> str:
    """Empty string when the depth map fits the image, else why not."""
    if depth.ndim != 2 or depth.size == 0:
        return f"depth must be a 2-D map, got shape {depth.shape}"
    dh, dw = depth.shape
    if abs(dw / dh - width / height) > 0.01 * width / height:
        return f"depth aspect {dw}x{dh} differs from image {width}x{height}"
    if not np.isfinite(depth).all():
        return "depth holds NaN or infinite values"
    return ""


def analyse(key: str, loaded: Loaded, label: str | None, cfg: MetadataConfig,
            classifier: cat.Classifier | None = None) -> dict | Rejection:
    """The whole per-image stage for one record: a sample row, or the reason it is rejected."""
    data = loaded.image
    sha = hashlib.sha256(data).hexdigest()
    Image.MAX_IMAGE_PIXELS = cfg.max_pixels  # per call: worker processes do not share the parent's module state
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                fmt, (width, height) = image.format or "", image.size
                try:
                    kept, personal = read_exif(image.getexif())
                    exif_readable = True
                except (struct.error, TypeError, KeyError, IndexError, ValueError, OSError, SyntaxError):
                    kept, personal, exif_readable = {}, True, False
                # XMP can carry GPS too; so can a second EXIF block that Pillow never parses
                personal = personal or (jpeg_has_hidden_metadata(data) if fmt == "JPEG" else
                                        any("xmp" in str(k).lower() for k in image.info))
                if fmt == "JPEG":
                    image.draft("RGB", (256, 256))
                image.load()
                desc_image = image.copy()
                if personal and not cfg.keep_personal_exif:
                    stored, stored_fmt = _strip_personal(data, image, fmt, exif_readable)
                else:
                    stored, stored_fmt = data, fmt
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        return Rejection(key, "decompression_bomb", str(e))
    except UnidentifiedImageError:
        return Rejection(key, "not_image", "Pillow cannot identify the bytes as an image")
    except (OSError, SyntaxError, ValueError, EOFError) as e:  # truncated or malformed streams
        return Rejection(key, "corrupt", f"{type(e).__name__}: {e}")

    depth_bytes = None
    if loaded.depth is not None:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                problem = check_depth(decode_depth(loaded.depth, loaded.depth_ext), width, height)
        except (OSError, ValueError, SyntaxError, RuntimeError, Image.DecompressionBombError,
                Image.DecompressionBombWarning) as e:
            problem = f"depth does not decode: {type(e).__name__}: {e}"
        if problem:
            return Rejection(key, "bad_depth", problem)
        depth_bytes = loaded.depth

    rgb = dejavu.small_rgb(desc_image)
    raw = dejavu.raw_descriptor(rgb)
    category, why = cat.categorize(label, kept, depth_bytes is not None, raw, classifier)
    thumb = io.BytesIO()
    small = desc_image.convert("RGB")
    small.thumbnail((cfg.thumbnail_px, cfg.thumbnail_px))
    small.save(thumb, "PNG")
    return {
        "key": key, "sha256": sha, "width": width, "height": height, "format": fmt, "bytes": len(data),
        "exif": json.dumps(kept, sort_keys=True), "caption": loaded.caption, "category": category,
        "category_source": why, **dejavu.row_fields(desc_image, rgb, raw),
        "thumbnail": thumb.getvalue(), "image": stored,
        "image_ext": {"JPEG": "jpg"}.get(stored_fmt, stored_fmt.lower()),
        "depth": depth_bytes, "depth_ext": loaded.depth_ext.lstrip(".") if depth_bytes is not None else "",
    }


def descriptor_of(row: dict) -> dejavu.Descriptor:
    """The deja-vu descriptor stored in a sample row."""
    return dejavu.from_row(row)
