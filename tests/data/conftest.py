"""The shared fixture: a small folder corpus of photos (camera EXIF + GPS) and renders (depth + caption)."""

from pathlib import Path

import pytest

from tests.data.helpers import depth_png, jpeg_with_exif, picture, png_bytes


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    """A folder with 4 photos (camera EXIF + GPS) and 3 renders (16-bit depth map + caption sidecar)."""
    src = tmp_path / "src"
    src.mkdir()
    for i in range(4):
        (src / f"photo{i}.jpg").write_bytes(jpeg_with_exif(picture(100 + i)))
    for i in range(3):
        (src / f"render{i}.png").write_bytes(png_bytes(picture(200 + i)))
        (src / f"render{i}.depth.png").write_bytes(depth_png((64, 48)))
        (src / f"render{i}.txt").write_text(f"a rendered scene number {i}\n")
    return src
