"""The text front end: raw text -> sentences -> phonemes in the model's alphabet (ARPAbet without stress + pau).

    normalize        abbreviations, currency, times, dates, ordinals, percentages, digit strings and numbers
                     become words, for English ("en") and Italian ("it"), with num2words (a gruut dependency);
                     what we leave, gruut's own normaliser still sees
    split_sentences  gruut's sentence splitter, then any sentence longer than `max_words` is cut at its commas
                     (or every `max_words` words), so a very long text is split, never refused
    phonemize        gruut's offline G2P (lexicon + a trained model for unknown words, in gruut-lang-en/-it),
                     mapped from IPA to ARPAbet; a user lexicon {word: "ph ph ph"} wins over gruut; inline
                     overrides `{word|ph ph ph}` in the text win over both

Italian is phonemized with gruut's Italian model and mapped to the nearest English phones: the shipped voices
learned English only, so Italian comes out with an English accent (honestly: intelligible at best).
Every sentence starts and ends with `pau`, as the festival teachers' utterances do; commas and other breaks
inside a sentence become `pau` as well.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from incasa.voice.data import PHONE_ID

LANGS = {"en": "en-us", "it": "it"}

# IPA (gruut, stress and length marks removed) -> ARPAbet. Italian sounds absent from English take the nearest.
IPA_TO_ARPA = {
    "ɑ": "aa", "ɑː": "aa", "a": "aa", "æ": "ae", "ʌ": "ah", "ə": "ah", "ɐ": "ah", "ɔ": "ao", "aʊ": "aw", "aɪ": "ay",
    "ɛ": "eh", "e": "ey", "eɪ": "ey", "ɚ": "er", "ɝ": "er", "ɪ": "ih", "i": "iy", "oʊ": "ow", "o": "ow", "ɔɪ": "oy",
    "ʊ": "uh", "u": "uw", "b": "b", "t͡ʃ": "ch", "tʃ": "ch", "d": "d", "ð": "dh", "f": "f", "ɡ": "g", "g": "g",
    "h": "hh", "d͡ʒ": "jh", "dʒ": "jh", "k": "k", "l": "l", "m": "m", "n": "n", "ŋ": "ng", "p": "p", "ɹ": "r",
    "r": "r", "ɾ": "t", "s": "s", "ʃ": "sh", "t": "t", "θ": "th", "v": "v", "w": "w", "j": "y", "z": "z", "ʒ": "zh",
    "ʔ": "t", "l̩": "ah l", "n̩": "ah n", "m̩": "ah m", "ɲ": "n y", "ʎ": "l y", "t͡s": "t s", "ts": "t s",
    "d͡z": "d z", "dz": "d z", "ɱ": "m", "x": "hh", "y": "uw", "ø": "er", "œ": "er",
}
BREAKS = {"|", "‖", "#"}
_OVERRIDE = re.compile(r"\{([^{}|]+)\|([^{}]*)\}")


@dataclass(frozen=True)
class Sentence:
    text: str  # the normalised sentence, as spoken
    phones: tuple[str, ...]  # model alphabet, starting and ending with pau


# ---------------------------------------------------------------- normalisation

ABBREVIATIONS = {
    "en": {"mr.": "mister", "mrs.": "missus", "ms.": "miz", "dr.": "doctor", "prof.": "professor", "st.": "saint",
           "jr.": "junior", "sr.": "senior", "etc.": "et cetera", "e.g.": "for example", "i.e.": "that is",
           "vs.": "versus", "approx.": "approximately", "no.": "number", "dept.": "department", "inc.": "incorporated",
           "ltd.": "limited", "jan.": "january", "feb.": "february", "aug.": "august", "sept.": "september",
           "oct.": "october", "nov.": "november", "dec.": "december", "km": "kilometres", "kg": "kilograms"},
    "it": {"sig.": "signor", "sig.ra": "signora", "dott.": "dottor", "dott.ssa": "dottoressa", "prof.": "professor",
           "ing.": "ingegner", "avv.": "avvocato", "ecc.": "eccetera", "es.": "esempio", "pag.": "pagina",
           "n.": "numero", "ca.": "circa", "sec.": "secolo", "km": "chilometri", "kg": "chili"},
}
TITLES = {"mr.", "mrs.", "ms.", "dr.", "prof.", "st.", "jr.", "sr.", "sig.", "dott.", "ing.", "avv.", "no.", "n."}
CURRENCIES = {"$": ("dollar", "dollars", "cent", "cents"), "€": ("euro", "euros", "cent", "cents"),
              "£": ("pound", "pounds", "penny", "pence")}
CURRENCIES_IT = {"$": ("dollaro", "dollari", "centesimo", "centesimi"), "€": ("euro", "euro", "centesimo", "centesimi"),
                 "£": ("sterlina", "sterline", "penny", "pence")}
MONTHS = {"en": ["january", "february", "march", "april", "may", "june", "july", "august", "september", "october",
                 "november", "december"],
          "it": ["gennaio", "febbraio", "marzo", "aprile", "maggio", "giugno", "luglio", "agosto", "settembre",
                 "ottobre", "novembre", "dicembre"]}
WORDS = {"en": {"percent": "percent", "and": "and", "minus": "minus"},
         "it": {"percent": "per cento", "and": "e", "minus": "meno"}}


def _check_lang(lang: str) -> str:
    if lang not in LANGS:
        raise ValueError(f"unsupported language {lang!r}; choose from {', '.join(LANGS)}")
    return lang


def number_words(n: int | float, lang: str, to: str = "cardinal") -> str:
    from num2words import num2words

    # num2words writes "twenty-one" and "one thousand, two hundred": hyphens and commas would become pauses
    return num2words(n, lang=lang, to=to).replace("-", " ").replace(",", "")


def _plain_number(s: str, lang: str) -> float | int:
    """'1,234.5' (en) or '1.234,5' (it) -> a number."""
    thousands, decimal = (",", ".") if lang == "en" else (".", ",")
    s = s.replace(thousands, "")
    return float(s.replace(decimal, ".")) if decimal in s else int(s)


def _money(amount: str, symbol: str, lang: str) -> str:
    one, many, cent, cents = (CURRENCIES if lang == "en" else CURRENCIES_IT)[symbol]
    value = _plain_number(amount, lang)
    whole, frac = int(value), int(round((value - int(value)) * 100))
    words = f"{number_words(whole, lang)} {one if whole == 1 else many}"
    if frac:
        words += f" {WORDS[lang]['and']} {number_words(frac, lang)} {cent if frac == 1 else cents}"
    return words


def normalize(text: str, lang: str = "en") -> str:
    """Spell out what a reader would say: numbers, money, times, dates, ordinals, percentages, abbreviations."""
    _check_lang(lang)
    num = r"\d{1,3}(?:[.,]\d{3})*(?:[.,]\d+)?|\d+(?:[.,]\d+)?"
    # money: $5, $1,234.56, €3,50, 3,50 €, 10 $
    text = re.sub(rf"([$€£])\s?({num})", lambda m: " " + _money(m.group(2), m.group(1), lang) + " ", text)
    text = re.sub(rf"({num})\s?([$€£])", lambda m: " " + _money(m.group(1), m.group(2), lang) + " ", text)
    # dates: 12/25/2024 (en: month first) or 25/12/2024 (it: day first); ISO 2024-12-25 for both
    def date(day: int, month: int, year: int) -> str:
        if not (1 <= month <= 12 and 1 <= day <= 31):
            return f"{number_words(day, lang)} {number_words(month, lang)} {number_words(year, lang)}"
        if lang == "en":
            return f"{MONTHS['en'][month - 1]} {number_words(day, 'en', 'ordinal')} {number_words(year, 'en', 'year')}"
        return f"{'primo' if day == 1 else number_words(day, 'it')} {MONTHS['it'][month - 1]} {number_words(year, 'it')}"
    text = re.sub(r"\b(\d{4})-(\d{1,2})-(\d{1,2})\b",
                  lambda m: date(int(m.group(3)), int(m.group(2)), int(m.group(1))), text)
    text = re.sub(r"\b(\d{1,2})/(\d{1,2})/(\d{4})\b", lambda m: date(
        *((int(m.group(2)), int(m.group(1))) if lang == "en" else (int(m.group(1)), int(m.group(2)))),
        int(m.group(3))), text)
    # times: 10:30, 9:05, 7:00
    def clock(m) -> str:
        h, mi = int(m.group(1)), int(m.group(2))
        if lang == "it":
            return number_words(h, "it") + ("" if mi == 0 else f" e {number_words(mi, 'it')}")
        if mi == 0:
            return f"{number_words(h, 'en')} o'clock"
        return f"{number_words(h, 'en')} {'oh ' if mi < 10 else ''}{number_words(mi, 'en')}"
    # "3:30pm", "3:30 p.m." -> "three thirty p m" (a \b after the minutes would miss "30pm")
    def clock_ampm(m) -> str:
        hour = clock(m).removesuffix(" o'clock")  # "seven p m", not "seven o'clock p m"
        return f"{hour} {m.group(3).lower()} m"
    if lang == "en":
        text = re.sub(r"\b(\d{1,2}):(\d{2})\s?([ap])\.?m\b(?:\.(?=\s+(?-i:[a-z])))?", clock_ampm, text,
                      flags=re.IGNORECASE)
    text = re.sub(r"\b(\d{1,2}):(\d{2})(?!\d)", clock, text)
    # ordinals: 3rd, 21st (en); 3º, 3ª (it)
    text = re.sub(r"\b(\d+)(st|nd|rd|th)\b", lambda m: number_words(int(m.group(1)), "en", "ordinal"), text) \
        if lang == "en" else re.sub(r"\b(\d+)[º°ª]", lambda m: number_words(int(m.group(1)), "it", "ordinal"), text)
    # percentages
    text = re.sub(rf"({num})\s?%", lambda m: f"{number_words(_plain_number(m.group(1), lang), lang)} "
                                             f"{WORDS[lang]['percent']}", text)
    # digit strings with dashes (phone numbers, codes): digit by digit
    text = re.sub(r"\b\d+(?:-\d+)+\b", lambda m: " ".join(number_words(int(d), lang) for d in m.group(0)
                                                           if d.isdigit()), text)
    # abbreviations (case-insensitive, whole tokens)
    for abbr, full in sorted(ABBREVIATIONS[lang].items(), key=lambda kv: -len(kv[0])):
        def expand(m, full=full, abbr=abbr):
            # "etc." before a capital or at the end also closes the sentence; a title ("Mr.") never does
            ends = abbr.endswith(".") and abbr not in TITLES and re.match(r"\s*(?:$|[A-ZÀ-Ý])", text[m.end():])
            return full + ("." if ends else "")
        text = re.sub(rf"(?<![\w.]){re.escape(abbr)}(?=\s|$|[,;:!?])", expand, text, flags=re.IGNORECASE)
    text = re.sub(r"(?<![\w-])-(?=\d)", WORDS[lang]["minus"] + " ", text)  # "-5" but not "5-3" or "a-5"
    # remaining numbers; a bare four-digit 1100-2099 in English is read as a year ("nineteen ninety nine")
    if lang == "en":
        text = re.sub(r"\b(1[1-9]\d\d|20\d\d)\b(?![.,]\d)", lambda m: number_words(int(m.group(1)), "en", "year"), text)
    text = re.sub(rf"\b({num})\b", lambda m: number_words(_plain_number(m.group(1), lang), lang), text)
    text = re.sub(r"\s+([,.;:!?])", r"\1", text)  # the spelled-out forms above may leave "cents ."
    return re.sub(r"\s+", " ", text).strip()


# ---------------------------------------------------------------- sentences and phonemes

def load_lexicon(path: str | Path) -> dict[str, str]:
    """A pronunciation lexicon file: one `word<TAB or spaces>ph ph ph` per line (ARPAbet), # for comments."""
    lexicon = {}
    for i, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        word, _, phones = line.partition(" ") if "\t" not in line else line.partition("\t")
        check_phones(phones, where=f"{path}:{i}")
        lexicon[word.strip().lower()] = phones.strip()
    return lexicon


