"""Leave one author out: how the prompt classifier's recipe does on an author it never saw, from data already here.

A sealed test set by a new author is the honest measure of the guardrail (benchmarks/guardrails.py), and each one
costs an author and can be scored only once. This benchmark imitates it with the fresh sets that are already
training data (promptset.FRESH_FILES, one independent author each): for each set of `--sets` (default fresh13-
fresh22, the ten written under the sealed protocol with 650 prompts each), fit the classifier's recipe on every
training row except that set's, and score the set. The decision is the whole policy's: the lexicon blocks, or the
classifier reaches its category's threshold, where the thresholds are chosen once on the pooled left-out benign
prompts by the shipped rule (1 % budget over the eight categories, floor 0.7; classifier.thresholds_from_scores).
Those thresholds are in-sample for the pool, the same for every recipe compared, so read the numbers as a ranking of
recipes, not as the shipped guardrail's rates.

Why: grouped cross-validation over concepts (the classifier's out-of-fold numbers) did not predict sealed looks (the
sixteenth round's candidate was the best out of fold and the worst sealed). Leaving an author out did: on fresh19-
fresh22 it gave 86.8 / 85.5 / 89.5 / 87.0 %, against 86.3 / 84.5 / 88.2 / 86.8 % by the shipped classifier of the
fifteenth round, which never saw them (data/README.md, "Seventeenth round"); the eighteenth round chose its recipe
this way, and two new sealed sets confirmed it.

    python benchmarks/guardrails_loao.py                       # the shipped recipe (~15 min on one core)
    python benchmarks/guardrails_loao.py --fresh-weight 1      # a variant, e.g. the fresh sets' rows unweighted
    python benchmarks/guardrails_loao.py --orgs --out guardrails_loao_orgs
    python benchmarks/guardrails_loao.py --kind blend --out guardrails_loao_round24_blend

``--kind blend`` fits the hidden layer of classifier.train_blend on each fold's linear fit (same TF-IDF matrix, same
row weights), so one run reports the linear recipe and the blend from the same fits: the blend under "blend", the
linear recipe under "linear", each with thresholds chosen on its own pooled left-out benign prompts.

Writes benchmarks/results/<out>.json (device, date, commit): pooled and per-set red-team blocked, benign blocked per
language, per-category red-team, the thresholds. Only counts are kept, never prompts.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

sys.path.insert(0, str(Path(__file__).parent))
from common import write_result  # noqa: E402

from incasa.safety.classifier import (DEFAULT_FRESH_WEIGHT, add_hidden, fresh_weights,  # noqa: E402
                                      predict_proba_batch, thresholds_from_scores, train)
from incasa.safety.lexicon import load_lexicons, match  # noqa: E402
from incasa.safety.normalize import normalize  # noqa: E402
from incasa.safety.policy import HARD_CATEGORIES, load_policy  # noqa: E402
from incasa.safety.promptset import LANGUAGES, build_prompt_set, fresh_set_of  # noqa: E402

DEFAULT_SETS = tuple(f"fresh{n}" for n in range(13, 23))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Leave one fresh-set author out at a time (see the module docstring).")
    parser.add_argument("--sets", nargs="+", default=list(DEFAULT_SETS), help="fresh sets to leave out in turn")
    parser.add_argument("--fresh-weight", type=float, default=DEFAULT_FRESH_WEIGHT,
                        help="weight of the fresh sets' training rows (classifier.fresh_weights)")
    parser.add_argument("--c", type=float, default=20.0, help="inverse L2 regularisation (as incasa safety train)")
    parser.add_argument("--no-names", action="store_true", help="names as ordinary words (no @person placeholder)")
    parser.add_argument("--orgs", action="store_true", help="organisations as one placeholder word (@org)")
    parser.add_argument("--kind", choices=("linear", "blend"), default="linear",
                        help="blend: also fit the hidden layer on each fold and report both (see the docstring)")
    parser.add_argument("--out", default="guardrails_loao", help="result name under benchmarks/results/")
    args = parser.parse_args(argv)
    if args.fresh_weight <= 0:
        parser.error(f"--fresh-weight must be positive, got {args.fresh_weight}")
    return args


def _natural(name: str) -> tuple[str, int, str]:
    """Sort key of an authored set's name: "fresh" < "fresh2" < "fresh10", "short25a" < "short25b"."""
    stem = name.rstrip("abcdefghijklmnopqrstuvwxyz")
    prefix = stem.rstrip("0123456789")
    return prefix, int(stem[len(prefix):] or 1), name[len(stem):]


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    console = Console(width=140)
    rows = [r for r in build_prompt_set() if r["split"] == "train"]
    of = [fresh_set_of(r) for r in rows]
    unknown = sorted(set(args.sets) - set(of))
    if unknown:
        raise SystemExit(f"--sets: {unknown} are not training data here (authored sets in the build: "
                         f"{sorted(set(of) - {None}, key=_natural)})")
    weights = fresh_weights(rows, args.fresh_weight)  # (N,)
    policy = load_policy()
    lexicons = load_lexicons(policy.lexicons_path)

    def lexicon_blocks(text: str) -> bool:
        hits = match(normalize(text), lexicons)
        return any(h.score >= policy.block_threshold for c, h in hits.items() if c in HARD_CATEGORIES)

    kinds = ("linear", "blend") if args.kind == "blend" else ("linear",)
    probs, left_out, classes = {k: [] for k in kinds}, [], None  # per kind, per set: (n, C) probabilities
    start = time.time()
    with Progress(console=console) as progress:
        task = progress.add_task("leaving one author out", total=len(args.sets))
        for held in args.sets:
            fit = [i for i, s in enumerate(of) if s != held]
            val = [i for i, s in enumerate(of) if s == held]
            fit_texts, fit_labels = [rows[i]["text"] for i in fit], [rows[i]["label"] for i in fit]
            val_texts = [rows[i]["text"] for i in val]
            model, pipeline = train(fit_texts, fit_labels, c=args.c, name_token=not args.no_names,
                                    org_token=args.orgs, sample_weight=weights[fit])
            probs["linear"].append(pipeline.predict_proba(val_texts))
            if "blend" in kinds:
                blend = add_hidden(model, pipeline, fit_texts, fit_labels, sample_weight=weights[fit])
                probs["blend"].append(predict_proba_batch(blend, pipeline[0].transform(val_texts)))
            classes = list(pipeline.classes_)
            left_out += val
            progress.advance(task)
    minutes = (time.time() - start) / 60

    sub = [rows[i] for i in left_out]
    lexicon_blocked = np.array([lexicon_blocks(r["text"]) for r in sub])  # (M,)
    result = {
        "recipe": {"fresh_weight": args.fresh_weight, "c": args.c, "name_token": not args.no_names,
                   "org_token": args.orgs, "kind": args.kind, "training_rows": len(rows)},
        "sets": list(args.sets),
        "minutes": minutes,
    }
    scored = {k: score(np.concatenate(probs[k]), classes, sub, lexicon_blocked, args.sets) for k in kinds}
    if args.kind == "linear":
        result.update(scored["linear"])
    else:
        result.update(scored)
    for kind, res in scored.items():
        table = Table(title=f"Leaving one author out ({len(args.sets)} authors, {minutes:.1f} min): whole policy, "
                            f"{kind}")
        for column in ("set", "red-team blocked", "benign blocked"):
            table.add_column(column, justify="right" if column != "set" else "left")
        for s in args.sets:
            table.add_row(s, f"{res['per_set_red_team'][s]:.1%}", f"{res['per_set_benign'][s]:.1%}")
        table.add_row("all", f"{res['red_team_blocked']:.2%}", f"{res['benign_blocked']:.2%}")
        console.print(table)
        console.print("per category: " + ", ".join(f"{k} {v:.0%}" for k, v in res["per_category_red_team"].items()))
        console.print("benign per language: "
                      + ", ".join(f"{k} {v:.1%}" for k, v in res["per_language_benign"].items()))
    console.print(f"wrote {write_result(args.out, result)}")


