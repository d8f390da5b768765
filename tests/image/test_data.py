import io
import json
import tarfile

import numpy as np
import pytest
from PIL import Image

from incasa.image import data as emoji

SVG = '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 10 10"><circle cx="5" cy="5" r="4" fill="#ff0000"/></svg>'
LABELS = {"en": "red apple", "it": "mela rossa", "es": "manzana roja", "fr": "pomme rouge", "de": "roter Apfel"}


def _tgz(cache, name, files: dict[str, bytes]):
    """A tarball shaped like `npm pack` output: everything under package/."""
    path = cache / (name.lstrip("@").replace("/", "-") + f"-{emoji.PACKAGES[name]}.tgz")
    with tarfile.open(path, "w:gz") as tf:
        for rel, data in files.items():
            info = tarfile.TarInfo(f"package/{rel}")
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))


def _fake_registry(cache):
    cache.mkdir()
    png = io.BytesIO()
    Image.new("RGBA", (64, 64), (0, 0, 0, 0)).save(png, format="PNG")
    im = Image.new("RGBA", (64, 64), (0, 0, 0, 0))
    im.paste((255, 0, 0, 255), (16, 16, 48, 48))
    png = io.BytesIO()
    im.save(png, format="PNG")
    _tgz(cache, "emoji-datasource-google", {"img/google/64/1f34e.png": png.getvalue()})
    _tgz(cache, "@twemoji/svg", {"1f34e.svg": SVG.encode()})
    _tgz(cache, "fluentui-emoji", {"icons/flat/red-apple.svg": SVG.encode()})
    _tgz(cache, "openmoji", {"color/svg/1F34E.svg": SVG.encode()})
    messages = {"groups": [{"key": "component", "order": 2}, {"key": "food-drink", "order": 4}],
                "subgroups": [{"key": "food-fruit", "order": 42}]}
    files = {"en/messages.json": json.dumps(messages).encode()}
    for lang, label in LABELS.items():
        rows = [{"label": label, "hexcode": "1F34E", "tags": ["apple", "fruit"], "emoji": "🍎", "group": 4,
                 "subgroup": 42}, {"label": "light skin tone", "hexcode": "1F3FB", "group": 2, "subgroup": 42}]
        files[f"{lang}/data.json"] = json.dumps(rows).encode()
    _tgz(cache, "emojibase-data", files)


def test_build_from_npm_tarballs(tmp_path):
    _fake_registry(tmp_path / "npm")
    index = emoji.build_emoji_dataset(tmp_path / "out", tmp_path / "npm", size=16)
    split = {s: emoji.split_of("1f34e", s) for s in emoji.STYLES}
    assert sum(sum(c.values()) for c in index["counts"].values()) == 4  # one apple per style; the swatch is skipped
    for s in emoji.STYLES:
        assert index["counts"][split[s]][s] == 1
    images, metas = emoji.load_split(tmp_path / "out", split["twemoji"], styles=("twemoji",))
    assert images.shape == (1, 16, 16, 3)
    assert tuple(images[0, 8, 8]) == (255, 0, 0) and tuple(images[0, 0, 0]) == (255, 255, 255)  # red on white
    caps = metas[0]["captions"]
    assert caps[0] == "a red apple, twemoji style" and "mela rossa, stile twemoji" in caps
    assert "roter Apfel, Stil twemoji" in caps and metas[0]["license"].startswith("CC-BY-4.0")
    assert not list((tmp_path / "out").glob("*.tmp"))  # every shard was renamed into place


def test_bad_arguments_and_splits(tmp_path):
    with pytest.raises(ValueError, match="unknown style"):
        emoji.build_emoji_dataset(tmp_path, tmp_path, styles=("pixelart",))
    with pytest.raises(FileNotFoundError, match="incasa data emoji"):
        emoji.load_split(tmp_path, "train")
    splits = [emoji.split_of(f"{i:05x}", "noto") for i in range(4000)]
    held = splits.count("heldout") / len(splits)
    assert 0.03 < held < 0.07  # ~5% of emoji held out, deterministic by codepoint
    assert np.all([emoji.split_of("1f600", "noto") == emoji.split_of("1f600", "noto")])
