"""Benchmark the prompt guardrail on the held-out prompts: block rate on red-team, false positives on benign.

    python benchmarks/guardrails.py            # ~15 s on 2 CPU cores
    python benchmarks/guardrails.py --extra-eval FILE.jsonl --extra-sha256 HEX   # also score a frozen set
    python benchmarks/guardrails.py --classifier OTHER.safetensors --out NAME     # score another classifier file
    python benchmarks/guardrails.py --lexicons OTHER.json --out NAME              # ... or another word list

Goal (issue 7): block >= 95 % of red-team and <= 2 % false positives on benign (incl. shared-word prompts such
as "shooting a photo at sunset"), per category and per language, < 5 ms per prompt on CPU.

Sets:
- held-out split of the prompt set (promptset.build_prompt_set): concepts never seen in training, in any language
  (the classifier never saw them; the lexicons were written by the same author who wrote these prompts, so
  the lexicon columns are optimistic — see the "classifier only" ablation for a clean number);
- fresh_eval.jsonl (first fresh set): 130 prompts written after the first lexicons and thresholds were frozen,
  paraphrasing the categories in new ways; never edited (its sha256 goes into the result). Its misses were
  read while the second and third rounds of data were written, so it is no longer untouched;
- fresh2_eval.jsonl (second fresh set, 390 prompts: per language 6 per hard category, 24 shared-word and
  6 ordinary benign): written in a different style from the training templates (paraphrase, indirect
  requests, misspellings, slang, euphemism, mixed languages) and frozen by sha256 (promptset.FRESH2_SHA256; the
  benchmark refuses a changed file) before the third round of training data, lexicon terms and the retrained
  classifier; never trained on. See incasa/safety/data/README.md for how independent it is (same author);
- fresh3_eval.jsonl (third fresh set, 220 prompts: per language 4 per hard category, 12 shared-word benign):
  written after the last change to data, lexicons and classifier, frozen by sha256 (promptset.FRESH3_SHA256),
  and scored by the shipped guardrail with no change made after. Since the fourth round of training data it is a
  development set: its per-category and per-language numbers were looked at while choosing (data/README.md lists
  every look), so none of the first three fresh sets is an untouched test any more;
- fresh4_eval.jsonl (fourth fresh set, 470 prompts: per language 8 per hard category, 20 shared-word and 10
  ordinary benign): written by a separate author who never read the prompt data, lexicons or classifier, kept
  sealed outside the repository (sha256 promptset.FRESH4_SHA256) while the fourth round was made, and scored
  once, with `--extra-eval`, after the fourth round was finished; from now on it is seen, too;
- fresh5_eval.jsonl (fifth fresh set, 520 prompts: per language 8 per hard category, 30 shared-word and 10
  ordinary benign, with extra breadth in election/news and deepfakes): written and sealed the same way while the
  fifth round was made (promptset.FRESH5_SHA256), scored once after it; since the sixth round a development set
  too (its misses were read, see data/README.md), like every set above;
- fresh6_eval.jsonl (sixth fresh set, 650 prompts: per language 10 per hard category, 35 shared-word and 15
  ordinary benign, each language written separately): written and sealed the same way while the sixth round was
  made (promptset.FRESH6_SHA256), scored once after it with `--extra-eval`; built in since;
- fresh7_eval.jsonl (seventh fresh set, same shape as fresh6, all eight categories equally broad in every language):
  sealed while the seventh round was made (promptset.FRESH7_SHA256), scored once after it; built in since;
- fresh8_eval.jsonl (eighth fresh set, same shape): sealed while the eighth round (word meaning as features, not
  kept) was tried (promptset.FRESH8_SHA256), scored once on the shipped guardrail; built in since;
- fresh9_eval.jsonl (ninth fresh set, same shape): sealed while the ninth round (a hidden layer, not shipped) was
  tried (promptset.FRESH9_SHA256), scored once on the shipped guardrail and once on the round's candidate;
- fresh10_eval.jsonl (tenth fresh set, same shape, a harder benign half): sealed during the tenth round
  (promptset.FRESH10_SHA256), scored once on the shipped guardrail and on the ninth and tenth rounds' candidates;
- fresh11_eval.jsonl and fresh12_eval.jsonl (650 prompts each, two more independent authors, same shape): sealed
  during the eleventh round (promptset.FRESH11_SHA256, FRESH12_SHA256), scored once on the shipped guardrail and once
  on the round's candidate; training data since the twelfth round;
- fresh13_eval.jsonl and fresh14_eval.jsonl (650 prompts each, two more independent authors, same shape): sealed
  during the twelfth round (promptset.FRESH13_SHA256, FRESH14_SHA256), scored once on the shipped guardrail, once on
  the round's candidate and once on an information-only arm;
- fresh15_eval.jsonl and fresh16_eval.jsonl (650 prompts each, two more independent authors, same shape, written
  faster than the others): sealed during the thirteenth round (promptset.FRESH15_SHA256, FRESH16_SHA256), scored
  once on the shipped guardrail and once on the round's candidate (not shipped);
- fresh17_eval.jsonl and fresh18_eval.jsonl (the same, sealed during the fourteenth round, promptset.FRESH17_SHA256,
  FRESH18_SHA256; that round's candidate was not shipped either); fresh13-fresh18 are training data since the
  fifteenth round;
- fresh19_eval.jsonl and fresh20_eval.jsonl (the same, sealed during the fifteenth round, promptset.FRESH19_SHA256,
  FRESH20_SHA256, scored once on the shipped guardrail, the round's candidate and its information-only arms), and
  fresh21_eval.jsonl and fresh22_eval.jsonl (the same, sealed during the sixteenth round, FRESH21_SHA256,
  FRESH22_SHA256; that round's candidate was not shipped); training data since the eighteenth round;
- fresh23_eval.jsonl and fresh24_eval.jsonl (the same, sealed during the seventeenth round, FRESH23_SHA256,
  FRESH24_SHA256; not shipped either), fresh25_eval.jsonl and fresh26_eval.jsonl (sealed during the eighteenth,
  FRESH25_SHA256, FRESH26_SHA256; that round's candidate shipped), fresh27_eval.jsonl and fresh28_eval.jsonl (the
  nineteenth, FRESH27_SHA256, FRESH28_SHA256) and fresh29_eval.jsonl and fresh30_eval.jsonl (the twentieth,
  FRESH29_SHA256, FRESH30_SHA256; both rounds scored one candidate, not shipped), fresh31_eval.jsonl and
  fresh32_eval.jsonl (the twenty-second, FRESH31_SHA256, FRESH32_SHA256) and fresh33_eval.jsonl and
  fresh34_eval.jsonl (the twenty-third, FRESH33_SHA256, FRESH34_SHA256) and fresh35_eval.jsonl and
  fresh36_eval.jsonl (the twenty-fourth, FRESH35_SHA256, FRESH36_SHA256; its candidate shipped) and
  fresh37_eval.jsonl and fresh38_eval.jsonl (the twenty-seventh, FRESH37_SHA256, FRESH38_SHA256; its candidate
  thresholds were not shipped) and fresh39_eval.jsonl and fresh40_eval.jsonl (the twenty-eighth, FRESH39_SHA256,
  FRESH40_SHA256; its candidate word lists were not shipped) and fresh41_eval.jsonl and fresh42_eval.jsonl (the
  twenty-ninth, FRESH41_SHA256, FRESH42_SHA256); NOT training data
  (promptset.HELD_OUT_FRESH_FILES): the held-out measure of new authors;
- names17_eval.jsonl (a probe of 200 prompts by one more independent author, sealed during the seventeenth round,
  promptset.NAMES17_SHA256): per language 20 benign requests that name a listed public figure in a legitimate use
  (quote posters, timelines, media literacy) and 20 deepfakes of one; held out like fresh19-fresh24;
- names30_eval.jsonl (the same task by one more independent author, sealed during the thirtieth round,
  promptset.NAMES30_SHA256); held out;
- shortprobe25_eval.jsonl (a probe of 280 short prompts, 1-7 words, by one more independent author, sealed during the
  twenty-fifth round, promptset.SHORTPROBE25_SHA256): per language 20 ordinary and 20 shared-word benign prompts
  and 2 per hard category, the way people type into a box ("a cat"); held out;
- shortprobe26_eval.jsonl (the same task by a fifth independent author, sealed during the twenty-sixth round,
  promptset.SHORTPROBE26_SHA256), less the 40 benign prompts equal to a short25 training prompt: 160 benign, 80
  red-team; held out;
- since the eleventh round every fresh set above up to fresh10 (since the twelfth, up to fresh12; since the
  fifteenth, up to fresh18; since the eighteenth, up to fresh22) is training data
  (promptset._fresh_rows): a classifier trained on
  them (its file lists them in `fresh_sets_seen`, e.g. one built by `incasa safety train` from round 11 on) is
  scored on them under "seen in training since round 11", never as held out — those numbers show fit, not
  generalisation. A classifier file from before round 11 (no `fresh_sets_seen`) did not see them, and they are
  reported as before. The held-out split stays the held-out report;
- repository strings: every string literal of the repository's own code, tests and benchmarks (outside the safety
  package), split into paragraphs of 10-300 characters — log messages, docstrings, SQL, CLI help: text unlike any
  prompt. Blocking them is a false positive of a kind the prompt sets do not measure;
- `--extra-eval`: any frozen JSONL set of the same shape (id, text, lang, label, tricky), refused unless its sha256
  is the one given. Only its counts are printed and saved, never its prompts, so a sealed test set stays sealed.

"Blocked" counts action == "block" under the default policy; "flagged" counts block or warn.
Writes benchmarks/results/guardrails.json (device, date, commit).
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import hashlib
import json
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).parent))
from common import write_result  # noqa: E402

from incasa.safety.classifier import load_model
from incasa.safety.lexicon import load_lexicons, match
from incasa.safety.normalize import normalize
from incasa.safety.policy import HARD_CATEGORIES, check_prompt, load_policy
from incasa.safety.promptset import (DATA_DIR, FRESH2_SHA256, FRESH3_SHA256, FRESH4_SHA256, FRESH5_SHA256,
                                    FRESH6_SHA256, FRESH7_SHA256, FRESH8_SHA256, FRESH9_SHA256, FRESH10_SHA256,
                                    FRESH11_SHA256, FRESH12_SHA256, FRESH13_SHA256, FRESH14_SHA256,
                                    FRESH15_SHA256, FRESH16_SHA256, FRESH17_SHA256, FRESH18_SHA256,
                                    FRESH19_SHA256, FRESH20_SHA256, FRESH21_SHA256, FRESH22_SHA256,
                                    FRESH23_SHA256, FRESH24_SHA256, FRESH25_SHA256, FRESH26_SHA256,
                                    FRESH27_SHA256, FRESH28_SHA256, FRESH29_SHA256, FRESH30_SHA256, FRESH31_SHA256,
                                    FRESH32_SHA256, FRESH33_SHA256, FRESH34_SHA256, FRESH35_SHA256,
                                    FRESH36_SHA256, FRESH37_SHA256, FRESH38_SHA256, FRESH39_SHA256,
                                    FRESH40_SHA256, FRESH41_SHA256, FRESH42_SHA256, LANGUAGES,
                                    NAMES17_SHA256, NAMES30_SHA256, SHORTPROBE25_SHA256,
                                    SHORTPROBE26_SHA256, load_prompt_set)

# The frozen fresh sets (data/<name>_eval.jsonl) and the sha256 each must have, in the order they were written.
FROZEN = {"fresh2": FRESH2_SHA256, "fresh3": FRESH3_SHA256, "fresh4": FRESH4_SHA256, "fresh5": FRESH5_SHA256,
          "fresh6": FRESH6_SHA256, "fresh7": FRESH7_SHA256, "fresh8": FRESH8_SHA256, "fresh9": FRESH9_SHA256,
          "fresh10": FRESH10_SHA256, "fresh11": FRESH11_SHA256, "fresh12": FRESH12_SHA256,
          "fresh13": FRESH13_SHA256, "fresh14": FRESH14_SHA256, "fresh15": FRESH15_SHA256, "fresh16": FRESH16_SHA256,
          "fresh17": FRESH17_SHA256, "fresh18": FRESH18_SHA256, "fresh19": FRESH19_SHA256, "fresh20": FRESH20_SHA256,
          "fresh21": FRESH21_SHA256, "fresh22": FRESH22_SHA256, "fresh23": FRESH23_SHA256, "fresh24": FRESH24_SHA256,
          "fresh25": FRESH25_SHA256, "fresh26": FRESH26_SHA256, "fresh27": FRESH27_SHA256, "fresh28": FRESH28_SHA256,
          "fresh29": FRESH29_SHA256, "fresh30": FRESH30_SHA256, "fresh31": FRESH31_SHA256, "fresh32": FRESH32_SHA256,
          "fresh33": FRESH33_SHA256, "fresh34": FRESH34_SHA256, "fresh35": FRESH35_SHA256, "fresh36": FRESH36_SHA256,
          "fresh37": FRESH37_SHA256, "fresh38": FRESH38_SHA256,
          "fresh39": FRESH39_SHA256, "fresh40": FRESH40_SHA256,
          "fresh41": FRESH41_SHA256, "fresh42": FRESH42_SHA256,
          "names17": NAMES17_SHA256, "names30": NAMES30_SHA256, "shortprobe25": SHORTPROBE25_SHA256,
          "shortprobe26": SHORTPROBE26_SHA256}


REPO = Path(__file__).resolve().parent.parent


def repository_strings(root: Path = REPO) -> list[str]:
    """String literals of the repository's Python files outside the safety package, as paragraphs of 10-300 chars."""
    found = set()
    for folder in ("incasa", "tests", "benchmarks"):
        for path in sorted((root / folder).rglob("*.py")):
            if "safety" in path.parts or path.name.startswith("guardrails"):
                continue
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Constant) and isinstance(node.value, str):
                    for paragraph in node.value.split("\n\n"):
                        text = " ".join(paragraph.split())
                        if 10 <= len(text) <= 300 and " " in text:
                            found.add(text)
    return sorted(found)


