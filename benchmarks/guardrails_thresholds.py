"""Re-choose the classifier's blocking thresholds on new authors' prompts, and score the choice on other authors.

The shipped thresholds (one per hard category, on P(category)) are chosen by grouped cross-validation on the
*training* rows (classifier.cross_validated_thresholds: a 1 % benign budget split over the eight categories, floor
0.7). New authors' prompts are scored less surely than training rows, so thresholds chosen on new authors' prompts
might block more of their red-team at the same benign cost. This benchmark measures that without retraining: the
same classifier file, other thresholds.

1. Score every prompt of the calibration sets (default fresh23-fresh30: eight held-out authors, never training rows)
   and the test sets (default fresh31-fresh38) once: the lexicon's verdict and the classifier's probabilities. The
   whole policy blocks a prompt iff the lexicon blocks it or some hard category c has P(c) >= t_c; this is checked
   against `check_prompt` on every prompt before anything else (the run stops if one differs).
2. Search the thresholds on the calibration sets: coordinate ascent on red-team blocked minus lambda x benign blocked
   for lambda in a fixed grid, each result then improved by single moves under the constraint itself; kept: the most
   red-team blocked with benign blocked no higher than the shipped thresholds' on the same sets (a reallocation of
   the same benign cost). Grid: 0.70-0.99 by 0.01 and the shipped values (0.70 is the classifier's floor).
   ``--down-only``: a threshold may only move down from the shipped one (round 27's second candidate).
3. Report shipped vs chosen on the test sets: red-team and benign blocked, per category; write
   benchmarks/results/<out>.json (device, date, commit). Only counts are kept, never prompts.

    python benchmarks/guardrails_thresholds.py                      # round 27's first candidate (~2 min)
    python benchmarks/guardrails_thresholds.py --down-only --out guardrails_thresholds_down
    python benchmarks/guardrails_thresholds.py --write /tmp/recalibrated.safetensors   # a copy with the new thresholds

``--write`` saves a copy of the classifier file with the chosen thresholds in its metadata (the weights byte for
byte), for `incasa safety check --policy` with ``classifier_path`` set to it: how a deployment with labelled prompts
of its own users could re-choose them. What round 27 found (incasa/safety/data/README.md, "Twenty-seventh round"):
the free choice raised minors' threshold 0.70 -> 0.90 and lost 10 of 300 minors prompts on fresh31-36; the
down-only choice gained 0.7-0.8 points of red-team on every test pair at no measurable benign cost, short of the +1
point its rule asked, so the shipped thresholds stay.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.progress import track
from rich.table import Table

sys.path.insert(0, str(Path(__file__).parent))
from common import write_result  # noqa: E402
from guardrails import FROZEN, load_frozen  # noqa: E402

from incasa.safety.classifier import MIN_THRESHOLD, load_model  # noqa: E402
from incasa.safety.lexicon import load_lexicons, match  # noqa: E402
from incasa.safety.normalize import normalize  # noqa: E402
from incasa.safety.policy import HARD_CATEGORIES, check_prompt, load_policy  # noqa: E402
from incasa.safety.promptset import DATA_DIR  # noqa: E402

CALIBRATION = tuple(f"fresh{n}" for n in range(23, 31))
TEST = tuple(f"fresh{n}" for n in range(31, 39))
LAMBDAS = (0.5, 1, 1.5, 2, *(round(3 + 0.1 * i, 1) for i in range(11)), 5, 6, 8, 12, 16)


def blocked(lexicon_N: np.ndarray, probs_NC: np.ndarray, thresholds_C: np.ndarray) -> np.ndarray:
    """The whole policy's verdict per prompt: the lexicon blocks, or some category reaches its threshold. (N,)"""
    return lexicon_N | (probs_NC >= thresholds_C).any(axis=1)


