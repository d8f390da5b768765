"""The store: migrations agree with the ORM, SQLite runs in WAL mode, names and hashes behave."""

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import func, select, text

from incasa.arena import store


def test_migrations_match_the_orm_and_seed_prompts(db_url):
    sessions = store.open_store(db_url)
    engine = sessions.kw["bind"]
    with engine.connect() as connection:
        assert compare_metadata(MigrationContext.configure(connection), store.Base.metadata) == []
        assert connection.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert connection.execute(text("SELECT version_num FROM alembic_version")).scalar() == "0001"
    with sessions.begin() as s:
        assert s.scalar(select(func.count()).select_from(store.Prompt)) >= 30
    store.open_store(db_url)  # opening again is a no-op upgrade, and does not duplicate the curated prompts
    with sessions.begin() as s:
        n = s.scalar(select(func.count()).select_from(store.Prompt))
    assert n == len([x for x in (store.Path(store.__file__).parent / "prompts.txt").read_text().splitlines()
                     if x.strip() and not x.startswith("#")])


def test_downgrade_and_upgrade(db_url):
    sessions = store.open_store(db_url)
    engine = sessions.kw["bind"]
    store.migrate(engine, "base", downgrade=True)
    with engine.connect() as connection:
        tables = {r[0] for r in connection.execute(text("SELECT name FROM sqlite_master WHERE type='table'"))}
    assert tables == {"alembic_version"}
    store.migrate(engine)
    with engine.connect() as connection:
        assert compare_metadata(MigrationContext.configure(connection), store.Base.metadata) == []


def test_variants_are_unique_and_named(sessions):
    with sessions.begin() as s:
        with pytest.raises(ValueError, match="already exists"):
            store.add_variant(s, "standin", "rings", "standin", {})
        with pytest.raises(ValueError, match="no '/'"):
            store.add_variant(s, "a/b", "c", "standin", {})
        assert sorted(store.variant_names(s).values()) == ["standin/checks", "standin/rings", "standin/stripes"]
        assert store.find_variant(s, "standin/rings").adapter == "standin"
        with pytest.raises(ValueError, match="unknown variant 'nope/x'; known: standin/checks"):
            store.find_variant(s, "nope/x")


def test_outputs_and_prompts_are_stored_once(sessions):
    with sessions.begin() as s:
        h1 = store.put_output(s, b"\x89PNG fake bytes")
        h2 = store.put_output(s, b"\x89PNG fake bytes")
        p1 = store.get_or_add_prompt(s, "a cat", "voter")
        p2 = store.get_or_add_prompt(s, "a cat", "curated")
        assert h1 == h2 == store.sha256_hex(b"\x89PNG fake bytes")
        assert p1.id == p2.id and p2.source == "voter"
        assert s.scalar(select(func.count()).select_from(store.Output)) == 1
