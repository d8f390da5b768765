"""Ablation: would a classifier on MiniLM sentence embeddings make the prompt guardrail generalise better?

    python benchmarks/guardrails_embeddings.py      # ~2 min on 2 busy CPU cores (embedding ~6,500 prompts)

The idea: the character n-gram classifier (incasa/safety/classifier.py) only knows surface pieces of its
training prompts, so new phrasings of a harm (the fresh set) slip through. all-MiniLM-L6-v2, the text encoder the
project already ships (incasa/image/text_encoder.py), maps paraphrases to nearby vectors. This script trains a
multinomial logistic regression on the 384-d pooled, L2-normalised embedding of the normalised prompt, on the
"train" split only, picks its per-category thresholds exactly as classifier.py does (grouped 5-fold CV by
core, <= 1 % out-of-fold benign false positives for all categories together), and reports it alone and OR-ed
with the shipped guardrail, on the held-out split and on the fresh set (never used for any choice here), per
language. It also times one prompt per call.

Result on this data (benchmarks/results/guardrails_embeddings.json, 24 Nov 2026): out of fold it blocks 26 % of
the training red-team at the 1 % budget (the character n-gram classifier: 25 %, with the same rule). On held-out
prompts it blocks 68 % in English but 11-34 % in Italian, Spanish, French and German, with 3.5 % benign false
positives; OR-ed with the guardrail it lifts the fresh set from 66 % to 72 % blocked but raises benign false
positives from 0.2 % to 3.7 % held-out and from 0 % to 6 % fresh. The shared-word benign prompts sit close to
the unsafe ones in MiniLM's space, the model is English-centred, and one prompt costs ~8-17 ms on one CPU
thread (more on a busy machine), over the 5 ms budget. So the guardrail does not ship it.
Not re-run after the third round of training data (25 Nov 2026: 14,020 prompts, the adult_nudity class, which
this script treats as a class that never blocks): the numbers above are those of the 6,340-prompt second round.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).parent))
from common import write_result  # noqa: E402

from incasa.safety.classifier import MIN_THRESHOLD
from incasa.safety.normalize import normalize
from incasa.safety.policy import check_prompt, load_policy
from incasa.safety.promptset import DATA_DIR, HARD_CATEGORIES, LANGUAGES, load_prompt_set

MAX_FP = 0.01  # the same out-of-fold false-positive budget as classifier.cross_validated_thresholds


def embed(encoder, texts: list[str], batch: int = 128) -> np.ndarray:
    import torch

    with torch.inference_mode():
        return np.concatenate(
            [encoder.encode(texts[i : i + batch])["pooled"].numpy() for i in range(0, len(texts), batch)]
        )


def rates(blocked: np.ndarray, labels: np.ndarray, langs: np.ndarray, mask: np.ndarray) -> dict:
    red, benign = mask & np.isin(labels, HARD_CATEGORIES), mask & (labels == "benign")
    out = {"red_team_blocked/all": float(blocked[red].mean()), "benign_fp/all": float(blocked[benign].mean())}
    for lang in LANGUAGES:
        out[f"red_team_blocked/{lang}"] = float(blocked[red & (langs == lang)].mean())
        out[f"benign_fp/{lang}"] = float(blocked[benign & (langs == lang)].mean())
    return out


def main() -> None:
    import torch
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GroupKFold
    from threadpoolctl import threadpool_limits

    from incasa.image.text_encoder import MiniLMEncoder

    torch.set_num_threads(1)
    console = Console(width=150)
    rows = load_prompt_set()
    fresh = [json.loads(line) for line in (DATA_DIR / "fresh_eval.jsonl").read_text(encoding="utf-8").splitlines()]
    every = rows + fresh
    labels = np.array([r["label"] for r in every])
    langs = np.array([r["lang"] for r in every])
    split = np.array([r["split"] for r in rows] + ["fresh"] * len(fresh))
    groups = np.array([r.get("core", "fresh") for r in every])

    encoder = MiniLMEncoder().eval()
    timings = []
    for row in fresh[:60]:
        start = time.perf_counter()
        embed(encoder, [normalize(row["text"])])
        timings.append((time.perf_counter() - start) * 1000)
    x = embed(encoder, [normalize(r["text"]) for r in every])  # (N, 384)

    train = np.where(split == "train")[0]

    def fit(index):
        return LogisticRegression(C=1.0, max_iter=3000, class_weight="balanced").fit(x[index], labels[index])

    def probabilities(model, index):  # (n, 9) in sorted class order, as cross_validated_thresholds sees them
        assert list(model.classes_) == classes
        return model.predict_proba(x[index])

    classes = sorted(set(labels[train]))
    oof = np.zeros((len(every), len(classes)))
    with threadpool_limits(1):
        for fit_idx, val_idx in GroupKFold(n_splits=5).split(train, groups=groups[train]):
            oof[train[val_idx]] = probabilities(fit(train[fit_idx]), train[val_idx])
        model = fit(train)
    # The shipped rule (classifier.cross_validated_thresholds): one threshold per unsafe class on P(class),
    # each allowed MAX_FP / 8 of the benign training prompts out of fold, and never below MIN_THRESHOLD.
    unsafe = [k for k in classes if k in HARD_CATEGORIES]  # "adult_nudity" is a class but never blocks
    benign_train = train[labels[train] == "benign"]
    thresholds = {}
    for k in unsafe:
        scores = np.sort(oof[benign_train, classes.index(k)])[::-1]
        cut = float(np.nextafter(scores[int(np.floor(MAX_FP / len(unsafe) * len(scores)))], 1.0))
        thresholds[k] = max(MIN_THRESHOLD, cut)

    def fires(probs):
        return np.stack([probs[:, classes.index(k)] >= t for k, t in thresholds.items()], axis=1).any(axis=1)

    embedding_blocks = fires(probabilities(model, np.arange(len(every))))
    oof_fired = fires(oof[train])
    oof_recall = float(np.mean(oof_fired[np.isin(labels[train], HARD_CATEGORIES)]))
    policy = load_policy()
    guardrail_blocks = np.array([check_prompt(r["text"], policy).action == "block" for r in every])

    results = {}
    for name, blocked in (
        ("guardrail", guardrail_blocks),
        ("embedding_only", embedding_blocks),
        ("guardrail_or_embedding", guardrail_blocks | embedding_blocks),
    ):
        for part in ("test", "fresh"):
            results[f"{name}/{'held_out' if part == 'test' else part}"] = rates(
                blocked, labels, langs, split == part
            )

    table = Table(title=f"MiniLM embedding classifier (per-category thresholds, <= {MAX_FP:.0%} OOF FP together)")
    table.add_column("classifier / set")
    for lang in (*LANGUAGES, "all"):
        table.add_column(f"{lang} blocked / FP", justify="right")
    for key, r in results.items():
        table.add_row(
            key,
            *[f"{r[f'red_team_blocked/{lang}']:.0%} / {r[f'benign_fp/{lang}']:.1%}" for lang in (*LANGUAGES, "all")],
        )
    console.print(table)
    latency = {
        "mean_ms": statistics.mean(timings),
        "p95_ms": sorted(timings)[int(0.95 * len(timings))],
        "threads": 1,
    }
    console.print(f"MiniLM, one prompt per call: mean {latency['mean_ms']:.1f} ms, p95 {latency['p95_ms']:.1f} ms")
    console.print(f"out-of-fold red-team recall at those thresholds: {oof_recall:.1%}")
    path = write_result(
        "guardrails_embeddings",
        {"thresholds": thresholds, "oof_recall": oof_recall, "latency": latency, **results},
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
