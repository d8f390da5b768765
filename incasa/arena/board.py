"""From the store to the leaderboard: which votes count, ratings per variant, battle shares, history, outliers.

Counted votes are those marked counted, on battles generated without error, from voters not flagged as outliers.
"tie" and "both_bad" both enter the ratings as ties (in LMArena's practice "both bad" is a tie between two losers).
Every variant is listed - one without votes has no rating yet but still shows its battle share - so no variant can
be hidden by leaving it out. The anchor is a named variant, or by default the oldest variant that has votes.
"""

from dataclasses import dataclass

import numpy as np
from sqlalchemy import select, update
from sqlalchemy.orm import sessionmaker

from incasa.arena import ratings, store
from incasa.arena.battles import appearance_counts
from incasa.arena.store import Battle, Prompt, Variant, Vote, Voter

OUTCOME = {"a": ratings.A_WINS, "b": ratings.B_WINS, "tie": ratings.TIE, "both_bad": ratings.TIE}


@dataclass(frozen=True)
class Row:
    variant_id: int
    name: str
    active: bool
    rank: int | None
    rating: float | None
    boot_lo: float | None
    boot_hi: float | None
    sand_lo: float | None
    sand_hi: float | None
    online_elo: float | None
    votes: int
    share: float  # fraction of battle appearances
    anchor: bool


@dataclass(frozen=True)
class Board:
    rows: list[Row]  # by rank, then rating; variants without votes last
    num_votes: int
    uniform_share: float
    tie_nu: float | None


def counted_votes(s) -> dict[str, np.ndarray]:
    """Arrays over counted votes in time order: variant a, variant b, outcome code, voter id (as index), time."""
    rows = s.execute(
        select(Battle.variant_a_id, Battle.variant_b_id, Vote.choice, Vote.voter_id, Vote.created_at)
        .join(Vote, Vote.battle_id == Battle.id).join(Voter, Voter.id == Vote.voter_id)
        .where(Vote.counted.is_(True), Battle.status == "ready", Voter.flagged.is_(False))
        .order_by(Vote.created_at, Vote.id)).all()
    voters = sorted({r[3] for r in rows})
    voter_index = {v: i for i, v in enumerate(voters)}
    return {
        "a": np.array([r[0] for r in rows], np.int64),
        "b": np.array([r[1] for r in rows], np.int64),
        "outcome": np.array([OUTCOME[r[2]] for r in rows], np.int64),
        "voter": np.array([voter_index[r[3]] for r in rows], np.int64),
        "voter_ids": np.array(voters, dtype=object),
        "time": np.array([r[4] for r in rows], np.float64),
    }


def compute_board(sessions: sessionmaker, config: ratings.RatingConfig = ratings.RatingConfig(),
                  anchor: str | None = None) -> Board:
    """The full leaderboard. `config.anchor` is ignored: the anchor is chosen by name here."""
    with sessions.begin() as s:
        names = store.variant_names(s)
        variants = list(s.scalars(select(Variant).order_by(Variant.id)))
        votes = counted_votes(s)
        appearances = appearance_counts(s)
    total_appearances = max(sum(appearances.values()), 1)
    rated_ids = sorted(set(votes["a"].tolist()) | set(votes["b"].tolist()))
    stats: dict[int, tuple] = {}
    tie_nu = None
    if anchor is not None and anchor not in [names[v] for v in rated_ids]:
        raise ValueError(f"anchor {anchor!r} is not a variant with counted votes")
    if len(rated_ids) >= 2:
        index = {vid: i for i, vid in enumerate(rated_ids)}
        if anchor is None:
            anchor_id = rated_ids[0]
        else:
            anchor_id = next(vid for vid in rated_ids if names[vid] == anchor)
        cfg = ratings.RatingConfig(**{**config.__dict__, "anchor": index[anchor_id]})
        a = np.array([index[v] for v in votes["a"].tolist()], np.int64)
        b = np.array([index[v] for v in votes["b"].tolist()], np.int64)
        lb = ratings.leaderboard(a, b, votes["outcome"], len(rated_ids), cfg)
        tie_nu = lb.tie_nu
        for vid, i in index.items():
            stats[vid] = (int(lb.rank[i]), float(lb.rating[i]), float(lb.boot_lo[i]), float(lb.boot_hi[i]),
                          float(lb.sand_lo[i]), float(lb.sand_hi[i]), float(lb.online_elo[i]), int(lb.num_votes[i]),
                          vid == anchor_id)
    rows = []
    for v in variants:
        st = stats.get(v.id)
        vote_count = int((votes["a"] == v.id).sum() + (votes["b"] == v.id).sum())
        share = appearances.get(v.id, 0) / total_appearances
        if st is None:
            rows.append(Row(v.id, names[v.id], v.active, None, None, None, None, None, None, None, vote_count, share,
                            False))
        else:
            rows.append(Row(v.id, names[v.id], v.active, st[0], st[1], st[2], st[3], st[4], st[5], st[6], st[7],
                            share, st[8]))
    rows.sort(key=lambda r: (r.rating is None, r.rank or 0, -(r.rating or 0.0)))
    active = max(sum(v.active for v in variants), 1)
    return Board(rows, int(votes["a"].size), 1.0 / active, tie_nu)


