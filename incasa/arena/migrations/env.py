"""Alembic environment for the arena store: runs on the connection that incasa.arena.store.migrate hands over.

There is no alembic.ini: the store passes its own connection in `config.attributes["connection"]`, so migrations run
on SQLite or PostgreSQL exactly as the application connects. For a new migration run, from the repository root:
    alembic -x url=sqlite:///arena.db -c /dev/null revision --autogenerate -m "what changed"
with script_location pointing here, or write it by hand next to versions/0001_initial.py.
"""

from alembic import context
from sqlalchemy import create_engine

from incasa.arena.store import Base

config = context.config
target_metadata = Base.metadata


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is None:  # the alembic command line: take the URL from `-x url=...`
        url = context.get_x_argument(as_dictionary=True).get("url")
        if url is None:
            raise ValueError("pass the database with -x url=... (or call incasa.arena.store.migrate)")
        with create_engine(url).begin() as connection:
            context.configure(connection=connection, target_metadata=target_metadata, render_as_batch=True)
            context.run_migrations()
        return
    # render_as_batch: SQLite cannot ALTER most things; batch mode rebuilds tables, PostgreSQL ignores it.
    context.configure(connection=connection, target_metadata=target_metadata, render_as_batch=True)
    context.run_migrations()


run_migrations_online()