def search(lexicon_N: np.ndarray, probs_NC: np.ndarray, red_N: np.ndarray, shipped_C: np.ndarray,
           grid: list[float], down_only: bool = False) -> np.ndarray:
    """Thresholds (C,) blocking the most red-team prompts with benign blocked <= the shipped thresholds' count.

    Coordinate ascent on red - lambda x benign for each lambda of LAMBDAS (a move to an equal value goes to the higher
    threshold), then single moves that block more red-team under the constraint itself; the best feasible result
    over all lambdas, ties to fewer benign and then higher thresholds. ``down_only``: no threshold above the shipped.
    """
    def counts(t: np.ndarray) -> tuple[int, int]:
        b = blocked(lexicon_N, probs_NC, t)
        return int(b[red_N].sum()), int(b[~red_N].sum())

    def values(k: int) -> list[float]:
        return [g for g in grid if not down_only or g <= shipped_C[k]]

    red0, benign0 = counts(shipped_C)
    best = (red0, -benign0, float(shipped_C.sum()), shipped_C.copy())
    for lam in LAMBDAS:
        t = shipped_C.copy()
        for _ in range(20):  # sweeps; converges in 2-4
            moved = False
            for k in range(len(t)):
                red, benign = counts(t)
                current = red - lam * benign
                for g in values(k):
                    trial = t.copy()
                    trial[k] = g
                    r, b = counts(trial)
                    if r - lam * b > current + 1e-9 or (abs(r - lam * b - current) < 1e-9 and g > t[k]):
                        t, current, moved = trial, r - lam * b, True
            if not moved:
                break
        red, benign = counts(t)
        if benign <= benign0:  # improve under the constraint itself: any single move that blocks more red-team
            for _ in range(20):
                moved = False
                for k in range(len(t)):
                    for g in values(k):
                        trial = t.copy()
                        trial[k] = g
                        r, b = counts(trial)
                        if b <= benign0 and (r, -b, g) > (red, -benign, t[k]):
                            t, red, benign, moved = trial, r, b, True
                if not moved:
                    break
            if (red, -benign, float(t.sum())) > best[:3]:
                best = (red, -benign, float(t.sum()), t.copy())
    return best[3]


def score_sets(names: list[str], policy, lexicons, model, categories: list[str]) -> dict:
    """Per set: the lexicon's verdict (N,), P(category) (N, C) and the labels, checked against check_prompt."""
    out = {}
    shipped = np.array([model.thresholds[c] for c in categories])
    for name in track(names, description="scoring the sets"):
        rows = load_frozen(DATA_DIR / f"{name}_eval.jsonl", FROZEN[name], f"{name}_eval.jsonl")
        lexicon = np.array([any(h.score >= policy.block_threshold for c, h in match(normalize(r["text"]),
                                                                                      lexicons).items()
                                if c in HARD_CATEGORIES) for r in rows])
        probs = np.array([[p[c] for c in categories] for p in (model.predict_proba(r["text"]) for r in rows)])
        full = np.array([check_prompt(r["text"], policy).action == "block" for r in rows])
        if not (blocked(lexicon, probs, shipped) == full).all():
            raise SystemExit(f"{name}: the simulated verdict differs from check_prompt; this benchmark's model of "
                             "the policy is out of date")
        out[name] = (lexicon, probs, np.array([r["label"] for r in rows]))
    return out


def tally(scored: dict, names: list[str], thresholds_C: np.ndarray, categories: list[str]) -> dict:
    lexicon = np.concatenate([scored[n][0] for n in names])
    probs = np.concatenate([scored[n][1] for n in names])
    labels = np.concatenate([scored[n][2] for n in names])
    b = blocked(lexicon, probs, thresholds_C)
    red = labels != "benign"
    return {"red_team": [int(b[red].sum()), int(red.sum())], "benign": [int(b[~red].sum()), int((~red).sum())],
            "per_category": {c: [int(b[labels == c].sum()), int((labels == c).sum())] for c in categories}}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Re-choose the blocking thresholds on held-out authors' prompts "
                                                 "and score the choice on other authors (see the module docstring).")
    parser.add_argument("--calibration", nargs="+", default=list(CALIBRATION), help="sets the thresholds are chosen on")
    parser.add_argument("--test", nargs="+", default=list(TEST), help="sets the choice is scored on")
    parser.add_argument("--down-only", action="store_true", help="no threshold may rise above the shipped one")
    parser.add_argument("--write", type=Path, help="save a copy of the classifier file with the chosen thresholds")
    parser.add_argument("--out", default="guardrails_thresholds", help="result name under benchmarks/results/")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.calibration + args.test) - set(FROZEN))
    if unknown:
        parser.error(f"unknown sets {unknown}; choose from {', '.join(FROZEN)}")
    if set(args.calibration) & set(args.test):
        parser.error(f"sets both calibration and test: {sorted(set(args.calibration) & set(args.test))}")
    return args


