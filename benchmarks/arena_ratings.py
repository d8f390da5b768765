"""How honest are the arena's leaderboard intervals, and how fast is a refit? (incasa/arena/ratings.py)

Simulated voters with known strengths over 20 models: true ratings drawn from N(1000, 150^2) Elo, every vote a
Bradley-Terry draw between a uniformly chosen pair (no ties, so the model fitted is the model simulated). For 100,
500, 2,000 and 10,000 votes per model (a vote counts for both of its models, so N = votes_per_model * 20 / 2) it
repeats the whole arena `--reps` times and reports
  - the mean 95% CI half-width (bootstrap, 100 rounds, normal interval; and sandwich), in Elo points,
  - the mean Spearman rank correlation between fitted and true ratings,
  - coverage: how often the true rating (relative to the anchor) lies inside the interval, over the 19 non-anchor
    models and all repetitions (goal >= 93%) - for the normal bootstrap interval (the default), the sandwich
    interval, and the percentile bootstrap interval (LMArena's choice, shown for comparison).
A Davidson row repeats the 500-votes case with ties drawn from Davidson's model (nu = 0.5) and fitted with it.
Then the refit time for 1,000,000 votes and 100 bootstrap rounds on ONE core (BLAS threads pinned to 1 before numpy
is imported): aggregation into cells + fit + bootstrap + sandwich (goal < 10 s), and the full `leaderboard()` call,
which adds the online-Elo column (a Python loop over the votes in time order).

    python benchmarks/arena_ratings.py [--reps 40]
"""

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):  # one core, as the goal says
    os.environ[_var] = "1"

import argparse  # noqa: E402
import datetime  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402
from scipy.stats import spearmanr  # noqa: E402

from incasa.arena import ratings  # noqa: E402
from incasa.arena.ratings import A_WINS, B_WINS, ELO_PER_LOGIT, TIE, RatingConfig  # noqa: E402

K = 20


def simulate(theta: np.ndarray, n: int, rng: np.random.Generator, nu: float = 0.0):
    a = rng.integers(0, K, n)
    b = (a + rng.integers(1, K, n)) % K
    pa, pb = np.exp(theta[a]), np.exp(theta[b])
    pt = nu * np.sqrt(pa * pb)
    u = rng.random(n) * (pa + pb + pt)
    return a, b, np.where(u < pa, A_WINS, np.where(u < pa + pb, B_WINS, TIE))


def run_case(votes_per_model: int, reps: int, rng: np.random.Generator, ties: str = "half") -> dict:
    n = votes_per_model * K // 2
    half_boot, half_sand, rho, cover_boot, cover_sand, cover_perc, total = [], [], [], 0, 0, 0, 0
    for _ in range(reps):
        true_elo = rng.normal(1000, 150, K)
        theta = (true_elo - 1000) / ELO_PER_LOGIT
        a, b, o = simulate(theta, n, rng, nu=0.5 if ties == "davidson" else 0.0)
        seed = int(rng.integers(1 << 31))
        lb = ratings.leaderboard(a, b, o, K, RatingConfig(ties=ties, seed=seed))
        lb_perc = ratings.leaderboard(a, b, o, K, RatingConfig(ties=ties, seed=seed, bootstrap_ci="percentile"))
        truth = 1000 + (true_elo - true_elo[0])  # anchored like the fit: model 0 at 1000
        others = np.arange(1, K)
        half_boot.append(np.mean((lb.boot_hi - lb.boot_lo)[others] / 2))
        half_sand.append(np.mean((lb.sand_hi - lb.sand_lo)[others] / 2))
        rho.append(spearmanr(lb.rating, true_elo).statistic)
        cover_boot += int(np.sum((lb.boot_lo <= truth) & (truth <= lb.boot_hi)) - 1)
        cover_sand += int(np.sum((lb.sand_lo <= truth) & (truth <= lb.sand_hi)) - 1)
        cover_perc += int(np.sum((lb_perc.boot_lo <= truth) & (truth <= lb_perc.boot_hi)) - 1)
        total += K - 1
    return {"votes_per_model": votes_per_model, "ties": ties, "num_votes": n, "reps": reps,
            "ci_half_width_bootstrap": float(np.mean(half_boot)), "ci_half_width_sandwich": float(np.mean(half_sand)),
            "spearman": float(np.mean(rho)), "coverage_bootstrap": cover_boot / total,
            "coverage_sandwich": cover_sand / total, "coverage_bootstrap_percentile": cover_perc / total,
            "intervals_checked": total}


