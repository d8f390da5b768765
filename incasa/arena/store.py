"""The arena's store: models, variants, prompts, battles, outputs, votes and voters, in SQLAlchemy 2.

SQLite (in WAL mode, so readers never wait for the writer) is the embedded default; any PostgreSQL URL
(`postgresql+psycopg://user@host/db`) works unchanged. The schema is owned by Alembic migrations that live inside
this package (incasa/arena/migrations); `open_store` runs them to head on every start, so a new release upgrades an
old database in place. The ORM classes below and the migrations must agree; tests/arena/test_store.py checks it.

Vocabulary:
- a *model* is a family (e.g. "incasa-image"), a *variant* one concrete way of running it (checkpoint, preset,
  endpoint). Battles are between variants. Variants are never hidden or deleted: the leaderboard lists every one.
- a *battle* is one prompt, two variants on randomised sides A and B, and both outputs stored by content hash
  (the bytes live once in `outputs`, whatever number of battles show them).
- a *vote* is A / B / tie / both_bad. At most one per battle (a unique constraint, so a double submit cannot
  sneak in under concurrency). `counted` says whether the vote enters the ratings, and `reason` why not.
- a *voter* is an anonymous id kept in a cookie; with tokens enabled a voter must also present a token issued by
  `incasa arena tokens issue`, stored only as a hash.

Times are seconds since the epoch (float), which every backend stores the same way.
"""

import hashlib
import json
import time
import uuid
from pathlib import Path

from sqlalchemy import (Boolean, Float, ForeignKey, Integer, LargeBinary, String, Text, UniqueConstraint,
                        create_engine, event, func, select)
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, sessionmaker

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
CHOICES = ("a", "b", "tie", "both_bad")


class Base(DeclarativeBase):
    pass


class Model(Base):
    __tablename__ = "models"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    created_at: Mapped[float] = mapped_column(Float)


class Variant(Base):
    __tablename__ = "variants"
    __table_args__ = (UniqueConstraint("model_id", "name"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id"))
    name: Mapped[str] = mapped_column(String(200))
    adapter: Mapped[str] = mapped_column(String(50))  # a key of adapters.ADAPTERS
    config: Mapped[str] = mapped_column(Text)  # JSON keyword arguments of the adapter
    active: Mapped[bool] = mapped_column(Boolean, default=True)  # inactive: no new battles, still on the leaderboard
    created_at: Mapped[float] = mapped_column(Float)


class Prompt(Base):
    __tablename__ = "prompts"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    text_hash: Mapped[str] = mapped_column(String(64), unique=True)
    text: Mapped[str] = mapped_column(Text)
    source: Mapped[str] = mapped_column(String(20))  # "curated" | "voter" | "import"
    created_at: Mapped[float] = mapped_column(Float)


class Output(Base):
    __tablename__ = "outputs"
    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    media_type: Mapped[str] = mapped_column(String(50))
    data: Mapped[bytes] = mapped_column(LargeBinary)


class Voter(Base):
    __tablename__ = "voters"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    token_hash: Mapped[str | None] = mapped_column(String(64), unique=True, nullable=True)
    flagged: Mapped[bool] = mapped_column(Boolean, default=False)  # outlier: votes kept, not counted
    created_at: Mapped[float] = mapped_column(Float)


class Battle(Base):
    __tablename__ = "battles"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    prompt_id: Mapped[int] = mapped_column(ForeignKey("prompts.id"))
    variant_a_id: Mapped[int] = mapped_column(ForeignKey("variants.id"))
    variant_b_id: Mapped[int] = mapped_column(ForeignKey("variants.id"))
    output_a: Mapped[str | None] = mapped_column(String(64), nullable=True)  # sha256 in outputs
    output_b: Mapped[str | None] = mapped_column(String(64), nullable=True)
    seed: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(10), index=True)  # "ready" | "error"
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    pooled: Mapped[bool] = mapped_column(Boolean, default=False)  # pre-generated, waiting for a voter
    voter_id: Mapped[str | None] = mapped_column(ForeignKey("voters.id"), nullable=True, index=True)
    served_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    created_at: Mapped[float] = mapped_column(Float)


class Vote(Base):
    __tablename__ = "votes"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    battle_id: Mapped[str] = mapped_column(ForeignKey("battles.id"), unique=True)
    voter_id: Mapped[str] = mapped_column(ForeignKey("voters.id"), index=True)
    ip_hash: Mapped[str] = mapped_column(String(64))
    choice: Mapped[str] = mapped_column(String(10))  # one of CHOICES
    counted: Mapped[bool] = mapped_column(Boolean)
    reason: Mapped[str | None] = mapped_column(String(100), nullable=True)
    view_s: Mapped[float] = mapped_column(Float)  # seconds between the battle being shown and the vote
    created_at: Mapped[float] = mapped_column(Float, index=True)


# ----------------------------------------------------------------------------------------------------------------------


def make_engine(url: str) -> Engine:
    """An engine for a URL; SQLite gets WAL, a busy timeout and enforced foreign keys on every connection."""
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://"):]  # the driver we install (psycopg 3)
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection, _record):
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")  # safe with WAL; a crash loses at most the last commits
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()

        return engine
    return create_engine(url, pool_size=20, max_overflow=40, pool_pre_ping=True)


