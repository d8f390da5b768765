"""Rating maths against hand-computed cases, plus statistical checks that the intervals mean what they say."""

import numpy as np
import pytest

from incasa.arena.ratings import (A_WINS, B_WINS, ELO_PER_LOGIT, TIE, RatingConfig, cell_counts, fit_bt,
                                  leaderboard, online_elo, rank_from_intervals, voter_outlier_z)

MLE = RatingConfig(prior_sd_elo=0.0)  # pure maximum likelihood for the hand-computed cases


def votes(*triples):
    a, b, o = zip(*triples)
    return np.array(a), np.array(b), np.array(o)


def test_two_models_three_to_one_is_400_log10_3():
    # P(0 beats 1) = 3/4 -> theta_0 - theta_1 = ln 3 -> 400 log10(3) = 190.85 Elo points.
    a, b, o = votes((0, 1, A_WINS), (0, 1, A_WINS), (1, 0, B_WINS), (1, 0, A_WINS))
    lb = leaderboard(a, b, o, 2, MLE)
    assert lb.rating[0] == 1000.0
    assert lb.rating[0] - lb.rating[1] == pytest.approx(400 * np.log10(3), abs=1e-6)
    # Sandwich = model-based here: H = n p (1-p) = 0.75, M = 3 (1/4)^2 + (3/4)^2 = 0.75 -> var = 1/0.75.
    se = (lb.rating[1] - lb.sand_lo[1]) / 1.96 / ELO_PER_LOGIT
    assert se == pytest.approx(np.sqrt(1 / 0.75), rel=1e-6)
    assert lb.num_votes.tolist() == [4, 4]


def test_ties_count_half_and_shrink_the_sandwich():
    # 2 wins + 2 ties = 3 effective wins of 4: the same rating gap as 3-1, but the per-vote scores are smaller:
    # M = 2 (1/4)^2 + 2 (1/2 - 3/4)^2 = 0.25, H = 0.75 -> var = 0.25 / 0.75^2 = 4/9.
    a, b, o = votes((0, 1, A_WINS), (0, 1, A_WINS), (0, 1, TIE), (1, 0, TIE))
    lb = leaderboard(a, b, o, 2, MLE)
    assert lb.rating[0] - lb.rating[1] == pytest.approx(400 * np.log10(3), abs=1e-6)
    se = (lb.sand_hi[1] - lb.rating[1]) / 1.96 / ELO_PER_LOGIT
    assert se == pytest.approx(2 / 3, rel=1e-6)


def test_davidson_closed_form():
    # 2 wins, 1 loss, 2 ties: P(win):P(loss):P(tie) = 2:1:2 -> pi_0/pi_1 = 2, nu * sqrt(2) = 2 -> nu = sqrt(2).
    a, b, o = votes((0, 1, A_WINS), (0, 1, A_WINS), (0, 1, B_WINS), (0, 1, TIE), (1, 0, TIE))
    lb = leaderboard(a, b, o, 2, RatingConfig(prior_sd_elo=0.0, ties="davidson"))
    assert lb.rating[0] - lb.rating[1] == pytest.approx(400 * np.log10(2), abs=1e-3)
    assert lb.tie_nu == pytest.approx(np.sqrt(2), rel=1e-4)
    assert lb.sand_lo[1] < lb.rating[1] < lb.sand_hi[1]


def test_three_models_closed_form():
    # Chain 0 > 1 > 2 with 2:1 records on each link and 0-2 never compared: the MLE makes each link exactly ln 2.
    a, b, o = votes((0, 1, A_WINS), (0, 1, A_WINS), (0, 1, B_WINS), (1, 2, A_WINS), (1, 2, A_WINS), (1, 2, B_WINS))
    lb = leaderboard(a, b, o, 3, MLE)
    step = 400 * np.log10(2)
    np.testing.assert_allclose(lb.rating, [1000, 1000 - step, 1000 - 2 * step], atol=1e-6)