def time_refit(rng: np.random.Generator, n: int = 1_000_000, rounds: int = 100) -> dict:
    theta = rng.normal(0, 150 / ELO_PER_LOGIT, K)
    a, b, o = simulate(theta, n, rng)
    times = []
    for _ in range(3):
        start = time.perf_counter()
        counts = ratings.cell_counts(a, b, o, K)
        fit = ratings.fit_bt(counts[None])[0]
        ratings.fit_bt(ratings.bootstrap_counts(counts, rounds, np.random.default_rng(0)), min_precision=1e-3)
        scores, cell_n, H = ratings._bt_scores_hessian(counts, fit, ratings._prior_precision(400.0))
        ratings.sandwich_se(scores, cell_n, H, 0, K)
        times.append(time.perf_counter() - start)
    start = time.perf_counter()
    ratings.leaderboard(a, b, o, K, RatingConfig(bootstrap_rounds=rounds))
    full = time.perf_counter() - start
    return {"num_votes": n, "bootstrap_rounds": rounds, "refit_s_best_of_3": min(times),
            "leaderboard_with_online_elo_s": full, "goal_s": 10.0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=40, help="simulated arenas per size")
    parser.add_argument("--out", default="benchmarks/results/arena_ratings.json")
    args = parser.parse_args()
    rng = np.random.default_rng(2026)
    console = Console()
    cases = []
    for vpm in (100, 500, 2000, 10000):
        cases.append(run_case(vpm, args.reps, rng))
        console.log(f"{vpm} votes/model done")
    cases.append(run_case(500, args.reps, rng, ties="davidson"))
    timing = time_refit(rng)

    table = Table(title=f"Bradley-Terry over {K} models, {args.reps} simulated arenas per row")
    for col in ("votes/model", "ties", "votes", "CI ± boot", "CI ± sandwich", "Spearman", "cover boot", "cover sand",
                "cover perc."):
        table.add_column(col, justify="right")
    for c in cases:
        table.add_row(str(c["votes_per_model"]), c["ties"], f"{c['num_votes']:,}",
                      f"{c['ci_half_width_bootstrap']:.1f}",
                      f"{c['ci_half_width_sandwich']:.1f}", f"{c['spearman']:.3f}", f"{c['coverage_bootstrap']:.1%}",
                      f"{c['coverage_sandwich']:.1%}", f"{c['coverage_bootstrap_percentile']:.1%}")
    console.print(table)
    console.print(f"refit of {timing['num_votes']:,} votes with {timing['bootstrap_rounds']} bootstrap rounds on one "
                  f"core: {timing['refit_s_best_of_3']:.2f} s (goal < 10 s); full leaderboard() including online "
                  f"Elo: {timing['leaderboard_with_online_elo_s']:.2f} s")

    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    except (subprocess.CalledProcessError, FileNotFoundError):
        commit = "unknown"
    result = {"benchmark": "arena_ratings", "date": datetime.datetime.now(datetime.UTC).isoformat(), "commit": commit,
              "device": f"{platform.processor() or platform.machine()} ({os.cpu_count()} cores, 1 used), CPU only",
              "num_models": K, "true_rating_sd_elo": 150, "cases": cases, "timing": timing}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps(result, indent=1))
    os.replace(tmp, out)
    console.print(f"wrote {out}")


if __name__ == "__main__":
    main()