def variant_history(sessions: sessionmaker, variant_id: int, limit: int = 100) -> dict:
    """Battles of one variant (newest first) and its online-Elo trajectory over all counted votes."""
    with sessions.begin() as s:
        names = store.variant_names(s)
        if variant_id not in names:
            raise ValueError(f"no variant with id {variant_id}")
        rows = s.execute(
            select(Battle.id, Battle.variant_a_id, Battle.variant_b_id, Battle.status, Battle.created_at, Prompt.text,
                   Vote.choice, Vote.counted, Vote.reason)
            .join(Prompt, Prompt.id == Battle.prompt_id).outerjoin(Vote, Vote.battle_id == Battle.id)
            .where((Battle.variant_a_id == variant_id) | (Battle.variant_b_id == variant_id))
            .order_by(Battle.created_at.desc()).limit(limit)).all()
        votes = counted_votes(s)
    battles = []
    for bid, va, vb, status, created, prompt, choice, counted, reason in rows:
        side = "a" if va == variant_id else "b"
        opponent = names[vb if side == "a" else va]
        if choice is None:
            result = "error" if status == "error" else "no vote"
        elif choice in ("tie", "both_bad"):
            result = choice.replace("_", " ")
        else:
            result = "won" if choice == side else "lost"
        battles.append({"battle_id": bid, "created_at": created, "prompt": prompt, "opponent": opponent,
                        "result": result, "counted": bool(counted), "reason": reason})
    # Online Elo over time: replay all counted votes, record this variant's rating after each of its votes.
    trajectory, r = [], {}
    score_a = {ratings.A_WINS: 1.0, ratings.B_WINS: 0.0, ratings.TIE: 0.5}
    for a, b, o in zip(votes["a"].tolist(), votes["b"].tolist(), votes["outcome"].tolist()):
        ra, rb = r.get(a, 1000.0), r.get(b, 1000.0)
        delta = 4.0 * (score_a[o] - 1.0 / (1.0 + 10 ** ((rb - ra) / 400.0)))
        r[a], r[b] = ra + delta, rb - delta
        if variant_id in (a, b):
            trajectory.append(r[variant_id])
    return {"name": names[variant_id], "battles": battles, "elo_trajectory": trajectory}


def flag_outliers(sessions: sessionmaker, z_threshold: float = -4.0, min_votes: int = 20) -> list[tuple[str, float]]:
    """Flag voters whose decisive votes are too unlikely under the current ratings. Returns [(voter id, z)] flagged.

    The threshold is one-sided and strict (z < -4 by default) because it is applied to every voter at once.
    Flagged voters' votes stay in the store but stop counting; ratings are refitted without them on the next view.
    """
    with sessions.begin() as s:
        votes = counted_votes(s)
    ids = sorted(set(votes["a"].tolist()) | set(votes["b"].tolist()))
    if len(ids) < 2:
        return []
    index = {vid: i for i, vid in enumerate(ids)}
    a = np.array([index[v] for v in votes["a"].tolist()], np.int64)
    b = np.array([index[v] for v in votes["b"].tolist()], np.int64)
    lb = ratings.leaderboard(a, b, votes["outcome"], len(ids))
    theta = (lb.rating - lb.rating.mean()) / ratings.ELO_PER_LOGIT
    z = ratings.voter_outlier_z(a, b, votes["outcome"], votes["voter"], theta, min_votes)
    flagged = [(str(votes["voter_ids"][v]), zv) for v, zv in sorted(z.items()) if zv < z_threshold]
    if flagged:
        with sessions.begin() as s:
            s.execute(update(Voter).where(Voter.id.in_([f[0] for f in flagged])).values(flagged=True))
    return flagged
