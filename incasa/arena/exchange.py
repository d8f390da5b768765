"""Export every battle (with its vote, if any) as JSONL or Parquet, and import such files back.

One row per battle, errors and unvoted battles included, so an export is a complete audit of what the arena did:
    battle_id, created_at, prompt, prompt_source, model_a, model_b, output_a, output_b, seed, status, error,
    pooled, voter_id, choice, counted, reason, view_s, voted_at
model_a / model_b are "model/variant" names; output_a / output_b are sha256 hashes of the PNGs in the store (the
bytes themselves are not exported). Writes are atomic (temporary file, then os.replace).

Import reads the same rows (JSONL, or Parquet). Only prompt, model_a, model_b and choice are required, so votes
collected elsewhere can be brought in. Variants that do not exist yet are created *inactive* with adapter
"imported": they appear on the leaderboard but are never drawn for new battles. Battle ids already in the store are
skipped, so importing the same file twice changes nothing.
"""

import json
import os
import uuid
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import sessionmaker

from incasa.arena import store
from incasa.arena.store import Battle, Prompt, Variant, Vote

COLUMNS = ("battle_id", "created_at", "prompt", "prompt_source", "model_a", "model_b", "output_a", "output_b", "seed",
           "status", "error", "pooled", "voter_id", "choice", "counted", "reason", "view_s", "voted_at")


def battle_rows(sessions: sessionmaker) -> list[dict]:
    with sessions.begin() as s:
        names = store.variant_names(s)
        rows = s.execute(
            select(Battle, Prompt.text, Prompt.source, Vote).join(Prompt, Prompt.id == Battle.prompt_id)
            .outerjoin(Vote, Vote.battle_id == Battle.id).order_by(Battle.created_at, Battle.id)).all()
        out = []
        for battle, text, source, vote in rows:
            out.append({
                "battle_id": battle.id, "created_at": battle.created_at, "prompt": text, "prompt_source": source,
                "model_a": names[battle.variant_a_id], "model_b": names[battle.variant_b_id],
                "output_a": battle.output_a, "output_b": battle.output_b, "seed": battle.seed,
                "status": battle.status, "error": battle.error, "pooled": battle.pooled, "voter_id": battle.voter_id,
                "choice": vote.choice if vote else None, "counted": vote.counted if vote else None,
                "reason": vote.reason if vote else None, "view_s": vote.view_s if vote else None,
                "voted_at": vote.created_at if vote else None,
            })
    return out


def _atomic_target(path: Path):
    # a unique name the writer creates (so the export gets the usual mode), not mkstemp's 0600 file
    return path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")


def export_battles(sessions: sessionmaker, path: str | Path) -> int:
    """Write all battles to `path` (.jsonl or .parquet). Returns the number of rows."""
    path = Path(path)
    if path.suffix not in (".jsonl", ".parquet"):
        raise ValueError(f"export to a .jsonl or .parquet file, not {path.name!r}")
    rows = battle_rows(sessions)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _atomic_target(path)
    try:
        if path.suffix == ".jsonl":
            with open(tmp, "w") as f:
                for row in rows:
                    f.write(json.dumps(row) + "\n")
        else:
            write_parquet(rows, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return len(rows)


def write_parquet(rows: list[dict], path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema([("battle_id", pa.string()), ("created_at", pa.float64()), ("prompt", pa.string()),
                        ("prompt_source", pa.string()), ("model_a", pa.string()), ("model_b", pa.string()),
                        ("output_a", pa.string()), ("output_b", pa.string()), ("seed", pa.int64()),
                        ("status", pa.string()), ("error", pa.string()), ("pooled", pa.bool_()),
                        ("voter_id", pa.string()), ("choice", pa.string()), ("counted", pa.bool_()),
                        ("reason", pa.string()), ("view_s", pa.float64()), ("voted_at", pa.float64())])
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path)


def read_rows(path: str | Path) -> list[dict]:
    path = Path(path)
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        return pq.read_table(path).to_pylist()
    if path.suffix != ".jsonl":
        raise ValueError(f"import a .jsonl or .parquet file, not {path.name!r}")
    rows = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise ValueError(f"{path.name} line {number}: not JSON ({e.msg})") from None
    return rows


def _variant_for(s, full_name: str) -> Variant:
    model, _, variant = full_name.partition("/")
    variant = variant or "default"  # a bare model name means its default variant
    try:
        return store.find_variant(s, f"{model}/{variant}")
    except ValueError:
        v = store.add_variant(s, model, variant, "imported", {})
        v.active = False
        return v


def import_battles(sessions: sessionmaker, path: str | Path) -> tuple[int, int]:
    """Add the battles (and votes) of an export-shaped file. Returns (imported, skipped as already present)."""
    rows = read_rows(path)
    for number, row in enumerate(rows, 1):
        missing = [k for k in ("prompt", "model_a", "model_b") if not row.get(k)]
        if missing:
            raise ValueError(f"row {number}: missing {', '.join(missing)}")
        if row.get("choice") is not None and row["choice"] not in store.CHOICES:
            raise ValueError(f"row {number}: choice must be one of {', '.join(store.CHOICES)} or empty")
        if row["model_a"] == row["model_b"]:
            raise ValueError(f"row {number}: a variant cannot battle itself ({row['model_a']})")
    imported = skipped = 0
    with sessions.begin() as s:
        for row in rows:
            battle_id = row.get("battle_id") or store.new_id()
            if s.get(Battle, battle_id) is not None:
                skipped += 1
                continue
            created = float(row.get("created_at") or store.now())
            voter_id = row.get("voter_id") or ("import" if row.get("choice") else None)
            if voter_id is not None:
                store.get_or_add_voter(s, voter_id)
            a, b = _variant_for(s, row["model_a"]), _variant_for(s, row["model_b"])
            prompt = store.get_or_add_prompt(s, row["prompt"], row.get("prompt_source") or "import")
            status = row.get("status") or "ready"
            s.add(Battle(id=battle_id, prompt_id=prompt.id, variant_a_id=a.id, variant_b_id=b.id,
                         output_a=row.get("output_a"), output_b=row.get("output_b"), seed=int(row.get("seed") or 0),
                         status=status, error=row.get("error"), pooled=bool(row.get("pooled")), voter_id=voter_id,
                         served_at=created, created_at=created))
            s.flush()
            if row.get("choice"):
                counted = row.get("counted")
                s.add(Vote(battle_id=battle_id, voter_id=voter_id, ip_hash="import", choice=row["choice"],
                           counted=True if counted is None else bool(counted), reason=row.get("reason"),
                           view_s=float(row.get("view_s") or 0.0), created_at=float(row.get("voted_at") or created)))
            imported += 1
    return imported, skipped
