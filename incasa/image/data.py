"""The emoji training set: open emoji artwork from the npm registry, rasterised, captioned, written as WebDataset shards.

Four art styles of the same Unicode emoji give a small but real text-to-image problem: the caption says *what*
("a red apple") and *how* (", twemoji style"). Sources (all fetched with `npm pack`, versions pinned below):

  noto     emoji-datasource-google  64 px PNGs of Google's Noto Emoji     (images Apache-2.0, package MIT)
  twemoji  @twemoji/svg             SVGs named by codepoint               (graphics CC-BY-4.0)
  fluent   fluentui-emoji           icons/flat/<name>.svg                 (MIT)
  openmoji openmoji                 color/svg/<CODEPOINT>.svg             (CC-BY-SA-4.0)
  names    emojibase-data           labels and tags in en, it, es, fr, de (MIT; CLDR annotations, Unicode licence)

Only fully-qualified base emoji are used (no skin-tone variants, no flags-of-regions sequences beyond the base list),
so one emoji is one concept. Each sample stores a fixed list of captions (English names and tags, Italian, Spanish,
French and German labels, with and without the style tag), so training can pre-compute every text embedding once.

Split by emoji, deterministic from the codepoint: 5% of emoji are held out entirely ("heldout"), and for another 5%
one of the four styles is held out ("heldout_combo": the emoji and the style are seen in training, never together).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

PACKAGES = {  # npm name -> pinned version; the data version below changes when any of these does
    "emoji-datasource-google": "16.0.0",
    "@twemoji/svg": "15.0.0",
    "fluentui-emoji": "1.3.0",
    "openmoji": "17.0.0",
    "emojibase-data": "17.0.0",
}
STYLES = ("noto", "twemoji", "fluent", "openmoji")
LANGS = ("en", "it", "es", "fr", "de")
LICENSES = {
    "noto": "Apache-2.0 (Noto Emoji images, via emoji-datasource-google, MIT)",
    "twemoji": "CC-BY-4.0 (Twemoji graphics, via @twemoji/svg)",
    "fluent": "MIT (Microsoft Fluent Emoji, via fluentui-emoji)",
    "openmoji": "CC-BY-SA-4.0 (OpenMoji)",
}
STYLE_WORD = {"it": "stile", "es": "estilo", "fr": "style", "de": "Stil"}
DATA_VERSION = "emoji-v1-" + hashlib.sha256(json.dumps(PACKAGES, sort_keys=True).encode()).hexdigest()[:8]


@dataclass(frozen=True)
class EmojiRecord:
    hexcode: str  # normalised: lower case, fe0f removed, '-' joined ("1f34e")
    emoji: str
    group: str  # emojibase group key ("food-drink")
    subgroup: str
    labels: dict[str, str]  # lang -> label
    tags: dict[str, list[str]]  # lang -> tags


def norm_hex(code: str) -> str:
    return "-".join(p for p in code.lower().replace("_", "-").split("-") if p != "fe0f")


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def split_of(hexcode: str, style: str) -> str:
    h = int(hashlib.sha256(hexcode.encode()).hexdigest(), 16)
    if h % 20 == 0:
        return "heldout"
    if h % 20 == 1 and STYLES[(h // 20) % len(STYLES)] == style:
        return "heldout_combo"
    return "train"


# ---------------------------------------------------------------- fetching


def fetch_packages(cache_dir: Path) -> dict[str, Path]:
    """`npm pack` each pinned package into cache_dir (once) and unpack it; returns npm name -> package folder."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    out = {}
    for name, version in PACKAGES.items():
        tgz = cache_dir / (name.lstrip("@").replace("/", "-") + f"-{version}.tgz")
        if not tgz.exists():
            try:
                proc = subprocess.run(["npm", "pack", f"{name}@{version}", "--silent"], cwd=cache_dir,
                                      capture_output=True, text=True, timeout=900)
            except FileNotFoundError:
                raise RuntimeError("npm is not installed; install Node.js/npm (apt-get install npm)") from None
            if proc.returncode != 0 or not tgz.exists():
                raise RuntimeError(f"npm pack {name}@{version} failed: {proc.stderr.strip()[-300:]}")
        folder = cache_dir / (tgz.name[:-4])
        if not (folder / "package").is_dir():
            tmp = Path(tempfile.mkdtemp(dir=cache_dir))
            with tarfile.open(tgz) as tf:
                tf.extractall(tmp, filter="data")
            os.replace(tmp, folder)
        out[name] = folder / "package"
    return out


