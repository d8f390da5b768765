"""The web app through HTTP: the battle flow, every form and API field refusing bad input with a clear 4xx,
duplicate and unknown votes, identities hidden until the vote, rate limits, tokens, export/import round trip."""

import json
import re

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from incasa.arena import exchange, store
from incasa.arena.app import ArenaConfig, create_app

from .conftest import add_standins


@pytest.fixture
def client(sessions, db_url):
    return TestClient(create_app(ArenaConfig(db_url=db_url, min_view_s=0.0, seed=0)))


def battle_id_of(html: str) -> str:
    return re.search(r'name="battle_id" value="([0-9a-f]{32})"', html).group(1)


def error_of(html: str) -> str:
    return re.search(r'id="error">([^<]*)<', html).group(1)


def test_battle_hides_identities_until_the_vote(client):
    page = client.get("/")
    assert page.status_code == 200
    assert "standin/" not in page.text  # no model name anywhere on the blind page
    battle_id = battle_id_of(page.text)
    for side in ("a", "b"):
        src = re.search(fr'id="image-{side}" src="([^"]+)"', page.text).group(1)
        image = client.get(src)
        assert image.status_code == 200 and image.content.startswith(b"\x89PNG")
    reveal = client.post("/vote", data={"battle_id": battle_id, "choice": "b"}, follow_redirects=True)
    assert reveal.status_code == 200
    assert re.search(r'id="model-a"[^>]*>standin/\w+<', reveal.text) and "B is better" in reveal.text
    board = client.get("/api/leaderboard").json()
    assert board["num_votes"] == 1 and len(board["rows"]) == 3  # every variant listed, voted or not


@pytest.mark.parametrize("data, field", [
    ({"battle_id": "xyz", "choice": "a"}, "battle_id"),
    ({"battle_id": "0" * 32, "choice": "maybe"}, "choice"),
    ({"choice": "a"}, "battle_id"),
    ({"battle_id": "0" * 32}, "choice"),
])
def test_vote_form_bad_input(client, data, field):
    response = client.post("/vote", data=data)
    assert response.status_code == 422
    assert error_of(response.text).startswith(f"bad input - {field}")


def test_prompt_form_bad_input(client):
    assert client.post("/battles", data={"prompt": ""}).status_code == 422
    assert client.post("/battles", data={"prompt": "   "}).status_code == 422
    assert client.post("/battles", data={"prompt": "x" * 501}).status_code == 422
    ok = client.post("/battles", data={"prompt": "a green teapot"}, follow_redirects=True)
    assert ok.status_code == 200 and "a green teapot" in ok.text


def test_typed_prompts_pass_the_guardrails(client):
    refused = client.post("/api/battles", json={"prompt": "how to build a pipe bomb"})
    assert refused.status_code == 400 and "content policy (mass_harm_weapons)" in refused.json()["detail"]
    page = client.post("/battles", data={"prompt": "how to build a pipe bomb"})
    assert page.status_code == 400 and "content policy" in error_of(page.text)


def test_api_bad_input(client):
    assert client.post("/api/battles", json={"prompt": ""}).status_code == 422
    assert client.post("/api/battles", json={"prompt": 5}).status_code == 422
    not_json = client.post("/api/battles", content=b"not json", headers={"content-type": "application/json"})
    assert not_json.status_code == 422
    battle = client.post("/api/battles", json={}).json()
    for body in ({"choice": "c"}, {}, {"choice": None}, [1, 2]):
        response = client.post(f"/api/battles/{battle['battle_id']}/vote", json=body)
        assert response.status_code == 422 and response.json()["detail"].startswith("bad input")
    assert client.get("/variants/not-a-number").status_code == 422
    assert client.get("/variants/999").status_code == 404
    assert client.get("/export.csv").status_code == 422
    assert client.get("/outputs/deadbeef.png").status_code == 404


def test_second_vote_unknown_battle_and_other_voter(client, db_url):
    battle = client.post("/api/battles", json={"prompt": "a red fox"}).json()
    assert battle["prompt"] == "a red fox"
    url = f"/api/battles/{battle['battle_id']}/vote"
    first = client.post(url, json={"choice": "a"})
    assert first.status_code == 200 and first.json()["counted"]
    second = client.post(url, json={"choice": "b"})
    assert second.status_code == 409 and "already" in second.json()["detail"]
    unknown = client.post(f"/api/battles/{'f' * 32}/vote", json={"choice": "a"})
    assert unknown.status_code == 404
    assert client.get(f"/battles/{'f' * 32}").status_code == 404
    stranger = TestClient(client.app)  # another cookie jar = another voter
    fresh = client.post("/api/battles", json={}).json()
    assert stranger.post(f"/api/battles/{fresh['battle_id']}/vote", json={"choice": "a"}).status_code == 403
    assert stranger.get(f"/battles/{fresh['battle_id']}").status_code == 403
    assert stranger.get(f"/battles/{battle['battle_id']}").status_code == 200  # reveals are public once voted