def check_phones(phones: str, where: str = "override") -> list[str]:
    out = [re.sub(r"\d", "", p.lower()) for p in phones.split()]
    bad = [p for p in out if p not in PHONE_ID or p == "<pad>"]
    if bad or not out:
        raise ValueError(f"{where}: {bad or 'no phones'} not in the phone set "
                         f"({' '.join(p for p in PHONE_ID if p != '<pad>')})")
    return out


def ipa_to_arpabet(ipa_phones: list[str]) -> list[str]:
    out = []
    for ph in ipa_phones:
        if ph in BREAKS:
            out.append("pau")
            continue
        key = ph.replace("ˈ", "").replace("ˌ", "").replace("ː", "")
        if key not in IPA_TO_ARPA and len(key) > 1 and key[:-1] in IPA_TO_ARPA:
            key = key[:-1]  # a diacritic we do not model (e.g. dental, nasalised): keep the base sound
        if key in IPA_TO_ARPA:
            out.extend(IPA_TO_ARPA[key].split())
        # else: a symbol with no English neighbour; dropping it is better than a wrong pause
    return out


@lru_cache(maxsize=None)
def _processor(lang: str):
    """gruut's TextProcessor with its lexicon copied into an in-memory SQLite database WITH an index on `word`:
    the shipped lexicon.db has none, so every lookup scanned 129k rows (~17 ms a word, 90% of the front end)."""
    import sqlite3

    from gruut import TextProcessor
    from gruut.lang import get_settings
    from gruut.phonemize import SqlitePhonemizer
    from gruut.utils import find_lang_dir, remove_non_word_chars

    code = LANGS[lang]
    lang_dir = find_lang_dir(code)
    if lang_dir is None:
        raise ValueError(f"gruut has no data for {code!r}: pip install gruut-lang-{lang}")
    disk = sqlite3.connect(f"file:{Path(lang_dir) / 'lexicon.db'}?mode=ro", uri=True)
    mem = sqlite3.connect(":memory:", check_same_thread=False)
    disk.backup(mem)
    disk.close()
    mem.execute("CREATE INDEX IF NOT EXISTS word_idx ON word_phonemes (word)")
    lookup = SqlitePhonemizer(db_conn=mem, word_transform_funcs=[
        str.lower, remove_non_word_chars, lambda w: remove_non_word_chars(w.lower())])  # as gruut's own settings
    settings = get_settings(code, lang_dir=lang_dir, lookup_phonemes=lookup)
    return TextProcessor(default_lang=code, settings={code: settings})