# ---------------------------------------------------------------- names and images


def load_records(emojibase: Path) -> list[EmojiRecord]:
    messages = json.loads((emojibase / "en" / "messages.json").read_text())
    groups = {g["order"]: g["key"] for g in messages["groups"]}
    subgroups = {g["order"]: g["key"] for g in messages["subgroups"]}
    per_lang = {lang: {d["hexcode"]: d for d in json.loads((emojibase / lang / "data.json").read_text())}
                for lang in LANGS}
    records = []
    for hexcode, d in per_lang["en"].items():
        if "group" not in d or groups.get(d["group"]) == "component":
            continue  # regional indicators, skin-tone swatches: not concepts
        labels = {lang: per_lang[lang][hexcode]["label"] for lang in LANGS if hexcode in per_lang[lang]}
        tags = {lang: per_lang[lang][hexcode].get("tags", []) for lang in LANGS if hexcode in per_lang[lang]}
        records.append(EmojiRecord(norm_hex(hexcode), d["emoji"], groups[d["group"]],
                                   subgroups.get(d.get("subgroup"), ""), labels, tags))
    return records


def find_sources(pkgs: dict[str, Path]) -> dict[str, dict[str, Path]]:
    """style -> normalised hexcode (or fluent name slug) -> file."""
    noto = {norm_hex(p.stem): p for p in (pkgs["emoji-datasource-google"] / "img" / "google" / "64").glob("*.png")}
    twemoji = {norm_hex(p.stem): p for p in pkgs["@twemoji/svg"].glob("*.svg")}
    openmoji = {norm_hex(p.stem): p for p in (pkgs["openmoji"] / "color" / "svg").glob("*.svg")}
    fluent = {}
    for p in (pkgs["fluentui-emoji"] / "icons" / "flat").glob("*.svg"):
        name = p.stem[: -len("-default")] if p.stem.endswith("-default") else p.stem
        fluent[name] = p
    return {"noto": noto, "twemoji": twemoji, "fluent": fluent, "openmoji": openmoji}


def rasterise(path: Path, size: int) -> Image.Image:
    """Any source file -> RGB `size`x`size` on white (emoji are transparent; white is what people expect to see)."""
    if path.suffix == ".svg":
        import resvg_py

        png = bytes(resvg_py.svg_to_bytes(svg_path=str(path), width=size, height=size))
        img = Image.open(io.BytesIO(png))
    else:
        img = Image.open(path)
    img = img.convert("RGBA")
    if img.size != (size, size):
        img = img.resize((size, size), Image.LANCZOS)
    canvas = Image.new("RGBA", img.size, (255, 255, 255, 255))
    return Image.alpha_composite(canvas, img).convert("RGB")


def captions_for(rec: EmojiRecord, style: str) -> list[str]:
    """A fixed, deterministic caption list: English names and tags (with/without style), then other languages."""
    en = rec.labels["en"]
    article = "an" if en[:1] in "aeiou" else "a"
    caps = [f"{article} {en}, {style} style", f"{en}, {style} style", f"{en} emoji in {style} style", en,
            f"{article} {en}"]
    tags = [t for t in rec.tags.get("en", []) if t != en][:3]
    if tags:
        caps.append(f"{en}, {', '.join(tags)}, {style} style")
    for lang in ("it", "es", "fr", "de"):
        if lang in rec.labels:
            caps.append(f"{rec.labels[lang]}, {STYLE_WORD[lang]} {style}")
    return list(dict.fromkeys(caps))


# ---------------------------------------------------------------- shards


class _ShardWriter:
    """WebDataset tar shards of at most `per_shard` samples, each written to a temp file and renamed when complete."""

    def __init__(self, out: Path, prefix: str, per_shard: int):
        self.out, self.prefix, self.per_shard = out, prefix, per_shard
        self.index, self.count, self.tar, self.tmp, self.paths = 0, 0, None, None, []

    def write(self, key: str, png: bytes, meta: dict) -> None:
        import webdataset as wds

        if self.tar is None:
            fd, self.tmp = tempfile.mkstemp(dir=self.out, suffix=".tmp")
            os.close(fd)
            self.tar = wds.TarWriter(self.tmp)
        self.tar.write({"__key__": key, "png": png, "json": json.dumps(meta, ensure_ascii=False).encode()})
        self.count += 1
        if self.count == self.per_shard:
            self.close()

    def close(self) -> None:
        if self.tar is None:
            return
        self.tar.close()
        final = self.out / f"{self.prefix}-{self.index:06d}.tar"
        os.replace(self.tmp, final)
        self.paths.append(final.name)
        self.index, self.count, self.tar = self.index + 1, 0, None


