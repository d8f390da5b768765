"""Command-line entry points for incasa.arena (registered in incasa/cli.py as `incasa arena`).

    incasa arena serve [--demo]              the web app on the embedded default (./arena.db, SQLite)
    incasa arena models add MODEL VARIANT    register a variant (adapter: incasa | openai | standin)
    incasa arena models list | retire
    incasa arena prompts add FILE            curated prompts, one per line
    incasa arena pool fill --count N         pre-generate battles for slow models
    incasa arena import FILE | export FILE   battles as JSONL or Parquet
    incasa arena recompute                   refit the leaderboard and print it (optionally flag outlier voters)
    incasa arena tokens issue N              voter tokens for --require-token arenas

Every command takes --db: a file path (SQLite) or a database URL (sqlite:///..., postgresql://user@host/db).
Heavy imports (SQLAlchemy, FastAPI, numpy) happen inside the commands so `incasa --help` stays fast.
"""

import contextlib
from pathlib import Path

import typer

app = typer.Typer(no_args_is_help=True, help="Blind side-by-side battles and a leaderboard with confidence intervals.")
models_app = typer.Typer(no_args_is_help=True, help="Register, list and retire model variants.")
prompts_app = typer.Typer(no_args_is_help=True, help="Curated prompts for battles.")
pool_app = typer.Typer(no_args_is_help=True, help="Pre-generated battles for slow models.")
tokens_app = typer.Typer(no_args_is_help=True, help="Voter tokens (for arenas started with --require-token).")
app.add_typer(models_app, name="models")
app.add_typer(prompts_app, name="prompts")
app.add_typer(pool_app, name="pool")
app.add_typer(tokens_app, name="tokens")

DB_HELP = "SQLite file path or database URL (sqlite:///path, postgresql://user@host/db)."
DbOption = typer.Option("arena.db", "--db", help=DB_HELP)


def _db_url(db: str) -> str:
    if "://" in db:
        return db
    return f"sqlite:///{Path(db).resolve()}"


@contextlib.contextmanager
def _user_errors():
    """Expected failures become one line on stderr and exit code 1; anything else is a bug and keeps its traceback."""
    from sqlalchemy.exc import SQLAlchemyError

    from incasa.arena.battles import ArenaError

    try:
        yield
    except (ValueError, OSError) as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(1) from None
    except ArenaError as e:
        typer.echo(f"error: {e.message}", err=True)
        raise typer.Exit(1) from None
    except SQLAlchemyError as e:
        typer.echo(f"error: database: {str(e).splitlines()[0]}", err=True)
        raise typer.Exit(1) from None


def _rating_config(ties: str, rounds: int):
    from incasa.arena.ratings import RatingConfig

    if ties not in ("half", "davidson"):
        raise typer.BadParameter("--ties must be 'half' or 'davidson'")
    if rounds < 100:
        raise typer.BadParameter("--bootstrap-rounds must be at least 100")
    return RatingConfig(ties=ties, bootstrap_rounds=rounds)


@app.command()
def serve(
    db: str = DbOption,
    host: str = typer.Option("127.0.0.1", help="Address to listen on (0.0.0.0 for every interface)."),
    port: int = typer.Option(8000, help="TCP port."),
    min_view_s: float = typer.Option(2.0, help="Votes cast sooner after a battle is shown are stored, not counted."),
    require_token: bool = typer.Option(False, help="Only voters with a token from `incasa arena tokens issue`."),
    anchor: str = typer.Option("", help="Variant held at rating 1000, as model/variant (default: the oldest rated)."),
    ties: str = typer.Option("half", help="Ties as half wins ('half') or Davidson's tie model ('davidson')."),
    bootstrap_rounds: int = typer.Option(100, help="Bootstrap rounds for the 95% intervals (>= 100)."),
    pool: int = typer.Option(0, help="Keep this many battles pre-generated in the background (for slow models)."),
    check_prompts: bool = typer.Option(True, help="Refuse typed prompts that incasa.safety's guardrails block."),
    demo: bool = typer.Option(False, help="Register three TEST STAND-IN variants (coloured patterns) if none exist."),
):
    """Start the arena web app: battles at /, the leaderboard at /leaderboard."""
    import uvicorn

    from incasa.arena import store
    from incasa.arena.app import ArenaConfig, create_app

    with _user_errors():
        if min_view_s < 0:
            raise typer.BadParameter("--min-view-s must be >= 0")
        if pool < 0:
            raise typer.BadParameter("--pool must be >= 0")
        url = _db_url(db)
        sessions = store.open_store(url)
        with sessions.begin() as s:
            active = s.query(store.Variant).filter(store.Variant.active.is_(True)).count()
            if active < 2 and demo:
                for style in ("rings", "stripes", "checks"):
                    store.add_variant(s, "standin", style, "standin", {"style": style})
                active += 3
        if active < 2:  # the leaderboard of imported votes still works; battles wait for variants
            typer.echo("warning: fewer than two active variants, so no battles until `incasa arena models add ...` "
                       "(or start with --demo); the leaderboard is served", err=True)
        config = ArenaConfig(db_url=url, min_view_s=min_view_s, require_token=require_token, anchor=anchor or None,
                             ratings=_rating_config(ties, bootstrap_rounds), pool_target=pool,
                             check_prompts=check_prompts)
        web_app = create_app(config)
    typer.echo(f"arena on http://{host}:{port}/  (store: {url})")
    uvicorn.run(web_app, host=host, port=port, log_level="warning")