def test_model_that_never_wins_gets_a_finite_rating_and_the_last_rank():
    a, b, o = votes(*[(0, 2, A_WINS)] * 10, *[(1, 2, A_WINS)] * 10, *[(0, 1, A_WINS)] * 5, *[(0, 1, B_WINS)] * 5)
    lb = leaderboard(a, b, o, 3)
    assert np.all(np.isfinite(lb.rating)) and np.all(np.isfinite(lb.boot_lo))
    assert lb.rating[2] < lb.rating[1] - 300
    assert lb.rank.tolist() == [1, 1, 3]
    with pytest.raises(ValueError, match="linked"):  # without the prior: a never-winner is fine, islands are not
        leaderboard(*votes((0, 1, A_WINS), (2, 3, A_WINS)), 4, MLE)


def test_prior_is_weak_next_to_data():
    rng = np.random.default_rng(1)
    a = rng.integers(0, 4, 4000)
    b = (a + rng.integers(1, 4, 4000)) % 4
    o = np.where(rng.random(4000) < 1 / (1 + np.exp(-(a - b) * 0.3)), B_WINS, A_WINS)
    with_prior, mle = leaderboard(a, b, o, 4), leaderboard(a, b, o, 4, MLE)
    half_width = (mle.boot_hi - mle.boot_lo)[1:] / 2
    assert np.all(np.abs(with_prior.rating - mle.rating)[1:] < 0.05 * half_width)


def test_cell_counts_orientation():
    counts = cell_counts(*votes((1, 0, A_WINS), (0, 1, B_WINS), (1, 0, TIE), (0, 2, A_WINS)), 3)
    assert counts[0, 1].tolist() == [0, 2, 1]  # model 1 beat 0 twice, one tie
    assert counts[0, 2].tolist() == [1, 0, 0]
    assert counts.sum() == 4 and counts[1, 0].sum() == 0
    with pytest.raises(ValueError, match="itself"):
        cell_counts(*votes((1, 1, A_WINS)), 3)
    with pytest.raises(ValueError, match="indices"):
        cell_counts(*votes((0, 3, A_WINS)), 3)


def test_batched_fit_matches_single_fits():
    rng = np.random.default_rng(0)
    counts = rng.integers(0, 20, size=(5, 4, 4, 3)).astype(float) * np.triu(np.ones((4, 4)), 1)[None, :, :, None]
    batched = fit_bt(counts)
    for k in range(5):
        np.testing.assert_allclose(batched[k], fit_bt(counts[k : k + 1])[0], atol=1e-9)


def test_rank_rule():
    lo = np.array([1100.0, 1050.0, 900.0, 800.0])
    hi = np.array([1200.0, 1150.0, 1060.0, 950.0])
    # Model 2's upper bound 1060 is below model 0's lower bound 1100 (but not model 1's 1050); model 3 is below all.
    assert rank_from_intervals(lo, hi).tolist() == [1, 1, 2, 3]


def test_online_elo_by_hand():
    r = online_elo(*votes((0, 1, A_WINS), (0, 1, TIE)), 2, k=32)
    first = 1000 + 32 * 0.5  # expected 0.5 at equal ratings
    expected = 1 / (1 + 10 ** ((2000 - first - first) / 400))  # 1016 vs 984
    assert r[0] == pytest.approx(first + 32 * (0.5 - expected))
    assert r.sum() == pytest.approx(2000)


def test_config_errors():
    a, b, o = votes((0, 1, A_WINS))
    with pytest.raises(ValueError, match="100 bootstrap"):
        leaderboard(a, b, o, 2, RatingConfig(bootstrap_rounds=50))
    with pytest.raises(ValueError, match="anchor"):
        leaderboard(a, b, o, 2, RatingConfig(anchor=5))
    with pytest.raises(ValueError, match="tie"):
        leaderboard(a, b, o, 2, RatingConfig(ties="davidson"))


def simulate(true_theta, n, rng, tie_rate=0.1):
    K = true_theta.size
    a = rng.integers(0, K, n)
    b = (a + rng.integers(1, K, n)) % K
    p = 1 / (1 + np.exp(true_theta[b] - true_theta[a]))
    u = rng.random(n)
    return a, b, np.where(u < tie_rate, TIE, np.where(u < tie_rate + (1 - tie_rate) * p, A_WINS, B_WINS))