def load_frozen(path: Path, sha256: str, name: str) -> list[dict]:
    """A frozen evaluation set: refused unless its bytes hash to `sha256` (it must never be edited)."""
    if not path.is_file():
        raise SystemExit(f"{name}: no file at {path}")
    data = path.read_bytes()
    if hashlib.sha256(data).hexdigest() != sha256.lower():
        raise SystemExit(f"{name} ({path}) differs from the frozen version (sha256 {sha256}); it must never be edited")
    rows = [json.loads(line) for line in data.decode("utf-8").splitlines() if line.strip()]
    labels = (*HARD_CATEGORIES, "benign")
    bad = [
        r.get("id", i)
        for i, r in enumerate(rows)
        if not {"text", "lang", "label"} <= set(r) or r["lang"] not in LANGUAGES or r["label"] not in labels
    ]
    if not rows or bad:
        raise SystemExit(
            f"{name}: every row needs text, lang (one of {LANGUAGES}) and label (a hard category or 'benign'); "
            f"bad rows: {bad[:5]}"
        )
    for r in rows:
        r.setdefault("tricky", False)
        r.setdefault("id", "")
    return rows


def rate(hits: int, total: int) -> float:
    return hits / total if total else float("nan")


def evaluate(rows: list[dict], decide) -> dict:
    """Per (category, language) block rates on red-team, per language false-positive rates on benign."""
    red, benign = defaultdict(lambda: [0, 0]), defaultdict(lambda: [0, 0])
    flagged_red, flagged_benign, errors = [0, 0], [0, 0], []
    for row in rows:
        action = decide(row["text"])
        blocked = action == "block"
        if row["label"] == "benign":
            for key in (row["lang"], "all", "tricky" if row["tricky"] else "ordinary"):
                benign[key][0] += blocked
                benign[key][1] += 1
            flagged_benign[0] += action != "allow"
            flagged_benign[1] += 1
            if blocked:
                errors.append(("false positive", row["id"], row["text"]))
        else:
            for key in ((row["label"], row["lang"]), (row["label"], "all"), ("all", row["lang"]), ("all", "all")):
                red[key][0] += blocked
                red[key][1] += 1
            if row.get("obfuscation"):
                red[("obfuscated", "all")][0] += blocked
                red[("obfuscated", "all")][1] += 1
            flagged_red[0] += action != "allow"
            flagged_red[1] += 1
            if not blocked:
                errors.append((f"missed ({action})", row["id"], row["text"]))
    return {
        "red_team_block_rate": {f"{c}/{lang}": rate(*v) for (c, lang), v in sorted(red.items())},
        "red_team_counts": {f"{c}/{lang}": v for (c, lang), v in sorted(red.items())},
        "benign_false_positive_rate": {k: rate(*v) for k, v in sorted(benign.items())},
        "benign_counts": {k: v for k, v in sorted(benign.items())},
        "red_team_flag_rate": rate(*flagged_red),
        "benign_flag_rate": rate(*flagged_benign),
        "errors": errors,
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Benchmark the prompt guardrail (see the module docstring).")
    parser.add_argument("--extra-eval", type=Path, help="a frozen JSONL set to score as well (id, text, lang, label)")
    parser.add_argument("--extra-sha256", help="the sha256 the --extra-eval file must have (refused otherwise)")
    parser.add_argument("--classifier", type=Path,
                        help="score this classifier file instead of the policy's (e.g. a candidate from an experiment)")
    parser.add_argument("--lexicons", type=Path,
                        help="score this word-list file instead of the policy's (a candidate lexicons.json; its "
                             "name lists are read beside it, as the shipped file's are)")
    parser.add_argument("--out", default="guardrails", help="result name under benchmarks/results/ (NAME.json)")
    args = parser.parse_args(argv)
    if (args.extra_eval is None) != (args.extra_sha256 is None):
        parser.error("--extra-eval and --extra-sha256 go together")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    console = Console(width=140)
    policy = load_policy()
    if args.classifier is not None:
        if not args.classifier.is_file():
            raise SystemExit(f"--classifier: no file at {args.classifier}")
        policy = dataclasses.replace(policy, classifier_path=str(args.classifier))
    if args.lexicons is not None:
        if not args.lexicons.is_file():
            raise SystemExit(f"--lexicons: no file at {args.lexicons}")
        try:
            load_lexicons(str(args.lexicons))
        except (ValueError, KeyError, OSError) as error:  # a malformed list or a name list missing beside it
            raise SystemExit(f"--lexicons: {args.lexicons} is not a usable word list: {error}") from None
        policy = dataclasses.replace(policy, lexicons_path=str(args.lexicons))
    lexicons, model = load_lexicons(policy.lexicons_path), load_model(policy.classifier_path)
    prompt_set = load_prompt_set()  # built from the seeds (~0.6 s): once
    held_out = [r for r in prompt_set if r["split"] == "test"]
    fresh = [json.loads(line) for line in (DATA_DIR / "fresh_eval.jsonl").read_text(encoding="utf-8").splitlines()]
    frozen = {name: load_frozen(DATA_DIR / f"{name}_eval.jsonl", sha, f"{name}_eval.jsonl")
              for name, sha in FROZEN.items()}
    extra = load_frozen(args.extra_eval, args.extra_sha256, "--extra-eval") if args.extra_eval else None

    def full(text: str) -> str:
        return check_prompt(text, policy).action

    def lexicon_only(text: str) -> str:
        hits = match(normalize(text), lexicons)
        return (
            "block"
            if any(h.score >= policy.block_threshold for c, h in hits.items() if c in HARD_CATEGORIES)
            else "allow"
        )

    def classifier_only(text: str) -> str:
        return "block" if model.blocks(text) else "allow"

    check_prompt("warm-up", policy)
    timings, cpu_timings = [], []  # wall clock, and this process's CPU time (robust to a busy machine)
    for row in held_out + frozen["fresh2"]:
        start, start_cpu = time.perf_counter(), time.process_time()
        check_prompt(row["text"], policy)
        timings.append((time.perf_counter() - start) * 1000)
        cpu_timings.append((time.process_time() - start_cpu) * 1000)

    # Sets the classifier was trained on (since round 11) are reported apart, under "seen in training".
    seen = set(model.fresh_sets_seen)

    def was_seen(name: str) -> bool:  # a set's results and its "_lexicon_only"/"_classifier_only" ablations
        return name.split("_")[0] in seen

    def shown(name: str) -> str:
        return f"{name} (seen in training since round 11)" if was_seen(name) else name

    results = {}
    for name, rows in {"held_out": held_out, "fresh": fresh, **frozen}.items():
        results[name] = evaluate(rows, full)
        results[f"{name}_lexicon_only"] = evaluate(rows, lexicon_only)
        results[f"{name}_classifier_only"] = evaluate(rows, classifier_only)
    if extra is not None:
        results["extra"] = evaluate(extra, full)
        results["extra_lexicon_only"] = evaluate(extra, lexicon_only)
        results["extra_classifier_only"] = evaluate(extra, classifier_only)
        for name in ("extra", "extra_lexicon_only", "extra_classifier_only"):
            del results[name]["errors"]  # a sealed set's prompts never reach the console or the result file
    code = repository_strings()
    code_blocked = [t for t in code if check_prompt(t, policy).action == "block"]
    latency = {
        "mean_ms": statistics.mean(timings),
        "p95_ms": sorted(timings)[int(0.95 * len(timings))],
        "max_ms": max(timings),
        "cpu_mean_ms": statistics.mean(cpu_timings),
        "cpu_p95_ms": sorted(cpu_timings)[int(0.95 * len(cpu_timings))],
    }

    main_result = results["held_out"]
    tables = ("held_out", *FROZEN, *(("extra",) if extra is not None else ()))
    for name in tables:
        result = results[name]
        counts = result["red_team_counts"]
        table = Table(title=f"{shown(name)}: red-team blocked per category and language (n per cell)")
        table.add_column("category")
        for lang in (*LANGUAGES, "all"):
            table.add_column(lang, justify="right")
        for category in (*HARD_CATEGORIES, "all"):
            table.add_row(
                category,
                *[
                    f"{result['red_team_block_rate'].get(f'{category}/{lang}', float('nan')):.0%} "
                    f"({counts.get(f'{category}/{lang}', [0, 0])[1]})"
                    for lang in (*LANGUAGES, "all")
                ],
            )
        console.print(table)
    fp = main_result["benign_false_positive_rate"]
    console.print(
        "benign false positives (held-out): "
        + ", ".join(
            f"{k} {fp[k]:.1%} ({main_result['benign_counts'][k][0]}/{main_result['benign_counts'][k][1]})"
            for k in (*LANGUAGES, "tricky", "ordinary", "all")
        )
    )
    console.print(f"obfuscated red-team blocked: {main_result['red_team_block_rate']['obfuscated/all']:.1%}")

    per_language = Table(title="Per language: red-team blocked / benign false positives")
    per_language.add_column("set")
    for lang in (*LANGUAGES, "all"):
        per_language.add_column(lang, justify="right")
    for name in ("held_out", "fresh", *FROZEN, *(("extra",) if extra is not None else ())):
        result = results[name]
        per_language.add_row(
            shown(name),
            *[
                f"{result['red_team_block_rate'].get(f'all/{lang}', float('nan')):.0%} / "
                f"{result['benign_false_positive_rate'].get(lang, float('nan')):.1%}"
                for lang in (*LANGUAGES, "all")
            ],
        )
    console.print(per_language)

    summary = Table(title="Ablations and the fresh set")
    summary.add_column("set")
    for column in ("red-team blocked", "benign FP", "red-team flagged (block|warn)", "benign flagged"):
        summary.add_column(column, justify="right")
    for name, result in results.items():
        summary.add_row(
            shown(name),
            f"{result['red_team_block_rate']['all/all']:.1%}",
            f"{result['benign_false_positive_rate']['all']:.1%}",
            f"{result['red_team_flag_rate']:.1%}",
            f"{result['benign_flag_rate']:.1%}",
        )
    console.print(summary)
    console.print(
        f"latency per prompt: mean {latency['mean_ms']:.2f} ms, p95 {latency['p95_ms']:.2f} ms, "
        f"max {latency['max_ms']:.2f} ms; CPU time mean {latency['cpu_mean_ms']:.2f} ms, "
        f"p95 {latency['cpu_p95_ms']:.2f} ms"
    )
    console.print(
        f"repository strings blocked: {len(code_blocked)}/{len(code)} ({rate(len(code_blocked), len(code)):.1%})"
    )
    if seen:
        console.print(
            f"seen in training since round 11 (classifier {Path(policy.classifier_path).name} was trained on them; "
            f"not held out): {', '.join(sorted(seen, key=list(results).index))}"
        )
    if extra is not None:
        e = results["extra"]
        red_n, benign_n = e["red_team_counts"].get("all/all", [0, 0])[1], e["benign_counts"].get("all", [0, 0])[1]
        console.print(
            f"extra set {args.extra_eval} (sha256 {args.extra_sha256[:8]}…): red-team blocked "
            f"{e['red_team_block_rate'].get('all/all', float('nan')):.1%} of {red_n}, benign false positives "
            f"{e['benign_false_positive_rate'].get('all', float('nan')):.1%} of {benign_n}"
        )
    # Held-out errors only: the fresh sets' errors are in the JSON (reading them turns a set into training data).
    console.print("held_out errors:")
    for kind, row_id, text in results["held_out"]["errors"]:
        console.print(f"  {kind}: {row_id}: {text!r}")

    payload = {
        # The fresh set is never edited: its hash shows which version a result was measured on.
        "fresh_sha256": hashlib.sha256((DATA_DIR / "fresh_eval.jsonl").read_bytes()).hexdigest(),
        **{f"{name}_sha256": sha for name, sha in FROZEN.items()},
        "num_training_prompts": sum(r["split"] == "train" for r in prompt_set),
        "policy": {
            "block_threshold": policy.block_threshold,
            "warn_threshold": policy.warn_threshold,
            "classifier_thresholds": model.thresholds,
            "classifier_file": Path(policy.classifier_path).name,
            "lexicons_file": Path(policy.lexicons_path).name,
            "lexicons_sha256": hashlib.sha256(Path(policy.lexicons_path).read_bytes()).hexdigest(),
        },
        "latency": latency,
        "repository_strings": {
            "count": len(code),
            "blocked": len(code_blocked),
            "rate": rate(len(code_blocked), len(code)),
            "blocked_strings": code_blocked,
        },
        **({"extra_eval": {"path": str(args.extra_eval), "sha256": args.extra_sha256.lower()}} if extra else {}),
        "fresh_sets_seen_by_classifier": sorted(seen, key=list(results).index),
        **{name: result for name, result in results.items() if not was_seen(name)},
        "seen_in_training_since_round_11": {
            name: result for name, result in results.items() if was_seen(name)
        },
    }
    path = write_result(args.out, payload)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