def migrate(engine: Engine, revision: str = "head", downgrade: bool = False) -> None:
    """Bring the schema up (or, with downgrade=True, down) to `revision` with the migrations shipped here."""
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        (command.downgrade if downgrade else command.upgrade)(config, revision)


def open_store(url: str) -> sessionmaker:
    """Engine + migrations + curated prompts; returns a session factory bound to the store."""
    engine = make_engine(url)
    migrate(engine)
    sessions = sessionmaker(engine, expire_on_commit=False)
    with sessions.begin() as s:
        if s.scalar(select(func.count()).select_from(Prompt).where(Prompt.source == "curated")) == 0:
            for line in (Path(__file__).parent / "prompts.txt").read_text().splitlines():
                if line.strip() and not line.startswith("#"):
                    get_or_add_prompt(s, line.strip(), "curated")
    return sessions


def sqlite_url(path: str | Path) -> str:
    return f"sqlite:///{Path(path).resolve()}"


def now() -> float:
    return time.time()


def new_id() -> str:
    return uuid.uuid4().hex


def sha256_hex(data: bytes | str) -> str:
    return hashlib.sha256(data.encode() if isinstance(data, str) else data).hexdigest()


# ----------------------------------------------------------------------------------------------------------------------
# Small helpers used by battles.py, app.py and cli.py (each takes an open session; the caller owns the transaction)


def add_variant(s, model: str, variant: str, adapter: str, config: dict) -> Variant:
    """Register model/variant (the model is created on first use). Raises ValueError if the variant exists."""
    if not model.strip() or not variant.strip() or "/" in model or "/" in variant:
        raise ValueError("model and variant names must be non-empty and contain no '/'")
    m = s.scalar(select(Model).where(Model.name == model))
    if m is None:
        m = Model(name=model, created_at=now())
        s.add(m)
        s.flush()
    if s.scalar(select(Variant).where(Variant.model_id == m.id, Variant.name == variant)) is not None:
        raise ValueError(f"variant {model}/{variant} already exists (variants are never replaced; add a new name)")
    v = Variant(model_id=m.id, name=variant, adapter=adapter, config=json.dumps(config, sort_keys=True),
                active=True, created_at=now())
    s.add(v)
    s.flush()
    return v


def variant_names(s) -> dict[int, str]:
    """{variant id: "model/variant"} for every variant, active or not."""
    rows = s.execute(select(Variant.id, Model.name, Variant.name).join(Model, Model.id == Variant.model_id))
    return {vid: f"{m}/{v}" for vid, m, v in rows}


def find_variant(s, full_name: str) -> Variant:
    """Look up "model/variant"; raises ValueError with the known names if absent."""
    model, _, variant = full_name.partition("/")
    v = s.scalar(select(Variant).join(Model, Model.id == Variant.model_id)
                 .where(Model.name == model, Variant.name == variant))
    if v is None:
        known = ", ".join(sorted(variant_names(s).values())) or "none"
        raise ValueError(f"unknown variant {full_name!r}; known: {known}")
    return v


def _insert_ignore(s, table, **values) -> None:
    """INSERT ... ON CONFLICT DO NOTHING: concurrent requests may add the same prompt, output or voter."""
    if s.bind.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    s.execute(insert(table).values(**values).on_conflict_do_nothing())


def get_or_add_prompt(s, text: str, source: str) -> Prompt:
    h = sha256_hex(text)
    _insert_ignore(s, Prompt.__table__, text_hash=h, text=text, source=source, created_at=now())
    return s.scalar(select(Prompt).where(Prompt.text_hash == h))


def put_output(s, data: bytes, media_type: str = "image/png") -> str:
    """Store bytes once under their sha256 and return the hash."""
    h = sha256_hex(data)
    _insert_ignore(s, Output.__table__, sha256=h, media_type=media_type, data=data)
    return h


def get_or_add_voter(s, voter_id: str) -> Voter:
    _insert_ignore(s, Voter.__table__, id=voter_id, token_hash=None, flagged=False, created_at=now())
    return s.get(Voter, voter_id)