def score(p: np.ndarray, classes: list[str], sub: list[dict], lexicon_blocked: np.ndarray, sets_left_out) -> dict:
    """The whole policy's counts for the left-out rows `sub` with probabilities p ((M, C), columns `classes`):
    thresholds chosen on their pooled benign rows, then the lexicon or the classifier blocks."""
    labels = np.array([r["label"] for r in sub])
    thresholds = thresholds_from_scores(p, classes, labels, [r["core"] for r in sub])["thresholds"]
    by_classifier = np.stack([p[:, classes.index(k)] >= t for k, t in thresholds.items()], axis=1).any(axis=1)
    blocked = by_classifier | lexicon_blocked  # (M,)
    red, benign = np.isin(labels, HARD_CATEGORIES), labels == "benign"
    sets = np.array([fresh_set_of(r) for r in sub])
    langs = np.array([r["lang"] for r in sub])

    def share(mask: np.ndarray) -> float:
        return float(blocked[mask].mean()) if mask.any() else float("nan")

    return {
        "red_team_blocked": share(red),
        "benign_blocked": share(benign),
        "red_team_blocked_by_classifier_alone": float(by_classifier[red].mean()),
        "per_set_red_team": {s: share(red & (sets == s)) for s in sets_left_out},
        "per_set_benign": {s: share(benign & (sets == s)) for s in sets_left_out},
        "per_category_red_team": {k: share(labels == k) for k in HARD_CATEGORIES},
        "per_language_red_team": {lang: share(red & (langs == lang)) for lang in LANGUAGES},
        "per_language_benign": {lang: share(benign & (langs == lang)) for lang in LANGUAGES},
        "counts": {"red_team": int(red.sum()), "benign": int(benign.sum())},
        "thresholds": thresholds,
    }


if __name__ == "__main__":
    main()
