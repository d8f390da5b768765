"""Merge name lists written by hand into incasa/safety/data/public_figures.json, dropping names that are also words.

The guardrail's public-figure set (data/lexicons.json) names ~190 people; real deepfake requests name thousands.
Since the fifteenth round a longer list, written by independent authors per region (`full` names, distinctive
`short` forms such as a surname alone, and `aliases`), extends it: as lexicon terms and as the classifier's one
placeholder word (classifier.NAME_TOKEN). A listed word that is also an ordinary word ("Swift", "Cook", "Gates")
would turn innocent prompts into "a public figure", so every one-word entry must pass two filters:

    - at least 4 letters after normalize() ("aoc" is also a French wine label);
    - not a word that the benign training prompts (promptset, "train" split) or the non-prompt texts use mostly in
      lower case: the project's own evidence of what innocent requests say ("Topić" is "topic" once normalised);
      a name those prompts mention capitalised ("a caricature of Macron, labelled satire") stays a name.

and three more were dropped by eye (NOT_NAMES). Word frequency lists (wordfreq) were tried as a third filter and dropped: they count names in news text, so they
rate the most famous surnames (Clinton, Erdogan, Modi) as common words.

Multi-word names are kept as written. Every entry is normalised before de-duplication across regions.

    python scripts/public_figures.py /work/helper/names      # every <region>.json there -> the data file
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections import Counter
from pathlib import Path

from incasa.safety.normalize import normalize

OUT = Path(__file__).resolve().parent.parent / "incasa" / "safety" / "data" / "public_figures.json"
MIN_LETTERS = 4
# One-word entries read by eye after the two filters and found to be ordinary words in one of the five languages.
NOT_NAMES = {"jeter": "French 'to throw'", "schwimmer": "German 'swimmer'", "fico": "Italian 'cool', 'fig'"}
KINDS = ("full", "short", "aliases")


def lower_case_words() -> set[str]:
    """Normalised words that the benign training prompts and the non-prompt texts write mostly in lower case."""
    from incasa.safety.promptset import DATA_DIR, build_prompt_set

    texts = [r["text"] for r in build_prompt_set() if r["label"] == "benign" and r["split"] == "train"]
    texts += [t["text"] for t in json.loads((DATA_DIR / "nonprompt_en.json").read_text(encoding="utf-8"))["texts"]]
    lower, upper = Counter(), Counter()
    for text in texts:
        for token in re.findall(r"\w+", text):
            (upper if token[0].isupper() else lower)[normalize(token)] += 1
    return {word for word, n in lower.items() if n >= upper[word]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path, help="a folder of <region>.json name lists (full/short/aliases)")
    parser.add_argument("--out", type=Path, default=OUT, help="the merged file to write")
    args = parser.parse_args()
    files = sorted(args.folder.glob("*.json"))
    if not files:
        sys.exit(f"no <region>.json files in {args.folder}")
    benign = lower_case_words()
    seen: set[str] = set()
    regions, dropped = {}, {"duplicate": 0, "short": [], "benign_word": [], "read_by_eye": []}
    for path in files:
        raw = json.loads(path.read_text(encoding="utf-8"))
        region = raw.get("region") or path.stem
        kept = {kind: [] for kind in KINDS}
        for kind in KINDS:
            for name in raw.get(kind, []):
                key = normalize(name)
                if not key or key in seen:
                    dropped["duplicate"] += 1
                    continue
                if " " not in key:  # one word: it must not be an ordinary word too
                    letters = len(re.sub(r"[^a-z]", "", key))
                    if letters < MIN_LETTERS:
                        dropped["short"].append(name)
                        continue
                    if key in NOT_NAMES:
                        dropped["read_by_eye"].append(name)
                        continue
                    if key in benign:
                        dropped["benign_word"].append(name)
                        continue
                seen.add(key)
                kept[kind].append(name)
        regions[region] = kept
    record = {
        "_about": "Public figures, for the deepfake/impersonation category: written by hand per region by independent "
        "authors (helper sessions) on 2026-11-25 from their own knowledge, merged and filtered by "
        "scripts/public_figures.py (one-word entries that are also words were dropped; see `dropped`).",
        "filters": {"min_letters": MIN_LETTERS, "lower_case_benign_words": len(benign)},
        "dropped": {k: (v if isinstance(v, int) else sorted(v)) for k, v in dropped.items()},
        "regions": regions,
    }
    tmp = args.out.with_name(args.out.name + ".tmp")
    tmp.write_text(json.dumps(record, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, args.out)
    counts = {r: {k: len(v) for k, v in kept.items()} for r, kept in regions.items()}
    lost = {k: (v if isinstance(v, int) else len(v)) for k, v in dropped.items()}
    print(f"{len(seen)} names kept {counts}; dropped {lost} -> {args.out}")


if __name__ == "__main__":
    main()
