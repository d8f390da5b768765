"""Merge name lists written by hand into the guardrail's data files, dropping names that are also ordinary words.

Two lists, each written by independent authors per region as `full` names, distinctive `short` forms (a surname, a
mononym, an abbreviation) and `aliases`:

    people         data/public_figures.json (fifteenth round): public figures, for deepfakes and impersonation;
                   the lexicons' public-figure set and the classifier's NAME_TOKEN.
    organisations  data/organisations.json (sixteenth round): news media, public institutions, parties and
                   international organisations, whose authority fake news and forged documents borrow; the
                   lexicons' organisation set, read only by the classifier (ORG_TOKEN).

A listed word that is also an ordinary word ("Swift", "Once", "Ser") would turn innocent prompts into a name, so:

    people         a one-word entry needs at least 4 letters or digits after normalize() ("aoc" is also a French wine
                   label), and must not be a word that the benign training prompts (promptset, "train" split) or
                   the non-prompt texts write mostly in lower case ("Topić" is "topic" once normalised); a name
                   those prompts write capitalised ("a caricature of Macron, labelled satire") stays a name; three
                   more were dropped by eye (NOT_WORDS).
    organisations  every entry, one word or several, needs at least 3 letters or digits, and must not occur in
                   those texts mostly in lower case ("el pais" is "the country"; "El País" the newspaper), unless
                   it is an abbreviation in capitals ("RTS", "INE"), which people type in lower case too; thirteen
                   abbreviations that are words ("NATO" is Italian for "born") were dropped by eye (NOT_WORDS).

Word frequency lists (wordfreq) were tried as a filter for people and dropped: they count names in news text, so
they rate the most famous surnames (Clinton, Erdogan, Modi) as common words.

Every entry is normalised before de-duplication across regions.

    python scripts/name_lists.py people /work/helper/names         # every <region>.json there -> the data file
    python scripts/name_lists.py organisations /work/helper/orgs
    python scripts/name_lists.py people /work/helper/names22 --extend   # keep the file's names, add the new ones

--extend keeps every entry of the current data file as it stands (it passed the filters when it was added; today's
benign prompts could drop a few of them, and that would change the shipped guardrail by the back door), adds only the
new lists' entries that pass the filters and are not already there, and records the added regions under
`extensions`.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import unicodedata
from collections import Counter
from pathlib import Path

from incasa.safety.normalize import normalize

DATA = Path(__file__).resolve().parent.parent / "incasa" / "safety" / "data"
LISTS = {  # kind -> (file, minimum letters, filter multi-word entries too, what it is for)
    "people": ("public_figures.json", 4, False, "Public figures, for the deepfake/impersonation category"),
    "organisations": ("organisations.json", 3, True, "Named organisations (news media, public institutions, "
                      "parties, international organisations), for election and news manipulation"),
}
# One-word entries read by eye after the filters and found to be ordinary words in one of the five languages.
NOT_WORDS = {"jeter": "French 'to throw'", "schwimmer": "German 'swimmer'", "fico": "Italian 'cool', 'fig'",
             "mdr": "French 'mort de rire' (lol)", "dea": "Italian 'goddess'", "gru": "Italian/Spanish 'crane'",
             "haz": "Spanish 'do!', 'beam'", "nato": "Italian 'born'", "tie": "English", "lat": "latitude, Latin",
             "mis": "Spanish 'my'", "sii": "Italian 'be!'", "sapo": "Spanish 'toad'", "pla": "3D-printing plastic",
             "kapo": "a camp prisoner functionary", "dane": "a person from Denmark"}
KINDS = ("full", "short", "aliases")


def benign_texts() -> list[str]:
    """The benign training prompts and the non-prompt texts: the project's evidence of what innocent text says."""
    from incasa.safety.promptset import DATA_DIR, build_prompt_set

    texts = [r["text"] for r in build_prompt_set() if r["label"] == "benign" and r["split"] == "train"]
    return texts + [t["text"] for t in json.loads((DATA_DIR / "nonprompt_en.json").read_text("utf-8"))["texts"]]


def lower_case_words(texts: list[str]) -> set[str]:
    """Normalised words that the texts write mostly in lower case."""
    lower, upper = Counter(), Counter()
    for text in texts:
        for token in re.findall(r"\w+", text):
            (upper if token[0].isupper() else lower)[normalize(token)] += 1
    return {word for word, n in lower.items() if n >= upper[word]}


def _plain(text: str) -> str:
    """Accents off, case kept, anything but letters and digits a space: normalize() without the lower-casing."""
    text = "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c))
    return " ".join(re.sub(r"[^A-Za-z0-9]+", " ", text).split())


