"""Curated word lists per category and language: the guardrail layer a reviewer can read and edit.

The lists live in `data/lexicons.json` (hand-written for incasa; see data/README.md). They are matched on the
output of `normalize()` — lower-case, accent-free, de-obfuscated text — as whole words, with a trailing `*`
matching any ending ("decapitat*" covers decapitated, decapitato, decapitata...). Every term is normalised with
the same function when loaded, so the file may be written with accents ("Hakenkreuz", "niña").

A category fires in one of three ways, each with a fixed score that `policy.py` compares with its thresholds:

    strong  one term is enough ("child porn", "sarin", "swastika")                      score 1.0
    pairs   one term from each of two named sets ("minor" and "sexual";              score 0.95
            "public_figure" and "realism_or_harm_cue"); a pair of one set is a plain list of terms (used by
            the soft categories adult_nudity and drugs)
    weak    one named set alone, a hint worth a warning (a public figure's name)      score 0.55
    ages    numbers under 18 followed by an age unit ("12 year old", "12yo", "di 12 anni") or stated about a
            person ("she's 15", "sie ist 14") count as the "minor" set

Glued words: `normalize()` joins spaced-out letters, but "s i t u a z i o n e s e s s u a l e" becomes one
token "situazionesessuale" — the spaces between words were as wide as those between letters. German writes
compounds the same way ("Hakenkreuzfahne"). So inside tokens of 12 or more letters, terms of 5 or more
letters are also searched as plain substrings.

A set may also take a long list of names from a file of its own: `"name_lists": {"public_figure":
"public_figures.json"}` (since the fifteenth round: several thousand public figures per region, written by hand
and filtered by scripts/name_lists.py). Those names, and the set's hand-written ones, are matched as whole words
only, never inside glued tokens ("macronutrients" holds no Macron).
The same set gives the classifier its placeholder word for a name (classifier.NAME_TOKEN), so adding a name to the
file reaches both without retraining.

And `except` terms ("awareness", "prevention", "manji", "bath bomb") cancel the lexicon's vote for that
category — they never cancel the learned classifier, which sees the whole sentence.

Word lists are precise and explainable but brittle: they miss paraphrase and euphemism, and shared words
("shooting", "breast", "killer") must not sit alone in a strong list. That is why the learned classifier
(`classifier.py`) votes as well; `policy.check_prompt` takes the higher of the two scores.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from incasa.safety.normalize import normalize

DEFAULT_LEXICONS = Path(__file__).parent / "data" / "lexicons.json"

STRONG_SCORE = 1.0
PAIR_SCORE = 0.95
WEAK_SCORE = 0.55

# "12 year old", "12yo", "12 jahrigen", "14 J.", "di 12 anni", "de 12 anos", "de 12 ans" (after normalize()).
_AGE = re.compile(r"\b(\d{1,2}) ?(?:yo|y o|yr|yrs|year|years|jahr\w*|jahrig\w*|j|anni|anno|anos|ano|ans|an)\b")
# ... and an age stated about a person without a unit: "she's 15", "aged 12", "sie ist 14", "ella tiene 13".
# Not "only 10" or "just 12": those are as often prices and counts.
_AGE_STATED = re.compile(r"\b(?:she s|he s|she is|he is|aged|sie ist|er ist|ella tiene|el tiene) (\d{1,2})\b")
ADULT_AGE = 18


@dataclass(frozen=True)
class LexiconHit:
    category: str
    score: float
    terms: tuple[str, ...]  # the matched words, for the decision's reason


def _compile(terms: list[str]) -> re.Pattern | None:
    """One regex per word list: whole words, `*` = any word ending; longest alternatives first."""
    parts = set()
    for term in terms:
        wildcard = term.endswith("*")
        words = normalize(term.rstrip("*"))
        if not words:
            raise ValueError(f"lexicon term {term!r} is empty after normalisation")
        parts.add(re.escape(words) + (r"[a-z0-9]*" if wildcard else ""))
    if not parts:
        return None
    alternation = "|".join(sorted(parts, key=len, reverse=True))
    return re.compile(rf"(?<![a-z0-9])(?:{alternation})(?![a-z0-9])")


GLUED_TOKEN_MIN = 12
GLUED_TERM_MIN = 5


def _compile_glued(terms: list[str]) -> re.Pattern | None:
    """Substring search for long-enough terms, used inside glued tokens only (see the module docstring)."""
    parts = {re.escape(normalize(t.rstrip("*")).replace(" ", "")) for t in terms}
    parts = sorted((p for p in parts if len(p) >= GLUED_TERM_MIN), key=len, reverse=True)
    return re.compile("|".join(parts)) if parts else None


def _flatten(by_language: dict[str, list[str]]) -> list[str]:
    return [term for language, terms in by_language.items() if not language.startswith("_") for term in terms]


@dataclass(frozen=True)
class Lexicons:
    sets: dict[str, re.Pattern | None]
    strong: dict[str, re.Pattern | None]
    glued_sets: dict[str, re.Pattern | None]
    glued_strong: dict[str, re.Pattern | None]
    excepts: dict[str, re.Pattern | None]
    pairs: dict[str, tuple[tuple[str, ...], ...]]
    weak: dict[str, tuple[tuple[str, ...], ...]]
    ages: frozenset[str]

    @property
    def categories(self) -> tuple[str, ...]:
        return tuple(self.strong)


def name_list_terms(path: str | Path) -> list[str]:
    """Every name of a name-list file (data/public_figures.json): its regions' "full", "short" and "aliases" lists."""
    raw = json.loads(Path(path).read_text(encoding="utf-8"))
    try:
        regions = raw["regions"].values()
        return [name for region in regions for key in ("full", "short", "aliases") for name in region[key]]
    except (KeyError, AttributeError, TypeError) as error:
        raise ValueError(f"{path}: not a name list (regions -> full/short/aliases): {error!r}") from None