@models_app.command("add")
def models_add(
    model: str = typer.Argument(..., help="Model family name, e.g. incasa-image."),
    variant: str = typer.Argument(..., help="Variant name, e.g. small-step40. Never reused: add a new one instead."),
    adapter: str = typer.Option(
        ..., help="incasa (in-process checkpoint) | openai (OpenAI-compatible URL) | standin (test pattern)."),
    checkpoint: str = typer.Option("", help="incasa: checkpoint path (default: the shipped one)."),
    steps: int = typer.Option(0, help="incasa: sampling steps (0: the generator's default)."),
    guidance: float = typer.Option(-1.0, help="incasa: guidance scale (negative: the generator's default)."),
    base_url: str = typer.Option("", help="openai: server root, e.g. http://127.0.0.1:8001."),
    api_model: str = typer.Option("", help="openai: the `model` field to send."),
    size: str = typer.Option("256x256", help="openai: image size to request."),
    api_key_env: str = typer.Option("", help="openai: environment variable that holds the API key."),
    send_seed: bool = typer.Option(True, help="openai: send the battle seed (turn off for strict servers)."),
    style: str = typer.Option("rings", help="standin: rings | stripes | checks."),
    db: str = DbOption,
):
    """Register a model variant for battles."""
    from incasa.arena import store
    from incasa.arena.adapters import build_adapter

    if adapter == "incasa":
        if checkpoint and not Path(checkpoint).is_file():
            raise typer.BadParameter(f"--checkpoint {checkpoint} does not exist")
        config = {"checkpoint": str(Path(checkpoint).resolve()) if checkpoint else None,
                  "steps": steps or None, "guidance": guidance if guidance >= 0 else None}
    elif adapter == "openai":
        if not base_url.startswith(("http://", "https://")):
            raise typer.BadParameter("--base-url must be an http(s) URL for the openai adapter")
        config = {"base_url": base_url, "model": api_model, "size": size, "api_key_env": api_key_env,
                  "send_seed": send_seed}
    elif adapter == "standin":
        config = {"style": style}
    else:
        raise typer.BadParameter("--adapter must be incasa, openai or standin")
    with _user_errors():
        build_adapter(adapter, config)  # fail now on a bad configuration, not at the first battle
        sessions = store.open_store(_db_url(db))
        with sessions.begin() as s:
            v = store.add_variant(s, model, variant, adapter, config)
            typer.echo(f"added {model}/{variant} (id {v.id}, adapter {adapter})")


@models_app.command("list")
def models_list(db: str = DbOption):
    """List every variant (retired ones included)."""
    from rich.console import Console
    from rich.table import Table

    from incasa.arena import store

    with _user_errors():
        sessions = store.open_store(_db_url(db))
        table = Table("id", "variant", "adapter", "active", "config")
        with sessions.begin() as s:
            names = store.variant_names(s)
            for v in s.query(store.Variant).order_by(store.Variant.id):
                table.add_row(str(v.id), names[v.id], v.adapter, "yes" if v.active else "retired", v.config)
        Console().print(table)


@models_app.command("retire")
def models_retire(name: str = typer.Argument(..., help="model/variant"), db: str = DbOption):
    """Stop drawing a variant for new battles. It stays on the leaderboard (variants are never hidden)."""
    from incasa.arena import store

    with _user_errors():
        sessions = store.open_store(_db_url(db))
        with sessions.begin() as s:
            store.find_variant(s, name).active = False
        typer.echo(f"retired {name}")


@prompts_app.command("add")
def prompts_add(file: Path = typer.Argument(..., help="Text file, one prompt per line (# comments)."),
                db: str = DbOption):
    """Add curated prompts (duplicates are ignored)."""
    from incasa.arena import store

    with _user_errors():
        lines = [x.strip() for x in file.read_text().splitlines() if x.strip() and not x.startswith("#")]
        if any(len(x) > 500 for x in lines):
            raise ValueError("prompts must be at most 500 characters")
        sessions = store.open_store(_db_url(db))
        with sessions.begin() as s:
            for line in lines:
                store.get_or_add_prompt(s, line, "curated")
        typer.echo(f"{len(lines)} prompts read from {file}")


