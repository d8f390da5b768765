"""The curation pipeline: ingest -> per-image stage -> deja-vu -> categories -> quota mix -> shards, resumable.

Data flow (``out/`` is the output folder)::

    sources ──enumerate──▶ records (sorted)           driver, listing only
        │  chunks of chunk_size records                 parallel: local processes or Ray Data tasks
        ▼
    out/work/part-<n>-<hash>.parquet                   one row per record: a sample (features + stripped bytes)
        │                                               or a rejection; a finished part is never recomputed
        ▼
    deja-vu + mix on the driver (features only)        sequential, deterministic, cheap (one ANN query per image)
        │
        ▼
    out/shards/shard-<n>.tar (+ .json state)            parallel again; a finished shard is skipped
    out/manifest.parquet, out/rejections.parquet, index commit, out/contact_sheet.png, out/summary.json (last)

Why this split: the per-image stage (decode, hash, describe) is >95% of the work and embarrassingly parallel; the
deja-vu decision is inherently sequential ("seen before" depends on everything before it) but costs one ANN query
per image, so it runs on the driver over compact features; writing shards is parallel again. SCALING.md explains
how each part spreads over many nodes.

Resume: the run's identity is a hash of its records' keys and of the configuration (``out/run.json``). A re-run of
the same run skips finished parts and shards; the deja-vu decisions are recomputed from the parts and come out the
same, because the index drops this run's own entries before deciding. An output folder that holds another run is
refused rather than mixed.

Accounting: every input (record or early rejection) ends in exactly one of manifest.parquet and rejections.parquet;
the pipeline asserts it before it writes the summary. Rejection reasons, by stage:

- ingest: ``unreadable`` (missing, dangling link, permission, bad tar), ``symlink_loop``, ``not_image`` (by name);
- per-image stage: ``not_image``, ``corrupt``, ``decompression_bomb``, ``bad_depth``, and ``internal_error`` for an
  exception nobody foresaw (logged with its message rather than stopping the run);
- ``uncategorised`` (unknown category), ``exact_duplicate`` / ``near_duplicate`` (with ``collided_with``);
- mix: ``over_quota`` (beyond its share, or after the mix stopped on a shortfall), ``category_not_wanted`` (share 0).
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from incasa.data import categories as cat
from incasa.data import dejavu
from incasa.data.ingest import Record, Rejection, enumerate_sources, read_records
from incasa.data.metadata import MetadataConfig, analyse, descriptor_of
from incasa.data.mix import DEFAULT_SHARES, mix, normalise_shares
from incasa.data.shards import ShardTask, atomic_write_bytes, contact_sheet, write_parquet, write_shard

ENGINES = ("local", "ray")


@dataclass(frozen=True)
class CurateConfig:
    """Everything a run depends on. ``index`` defaults to ``<out>/index``; share it between runs to remember them."""

    shares: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_SHARES))
    size: int | None = None
    shard_size: int = 1000
    chunk_size: int = 256
    workers: int = max(1, os.cpu_count() or 1)
    engine: str = "local"
    index: Path | None = None
    reference: tuple[str, ...] = ()
    classifier: Path | None = None
    metadata: MetadataConfig = MetadataConfig()
    dejavu: dejavu.DejaVuConfig = dejavu.DejaVuConfig()
    progress: bool = True

    def __post_init__(self) -> None:
        if self.engine not in ENGINES:
            raise ValueError(f"engine must be one of {ENGINES}, got {self.engine!r}")
        if self.shard_size < 1 or self.chunk_size < 1 or self.workers < 1:
            raise ValueError("shard_size, chunk_size and workers must be >= 1")
        normalise_shares(self.shares)

    def fingerprint(self) -> dict:
        """What changes the output (engine, workers and progress do not)."""
        classifier = hashlib.sha256(self.classifier.read_bytes()).hexdigest() if self.classifier else None
        return {"shares": normalise_shares(self.shares), "size": self.size, "shard_size": self.shard_size,
                "chunk_size": self.chunk_size, "reference": list(self.reference), "classifier": classifier,
                "metadata": asdict(self.metadata), "dejavu": asdict(self.dejavu),
                "descriptor": dejavu.DESCRIPTOR_VERSION}


# --- the parallel per-image stage ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ChunkTask:
    path: str
    records: tuple[Record, ...]
    metadata: MetadataConfig
    classifier: str | None


PART_SCHEMA_FIELDS = (("key", "string"), ("status", "string"), ("reason", "string"), ("detail", "string"),
                      ("sha256", "string"), ("width", "int64"), ("height", "int64"), ("format", "string"),
                      ("bytes", "int64"), ("exif", "string"), ("caption", "string"), ("category", "string"),
                      ("category_source", "string"), ("phash", "int64"), ("phash_flip", "int64"),
                      ("embedding", "binary"), ("embedding_flip", "binary"), ("dejavu_thumb", "binary"),
                      ("thumbnail", "binary"),
                      ("image", "binary"), ("image_ext", "string"), ("depth", "binary"), ("depth_ext", "string"))
FEATURE_COLUMNS = ["key", "status", "reason", "detail", "sha256", "width", "height", "format", "bytes", "exif",
                   "caption", "category", "category_source", "phash", "phash_flip", "embedding", "embedding_flip",
                   "dejavu_thumb", "depth_ext"]
REJECTION_FIELDS = (("key", "string"), ("reason", "string"), ("detail", "string"), ("collided_with", "string"))
MANIFEST_FIELDS = (("id", "int64"), ("shard", "string"), ("key", "string"), ("category", "string"),
                   ("category_source", "string"), ("caption", "string"), ("sha256", "string"), ("width", "int64"),
                   ("height", "int64"), ("format", "string"), ("bytes", "int64"), ("has_depth", "bool_"),
                   ("exif", "string"))


def _schema(fields):
    import pyarrow as pa

    return pa.schema([(name, getattr(pa, kind)()) for name, kind in fields])


_CLASSIFIERS: dict[str, cat.Classifier] = {}


def analyse_chunk(task: ChunkTask) -> str:
    """Read, analyse and write one part file (atomically). Runs in a worker process or a Ray task."""
    classifier = None
    if task.classifier:
        classifier = _CLASSIFIERS.get(task.classifier) or _CLASSIFIERS.setdefault(
            task.classifier, cat.Classifier.load(Path(task.classifier)))
    rows = []
    for rec, loaded in zip(task.records, read_records(list(task.records))):
        try:
            result = loaded if isinstance(loaded, Rejection) else analyse(rec.key, loaded, rec.label, task.metadata,
                                                                          classifier)
        except Exception as e:  # noqa: BLE001 - one hostile file must not stop a billion-image run; it is logged
            result = Rejection(rec.key, "internal_error", f"{type(e).__name__}: {e}")
        if isinstance(result, Rejection):
            rows.append({"key": rec.key, "status": "rejected", "reason": result.reason, "detail": result.detail})
        else:
            rows.append({"status": "ok", **result})
    write_parquet(Path(task.path), rows, _schema(PART_SCHEMA_FIELDS))
    return task.path


def _run_local(fn: Callable, tasks: list, workers: int, label: str, progress: bool) -> None:
    from concurrent.futures import ProcessPoolExecutor, as_completed

    from rich.progress import Progress

    with Progress(disable=not progress, transient=True) as bar:
        job = bar.add_task(label, total=len(tasks))
        if workers == 1 or len(tasks) <= 1:
            for t in tasks:
                fn(t)
                bar.advance(job)
            return
        with ProcessPoolExecutor(max_workers=workers) as pool:
            for future in as_completed([pool.submit(fn, t) for t in tasks]):
                future.result()  # re-raise a worker's error here
                bar.advance(job)


def _run_ray(fn: Callable, tasks: list, workers: int) -> None:
    try:
        import ray
    except ImportError:
        raise ValueError("--engine ray needs Ray Data: pip install 'incasa[ray]'") from None
    if not ray.is_initialized():
        # RAY_ADDRESS (set by `ray start` / a cluster) connects to that cluster; otherwise a local one is started
        kwargs = {} if os.environ.get("RAY_ADDRESS") else {"num_cpus": workers}
        ray.init(include_dashboard=False, log_to_driver=False, configure_logging=False, **kwargs)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    # each row carries its pickled task, so the map function stays small however many tasks there are
    items = [{"task": pickle.dumps(t)} for t in tasks]
    ds = ray.data.from_items(items, override_num_blocks=len(items))
    ds.map(lambda row: {"path": fn(pickle.loads(row["task"]))}, num_cpus=1).materialize()


def _parallel(fn: Callable, tasks: list, cfg: CurateConfig, label: str) -> None:
    if not tasks:
        return
    if cfg.engine == "ray":
        _run_ray(fn, tasks, cfg.workers)
    else:
        _run_local(fn, tasks, cfg.workers, label, cfg.progress)


def _chunk_tasks(records: list[Record], work: Path, prefix: str, cfg: CurateConfig) -> list[ChunkTask]:
    tasks = []
    for n, start in enumerate(range(0, len(records), cfg.chunk_size)):
        chunk = tuple(records[start:start + cfg.chunk_size])
        digest = hashlib.sha256("\n".join(r.key for r in chunk).encode()).hexdigest()[:12]
        tasks.append(ChunkTask(str(work / f"{prefix}-{n:06d}-{digest}.parquet"), chunk, cfg.metadata,
                               str(cfg.classifier) if cfg.classifier else None))
    return tasks


def _read_features(tasks: list[ChunkTask]) -> list[dict]:
    import pyarrow.parquet as pq

    rows = []
    for t in tasks:
        for row in pq.read_table(t.path, columns=FEATURE_COLUMNS).to_pylist():
            rows.append({**row, "part": t.path})
    return rows


def _thumbnails(paths: set[str], keys: set[str]) -> dict[str, bytes]:
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    out = {}
    for path in sorted(paths):
        table = pq.read_table(path, columns=["key", "thumbnail"])
        table = table.filter(pc.is_in(table["key"], value_set=pa.array(sorted(keys), pa.string())))
        out.update({r["key"]: r["thumbnail"] for r in table.to_pylist()})
    return out


# --- the run -------------------------------------------------------------------------------------------------------


def run(sources: list[str | Path], out: Path, cfg: CurateConfig) -> dict:
    """Curate ``sources`` into ``out``; returns the summary (also written to out/summary.json)."""
    out = Path(out)
    records, early = enumerate_sources(sources)
    ref_records, ref_early = enumerate_sources(list(cfg.reference)) if cfg.reference else ([], [])
    if cfg.classifier is not None and not Path(cfg.classifier).is_file():
        raise ValueError(f"classifier {cfg.classifier} does not exist")
    identity = {"inputs": [r.key for r in records] + [r.key for r in early], "config": cfg.fingerprint()}
    run_id = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]
    out.mkdir(parents=True, exist_ok=True)
    state = out / "run.json"
    if state.exists() and json.loads(state.read_text())["run"] != run_id:
        raise ValueError(f"{out} holds another run (other inputs or settings): use a new output folder")
    atomic_write_bytes(state, json.dumps({"run": run_id, **identity["config"]}, indent=1).encode())
    work, shard_dir = out / "work", out / "shards"
    work.mkdir(exist_ok=True)
    shard_dir.mkdir(exist_ok=True)

    # 1. the per-image stage, in parallel; finished parts are kept from earlier attempts
    tasks = _chunk_tasks(records, work, "part", cfg)
    ref_tasks = _chunk_tasks(ref_records, work, "ref", cfg)
    _parallel(analyse_chunk, [t for t in ref_tasks + tasks if not Path(t.path).exists()], cfg, "analysing")
    rows = _read_features(tasks)
    rejections: list[Rejection] = list(early)
    rejections += [Rejection(r["key"], r["reason"], r["detail"]) for r in rows if r["status"] == "rejected"]
    candidates = [r for r in rows if r["status"] == "ok"]

    # 2. deja-vu against the persistent index (+ reference), then within this run, in input order
    index = dejavu.SeenIndex(Path(cfg.index) if cfg.index else out / "index")
    index.drop_run(run_id)
    ref_run = ""
    if ref_tasks:
        ref_run = "reference:" + hashlib.sha256("\n".join(r.key for r in ref_records).encode()).hexdigest()[:16]
        if ref_run not in index.runs:
            for r in _read_features(ref_tasks):
                if r["status"] == "ok" and r["sha256"] not in index.by_sha:
                    d = descriptor_of(r)
                    index.add(r["key"], r["sha256"], d, ref_run)
    # unknown category first: what cannot be mixed never enters the index (it is not output, so not "seen")
    rejections += [Rejection(r["key"], "uncategorised", r["category_source"]) for r in candidates
                   if r["category"] not in cat.CATEGORIES]
    fresh, labels = [], {}
    for r in candidates:
        if r["category"] not in cat.CATEGORIES:
            continue
        d = descriptor_of(r)
        hit = index.find(r["sha256"], d, cfg.dejavu)
        if hit:
            rejections.append(Rejection(r["key"], hit[0], hit[2], hit[1]))
            continue
        labels[r["key"]] = index.add(r["key"], r["sha256"], d, run_id)
        fresh.append(r)

    # 3. the quota mix; what is not output is not "seen" either
    known = fresh
    result = mix([r["category"] for r in known], cfg.shares, cfg.size)
    chosen = set(result.order)
    for i, r in enumerate(known):
        if i not in chosen:
            if r["category"] not in result.counts:
                rejections.append(Rejection(r["key"], "category_not_wanted", f"{r['category']} has no share"))
            else:
                why = f"; the mix stopped when {result.stopped_by} ran out" if result.stopped_by else ""
                rejections.append(Rejection(r["key"], "over_quota", f"{r['category']} beyond its share{why}"))
    chosen_keys = {known[i]["key"] for i in chosen}
    index.remove([labels[r["key"]] for r in fresh if r["key"] not in chosen_keys])
    selected = [known[i] for i in result.order]

    # 4. shards, in parallel; finished shards are skipped
    shard_tasks = []
    for n, start in enumerate(range(0, len(selected), cfg.shard_size)):
        group = selected[start:start + cfg.shard_size]
        shard_tasks.append(ShardTask(str(shard_dir / f"shard-{n:06d}.tar"), tuple(range(start, start + len(group))),
                                     tuple(r["key"] for r in group), tuple(r["part"] for r in group)))
    _parallel(write_shard, [t for t in shard_tasks if not t.done()], cfg, "writing shards")

    # 5. manifest, rejection log, index commit, contact sheet, and the summary last
    manifest = []
    for task in shard_tasks:
        for sample_id, key in zip(task.ids, task.keys):
            r = selected[sample_id]
            manifest.append({"id": sample_id, "shard": Path(task.path).name, "key": key, "category": r["category"],
                             "category_source": r["category_source"], "caption": r["caption"], "sha256": r["sha256"],
                             "width": r["width"], "height": r["height"], "format": r["format"], "bytes": r["bytes"],
                             "has_depth": bool(r["depth_ext"]), "exif": r["exif"]})
    num_inputs = len(records) + len(early)
    assert len(manifest) + len(rejections) == num_inputs, "every input must be output or rejected exactly once"
    assert len({m["key"] for m in manifest} | {j.key for j in rejections}) == num_inputs
    write_parquet(out / "manifest.parquet", manifest, _schema(MANIFEST_FIELDS))
    write_parquet(out / "rejections.parquet", [asdict(j) for j in rejections], _schema(REJECTION_FIELDS))
    index.commit([run_id] + ([ref_run] if ref_run else []))

    clusters: dict[str, list[Rejection]] = {}
    for j in rejections:
        if j.reason in ("exact_duplicate", "near_duplicate"):
            clusters.setdefault(j.collided_with, []).append(j)
    shown = sorted(clusters.items(), key=lambda kv: -len(kv[1]))[:24]  # the biggest clusters first
    thumbs = _thumbnails({t.path for t in tasks + ref_tasks},
                         {k for k, _ in shown} | {j.key for _, js in shown for j in js[:7]})
    contact_sheet([(thumbs.get(k), [thumbs.get(j.key) for j in js[:7]], f"{len(js)} x {Path(k).name}")
                   for k, js in shown], out / "contact_sheet.png")
    n_out = len(manifest)
    summary = {
        "run": run_id, "inputs": num_inputs, "output": n_out, "shards": len(shard_tasks),
        "categories": {c: {"count": k, "share": round(k / n_out, 4) if n_out else 0.0,
                           "target": round(s, 4), "available": result.available[c]}
                       for c, s in normalise_shares(cfg.shares).items() for k in [result.counts[c]]},
        "unknown": sum(1 for r in candidates if r["category"] == cat.UNKNOWN),
        "shortfall": result.shortfall, "stopped_by": result.stopped_by,
        "rejections": dict(sorted(Counter(j.reason for j in rejections).items())),
        "category_sources": dict(sorted(Counter(r["category_source"].split(" p=")[0] for r in selected).items())),
        "reference": {"records": len(ref_records), "rejected": len(ref_early), "run": ref_run},
        "index": {"path": str(index.folder), "size": len(index), "runs": len(index.runs)},
    }
    atomic_write_bytes(out / "summary.json", json.dumps(summary, indent=1).encode())
    return summary