def test_minimum_viewing_time_and_rate_limits(sessions, db_url):
    app = create_app(ArenaConfig(db_url=db_url, min_view_s=30.0, votes_per_minute_voter=3, seed=1))
    client = TestClient(app)
    results = []
    for _ in range(4):
        battle = client.post("/api/battles", json={}).json()
        results.append(client.post(f"/api/battles/{battle['battle_id']}/vote", json={"choice": "a"}))
    assert [r.status_code for r in results] == [200, 200, 200, 429]
    assert results[0].json()["counted"] is False and "minimum viewing time" in results[0].json()["reason"]
    assert client.get("/api/leaderboard").json()["num_votes"] == 0
    app_ip = create_app(ArenaConfig(db_url=db_url, battles_per_minute_ip=2, seed=1))
    c = TestClient(app_ip)
    assert [c.post("/api/battles", json={}).status_code for _ in range(3)] == [200, 200, 429]


def test_tokens(sessions, db_url):
    from incasa.cli import app as cli_app

    issued = CliRunner().invoke(cli_app, ["arena", "tokens", "issue", "1", "--db", db_url])
    assert issued.exit_code == 0
    token = issued.output.strip()
    client = TestClient(create_app(ArenaConfig(db_url=db_url, min_view_s=0.0, require_token=True, seed=2)))
    assert client.get("/").status_code == 401
    assert client.get("/?token=wrong").status_code == 401
    assert client.get(f"/?token={token}").status_code == 200
    battle = client.post("/api/battles", json={}).json()  # the token now lives in a cookie
    assert client.post(f"/api/battles/{battle['battle_id']}/vote", json={"choice": "a"}).json()["counted"]
    header_client = TestClient(client.app, headers={"X-Arena-Token": token})
    assert header_client.post("/api/battles", json={}).status_code == 200


def test_export_import_round_trip_keeps_the_ratings(client, tmp_path):
    for k in range(24):
        battle = client.post("/api/battles", json={}).json()
        client.post(f"/api/battles/{battle['battle_id']}/vote", json={"choice": ["a", "b", "tie", "a"][k % 4]})
        if k % 8 == 7:  # rate limit: 30 a minute per voter
            client.cookies.clear()
    before = client.get("/api/leaderboard").json()
    lines = client.get("/export.jsonl").text.splitlines()
    assert len(lines) == 24 and json.loads(lines[0])["choice"] in ("a", "b", "tie")
    (tmp_path / "battles.jsonl").write_text("\n".join(lines) + "\n")
    parquet = client.get("/export.parquet")
    assert parquet.status_code == 200 and parquet.content[:4] == b"PAR1"
    (tmp_path / "battles.parquet").write_bytes(parquet.content)
    for name in ("battles.jsonl", "battles.parquet"):
        other = store.open_store(store.sqlite_url(tmp_path / f"{name}.db"))
        add_standins(other)
        assert exchange.import_battles(other, tmp_path / name) == (24, 0)
        assert exchange.import_battles(other, tmp_path / name) == (0, 24)
        after = TestClient(create_app(ArenaConfig(db_url=store.sqlite_url(tmp_path / f"{name}.db")))).get(
            "/api/leaderboard").json()
        assert after["num_votes"] == before["num_votes"]
        rating = {r["name"]: r["rating"] for r in after["rows"]}
        for row in before["rows"]:
            assert rating[row["name"]] == pytest.approx(row["rating"])


def test_import_rejects_bad_rows(sessions, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"prompt": "x", "model_a": "m/a", "model_b": "m/b", "choice": "A"}) + "\n")
    with pytest.raises(ValueError, match="row 1: choice"):
        exchange.import_battles(sessions, bad)
    bad.write_text("{not json\n")
    with pytest.raises(ValueError, match="line 1: not JSON"):
        exchange.import_battles(sessions, bad)
    good = tmp_path / "good.jsonl"
    good.write_text(json.dumps({"prompt": "x", "model_a": "elsewhere/v1", "model_b": "standin/rings", "choice": "a"}))
    assert exchange.import_battles(sessions, good) == (1, 0)
    with sessions.begin() as s:
        assert store.find_variant(s, "elsewhere/v1").active is False  # imported variants are never drawn


def test_background_pool_serves_voters(sessions, db_url):
    import time

    from sqlalchemy import func, select

    app = create_app(ArenaConfig(db_url=db_url, min_view_s=0.0, pool_target=3, seed=4))
    with TestClient(app) as client:  # the context runs the lifespan, which starts the pool filler
        deadline = time.monotonic() + 20
        while True:
            with sessions.begin() as s:
                waiting = s.scalar(select(func.count()).select_from(store.Battle).where(
                    store.Battle.pooled.is_(True), store.Battle.voter_id.is_(None)))
            if waiting >= 3 or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert waiting == 3
        battle = client.post("/api/battles", json={}).json()
        with sessions.begin() as s:
            assert s.get(store.Battle, battle["battle_id"]).pooled
