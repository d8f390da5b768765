"""Matchmaking shares, generation errors, pools and the per-battle voting rules."""

import random
from collections import Counter

import pytest
from sqlalchemy import select

from incasa.arena import board, store
from incasa.arena.battles import (AdapterCache, ArenaError, appearance_counts, cast_vote, create_battle, draw_pair,
                                  fill_pool, pair_weights, serve_battle)

from .conftest import free_port


def test_pair_weights_stay_in_the_band():
    for counts in ([0, 0, 0], [0, 100, 100, 100], [1000, 0, 5, 7, 9], [3, 3]):
        w = pair_weights(counts)
        u = 1 / len(counts)
        assert sum(w) == pytest.approx(1.0)
        assert all(u / 1.5 - 1e-12 <= x <= 1.5 * u + 1e-12 for x in w)
    assert pair_weights([0, 100, 100, 100])[0] == pytest.approx(1.5 / 4)  # a newcomer is drawn at the cap
    with pytest.raises(ValueError, match="two active"):
        pair_weights([3])


def test_realised_shares_within_1_5x_of_uniform_and_newcomer_catches_up():
    rng = random.Random(0)
    ids = [1, 2, 3, 4, 5, 6]
    appearances = Counter({1: 0, 2: 300, 3: 300, 4: 300, 5: 300, 6: 300})  # variant 1 joins late
    for _ in range(3000):
        a, b = draw_pair(ids, [appearances[i] for i in ids], rng)
        assert a != b
        appearances[a] += 1
        appearances[b] += 1
    total = sum(appearances.values())
    shares = [appearances[i] / total for i in ids]
    assert all(1 / 6 / 1.5 <= s <= 1.5 / 6 for s in shares), shares
    assert appearances[1] > 800  # it was drawn more often than uniform (6000 / 6 = 1000 of the 3000 battles' 6000)


def test_battles_store_outputs_by_hash_and_errors_never_count(sessions):
    with sessions.begin() as s:  # a real failure: an OpenAI-compatible adapter aimed at a closed port
        store.add_variant(s, "remote", "down", "openai", {"base_url": f"http://127.0.0.1:{free_port()}",
                                                          "timeout_s": 2.0})
    adapters, rng = AdapterCache(), random.Random(1)
    ids = [create_battle(sessions, adapters, rng) for _ in range(12)]
    with sessions.begin() as s:
        battles = [s.get(store.Battle, i) for i in ids]
        names = store.variant_names(s)
        for battle in battles:
            involves_down = "remote/down" in (names[battle.variant_a_id], names[battle.variant_b_id])
            assert (battle.status == "error") == involves_down
            if battle.status == "ready":
                assert s.get(store.Output, battle.output_a).data.startswith(b"\x89PNG")
            else:
                assert "ConnectError" in battle.error
    errored = next(b for b in battles if b.status == "error")
    with sessions.begin() as s:
        store.get_or_add_voter(s, "v" * 32)
        s.get(store.Battle, errored.id).voter_id = "v" * 32
        s.get(store.Battle, errored.id).served_at = 0.0
    with pytest.raises(ArenaError, match="generation error") as e:
        cast_vote(sessions, errored.id, "v" * 32, "ip", "a", 0.0)
    assert e.value.status == 409
    with sessions.begin() as s:
        assert sum(appearance_counts(s).values()) == 24  # every battle, errors included, used two slots


def test_pool_is_claimed_once(sessions):
    adapters, rng = AdapterCache(), random.Random(2)
    assert fill_pool(sessions, adapters, rng, 3) == (3, 0)
    served = {serve_battle(sessions, adapters, rng, f"{i:032d}") for i in range(4)}
    with sessions.begin() as s:
        pooled = set(s.scalars(select(store.Battle.id).where(store.Battle.pooled.is_(True))))
    assert len(served) == 4 and len(served & pooled) == 3  # three from the pool, one generated live


def test_vote_rules(sessions):
    adapters, rng = AdapterCache(), random.Random(3)
    voter, other = "a" * 32, "b" * 32
    battle_id = serve_battle(sessions, adapters, rng, voter)
    with pytest.raises(ArenaError) as e:
        cast_vote(sessions, "0" * 32, voter, "ip", "a", 0.0)
    assert e.value.status == 404
    with pytest.raises(ArenaError) as e:
        cast_vote(sessions, battle_id, other, "ip", "a", 0.0)
    assert e.value.status == 403
    with pytest.raises(ArenaError) as e:
        cast_vote(sessions, battle_id, voter, "ip", "maybe", 0.0)
    assert e.value.status == 422
    result = cast_vote(sessions, battle_id, voter, "ip", "tie", 0.0)
    assert result.counted and result.model_a.startswith("standin/")
    with pytest.raises(ArenaError, match="already has a vote") as e:
        cast_vote(sessions, battle_id, voter, "ip", "a", 0.0)
    assert e.value.status == 409
    # Too fast: stored, not counted, and not in the ratings.
    fast = serve_battle(sessions, adapters, rng, voter)
    result = cast_vote(sessions, fast, voter, "ip", "a", 60.0)
    assert not result.counted and "minimum viewing time" in result.reason
    with sessions.begin() as s:
        assert board.counted_votes(s)["a"].size == 1


def test_flagged_voter_votes_stop_counting(sessions):
    adapters, rng = AdapterCache(), random.Random(4)
    # Honest voters prefer rings > stripes > checks; one voter always picks the opposite.
    strength = {"standin/rings": 2, "standin/stripes": 1, "standin/checks": 0}
    voters = [f"{i:032d}" for i in range(8)]
    for _ in range(40):
        for k, voter in enumerate(voters):
            battle_id = serve_battle(sessions, adapters, rng, voter)
            with sessions.begin() as s:
                battle = s.get(store.Battle, battle_id)
                names = store.variant_names(s)
            a_better = strength[names[battle.variant_a_id]] > strength[names[battle.variant_b_id]]
            honest = rng.random() < 0.8  # honest voters agree with the truth 80% of the time
            pick_a = a_better if (honest if k else False) else not a_better
            cast_vote(sessions, battle_id, voter, "ip", "a" if pick_a else "b", 0.0)
    flagged = board.flag_outliers(sessions)
    assert [v for v, _ in flagged] == [voters[0]]
    later = serve_battle(sessions, adapters, rng, voters[0])
    assert cast_vote(sessions, later, voters[0], "ip", "a", 0.0).reason == "voter flagged as an outlier"
    rows = {r.name: r for r in board.compute_board(sessions).rows}
    assert rows["standin/rings"].rating > rows["standin/stripes"].rating > rows["standin/checks"].rating
