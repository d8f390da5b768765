"""Ingest: turn folders, tar/WebDataset shards and Parquet/CSV manifests into a flat, ordered list of records.

A *record* is one candidate image together with what travels with it: a depth map paired by naming convention
(``x.png`` + ``x.depth.png`` or ``x.depth.exr``), a caption from a sidecar (``x.txt`` or ``x.json`` with a
"caption" field) or from the manifest row, and an optional explicit category label.

Enumeration only lists; it never decodes. It runs on the driver (one process), so it must stay cheap: the bytes
are read later, inside the workers, by :func:`read`. Anything that cannot become a record is returned as a
:class:`Rejection` right here (a symlink loop, a non-image file, a manifest row whose file is missing), so every
input is accounted for from the first step on.

Keys are stable strings (``file:/abs/path``, ``tar:/abs/shard.tar#member``, ``manifest:/abs/m.csv#row``) and the
order is sorted by key: the same sources always give the same records in the same order, which is what makes
chunking, resuming and the run identity deterministic.
"""

from __future__ import annotations

import csv
import errno
import json
import os
import tarfile
from dataclasses import dataclass
from pathlib import Path

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff")
DEPTH_SUFFIXES = (".depth.png", ".depth.exr")
SIDECAR_EXTS = (".txt", ".json")
TAR_EXTS = (".tar",)
MANIFEST_EXTS = (".parquet", ".csv")


@dataclass(frozen=True)
class Rejection:
    """One input that does not reach the output, and why. ``collided_with`` names the image it duplicates."""

    key: str
    reason: str
    detail: str = ""
    collided_with: str = ""


@dataclass(frozen=True)
class Record:
    """Where one candidate's bytes live. ``kind`` is "file" (paths) or "tar" (``container`` + member names)."""

    key: str
    kind: str
    image: str
    container: str = ""
    depth: str = ""
    sidecar: str = ""
    caption: str | None = None
    label: str | None = None


@dataclass(frozen=True)
class Loaded:
    """The raw bytes of one record, read inside a worker."""

    image: bytes
    depth: bytes | None
    depth_ext: str
    caption: str | None


def _split_name(name: str) -> tuple[str, str]:
    """WebDataset convention: the key is everything before the first dot of the basename, the rest is the type."""
    head, _, base = name.rpartition("/")
    stem, dot, ext = base.partition(".")
    return (f"{head}/{stem}" if head else stem), (dot + ext).lower()


def _group(names: list[str]) -> tuple[dict[str, dict[str, str]], list[str]]:
    """Group file names by key -> {type: name}; return also the names that belong to no image (orphans)."""
    groups: dict[str, dict[str, str]] = {}
    for name in names:
        stem, ext = _split_name(name)
        groups.setdefault(stem, {})[ext] = name
    orphans = []
    for parts in groups.values():
        if not any(ext in IMAGE_EXTS for ext in parts):
            orphans.extend(parts.values())
    return groups, orphans


def _records_from_group(prefix: str, kind: str, container: str, parts: dict[str, str]
                        ) -> tuple[list[Record], list[Rejection]]:
    images = sorted(ext for ext in parts if ext in IMAGE_EXTS)
    if not images:
        return [], []
    depth = next((parts[s] for s in DEPTH_SUFFIXES if s in parts), "")
    sidecar = next((parts[s] for s in SIDECAR_EXTS if s in parts), "")
    used = set(images) | {s for s in DEPTH_SUFFIXES if s in parts} | {s for s in SIDECAR_EXTS if s in parts}
    records = [Record(key=f"{prefix}{parts[ext]}", kind=kind, image=parts[ext], container=container,
                      depth=depth if ext == images[0] else "", sidecar=sidecar) for ext in images]
    # a file that is neither image, depth nor sidecar (x.pdf next to x.png) is still an input: reject it by name
    rejections = [Rejection(f"{prefix}{name}", "not_image", f"unsupported file type {ext!r}")
                  for ext, name in parts.items() if ext not in used]
    return records, rejections


def walk_folder(root: Path) -> tuple[list[Record], list[Rejection]]:
    """All files under ``root``, following symlinks once: a directory reached twice (a loop) is rejected by name."""
    records, rejections = [], []
    seen_dirs: set[tuple[int, int]] = set()
    files: list[str] = []
    stack = [root]
    while stack:
        folder = stack.pop()
        st = folder.stat()
        if (st.st_dev, st.st_ino) in seen_dirs:
            rejections.append(Rejection(f"file:{folder}", "symlink_loop", f"{folder} leads back to {folder.resolve()}"))
            continue
        seen_dirs.add((st.st_dev, st.st_ino))
        for entry in sorted(os.scandir(folder), key=lambda e: e.name):
            path = Path(entry.path)
            try:
                is_dir = entry.is_dir(follow_symlinks=True)
                is_file = entry.is_file(follow_symlinks=True)
            except OSError as e:  # ELOOP on a self-referencing link, EACCES
                rejections.append(Rejection(f"file:{path}", "symlink_loop" if e.errno == errno.ELOOP else "unreadable", str(e)))
                continue
            if is_dir:
                stack.append(path)
            elif is_file:
                files.append(str(path))
            else:  # a dangling symlink, a socket, a fifo
                rejections.append(Rejection(f"file:{path}", "unreadable", "not a regular file (dangling link?)"))
    groups, orphans = _group(files)
    for parts in groups.values():
        r, j = _records_from_group("file:", "file", "", parts)
        records += r
        rejections += j
    rejections += [Rejection(f"file:{name}", "not_image", "no image with this name") for name in orphans]
    return records, rejections


