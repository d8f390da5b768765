"""Ratings from pairwise votes: Bradley–Terry on the Elo scale, with honest 95% intervals.

A vote says which of two models produced the better output. The Bradley–Terry model explains the votes with one
strength theta_i per model: P(i beats j) = sigmoid(theta_i - theta_j). We fit theta by maximum likelihood and report
it on the Elo scale (rating = 1000 + 400/ln(10) * theta), shifted so that one *anchor* model sits at a fixed rating;
every other rating and interval is therefore a statement relative to the anchor, whose interval has zero width.

Ties ("tie" and "both bad") count as half a win for each side by default; `ties="davidson"` fits Davidson's (1970)
extension instead, with one extra parameter nu: P(i>j) : P(j>i) : P(tie) = pi_i : pi_j : nu * sqrt(pi_i * pi_j),
pi = exp(theta).

Speed comes from never looking at single votes after the first step. Votes are aggregated into *cells*: one per
unordered pair {i<j} and outcome (i wins, j wins, tie) - 3 * K(K-1)/2 counts for K models, whatever the number of
votes. The bootstrap resamples votes with replacement, which for i.i.d. votes is exactly a multinomial draw over the
cells; all bootstrap rounds are then fitted at once by batched Newton steps on K x K matrices. One million votes and
100 rounds take well under a second (see benchmarks/arena_ratings.py).

Two kinds of interval:
- bootstrap: rating +- 1.96 * the standard deviation of the anchored ratings over resampled vote sets. The
  percentile interval (LMArena's choice, `bootstrap_ci="percentile"`) is centred on the bootstrap distribution,
  which carries the maximum-likelihood estimate's small-sample bias a second time; at 100 votes per model it covered
  the truth ~92-93% of the time in benchmarks/arena_ratings.py against ~95% for the normal interval;
- sandwich: theta_hat +- 1.96 * sqrt(diag(H^-1 M H^-1)), H the Hessian of the log-likelihood, M the sum of outer
  products of per-vote scores. It stays honest when the model is misspecified (e.g. ties scored as half wins).

A weak Gaussian prior on theta (sd 400 Elo points by default) keeps the rating of a model that never wins finite;
with hundreds of votes per model it moves ratings by far less than their intervals.

rank = 1 + the number of models whose lower bound is above this model's upper bound (the LMArena rule).
Online Elo (K-factor updates in time order) is reported as a secondary column: it depends on vote order, BT does not.

Legend: K models, B bootstrap rounds, C cells (= 3 * number of unordered pairs).
"""

from dataclasses import dataclass
from typing import Literal

import numpy as np

ELO_PER_LOGIT = 400.0 / np.log(10.0)
A_WINS, B_WINS, TIE = 0, 1, 2  # vote outcome codes


@dataclass(frozen=True)
class RatingConfig:
    ties: Literal["half", "davidson"] = "half"
    prior_sd_elo: float = 400.0  # Gaussian prior on each rating; 0 means pure maximum likelihood
    bootstrap_rounds: int = 100
    anchor: int = 0  # index of the model held at anchor_rating
    anchor_rating: float = 1000.0
    bootstrap_ci: Literal["normal", "percentile"] = "normal"
    rank_by: Literal["bootstrap", "sandwich"] = "bootstrap"
    elo_k: float = 4.0
    seed: int = 0


@dataclass(frozen=True)
class Leaderboard:
    rating: np.ndarray  # [K] Bradley-Terry rating on the Elo scale, anchored
    boot_lo: np.ndarray  # [K] bootstrap 95% interval
    boot_hi: np.ndarray  # [K]
    sand_lo: np.ndarray  # [K] sandwich 95% interval
    sand_hi: np.ndarray  # [K]
    rank: np.ndarray  # [K] int, 1 is best
    online_elo: np.ndarray  # [K]
    num_votes: np.ndarray  # [K] votes each model took part in
    tie_nu: float | None  # Davidson's tie parameter, None with ties="half"


# ----------------------------------------------------------------------------------------------------------------------
# Aggregation


