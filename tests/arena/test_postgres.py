"""The same store on PostgreSQL: a throwaway cluster (initdb + pg_ctl in a temp dir), migrations, battles and
votes through the web app, the leaderboard, and the duplicate-vote constraint under a real server."""

import threading

from fastapi.testclient import TestClient
from sqlalchemy import func, select, text

from incasa.arena import store
from incasa.arena.app import ArenaConfig, create_app

from .conftest import add_standins


def test_migrations_and_votes_on_postgresql(postgres_url):
    sessions = store.open_store(postgres_url)
    with sessions.kw["bind"].connect() as connection:
        assert connection.dialect.name == "postgresql"
        assert connection.execute(text("SELECT version_num FROM alembic_version")).scalar() == "0001"
    add_standins(sessions)
    client = TestClient(create_app(ArenaConfig(db_url=postgres_url, min_view_s=0.0, seed=3)))
    for choice in ("a", "b", "a", "tie", "both_bad", "a"):
        battle = client.post("/api/battles", json={}).json()
        assert client.post(f"/api/battles/{battle['battle_id']}/vote", json={"choice": choice}).status_code == 200
    # Eight simultaneous votes on one battle: exactly one is taken (the unique constraint), the rest are 409.
    battle = client.post("/api/battles", json={}).json()
    codes = []

    def vote():
        codes.append(client.post(f"/api/battles/{battle['battle_id']}/vote", json={"choice": "b"}).status_code)

    threads = [threading.Thread(target=vote) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(codes) == [200] + [409] * 7
    board = client.get("/api/leaderboard").json()
    assert board["num_votes"] == 7 and all(r["rating"] is not None for r in board["rows"])
    with sessions.begin() as s:
        assert s.scalar(select(func.count()).select_from(store.Vote)) == 7
