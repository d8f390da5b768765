"""Output: WebDataset shards, the Parquet manifest, the rejection log, the summary and a contact sheet of duplicates.

Every file is written to a temporary name and moved into place with ``os.replace``, so a reader (or a resumed run)
sees either the old file or the complete new one. A shard counts as finished when its state file
``shard-<n>.json`` exists and names the same samples; the state file is written after the tar, so a kill between
the two only costs re-writing that one shard.

A sample in a shard is the WebDataset group ``<id>.<ext>`` (the stored image, GPS-stripped), ``<id>.json``
(metadata: source key, sha256, category and why, size, format, EXIF), ``<id>.txt`` (caption, when there is one) and
``<id>.depth.png`` / ``<id>.depth.exr`` (when paired). ``<id>`` is the sample's 9-digit position in the output.
The tar members carry mtime 0, so the same input gives byte-identical shards whichever engine wrote them.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
from dataclasses import dataclass
from pathlib import Path

SAMPLE_COLUMNS = ("key", "sha256", "width", "height", "format", "bytes", "exif", "caption", "category",
                  "category_source")


@dataclass(frozen=True)
class ShardTask:
    """Write samples ``ids[i]`` <- row ``keys[i]`` of part file ``parts[i]`` into ``path``."""

    path: str
    ids: tuple[int, ...]
    keys: tuple[str, ...]
    parts: tuple[str, ...]

    @property
    def state_path(self) -> Path:
        return Path(self.path).with_suffix(".json")

    def fingerprint(self) -> str:
        return hashlib.sha256("\n".join(self.keys).encode()).hexdigest()

    def done(self) -> bool:
        try:
            return json.loads(self.state_path.read_text())["fingerprint"] == self.fingerprint()
        except (OSError, ValueError, KeyError):
            return False


def atomic_write_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = 0  # reproducible shards: the same input gives byte-identical tars
    tar.addfile(info, io.BytesIO(data))


def write_shard(task: ShardTask) -> str:
    """Write one shard (skipped when already done); returns its path."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    if task.done():
        return task.path
    rows: dict[str, dict] = {}
    for part in sorted(set(task.parts)):
        wanted = [k for k, p in zip(task.keys, task.parts) if p == part]
        table = pq.read_table(part)
        table = table.filter(pc.is_in(table["key"], value_set=pa.array(wanted, pa.string())))
        rows.update({r["key"]: r for r in table.to_pylist()})
    tmp = Path(task.path + ".tmp")
    with tarfile.open(tmp, "w") as tar:
        for sample_id, key in zip(task.ids, task.keys):
            r = rows[key]
            name = f"{sample_id:09d}"
            _add(tar, f"{name}.{r['image_ext']}", r["image"])
            meta = {c: r[c] for c in SAMPLE_COLUMNS}
            meta["exif"] = json.loads(r["exif"])
            _add(tar, f"{name}.json", json.dumps(meta, sort_keys=True).encode())
            if r["caption"] is not None:
                _add(tar, f"{name}.txt", r["caption"].encode())
            if r["depth"] is not None:
                _add(tar, f"{name}.depth.{r['depth_ext']}", r["depth"])
    os.replace(tmp, task.path)
    atomic_write_bytes(task.state_path, json.dumps({"fingerprint": task.fingerprint(),
                                                    "num_samples": len(task.keys)}).encode())
    return task.path


def write_parquet(path: Path, rows: list[dict], schema) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    tmp = path.with_name(path.name + ".tmp")
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), tmp)
    os.replace(tmp, path)


def contact_sheet(clusters: list[tuple[bytes | None, list[bytes | None], str]], path: Path, cell: int = 48) -> None:
    """A PNG with one row per duplicate cluster: the image seen first, then the copies rejected against it.

    A thumbnail is None when that image was seen in an earlier run (only its key is known): a grey box stands in.
    """
    from PIL import Image, ImageDraw

    per_row = 1 + max((len(c[1]) for c in clusters), default=1)
    width, height = 8 + per_row * (cell + 4) + 16 + 240, 8 + max(1, len(clusters)) * (cell + 8)
    sheet = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(sheet)
    if not clusters:
        draw.text((8, 8), "no duplicates in this run", fill="black")
    for i, (original, copies, label) in enumerate(clusters):
        y = 8 + i * (cell + 8)
        for j, thumb in enumerate([original, *copies]):
            x = 8 + j * (cell + 4) + (12 if j else 0)  # a gap after the original
            if thumb is None:
                draw.rectangle((x, y, x + cell - 1, y + cell - 1), fill=(220, 220, 220))
                draw.text((x + 4, y + cell // 2 - 6), "earlier", fill="black")
                continue
            with Image.open(io.BytesIO(thumb)) as im:
                im = im.convert("RGB")
                im.thumbnail((cell, cell))
                sheet.paste(im, (x, y))
        draw.text((8 + per_row * (cell + 4) + 16, y + cell // 2 - 6), label[:40], fill="black")
    buf = io.BytesIO()
    sheet.save(buf, "PNG")
    atomic_write_bytes(path, buf.getvalue())