def lower_case_phrases(texts: list[str], keys: set[str]) -> set[str]:
    """The keys (normalised entries, any number of words) that the texts write mostly in lower case."""
    pattern = re.compile(r"(?<![A-Za-z0-9])(?:" + "|".join(sorted(map(re.escape, keys), key=len, reverse=True))
                         + r")(?![A-Za-z0-9])", re.IGNORECASE)
    lower, upper = Counter(), Counter()
    for text in texts:
        for found in pattern.finditer(_plain(text)):
            (upper if found.group(0)[0].isupper() else lower)[found.group(0).lower()] += 1
    return {key for key, n in lower.items() if n >= upper[key]}


def _acronym(name: str) -> bool:
    """An abbreviation written in capitals ("RTS", "INE", "MI5"): people type them in lower case in prompts too, so
    the lower-case filter would drop the very names it is meant to keep; NOT_WORDS holds the ones that are words."""
    letters = re.sub(r"[^A-Za-z]", "", name)
    return 2 <= len(letters) <= 6 and letters.isupper()


def _write(out: Path, record: dict) -> None:
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps(record, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("kind", choices=sorted(LISTS), help="which list to build")
    parser.add_argument("folder", type=Path, help="a folder of <region>.json name lists (full/short/aliases)")
    parser.add_argument("--out", type=Path, default=None, help="the merged file to write (default: the data file)")
    parser.add_argument("--extend", action="store_true",
                        help="keep the current data file's entries unchanged and add the folder's new ones")
    args = parser.parse_args()
    file, min_letters, phrases, about = LISTS[args.kind]
    out = args.out or DATA / file
    base = json.loads((DATA / file).read_text(encoding="utf-8")) if args.extend else None
    files = sorted(args.folder.glob("*.json"))
    if not files:
        sys.exit(f"no <region>.json files in {args.folder}")
    raws = [json.loads(path.read_text(encoding="utf-8")) for path in files]
    texts = benign_texts()
    if phrases:
        benign = lower_case_phrases(texts, {normalize(n) for raw in raws for k in KINDS for n in raw.get(k, [])} - {""})
    else:
        benign = lower_case_words(texts)
    seen: set[str] = set()
    regions, dropped = {}, {"duplicate": 0, "short": [], "benign_word": [], "read_by_eye": []}
    if base is not None:  # the current entries first, unfiltered: new entries that repeat them count as duplicates
        seen = {normalize(n) for kept in base["regions"].values() for k in KINDS for n in kept[k]}
    for path, raw in zip(files, raws, strict=True):
        region = raw.get("region") or path.stem
        kept = {kind: [] for kind in KINDS}
        for kind in KINDS:
            for name in raw.get(kind, []):
                key = normalize(name)
                if not key or key in seen:
                    dropped["duplicate"] += 1
                    continue
                if phrases or " " not in key:  # it must not be an ordinary word (or phrase) too
                    if len(re.sub(r"[^a-z0-9]", "", key)) < min_letters:
                        dropped["short"].append(name)
                        continue
                    if key in NOT_WORDS:
                        dropped["read_by_eye"].append(name)
                        continue
                    if key in benign and not (phrases and _acronym(name)):
                        dropped["benign_word"].append(name)
                        continue
                seen.add(key)
                kept[kind].append(name)
        regions[region] = kept
    if base is not None:
        added = regions
        regions = dict(base["regions"])
        for region, kept in added.items():
            while region in regions:  # an extension of a listed region gets its own key: "en_world+", "en_world++"
                region += "+"
            regions[region] = kept
        record = {**base, "regions": regions,
                  "extensions": [*base.get("extensions", []),
                                 {"regions": sorted(added), "filters": {"min_letters": min_letters,
                                                                        "lower_case_benign_words": len(benign)},
                                  "dropped": {k: (v if isinstance(v, int) else sorted(v)) for k, v in dropped.items()},
                                  "kept": {r: {k: len(v) for k, v in kept.items()} for r, kept in added.items()}}]}
        _write(out, record)
        print(f"{len(seen)} names in all; added {record['extensions'][-1]['kept']}; dropped "
              f"{ {k: (v if isinstance(v, int) else len(v)) for k, v in dropped.items()} } -> {out}")
        return
    record = {
        "_about": f"{about}: written by hand per region by independent authors (helper sessions) on 2026-11-25 from "
        "their own knowledge, merged and filtered by scripts/name_lists.py (entries that are also words were "
        "dropped; see `dropped`).",
        "filters": {"min_letters": min_letters, "lower_case_benign_words": len(benign)},
        "dropped": {k: (v if isinstance(v, int) else sorted(v)) for k, v in dropped.items()},
        "regions": regions,
    }
    _write(out, record)
    counts = {r: {k: len(v) for k, v in kept.items()} for r, kept in regions.items()}
    lost = {k: (v if isinstance(v, int) else len(v)) for k, v in dropped.items()}
    print(f"{len(seen)} names kept {counts}; dropped {lost} -> {out}")


if __name__ == "__main__":
    main()