def build_emoji_dataset(out: Path, cache_dir: Path, *, size: int = 64, styles: tuple[str, ...] = STYLES,
                        per_shard: int = 2000, progress=None) -> dict:
    """Fetch, rasterise, caption and shard the emoji sets into `out`. Returns the index written to out/index.json."""
    unknown = set(styles) - set(STYLES)
    if unknown:
        raise ValueError(f"unknown style(s) {sorted(unknown)}; choose from {', '.join(STYLES)}")
    if size < 16 or size > 512:
        raise ValueError(f"size must be between 16 and 512 pixels, got {size}")
    out.mkdir(parents=True, exist_ok=True)
    pkgs = fetch_packages(cache_dir)
    records = load_records(pkgs["emojibase-data"])
    sources = find_sources(pkgs)
    writers = {s: _ShardWriter(out, s, per_shard) for s in ("train", "heldout", "heldout_combo")}
    counts = {s: {st: 0 for st in styles} for s in writers}
    missing = {st: 0 for st in styles}
    jobs = []
    for rec in records:
        for style in styles:
            key = slug(rec.labels["en"]) if style == "fluent" else rec.hexcode
            path = sources[style].get(key)
            if path is None:
                missing[style] += 1
            else:
                jobs.append((rec, style, path))
    task = progress.add_task("rasterising emoji", total=len(jobs)) if progress else None
    for rec, style, path in jobs:
        img = rasterise(path, size)
        buf = io.BytesIO()
        img.save(buf, format="PNG", optimize=True)
        split = split_of(rec.hexcode, style)
        meta = {"hexcode": rec.hexcode, "emoji": rec.emoji, "style": style, "group": rec.group,
                "subgroup": rec.subgroup, "labels": rec.labels, "tags": rec.tags, "split": split,
                "captions": captions_for(rec, style), "source": path.name,
                "license": LICENSES[style]}
        writers[split].write(f"{style}_{rec.hexcode}", buf.getvalue(), meta)
        counts[split][style] += 1
        if progress:
            progress.advance(task)
    for w in writers.values():
        w.close()
    index = {"data_version": DATA_VERSION, "packages": PACKAGES, "size": size, "styles": list(styles),
             "shards": {s: w.paths for s, w in writers.items()}, "counts": counts,
             "missing_per_style": missing, "licenses": LICENSES}
    tmp = out / "index.json.tmp"
    tmp.write_text(json.dumps(index, indent=2))
    os.replace(tmp, out / "index.json")
    return index


# ---------------------------------------------------------------- reading


def load_split(root: Path, split: str = "train", *, styles: tuple[str, ...] | None = None,
               groups: tuple[str, ...] | None = None) -> tuple[np.ndarray, list[dict]]:
    """All samples of a split in memory: images uint8 [N, H, W, 3] and their metadata dicts (small data: ~15k x 64^2)."""
    index_path = root / "index.json"
    if not index_path.exists():
        raise FileNotFoundError(f"{root} is not an emoji dataset (no index.json); build one with `incasa data emoji`")
    index = json.loads(index_path.read_text())
    images, metas = [], []
    for shard in index["shards"][split]:
        with tarfile.open(root / shard) as tf:
            members = {m.name: m for m in tf.getmembers()}
            for name in sorted(n for n in members if n.endswith(".json")):
                meta = json.loads(tf.extractfile(members[name]).read())
                if styles and meta["style"] not in styles or groups and meta["group"] not in groups:
                    continue
                png = tf.extractfile(members[name[: -len(".json")] + ".png"]).read()
                images.append(np.asarray(Image.open(io.BytesIO(png)).convert("RGB")))
                metas.append(meta)
    if not images:
        raise ValueError(f"no samples in split {split!r} of {root} for styles={styles} groups={groups}")
    return np.stack(images), metas