def walk_tar(path: Path) -> tuple[list[Record], list[Rejection]]:
    """Members of one tar (WebDataset) shard, grouped by key like a folder."""
    try:
        with tarfile.open(path) as tar:
            names = [m.name for m in tar.getmembers() if m.isfile()]
    except (tarfile.TarError, OSError) as e:
        return [], [Rejection(f"tar:{path}", "unreadable", f"not a readable tar: {e}")]
    groups, orphans = _group(names)
    records, rejections = [], []
    for parts in groups.values():
        r, j = _records_from_group(f"tar:{path}#", "tar", str(path), parts)
        records += r
        rejections += j
    rejections += [Rejection(f"tar:{path}#{n}", "not_image", "no image with this name") for n in orphans]
    return records, rejections


def walk_manifest(path: Path) -> tuple[list[Record], list[Rejection]]:
    """Rows of a Parquet/CSV manifest with a ``path`` column (relative to the manifest), optional caption/label."""
    if path.suffix == ".csv":
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
    else:
        import pyarrow.parquet as pq

        rows = pq.read_table(path).to_pylist()
    if rows and "path" not in rows[0]:
        raise ValueError(f"manifest {path} has no 'path' column (columns: {sorted(rows[0])})")
    records, rejections = [], []
    for i, row in enumerate(rows):
        key = f"manifest:{path}#{i}"
        image = Path(str(row["path"]))
        image = image if image.is_absolute() else path.parent / image
        if not image.is_file():
            rejections.append(Rejection(key, "unreadable", f"{image} does not exist"))
            continue
        stem, _ = _split_name(str(image))
        depth = next((stem + s for s in DEPTH_SUFFIXES if Path(stem + s).is_file()), "")
        records.append(Record(key=key, kind="file", image=str(image), depth=depth,
                              caption=(str(row["caption"]) if row.get("caption") not in (None, "") else None),
                              label=(str(row["label"]) if row.get("label") not in (None, "") else None)))
    return records, rejections


def enumerate_sources(sources: list[str | Path]) -> tuple[list[Record], list[Rejection]]:
    """Records and early rejections of every source, sorted by key. Raises ValueError for a source that is unusable."""
    records, rejections = [], []
    for source in sources:
        path = Path(source).absolute()
        if path.is_dir():
            r, j = walk_folder(path)
        elif path.is_file() and path.suffix.lower() in TAR_EXTS:
            r, j = walk_tar(path)
        elif path.is_file() and path.suffix.lower() in MANIFEST_EXTS:
            r, j = walk_manifest(path)
        elif path.exists():
            raise ValueError(f"{source}: not a folder, a .tar shard or a .parquet/.csv manifest")
        else:
            raise ValueError(f"{source}: no such file or folder")
        records += r
        rejections += j
    keys = [r.key for r in records]
    if len(set(keys)) != len(keys):
        raise ValueError("the same source is given twice (records with identical keys)")
    return sorted(records, key=lambda r: r.key), sorted(rejections, key=lambda r: r.key)


def _caption_from_sidecar(data: bytes, name: str) -> str | None:
    text = data.decode("utf-8", errors="replace")
    if name.endswith(".json"):
        value = json.loads(text).get("caption")
        return None if value is None else str(value)
    return text.strip()


def read_records(records: list[Record]) -> list[Loaded | Rejection]:
    """Read the bytes of ``records`` (one open per tar), in order. Unreadable ones become Rejections."""
    out: list[Loaded | Rejection] = []
    tars: dict[str, tarfile.TarFile] = {}
    try:
        for rec in records:
            try:
                if rec.kind == "tar":
                    tar = tars.get(rec.container) or tars.setdefault(rec.container, tarfile.open(rec.container))

                    def get(name: str, tar: tarfile.TarFile = tar) -> bytes:
                        f = tar.extractfile(name)
                        assert f is not None, name
                        return f.read()
                else:
                    def get(name: str) -> bytes:
                        return Path(name).read_bytes()
                image = get(rec.image)
                depth = get(rec.depth) if rec.depth else None
                caption = rec.caption
                if caption is None and rec.sidecar:
                    caption = _caption_from_sidecar(get(rec.sidecar), rec.sidecar)
                out.append(Loaded(image, depth, (".exr" if rec.depth.endswith(".exr") else ".png") if rec.depth else "",
                                  caption))
            except (OSError, tarfile.TarError, KeyError, json.JSONDecodeError, UnicodeError) as e:
                out.append(Rejection(rec.key, "unreadable", f"{type(e).__name__}: {e}"))
    finally:
        for tar in tars.values():
            tar.close()
    return out