def test_intervals_cover_the_truth():
    # 40 simulated arenas of 6 models x ~200 votes each: both kinds of 95% interval hold the true (anchored) rating
    # about 95% of the time. 200 interval checks -> a binomial sd of ~1.5 points; we accept 89%-99%.
    rng = np.random.default_rng(7)
    hits_boot = hits_sand = total = 0
    for _ in range(40):
        theta = rng.normal(0, 0.8, 6)
        lb = leaderboard(*simulate(theta, 600, rng, tie_rate=0.0), 6, RatingConfig(seed=int(rng.integers(1 << 30))))
        truth = 1000 + ELO_PER_LOGIT * (theta - theta[0])
        hits_boot += np.sum((lb.boot_lo <= truth) & (truth <= lb.boot_hi)) - 1  # the anchor is exact by construction
        hits_sand += np.sum((lb.sand_lo <= truth) & (truth <= lb.sand_hi)) - 1
        total += 5
    assert 0.89 <= hits_boot / total <= 0.99, hits_boot / total
    assert 0.89 <= hits_sand / total <= 0.99, hits_sand / total


def test_outlier_voter_stands_out():
    rng = np.random.default_rng(3)
    theta = np.array([1.5, 0.5, -0.5, -1.5])
    a, b, o = simulate(theta, 3000, rng, tie_rate=0.0)
    voter = rng.integers(0, 30, a.size)  # 30 honest voters
    bad = voter == 0  # voter 0 always picks the weaker model
    o = np.where(bad, np.where(theta[a] < theta[b], A_WINS, B_WINS), o)
    z = voter_outlier_z(a, b, o, voter, theta)
    assert z[0] < -6
    assert all(abs(z[v]) < 4 for v in range(1, 30))


def test_davidson_derivatives_match_finite_differences():
    from incasa.arena.ratings import _davidson_grad_hess, _wins_ties

    rng = np.random.default_rng(5)
    counts = rng.integers(0, 9, size=(4, 4, 3)).astype(float) * np.triu(np.ones((4, 4)), 1)[:, :, None]
    W, T = _wins_ties(counts[None])

    def loglik(params):  # straight from the model's probabilities, one unordered pair at a time
        theta, nu, total = params[:4], np.exp(params[4]), 0.0
        for i in range(4):
            for j in range(i + 1, 4):
                pi, pj, tie = np.exp(theta[i]), np.exp(theta[j]), nu * np.exp((theta[i] + theta[j]) / 2)
                z = pi + pj + tie
                total += W[0, i, j] * np.log(pi / z) + W[0, j, i] * np.log(pj / z) + T[0, i, j] * np.log(tie / z)
        return total - 0.5 * 0.3 * (theta @ theta) - 0.5 * 0.2 * params[4] ** 2

    params = np.array([0.3, -0.2, 0.5, -0.1, np.log(0.7)])
    g, H = _davidson_grad_hess(params[None, :4], params[None, 4], W, T, 0.3, 0.2)
    h = 1e-5
    eye = np.eye(5) * h
    numeric_g = np.array([(loglik(params + e) - loglik(params - e)) / (2 * h) for e in eye])
    np.testing.assert_allclose(g[0], numeric_g, rtol=1e-6, atol=1e-6)
    grad = lambda p: _davidson_grad_hess(p[None, :4], p[None, 4], W, T, 0.3, 0.2)[0][0]  # noqa: E731
    numeric_H = np.stack([(grad(params + e) - grad(params - e)) / (2 * h) for e in eye])
    np.testing.assert_allclose(H[0], numeric_H, rtol=1e-5, atol=1e-5)


def test_davidson_recovers_the_tie_parameter():
    rng = np.random.default_rng(11)
    theta, nu = np.array([0.8, 0.0, -0.6, 0.3]), 0.5
    a = rng.integers(0, 4, 20000)
    b = (a + rng.integers(1, 4, 20000)) % 4
    pa, pb, pt = np.exp(theta[a]), np.exp(theta[b]), nu * np.exp((theta[a] + theta[b]) / 2)
    u = rng.random(a.size) * (pa + pb + pt)
    o = np.where(u < pa, A_WINS, np.where(u < pa + pb, B_WINS, TIE))
    lb = leaderboard(a, b, o, 4, RatingConfig(ties="davidson"))
    assert lb.tie_nu == pytest.approx(nu, rel=0.05)
    truth = 1000 + ELO_PER_LOGIT * (theta - theta[0])
    assert np.all((lb.boot_lo <= truth + 1e-9) & (truth - 1e-9 <= lb.boot_hi))
    assert np.all((lb.sand_lo <= truth + 1e-9) & (truth - 1e-9 <= lb.sand_hi))
