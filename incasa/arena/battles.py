"""Battles: which two variants meet, making their outputs, showing them to one voter, and taking that voter's vote.

Matchmaking. Each battle draws two distinct active variants with weights that steer every variant's share of battle
appearances toward uniform: a variant that has had fewer battles than its uniform share (a newcomer) is drawn more
often, one that has had more is drawn less, and no weight ever leaves [u / 1.5, 1.5 u] for uniform share u. The
leaderboard shows the realised shares. Sides are random: the first variant drawn is A.

Generation. Both outputs come from the variants' adapters (adapters.py) outside any database transaction, since a
real model takes seconds. A failure of either side stores the battle with status "error" and its message; such
battles are never shown for voting and never counted. Outputs are stored once by content hash.

Pools. `fill_pool` pre-generates battles (pooled, no voter yet) so slow models do not make voters wait; `serve_battle`
claims a pooled battle first with a conditional UPDATE (safe under concurrency on SQLite and PostgreSQL) and only
generates live when the pool is empty or when the voter typed a prompt.

Votes. `cast_vote` enforces the per-battle rules: the battle must exist (404), have been generated cleanly (409), have
been shown to this voter (403) and not yet voted (409, backed by a unique constraint). A vote that arrives before the
minimum viewing time, or from a voter flagged as an outlier, is stored but not counted, with the reason. Rate limits
and tokens are the web layer's job (guard.py, app.py).
"""

import json
import random
from dataclasses import dataclass

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import sessionmaker

from incasa.arena import store
from incasa.arena.adapters import Adapter, build_adapter
from incasa.arena.store import Battle, Prompt, Variant, Vote, Voter

MAX_SHARE_RATIO = 1.5