@pool_app.command("fill")
def pool_fill(count: int = typer.Option(20, help="Battles to pre-generate."), db: str = DbOption):
    """Pre-generate battles so voters of slow models do not wait."""
    import random

    from rich.progress import track

    from incasa.arena import store
    from incasa.arena.battles import AdapterCache, create_battle

    if count < 1:
        raise typer.BadParameter("--count must be >= 1")
    with _user_errors():
        sessions = store.open_store(_db_url(db))
        adapters, rng, errors = AdapterCache(), random.Random(), 0
        for _ in track(range(count), description="generating battles"):
            battle_id = create_battle(sessions, adapters, rng, pooled=True)
            with sessions.begin() as s:
                errors += s.get(store.Battle, battle_id).status == "error"
        typer.echo(f"{count - errors} battles ready, {errors} with generation errors (never shown)")


@app.command("import")
def import_(file: Path = typer.Argument(..., help=".jsonl or .parquet in the export format."), db: str = DbOption):
    """Import battles and votes (unknown variants are created retired; known battle ids are skipped)."""
    from incasa.arena import exchange, store

    with _user_errors():
        if not file.is_file():
            raise ValueError(f"no file {file}")
        imported, skipped = exchange.import_battles(store.open_store(_db_url(db)), file)
        typer.echo(f"imported {imported} battles, skipped {skipped} already present")


@app.command()
def export(out: Path = typer.Argument(..., help="Output file: .jsonl or .parquet."), db: str = DbOption):
    """Export every battle with its vote."""
    from incasa.arena import exchange, store

    with _user_errors():
        n = exchange.export_battles(store.open_store(_db_url(db)), out)
        typer.echo(f"wrote {n} battles to {out}")


@app.command()
def recompute(
    db: str = DbOption,
    ties: str = typer.Option("half", help="'half' or 'davidson'."),
    bootstrap_rounds: int = typer.Option(100, help="Bootstrap rounds (>= 100)."),
    anchor: str = typer.Option("", help="Variant held at 1000 (model/variant)."),
    flag_outliers: bool = typer.Option(False, help="First flag voters whose votes are implausible (z < -4)."),
    json_out: Path = typer.Option(None, "--json", help="Also write the leaderboard as JSON here."),
):
    """Refit the leaderboard from all counted votes and print it."""
    import json
    import os

    from rich.console import Console
    from rich.table import Table

    from incasa.arena import board, store

    with _user_errors():
        config = _rating_config(ties, bootstrap_rounds)
        sessions = store.open_store(_db_url(db))
        if flag_outliers:
            for voter, z in board.flag_outliers(sessions):
                typer.echo(f"flagged voter {voter} (z = {z:.1f}); their votes no longer count")
        b = board.compute_board(sessions, config, anchor or None)
        table = Table("rank", "variant", "rating", "95% CI bootstrap", "95% CI sandwich", "online Elo", "votes",
                      "share",
                      title=f"{b.num_votes} counted votes")
        fmt = lambda x: "-" if x is None else f"{x:.0f}"  # noqa: E731
        for r in b.rows:
            table.add_row(fmt(r.rank), r.name + (" (anchor)" if r.anchor else ""), fmt(r.rating),
                          f"{fmt(r.boot_lo)}..{fmt(r.boot_hi)}", f"{fmt(r.sand_lo)}..{fmt(r.sand_hi)}",
                          fmt(r.online_elo), str(r.votes), f"{r.share * 100:.1f}%")
        Console().print(table)
        if json_out is not None:
            tmp = json_out.with_name(json_out.name + ".tmp")
            tmp.write_text(json.dumps({"num_votes": b.num_votes, "rows": [r.__dict__ for r in b.rows]}, indent=1))
            os.replace(tmp, json_out)


@tokens_app.command("issue")
def tokens_issue(count: int = typer.Argument(..., help="How many tokens."), db: str = DbOption):
    """Print new voter tokens (only their hashes are stored: keep the output)."""
    from incasa.arena import guard, store

    if count < 1:
        raise typer.BadParameter("count must be >= 1")
    with _user_errors():
        sessions = store.open_store(_db_url(db))
        with sessions.begin() as s:
            for _ in range(count):
                token = guard.new_token()
                s.add(store.Voter(id=store.new_id(), token_hash=guard.token_hash(token), flagged=False,
                                  created_at=store.now()))
                typer.echo(token)