@lru_cache(maxsize=4)
def load_lexicons(path: str | Path = DEFAULT_LEXICONS) -> Lexicons:
    raw = json.loads(Path(path).read_text(encoding="utf-8"))
    sets = {name: _compile(_flatten(terms)) for name, terms in raw["sets"].items()}
    glued_sets = {name: _compile_glued(_flatten(terms)) for name, terms in raw["sets"].items()}
    # A set may also take a long list of names from a file of its own ("name_lists": {"public_figure":
    # "public_figures.json"}, relative to this file). Those names are matched as whole words only, never inside
    # glued tokens: thousands of five-letter surnames would turn up inside ordinary German compounds.
    # The set's hand-written names follow the same rule: "macron" inside "macronutrients" is no one.
    for name, file in raw.get("name_lists", {}).items():
        if name not in raw["sets"]:
            raise ValueError(f"{path}: name_lists names an unknown set {name!r}")
        sets[name] = _compile(_flatten(raw["sets"][name]) + name_list_terms(Path(path).parent / file))
        glued_sets[name] = None
    glued_strong = {c: _compile_glued(_flatten(spec.get("strong", {}))) for c, spec in raw["categories"].items()}
    strong, excepts, pairs, weak, ages = {}, {}, {}, {}, set()
    for category, spec in raw["categories"].items():
        strong[category] = _compile(_flatten(spec.get("strong", {})))
        excepts[category] = _compile(_flatten(spec.get("except", {})))
        for key, target in (("pairs", pairs), ("weak", weak)):
            groups = tuple(tuple(group) for group in spec.get(key, []))
            unknown = [name for group in groups for name in group if name not in sets]
            if unknown:
                raise ValueError(f"lexicon category {category!r} names unknown sets {unknown} in {path}")
            target[category] = groups
        if spec.get("ages"):
            ages.add(category)
    return Lexicons(sets, strong, glued_sets, glued_strong, excepts, pairs, weak, frozenset(ages))


def _find(pattern: re.Pattern | None, text: str) -> list[str]:
    return pattern.findall(text) if pattern is not None else []


def _minor_ages(text: str) -> list[str]:
    found = [*_AGE.finditer(text), *_AGE_STATED.finditer(text)]
    return [m.group(0) for m in found if int(m.group(1)) < ADULT_AGE]


def match(normalized: str, lexicons: Lexicons) -> dict[str, LexiconHit]:
    """Every category the word lists see in already-normalised text, with its score and matched terms."""
    found: dict[str, list[str]] = {}
    glued = " ".join(token for token in normalized.split() if len(token) >= GLUED_TOKEN_MIN)

    def in_set(name: str, category: str) -> list[str]:
        if name not in found:
            found[name] = _find(lexicons.sets[name], normalized) + _find(lexicons.glued_sets[name], glued)
        extra = _minor_ages(normalized) if name == "minor" and category in lexicons.ages else []
        return found[name] + extra

    hits: dict[str, LexiconHit] = {}
    for category in lexicons.categories:
        if _find(lexicons.excepts[category], normalized):
            continue
        terms = _find(lexicons.strong[category], normalized) + _find(lexicons.glued_strong[category], glued)
        if terms:
            hits[category] = LexiconHit(category, STRONG_SCORE, tuple(dict.fromkeys(terms)))
            continue
        for group in lexicons.pairs[category]:
            matched = [in_set(name, category) for name in group]
            if all(matched):
                words = tuple(dict.fromkeys(term for terms in matched for term in terms[:2]))
                hits[category] = LexiconHit(category, PAIR_SCORE, words)
                break
        if category in hits:
            continue
        for group in lexicons.weak[category]:
            matched = [in_set(name, category) for name in group]
            if all(matched):
                words = tuple(dict.fromkeys(term for terms in matched for term in terms[:2]))
                hits[category] = LexiconHit(category, WEAK_SCORE, words)
                break
    return hits