def cell_counts(a: np.ndarray, b: np.ndarray, outcome: np.ndarray, num_models: int) -> np.ndarray:
    """Count votes per (unordered pair, outcome) cell. a, b: model indices [N]; outcome: A_WINS / B_WINS / TIE [N].

    Returns counts [K, K, 3]: entry [i, j, o] for i < j only, o = 0 "i wins", 1 "j wins", 2 "tie".
    """
    a, b, outcome = np.asarray(a, np.int64), np.asarray(b, np.int64), np.asarray(outcome, np.int64)
    if not (a.shape == b.shape == outcome.shape and a.ndim == 1):
        raise ValueError("a, b and outcome must be 1-D arrays of the same length")
    if a.size and (min(a.min(), b.min()) < 0 or max(a.max(), b.max()) >= num_models):
        raise ValueError(f"model indices must lie in [0, {num_models})")
    if np.any(a == b):
        raise ValueError("a model cannot battle itself")
    if a.size and (outcome.min() < 0 or outcome.max() > 2):
        raise ValueError("outcome codes are 0 (A wins), 1 (B wins), 2 (tie)")
    swap = a > b
    lo, hi = np.where(swap, b, a), np.where(swap, a, b)
    # When the pair was stored as (hi, lo), "A wins" means "hi wins": swap the win codes, keep ties.
    o = np.where(swap & (outcome < 2), 1 - outcome, outcome)
    flat = np.bincount((lo * num_models + hi) * 3 + o, minlength=num_models * num_models * 3)
    return flat.reshape(num_models, num_models, 3).astype(np.float64)