def write_thresholds(source: Path, target: Path, thresholds: dict[str, float]) -> None:
    """A copy of the classifier file whose metadata holds ``thresholds``; the tensors are copied unchanged."""
    from safetensors import safe_open
    from safetensors.numpy import save_file

    with safe_open(str(source), framework="np") as f:
        metadata, tensors = dict(f.metadata()), {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    if set(json.loads(metadata["thresholds"])) != set(thresholds):
        raise ValueError(f"{source}: its categories differ from {sorted(thresholds)}")
    metadata["thresholds"] = json.dumps(thresholds)
    tmp = target.with_name(target.name + ".tmp")
    save_file(tensors, str(tmp), metadata=metadata)
    tmp.replace(target)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    console = Console(width=140)
    policy = load_policy()
    lexicons, model = load_lexicons(policy.lexicons_path), load_model(policy.classifier_path)
    seen = sorted(set(args.calibration + args.test) & set(model.fresh_sets_seen), key=list(FROZEN).index)
    if seen:
        raise SystemExit(f"{seen} are the classifier's training data: thresholds chosen or scored on them measure "
                         "nothing (choose held-out sets: fresh23 and later, names17, the short probes)")
    if args.write is not None and not args.write.parent.is_dir():
        raise SystemExit(f"--write: no folder {args.write.parent}")
    categories = list(model.thresholds)
    shipped = np.array([model.thresholds[c] for c in categories])
    scored = score_sets(args.calibration + args.test, policy, lexicons, model, categories)
    lexicon = np.concatenate([scored[n][0] for n in args.calibration])
    probs = np.concatenate([scored[n][1] for n in args.calibration])
    red = np.concatenate([scored[n][2] for n in args.calibration]) != "benign"
    grid = sorted({round(MIN_THRESHOLD + 0.01 * i, 2) for i in range(30)} | set(shipped.tolist()))
    chosen = search(lexicon, probs, red, shipped, grid, down_only=args.down_only)

    results = {"calibration_sets": args.calibration, "test_sets": args.test, "down_only": args.down_only,
               "thresholds": {"shipped": dict(zip(categories, shipped.tolist(), strict=True)),
                              "chosen": dict(zip(categories, chosen.tolist(), strict=True))}}
    for part, names in (("calibration", args.calibration), ("test", args.test)):
        results[part] = {"shipped": tally(scored, names, shipped, categories),
                         "chosen": tally(scored, names, chosen, categories)}
    table = Table(title="blocking thresholds chosen on " + ", ".join(args.calibration)
                        + (" (down only)" if args.down_only else ""))
    for col in ("", "threshold shipped", "chosen", "test red-team shipped", "chosen "):
        table.add_column(col)
    for c, t0, t1 in zip(categories, shipped, chosen, strict=True):
        a, b = results["test"]["shipped"]["per_category"][c], results["test"]["chosen"]["per_category"][c]
        table.add_row(c, f"{t0:.3f}", f"{t1:.3f}", f"{a[0]}/{a[1]}", f"{b[0]}/{b[1]}")
    for part in ("calibration", "test"):
        for what in ("red_team", "benign"):
            a, b = results[part]["shipped"][what], results[part]["chosen"][what]
            table.add_row(f"{part}: {what.replace('_', '-')} blocked", "", "", f"{a[0]}/{a[1]} ({a[0] / a[1]:.2%})",
                          f"{b[0]}/{b[1]} ({b[0] / b[1]:.2%})")
    console.print(table)
    if args.write is not None:
        write_thresholds(Path(policy.classifier_path), args.write, results["thresholds"]["chosen"])
        console.print(f"wrote {args.write}")
    console.print(f"wrote {write_result(args.out, results)}")


if __name__ == "__main__":
    main()
