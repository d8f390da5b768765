"""Shared fixtures: a development key chain (made once per session) and a real photo to mark and sign."""

from pathlib import Path

import pytest
from PIL import Image


@pytest.fixture(scope="session")
def keys_dir(tmp_path_factory) -> Path:
    from incasa.safety.provenance import create_dev_keys

    return create_dev_keys(tmp_path_factory.mktemp("keys"))


@pytest.fixture(scope="session")
def photo() -> Image.Image:
    """A 512 x 512 crop of scikit-learn's bundled china.jpg (CC-BY 2.0, installed with the safety extra)."""
    import sklearn

    path = Path(sklearn.__file__).parent / "datasets" / "images" / "china.jpg"
    with Image.open(path) as img:
        return img.convert("RGB").crop((0, 0, 427, 427)).resize((512, 512), Image.Resampling.LANCZOS)