class ArenaError(Exception):
    """A request the arena refuses, with the HTTP status that says why (404 unknown, 409 conflict, ...)."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class VoteResult:
    battle_id: str
    choice: str
    counted: bool
    reason: str | None
    model_a: str
    model_b: str


# ----------------------------------------------------------------------------------------------------------------------
# Matchmaking


def pair_weights(appearances: list[int], max_ratio: float = MAX_SHARE_RATIO) -> list[float]:
    """Draw weights [K] summing to 1, each within [u / max_ratio, u * max_ratio], u = 1 / K.

    A variant's weight is u * (u / s) for its smoothed realised share s = (appearances + 1) / (total + K), clipped to
    the band; clipping and renormalising alternate until both hold (a few rounds; the band contains u, so it ends).
    """
    K = len(appearances)
    if K < 2:
        raise ValueError("a battle needs at least two active variants")
    u = 1.0 / K
    total = sum(appearances)
    w = [u * u / ((c + 1) / (total + K)) for c in appearances]
    lo, hi = u / max_ratio, u * max_ratio
    for _ in range(100):
        w = [min(max(x, lo), hi) for x in w]
        z = sum(w)
        w = [x / z for x in w]
        if all(lo - 1e-12 <= x <= hi + 1e-12 for x in w):
            return w
    raise AssertionError("pair weights did not settle inside the band")


def draw_pair(variant_ids: list[int], appearances: list[int], rng: random.Random) -> tuple[int, int]:
    """Two distinct variants; the first drawn plays side A."""
    w = pair_weights(appearances)
    first = rng.choices(range(len(variant_ids)), weights=w)[0]
    rest = [i for i in range(len(variant_ids)) if i != first]
    second = rng.choices(rest, weights=[w[i] for i in rest])[0]
    return variant_ids[first], variant_ids[second]


def appearance_counts(s) -> dict[int, int]:
    """{variant id: number of battles it appeared in}, errors included (they cost the variant a slot all the same)."""
    counts: dict[int, int] = {}
    for column in (Battle.variant_a_id, Battle.variant_b_id):
        for vid, n in s.execute(select(column, func.count()).group_by(column)):
            counts[vid] = counts.get(vid, 0) + n
    return counts


# ----------------------------------------------------------------------------------------------------------------------
# Generation


class AdapterCache:
    """One adapter object per variant per process (an in-process model loads its weights once)."""

    def __init__(self):
        self._adapters: dict[int, Adapter] = {}

    def get(self, variant: Variant) -> Adapter:
        if variant.id not in self._adapters:
            self._adapters[variant.id] = build_adapter(variant.adapter, json.loads(variant.config))
        return self._adapters[variant.id]


def create_battle(sessions: sessionmaker, adapters: AdapterCache, rng: random.Random, prompt_text: str | None = None,
                  voter_id: str | None = None, pooled: bool = False) -> str:
    """Draw a pair and a prompt, generate both outputs, store the battle. Returns its id (status may be "error")."""
    with sessions.begin() as s:
        variants = list(s.scalars(select(Variant).where(Variant.active.is_(True)).order_by(Variant.id)))
        if len(variants) < 2:
            raise ArenaError(503, "the arena needs at least two active variants: `incasa arena models add ...`")
        counts = appearance_counts(s)
        a_id, b_id = draw_pair([v.id for v in variants], [counts.get(v.id, 0) for v in variants], rng)
        by_id = {v.id: v for v in variants}
        if prompt_text is None:
            prompt_ids = list(s.scalars(select(Prompt.id).where(Prompt.source == "curated")))
            if not prompt_ids:
                raise ArenaError(503, "no curated prompts: add some with `incasa arena prompts add FILE`")
            prompt = s.get(Prompt, rng.choice(prompt_ids))
        else:
            prompt = store.get_or_add_prompt(s, prompt_text, "voter")
        prompt_id, text = prompt.id, prompt.text
        if voter_id is not None:
            store.get_or_add_voter(s, voter_id)
    seed = rng.randrange(2**31)
    outputs, error = [], None
    for vid in (a_id, b_id):
        try:
            outputs.append(adapters.get(by_id[vid]).generate(text, seed))
        except Exception as e:  # any failure of a model (network, OOM, bad config) must become an error battle
            error = f"{'AB'[len(outputs)]} ({type(e).__name__}): {e}"[:2000]
            break
    with sessions.begin() as s:
        hashes = [store.put_output(s, data) for data in outputs] + [None] * (2 - len(outputs))
        battle = Battle(id=store.new_id(), prompt_id=prompt_id, variant_a_id=a_id, variant_b_id=b_id,
                        output_a=hashes[0], output_b=hashes[1], seed=seed, status="error" if error else "ready",
                        error=error, pooled=pooled, voter_id=voter_id,
                        served_at=store.now() if voter_id is not None else None, created_at=store.now())
        s.add(battle)
    return battle.id


def fill_pool(sessions: sessionmaker, adapters: AdapterCache, rng: random.Random, count: int) -> tuple[int, int]:
    """Pre-generate `count` battles for later voters. Returns (ready, errors)."""
    ready = errors = 0
    for _ in range(count):
        battle_id = create_battle(sessions, adapters, rng, pooled=True)
        with sessions.begin() as s:
            if s.get(Battle, battle_id).status == "ready":
                ready += 1
            else:
                errors += 1
    return ready, errors


def serve_battle(sessions: sessionmaker, adapters: AdapterCache, rng: random.Random, voter_id: str,
                 prompt_text: str | None = None, attempts: int = 3) -> str:
    """A battle shown to `voter_id` now: a pooled one if any (curated prompts only), else a fresh one."""
    if prompt_text is None:
        with sessions.begin() as s:
            store.get_or_add_voter(s, voter_id)
            candidates = list(s.scalars(select(Battle.id).where(Battle.pooled.is_(True), Battle.voter_id.is_(None),
                                                                Battle.status == "ready")
                                        .order_by(Battle.created_at).limit(8)))
        for battle_id in candidates:
            with sessions.begin() as s:
                claimed = s.execute(update(Battle).where(Battle.id == battle_id, Battle.voter_id.is_(None))
                                    .values(voter_id=voter_id, served_at=store.now())).rowcount
            if claimed == 1:
                return battle_id
    last_error = ""
    for _ in range(attempts):
        battle_id = create_battle(sessions, adapters, rng, prompt_text, voter_id=voter_id)
        with sessions.begin() as s:
            battle = s.get(Battle, battle_id)
            if battle.status == "ready":
                return battle_id
            last_error = battle.error or ""
    raise ArenaError(502, f"generation failed {attempts} times in a row; last error: {last_error}")


# ----------------------------------------------------------------------------------------------------------------------
# Voting


def cast_vote(sessions: sessionmaker, battle_id: str, voter_id: str, ip_hash: str, choice: str,
              min_view_s: float) -> VoteResult:
    """Record `choice` for the battle; raises ArenaError for votes that cannot be taken at all."""
    if choice not in store.CHOICES:
        raise ArenaError(422, f"choice must be one of {', '.join(store.CHOICES)}, got {choice!r}")
    try:
        with sessions.begin() as s:
            battle = s.get(Battle, battle_id)
            if battle is None:
                raise ArenaError(404, f"no battle {battle_id!r}")
            if battle.status != "ready":
                raise ArenaError(409, "this battle had a generation error and cannot be voted on")
            if battle.voter_id != voter_id:
                raise ArenaError(403, "this battle was not shown to you; open a new battle")
            if s.scalar(select(Vote.id).where(Vote.battle_id == battle_id)) is not None:
                raise ArenaError(409, "this battle already has a vote")
            voter = s.get(Voter, voter_id)
            view_s = store.now() - battle.served_at
            counted, reason = True, None
            if view_s < min_view_s:
                counted = False
                reason = f"voted after {view_s:.1f} s, before the minimum viewing time of {min_view_s:g} s"
            elif voter.flagged:
                counted, reason = False, "voter flagged as an outlier"
            s.add(Vote(battle_id=battle_id, voter_id=voter_id, ip_hash=ip_hash, choice=choice, counted=counted,
                       reason=reason, view_s=view_s, created_at=store.now()))
            names = store.variant_names(s)
            result = VoteResult(battle_id, choice, counted, reason, names[battle.variant_a_id],
                                names[battle.variant_b_id])
    except IntegrityError:
        # Two submissions raced past the check above; the unique constraint on votes.battle_id kept only one.
        raise ArenaError(409, "this battle already has a vote") from None
    return result
