"""Undo the usual tricks people use to slip a prompt past a word list, before anything reads it.

A filter that matches words is only as good as the text it sees. Red-teamers (and curious users) write
"n u d e", "n.u.d.e", "s3x", "nаked" with a Cyrillic "а", "nude" with a zero-width space inside, or "NÜDE"
in full-width letters. `normalize` maps all of these to one plain, lower-case, accent-free form, so that the
lexicons (`lexicon.py`) and the learned classifier (`classifier.py`) only have to know the plain spelling:

    "Ｎ４ｋｅｄ  g\u200birl"      -> "naked girl"
    "s e x y  p.i.c"              -> "sexy pic"
    "kïll"  /  "kіll" (Cyrillic і) -> "kill"

Steps, in order (each one is a small pure function, tested on its own):
1. Unicode NFKC: full-width and compatibility forms become ASCII ("Ｎ" -> "N", "ﬁ" -> "fi").
2. Drop invisible format characters (zero-width space/joiners, soft hyphen, BOM, bidi marks: category Cf).
3. Case-fold (also "ß" -> "ss").
4. Homoglyphs: Cyrillic and Greek letters that look Latin become the Latin letter.
5. Accents: decompose and drop combining marks ("è" -> "e", "ü" -> "u"). Lexicons are normalised the same way,
   so German "Brüste" and "bruste" meet.
6. Spaced-out words: three or more single characters separated by spaces or . - _ * are joined ("n u d e").
7. Leetspeak inside words that also contain letters ("s3x" -> "sex", "k1ll" -> "kill"); pure numbers ("1488",
   "12") and size-like tokens ("12yo", "4k", "3d") are kept, because they carry meaning of their own.
8. Runs of three or more equal letters inside a word collapse to one ("naaaaked" -> "naked"); a word that is
   nothing but one repeated letter keeps three of them ("KKK", "kkkk" -> "kkk": collapsing it to "k" made the
   lexicon's "kkk" match every lone "k" — "ratings [K]" was blocked as a hate symbol); punctuation becomes space.

What it does not undo: misspellings that are not character swaps ("nakid"), words split by other words,
images of text, other scripts' homoglyphs beyond Cyrillic/Greek, or meaning carried by euphemism — that is
the learned classifier's job, and it only partly succeeds (see benchmarks/guardrails.py).
"""

from __future__ import annotations

import re
import unicodedata

# Letters from Cyrillic and Greek that render like Latin ones (lower case; we case-fold first).
HOMOGLYPHS = {
    "а": "a",
    "в": "b",
    "е": "e",
    "ё": "e",
    "к": "k",
    "м": "m",
    "н": "h",
    "о": "o",
    "р": "p",
    "с": "c",
    "т": "t",
    "у": "y",
    "х": "x",
    "ѕ": "s",
    "і": "i",
    "ї": "i",
    "ј": "j",
    "ԁ": "d",
    "ԛ": "q",
    "ԝ": "w",
    "ɡ": "g",
    "ո": "n",
    "ս": "u",
    "α": "a",
    "β": "b",
    "ε": "e",
    "η": "n",
    "ι": "i",
    "κ": "k",
    "ν": "v",
    "ο": "o",
    "ρ": "p",
    "τ": "t",
    "υ": "u",
    "χ": "x",
    "ω": "w",
    "ς": "s",
    "σ": "s",
    "μ": "u",
    "γ": "y",
}

# Leetspeak digits and symbols -> letters. Applied only inside tokens that also hold a letter.
LEET = {
    "0": "o",
    "1": "i",
    "3": "e",
    "4": "a",
    "5": "s",
    "7": "t",
    "8": "b",
    "9": "g",
    "@": "a",
    "$": "s",
    "!": "i",
    "|": "l",
    "+": "t",
    "€": "e",
    "£": "l",
}

_LEET_CHARS = re.escape("".join(LEET))
_TOKEN_WITH_LEET = re.compile(rf"[a-z{_LEET_CHARS}]*[{_LEET_CHARS}][a-z{_LEET_CHARS}]*")
# Tokens like "12yo", "4k", "3d", "10yr", "8bit": numbers with a unit, not leetspeak.
_NUMBER_WITH_UNIT = re.compile(r"^\d+[a-z]{0,4}$")
# Three or more single characters separated by one separator each: "n u d e", "n.u.d.e", "s-3-x".
_SPACED = re.compile(r"(?<![^\W_])(?:[^\W_][ .\-_*]){2,}[^\W_](?![^\W_])")
_REPEATS = re.compile(r"([a-z])\1{2,}")
_NON_WORD = re.compile(r"[^a-z0-9]+")


def strip_invisible(text: str) -> str:
    """Drop format characters (Unicode category Cf): zero-width space/joiners, soft hyphen, BOM, bidi marks."""
    return "".join(ch for ch in text if unicodedata.category(ch) != "Cf")


def fold_homoglyphs(text: str) -> str:
    return "".join(HOMOGLYPHS.get(ch, ch) for ch in text)


def strip_accents(text: str) -> str:
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch))


def join_spaced(text: str) -> str:
    """ "n u d e" -> "nude"; needs at least three single characters, so "a e i" in prose is rare collateral."""
    return _SPACED.sub(lambda m: re.sub(r"[ .\-_*]", "", m.group(0)), text)


def decode_leet(text: str) -> str:
    def fix(m: re.Match) -> str:
        token = m.group(0)
        if not any(ch.isalpha() for ch in token) or _NUMBER_WITH_UNIT.match(token):
            return token
        # Symbols count only inside a word ("k!ll", "$ex"); at its end they are punctuation ("sofa!").
        last = len(token) - 1
        return "".join(ch if (i == last and not ch.isdigit()) else LEET.get(ch, ch) for i, ch in enumerate(token))

    return _TOKEN_WITH_LEET.sub(fix, text)


def collapse_repeats(text: str) -> str:
    def fix(m: re.Match) -> str:
        start, end = m.span()
        whole_word = (start == 0 or not text[start - 1].isalpha()) and (end == len(text) or not text[end].isalpha())
        return m.group(1) * 3 if whole_word else m.group(1)

    return _REPEATS.sub(fix, text)


def normalize(text: str) -> str:
    """The canonical form every guardrail reads: lower-case ASCII words separated by single spaces."""
    text = unicodedata.normalize("NFKC", text)
    text = strip_invisible(text)
    text = text.casefold()
    text = fold_homoglyphs(text)
    text = strip_accents(text)
    text = join_spaced(text)
    text = decode_leet(text)
    text = collapse_repeats(text)
    return _NON_WORD.sub(" ", text).strip()