_GRUUT_LOCK = threading.Lock()  # one SQLite connection and one processor per language, shared by server threads


def _gruut_sentences(text: str, lang: str) -> list:
    with _GRUUT_LOCK:
        tp = _processor(lang)
        graph, root = tp(text, lang=LANGS[lang])
        return list(tp.sentences(graph, root))


def _chunks(text: str, lang: str, max_words: int) -> list[list]:
    """One gruut pass over the whole normalised text -> its sentences as lists of gruut words (breaks included);
    a sentence with more than max_words spoken words is cut at a break once it has max_words // 2, else at
    max_words. One pass, not one per sentence: gruut's per-call overhead made a second pass per sentence cost
    more than the first pass over the whole text (~45 ms -> ~20 ms for 60 s of speech on one core)."""
    out: list[list] = []
    for sent in _gruut_sentences(normalize(text, lang), lang):
        chunk: list = []
        spoken = 0
        for w in sent:
            chunk.append(w)
            spoken += bool(w.is_spoken)
            if spoken >= max_words or (w.is_break and spoken >= max_words // 2):
                out.append(chunk)
                chunk, spoken = [], 0
        if chunk:
            out.append(chunk)
    return out


def split_sentences(text: str, lang: str = "en", max_words: int = 40) -> list[str]:
    """Normalised sentences; any longer than max_words is cut at commas, else every max_words words."""
    _check_lang(lang)
    out = ["".join(w.text_with_ws for w in chunk).strip() for chunk in _chunks(text, lang, max_words)]
    return [s for s in out if any(ch.isalnum() for ch in s)]


def phonemize(text: str, lang: str = "en", lexicon: dict[str, str] | None = None,
              max_words: int = 40) -> list[Sentence]:
    """Text -> sentences of phones. Raises ValueError for text with nothing to say."""
    _check_lang(lang)
    lexicon = {k.lower(): v for k, v in (lexicon or {}).items()}
    # inline overrides: replace each {word|phones} by a placeholder word gruut keeps whole, remember its phones
    overrides: dict[str, tuple[str, list[str]]] = {}

    def hold(m):
        key = "zqx" + "".join(chr(97 + int(d)) for d in str(len(overrides)))
        overrides[key] = (m.group(1).strip(), check_phones(m.group(2), where=f"override {m.group(0)!r}"))
        return f" {key} "
    text = _OVERRIDE.sub(hold, text)
    sentences = []
    for chunk in _chunks(text, lang, max_words):
        phones = ["pau"]
        spoken = []
        for word in chunk:
            key = word.text.lower()
            if key in overrides:
                phones += overrides[key][1]
                spoken.append(overrides[key][0])
            elif key in lexicon:
                phones += check_phones(lexicon[key], where=f"lexicon entry {key!r}")
                spoken.append(word.text)
            elif word.is_break:
                if phones[-1] != "pau":
                    phones.append("pau")
            elif word.is_spoken and word.phonemes:
                phones += ipa_to_arpabet(word.phonemes)
                spoken.append(word.text)
        if phones[-1] != "pau":
            phones.append("pau")
        if len(phones) > 2:
            sentences.append(Sentence(" ".join(spoken), tuple(phones)))
    if not sentences:
        raise ValueError("the text has nothing to speak (empty, or only punctuation)")
    return sentences