def _wins_ties(counts_BKK3: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cells -> W[b, i, j] (i beat j) and symmetric T[b, i, j] (ties between i and j)."""
    upper_win, upper_loss, tie = counts_BKK3[..., 0], counts_BKK3[..., 1], counts_BKK3[..., 2]
    W = upper_win + np.swapaxes(upper_loss, -1, -2)
    T = tie + np.swapaxes(tie, -1, -2)
    return W, T


def connected(counts_KK3: np.ndarray) -> bool:
    """Whether every model is linked to every other through compared pairs (needed without a prior)."""
    K = counts_KK3.shape[0]
    n = counts_KK3.sum(-1)
    adj = (n + n.T) > 0
    seen, stack = {0}, [0]
    while stack:
        for j in np.flatnonzero(adj[stack.pop()]):
            if j not in seen:
                seen.add(int(j))
                stack.append(int(j))
    return len(seen) == K


# ----------------------------------------------------------------------------------------------------------------------
# Bradley-Terry with ties as half wins: batched Newton


def _prior_precision(prior_sd_elo: float) -> float:
    return 0.0 if prior_sd_elo <= 0 else (ELO_PER_LOGIT / prior_sd_elo) ** 2


def fit_bt(counts_BKK3: np.ndarray, prior_sd_elo: float = 400.0, min_precision: float = 0.0,
           max_iter: int = 200) -> np.ndarray:
    """Maximum (penalised) likelihood theta for each of B count tables at once. Returns theta [B, K], mean zero.

    min_precision: a floor on the prior precision. Bootstrap resamples pass 1e-3 (a prior sd of ~5,500 Elo points):
    a resample can be separable (a model wins every resampled vote) where the unpenalised maximum does not exist;
    the vanishing ridge keeps theta finite but far out, which is what the interval should then show.
    """
    W, T = _wins_ties(counts_BKK3)
    w = W + 0.5 * T  # effective wins of i over j
    n = W + np.swapaxes(W, -1, -2) + T  # comparisons between i and j, symmetric
    B, K = n.shape[0], n.shape[-1]
    lam = max(_prior_precision(prior_sd_elo), min_precision)
    theta = np.zeros((B, K))
    eye = np.eye(K)
    # Without a prior the likelihood is flat along theta + c: adding 1 1^T / K to -H pins the step to mean zero.
    gauge = np.full((K, K), 1.0 / K) if lam == 0 else 0.0
    for _ in range(max_iter):
        P = 1.0 / (1.0 + np.exp(theta[:, None, :] - theta[:, :, None]))  # [B,K,K] P(i beats j)
        g = (w - n * P).sum(-1) - lam * theta  # [B,K]
        V = n * P * (1.0 - P)
        neg_H = lam * eye + gauge - V  # V's diagonal is zero (n_ii = 0)
        neg_H[:, np.arange(K), np.arange(K)] += V.sum(-1)
        step = np.linalg.solve(neg_H, g[..., None])[..., 0]
        # Newton on the logistic likelihood can overshoot far from the optimum; a trust radius of 2 logits keeps
        # every step an ascent in practice and costs nothing near convergence.
        scale = np.minimum(1.0, 2.0 / np.maximum(np.abs(step).max(-1, keepdims=True), 1e-300))
        theta = theta + step * scale
        # Converged when the Newton decrement g^T (-H)^-1 g (twice the log-likelihood still to gain) is negligible
        # against the number of votes. A step-size test alone fails on separable resamples, where the curvature is
        # the tiny ridge and rounding noise in g becomes steps of 1e-8.
        decrement = np.einsum("bk,bk->b", g, step)
        if np.all((decrement <= 1e-18 * np.maximum(n.sum((-1, -2)), 1.0)) & (scale[:, 0] == 1.0)):
            break
    else:
        raise RuntimeError("Bradley-Terry Newton iterations did not converge")
    return theta - theta.mean(-1, keepdims=True)


def _bt_scores_hessian(counts_KK3: np.ndarray, theta: np.ndarray, lam: float):
    """Per-cell score vectors [C, K], cell counts [C], and the log-likelihood Hessian [K, K] for the sandwich."""
    K = theta.shape[0]
    i, j = np.triu_indices(K, 1)
    p = 1.0 / (1.0 + np.exp(theta[j] - theta[i]))  # P(i beats j)
    E = np.zeros((i.size, K))
    E[np.arange(i.size), i], E[np.arange(i.size), j] = 1.0, -1.0
    y = np.array([1.0, 0.0, 0.5])  # i wins, j wins, tie
    scores = ((y[None, :] - p[:, None])[:, :, None] * E[:, None, :]).reshape(-1, K)
    counts = counts_KK3[i, j].reshape(-1)
    v = counts_KK3[i, j].sum(-1) * p * (1 - p)
    H = -(E.T * v) @ E - lam * np.eye(K)
    return scores, counts, H


# ----------------------------------------------------------------------------------------------------------------------
# Davidson ties: batched Newton on (theta, x = log nu)
#
# Per unordered pair with d = theta_i - theta_j and D = 2 cosh(d/2) + e^x, the log-likelihood is
#   l = (W_ij - W_ji) d / 2 + T_ij x - n_ij log D
# whose first and second derivatives in d and x are written out below; it is concave in (theta, x).


def _davidson_grad_hess(theta: np.ndarray, x: np.ndarray, W: np.ndarray, T: np.ndarray, lam: float, lam_x: float):
    """Gradient [B, K+1] and Hessian [B, K+1, K+1] of the penalised log-likelihood; the last coordinate is x."""
    B, K = theta.shape
    d = theta[:, :, None] - theta[:, None, :]  # [B,K,K]
    ex = np.exp(x)[:, None, None]
    ch, sh = np.cosh(d / 2), np.sinh(d / 2)
    D = 2 * ch + ex
    n = W + np.swapaxes(W, -1, -2) + T
    g = np.empty((B, K + 1))
    g[:, :K] = ((W - np.swapaxes(W, -1, -2)) / 2 - n * sh / D).sum(-1) - lam * theta
    g[:, K] = 0.5 * (T - n * ex / D).sum((-1, -2)) - lam_x * x  # each pair twice in the full matrix
    h_dd = -n * (ch * D / 2 - sh * sh) / D**2
    h_dx = n * sh * ex / D**2
    h_xx = -n * ex * 2 * ch / D**2
    H = np.zeros((B, K + 1, K + 1))
    H[:, :K, :K] = -h_dd - lam * np.eye(K)
    H[:, np.arange(K), np.arange(K)] += h_dd.sum(-1)
    H[:, :K, K] = H[:, K, :K] = h_dx.sum(-1)
    H[:, K, K] = 0.5 * h_xx.sum((-1, -2)) - lam_x
    return g, H


def fit_davidson(counts_BKK3: np.ndarray, prior_sd_elo: float = 400.0, min_precision: float = 0.0,
                 max_iter: int = 200) -> tuple[np.ndarray, np.ndarray]:
    """Maximum likelihood (theta [B, K] mean zero, nu [B]) of Davidson's tie model for B count tables at once.

    min_precision: as in fit_bt; it also puts a ridge on log nu, which a resample without ties (or with only ties)
    would otherwise send to -inf (+inf).
    """
    W, T = _wins_ties(counts_BKK3)
    B, K = W.shape[0], W.shape[-1]
    lam = max(_prior_precision(prior_sd_elo), min_precision)
    theta, x = np.zeros((B, K)), np.zeros(B)
    gauge = np.zeros((K + 1, K + 1))
    if lam == 0:  # the likelihood is flat along theta + c: pin the step to mean zero, as in fit_bt
        gauge[:K, :K] = 1.0 / K
    n_total = np.maximum((W.sum((-1, -2)) + T.sum((-1, -2)) / 2), 1.0)
    for _ in range(max_iter):
        g, H = _davidson_grad_hess(theta, x, W, T, lam, min_precision)
        step = np.linalg.solve(gauge - H, g[..., None])[..., 0]
        scale = np.minimum(1.0, 2.0 / np.maximum(np.abs(step).max(-1, keepdims=True), 1e-300))
        theta, x = theta + (step * scale)[:, :K], x + (step * scale)[:, K]
        decrement = np.einsum("bk,bk->b", g, step)
        if np.all((decrement <= 1e-18 * n_total) & (scale[:, 0] == 1.0)):
            break
    else:
        raise RuntimeError("Davidson Newton iterations did not converge")
    return theta - theta.mean(-1, keepdims=True), np.exp(x)


def _davidson_scores_hessian(counts_KK3: np.ndarray, theta: np.ndarray, nu: float, lam: float):
    """Per-cell scores [C, K+1], cell counts [C] and the Hessian [K+1, K+1] in (theta, log nu)."""
    K = theta.shape[0]
    i, j = np.triu_indices(K, 1)
    d = theta[i] - theta[j]
    D = np.exp(d / 2) + np.exp(-d / 2) + nu
    pw, pl, pt = np.exp(d / 2) / D, np.exp(-d / 2) / D, nu / D
    E = np.zeros((i.size, K))
    E[np.arange(i.size), i], E[np.arange(i.size), j] = 1.0, -1.0
    c = np.stack([0.5 - (pw - pl) / 2, -0.5 - (pw - pl) / 2, -(pw - pl) / 2], 1)  # d l / d d, per outcome
    s_nu = np.stack([-pt, -pt, 1 - pt], 1)  # d l / d log nu, per outcome
    scores = np.concatenate([c[:, :, None] * E[:, None, :], s_nu[:, :, None]], -1).reshape(-1, K + 1)
    counts = counts_KK3[i, j].reshape(-1)
    W, T = _wins_ties(counts_KK3[None])
    _, H = _davidson_grad_hess(theta[None], np.log([nu]), W, T, lam, 0.0)
    return scores, counts, H[0]


# ----------------------------------------------------------------------------------------------------------------------
# Intervals, rank, online Elo


def sandwich_se(scores: np.ndarray, counts: np.ndarray, H: np.ndarray, anchor: int, K: int) -> np.ndarray:
    """Standard errors [K] (logits) of theta_i - theta_anchor from H^-1 M H^-1."""
    M = (scores.T * counts) @ scores
    H_inv = np.linalg.pinv(H)  # pinv: without a prior H is singular along theta + c, which contrasts do not see
    cov = H_inv @ M @ H_inv
    C = np.eye(cov.shape[0])[:K] - np.eye(cov.shape[0])[anchor]  # rows: e_i - e_anchor
    return np.sqrt(np.maximum(np.einsum("ij,jk,ik->i", C, cov, C), 0.0))


def bootstrap_counts(counts_KK3: np.ndarray, rounds: int, rng: np.random.Generator) -> np.ndarray:
    """Resample the votes with replacement: a multinomial draw over the cells. Returns [rounds, K, K, 3]."""
    flat = counts_KK3.reshape(-1)
    total = int(flat.sum())
    return rng.multinomial(total, flat / total, size=rounds).reshape((rounds,) + counts_KK3.shape).astype(np.float64)


def rank_from_intervals(lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """rank_i = 1 + #{j : lo_j > hi_i}: a model is outranked only by models that are surely better."""
    return 1 + (lo[None, :] > hi[:, None]).sum(1)


def online_elo(a: np.ndarray, b: np.ndarray, outcome: np.ndarray, num_models: int, k: float = 4.0,
               start: float = 1000.0) -> np.ndarray:
    """Classic Elo updates in the order the votes arrived (ties score 0.5). Returns ratings [K]."""
    r = np.full(num_models, start)
    score_a = np.array([1.0, 0.0, 0.5])[np.asarray(outcome, np.int64)]
    for ai, bi, s in zip(np.asarray(a).tolist(), np.asarray(b).tolist(), score_a.tolist()):
        expected = 1.0 / (1.0 + 10.0 ** ((r[bi] - r[ai]) / 400.0))
        r[ai] += k * (s - expected)
        r[bi] -= k * (s - expected)
    return r


def leaderboard(a: np.ndarray, b: np.ndarray, outcome: np.ndarray, num_models: int,
                config: RatingConfig = RatingConfig()) -> Leaderboard:
    """Fit Bradley-Terry (or Davidson), bootstrap and sandwich intervals, ranks and online Elo for K models."""
    K = num_models
    if K < 2:
        raise ValueError("a leaderboard needs at least two models")
    if not 0 <= config.anchor < K:
        raise ValueError(f"anchor index {config.anchor} is not a model index in [0, {K})")
    if config.bootstrap_rounds < 100:
        raise ValueError("use at least 100 bootstrap rounds: fewer make the interval ends noise")
    counts = cell_counts(a, b, outcome, K)
    if counts.sum() == 0:
        raise ValueError("no votes to rate")
    lam = _prior_precision(config.prior_sd_elo)
    if lam == 0 and not connected(counts):
        raise ValueError("without a prior every model must be linked to every other through compared pairs")
    rng = np.random.default_rng(config.seed)
    boot = bootstrap_counts(counts, config.bootstrap_rounds, rng)
    tie_nu = None
    if config.ties == "half":
        theta = fit_bt(counts[None], config.prior_sd_elo)[0]
        theta_boot = fit_bt(boot, config.prior_sd_elo, min_precision=1e-3)
        scores, cell_n, H = _bt_scores_hessian(counts, theta, lam)
    elif config.ties == "davidson":
        if counts[..., TIE].sum() == 0:
            raise ValueError("Davidson's tie model needs at least one tie among the votes")
        theta, nu = fit_davidson(counts[None], config.prior_sd_elo)
        theta, tie_nu = theta[0], float(nu[0])
        theta_boot = fit_davidson(boot, config.prior_sd_elo, min_precision=1e-3)[0]
        scores, cell_n, H = _davidson_scores_hessian(counts, theta, tie_nu, lam)
    else:
        raise ValueError(f"ties must be 'half' or 'davidson', got {config.ties!r}")
    to_elo = lambda t: config.anchor_rating + ELO_PER_LOGIT * (t - t[..., config.anchor : config.anchor + 1])  # noqa: E731
    rating = to_elo(theta[None])[0]
    boot_elo = to_elo(theta_boot)
    if config.bootstrap_ci == "normal":
        sd = boot_elo.std(0, ddof=1)
        boot_lo, boot_hi = rating - 1.96 * sd, rating + 1.96 * sd
    elif config.bootstrap_ci == "percentile":
        boot_lo, boot_hi = np.percentile(boot_elo, [2.5, 97.5], axis=0)
    else:
        raise ValueError(f"bootstrap_ci must be 'normal' or 'percentile', got {config.bootstrap_ci!r}")
    se = sandwich_se(scores, cell_n, H, config.anchor, K) * ELO_PER_LOGIT
    sand_lo, sand_hi = rating - 1.96 * se, rating + 1.96 * se
    lo, hi = (boot_lo, boot_hi) if config.rank_by == "bootstrap" else (sand_lo, sand_hi)
    n_pair = counts.sum(-1)
    num_votes = n_pair.sum(0) + n_pair.sum(1)
    elo = online_elo(a, b, outcome, K, config.elo_k, config.anchor_rating)
    return Leaderboard(rating, boot_lo, boot_hi, sand_lo, sand_hi, rank_from_intervals(lo, hi), elo, num_votes, tie_nu)


# ----------------------------------------------------------------------------------------------------------------------
# Outlier voters


def voter_outlier_z(a: np.ndarray, b: np.ndarray, outcome: np.ndarray, voter: np.ndarray, theta: np.ndarray,
                    min_votes: int = 10) -> dict[int, float]:
    """How unlikely each voter's decisive votes are under the fitted ratings, as a z-score (low = suspicious).

    For each decisive vote the log-probability of what the voter chose is compared with its expectation under the
    model; summed over a voter's votes and standardised, honest voters score around 0 and a voter who picks at random
    or favours weak models scores far below. Voters with fewer than min_votes decisive votes are not scored.
    Returns {voter index: z}. theta: [K] logits (use rating / ELO_PER_LOGIT).
    """
    a, b, outcome, voter = (np.asarray(x, np.int64) for x in (a, b, outcome, voter))
    keep = outcome != TIE
    a, b, outcome, voter = a[keep], b[keep], outcome[keep], voter[keep]
    p = 1.0 / (1.0 + np.exp(theta[b] - theta[a]))  # P(A wins)
    p = np.clip(p, 1e-12, 1 - 1e-12)
    observed = np.where(outcome == A_WINS, np.log(p), np.log1p(-p))
    expected = p * np.log(p) + (1 - p) * np.log1p(-p)
    variance = p * (1 - p) * (np.log(p) - np.log1p(-p)) ** 2
    num_voters = int(voter.max()) + 1 if voter.size else 0
    n = np.bincount(voter, minlength=num_voters)
    obs = np.bincount(voter, observed, minlength=num_voters)
    exp = np.bincount(voter, expected, minlength=num_voters)
    var = np.bincount(voter, variance, minlength=num_voters)
    return {v: float((obs[v] - exp[v]) / np.sqrt(max(var[v], 1e-12))) for v in np.flatnonzero(n >= min_votes).tolist()}
