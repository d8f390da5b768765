"""The labelled red-team and benign prompt set: how it is built from hand-written seeds, and how it is split.

Source: `data/seeds_<lang>.json`, one file per language (en, it, es, fr, de), written by hand for incasa (no
text copied from any dataset). Each file holds, per hard category, ten "cores" (a short description of what a
user asks for), sixty benign cores that share words with unsafe ones ("shooting a photo at sunset", "a killer
whale", "breast cancer awareness ribbon", "a child's drawing of a cat") and twenty ordinary benign cores, plus
the prompt frames of that language ("a photorealistic image of {x}, highly detailed"...). The five files are
translations of each other, core by core, with local names and institutions where that is natural.

Expansion (`build_prompt_set`), fully deterministic:
- every core is put in every frame of its language: 3 frames for red-team, 4 for benign;
- every bare core (frame 0) also gets one obfuscated copy (leetspeak, spaced letters, zero-width characters,
  Cyrillic homoglyphs, full-width letters or stripped accents), benign ones too, so that obfuscation itself is
  not a cue for "unsafe";
- the split is by core index and is the same in all languages: 3 of 10 cores per hard category, 18 of 60 tricky
  and 6 of 20 ordinary benign cores are "test". A test prompt's concept is therefore unseen in training in
  every language, with every frame — a stricter split than a random one over prompts.

Widening (the seeds' "train_only" section, added in a second round): per language 5 more red-team cores per hard
category, 12 more shared-word benign cores, and 2 request frames ("can you draw {x}?", "i need a picture of {x}
for my project"). All of it is training data only: the train-only cores are never held out, and the request
frames are applied to train cores only, so the test rows are exactly those of the first round (a test checks it)
and held-out numbers stay comparable before and after the widening.

Third round (the seeds' "train_diverse" section, 25 Nov 2026), written because the first two rounds generalised
poorly to phrasing unlike their templates (47.5 % of a fresh red-team set blocked). Per language 15-28 red-team
cores per hard category written in other voices than the templates — slang, indirect requests, misspellings,
euphemism, "for my novel" framing, mixed languages — plus 53-90 shared-word benign cores (razors, pills, bath
bombs, ballots for a class election, a politician cutting a ribbon...), 10-20 ordinary benign ones, 12-18 cores of
consensual adult nudity (label "adult_nudity": a soft category, its own class so that the classifier learns
"sexual but adult" apart from minors_sexual and non_consensual_sexual) and 6 casual request frames. Not
translations core by core: each language was written in its own words. A third-round core already carries its
own phrasing, so it gets five rows, not ten: bare, obfuscated, misspelt (`misspell`), in one frame of its
language, and in one frame of another language. Every train core of the earlier rounds also gets the last two
(`_augment`: a typing slip and a foreign frame, frame -1). All of it is training data only; the test rows are
still byte for byte those of the first round.

Fourth round (`data/seeds4_<lang>.json`, 25 Nov 2026), written because the third round still blocked only 73 % of
a fresh set (fresh3): per language 30-63 new red-team concepts per hard category (new objects, methods, targets,
framings and voices: slang, euphemism, role-play, "for research", prompt-engineering tags, weights like
"(child:1.3)"; local names and institutions), 171-211 new shared-word benign concepts (horror films, butchers,
blood tests, sport injuries, ballots counted by volunteers, a rabbi lighting a menorah...), 14-20 ordinary benign
and 13-16 consensual adult ones, and 8 frames shared by every label. Each language written in its own words.
Five rows per core, as in the third round (`_expand_diverse`); training only, so the test rows are still byte for
byte those of the first round.

Fifth and sixth rounds (`data/seeds5_<lang>.json`, `data/seeds6_<lang>.json`, `load_later_round`), written because
deepfakes, election/news manipulation and self-harm stayed the weak categories on sets written by others: new concepts
for those categories in every language, shared-word benign ones beside them (office holders at real events, a
newspaper layout template, food slang, a job candidate) and ordinary chat and tool requests. Five rows per core, in
the fourth round's frames; training only, so the test rows are still byte for byte those of the first round.

Seventh round (`data/seeds7_<lang>.json`): the sixth round's gains on read development sets did not carry over to a
sealed set by another author outside English, so this round adds breadth in Italian, Spanish, French and German:
new concepts in seven hard categories (all but minors_sexual, which was already at 96-100 %) written natively in
each language (local names, slang, compounds, elision), with shared-word benign near-misses beside them, and a small
English batch for the categories that slipped. Same mechanism: five rows per core, training only.

Eleventh round (`data/seeds11{a..i}_<lang>.json`): every earlier round was written by one author, and the
guardrail blocked 75-82 % of red-team prompts by each new author. Nine independent authors, writing at the same time
without seeing each other or any of this data, each wrote per language 15 red-team cores per hard category, 60
shared-word benign, 15 ordinary benign and 5 adult ones in their own voice (a persona each: chat users, prompt
engineers, context and world knowledge, dialects and learners, fiction framing, filter evaders, plain everyday
language, image editing, tag lists); `seeds11j` is six benign cores per language about drugs seen lawfully, added by
the lead because the new deepfake cores mention cocaine and no benign core did. Same mechanism as rounds 5-7: five
rows per core, training only, letters "ka".."kj". And the ten fresh sets (`FRESH_FILES`) became training data, one row per
prompt (`_fresh_rows`): leaving one author's set out at a time (data/README.md, "Eleventh round"), the other
authors' sets lifted the left-out author's set by about six points, and the five new authors' seeds by about ten.
The fresh sets are therefore no longer held out for a classifier trained on this build (its file lists them in
`fresh_sets_seen`; benchmarks/guardrails.py reports them apart); the held-out split is unchanged.

Twelfth round (`data/seeds12{k..n}_<lang>.json`): four more independent authors, each with a persona aimed at what
the eleventh round's sealed sets still got past the guardrail (political operatives and scammers; harm carried by
context alone; fiction, research and follow-up-turn framing; casual mobile typing and code-switching), each per
language 15 red-team cores per hard category but 25 for deepfakes and election/news manipulation, 60 shared-word,
15 ordinary and 5 adult benign ones; letters "lk".."ln". The eleventh round's sealed sets, fresh11 and fresh12, became
training data like the ten before them. The thirteenth round's seeds (`seeds13{o..r}`, four more authors, letters
"mo".."mr") were committed but not read while their candidates missed the thirteenth and fourteenth rounds' rules.

Fifteenth round: those seeds are read, fresh13-fresh18 (six more authors, sealed during rounds 12-14) are training
data, and so is text that is not a prompt (`_nonprompt_rows`: other projects' docstrings, data/nonprompt_en.json).
Eighteenth round: fresh19-fresh22 are training data too, and so are the seventeenth round's seeds (`seeds17{s,t,u}`:
three authors on the boundary between a legitimate mention of a public figure and a deepfake, committed unread when
that round's candidate missed its rule); the classifier weighs a fresh set's row three times a seed's
(`classifier.fresh_weights`). `HELD_OUT_FRESH_FILES` (fresh23-fresh42: twenty more authors, sealed during rounds
17-29; rounds 19 and 20 tried fresh23-fresh26 as training rows and did not ship it), the names probes
(`NAMES17_FILE`, `NAMES30_FILE`) and the short-prompt probes (`SHORTPROBE25_FILE`, `SHORTPROBE26_FILE`) are never
part of this build (a test checks it): with the held-out split they are what a trained classifier has not seen. The
twenty-fifth round's three short-prompt training sets (`SHORT_FILES`) were committed unread when their candidate missed that round's rule; since the twenty-sixth round
their benign prompts are read (`READ_SHORT_SETS`, `SHORT_LABELS`), their terse red-team prompts are not.

Before the eleventh round the evaluation-only sets `FRESH_FILES` were never part of this build; the second was
frozen by `FRESH2_SHA256` before the third round was written, the third by
`FRESH3_SHA256` after it; the fourth (`FRESH4_SHA256`) was written by someone who never saw this data, kept
sealed outside the repository while the fourth round was made, and scored once after it was finished; the fifth
(`FRESH5_SHA256`) the same way for the fifth round, and the sixth (`FRESH6_SHA256`) for the sixth, and the seventh
(`FRESH7_SHA256`) for the seventh; the eighth (`FRESH8_SHA256`) measured the eighth round, which added no data
(word meaning as features, not kept), the ninth (`FRESH9_SHA256`) the ninth (a hidden layer, not shipped), and the
tenth (`FRESH10_SHA256`) the tenth (a coverage guard, not kept).

The result (one dict per prompt: id, text, lang, label, tricky, core, frame, obfuscation, split) is built in memory
whenever it is needed (`load_prompt_set()`; ~0.6 s for 111,000 prompts), by the classifier trainer and by
benchmarks/guardrails.py. Until the twelfth round it was also committed as `data/prompts.jsonl`: 24 MB of derived
text, a new copy in git history with every round, when the seeds it is built from are 2 MB. `incasa safety prompts
FILE` writes it as JSONL for anyone who wants to read it.
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

from incasa.safety.normalize import HOMOGLYPHS, normalize

DATA_DIR = Path(__file__).parent / "data"
# The fresh sets (never edited; evaluation only until the eleventh round, training data since; see data/README.md).
# fresh2 was frozen by its hash
# before any of the third round's data, lexicon terms or classifier existed; fresh3 after all of them, and was
# scored once, by the shipped guardrail, with no change made after.
FRESH_FILES = (DATA_DIR / "fresh_eval.jsonl", DATA_DIR / "fresh2_eval.jsonl", DATA_DIR / "fresh3_eval.jsonl",
               DATA_DIR / "fresh4_eval.jsonl", DATA_DIR / "fresh5_eval.jsonl", DATA_DIR / "fresh6_eval.jsonl",
               DATA_DIR / "fresh7_eval.jsonl", DATA_DIR / "fresh8_eval.jsonl",
               DATA_DIR / "fresh9_eval.jsonl", DATA_DIR / "fresh10_eval.jsonl",
               DATA_DIR / "fresh11_eval.jsonl", DATA_DIR / "fresh12_eval.jsonl",
               *(DATA_DIR / f"fresh{n}_eval.jsonl" for n in (13, 14, 15, 16, 17, 18, 19, 20, 21, 22)))
FRESH2_SHA256 = "70bc390a7e5cc8f826c23dac90319fbe2deaebbf46f88c306aac79b898a13aaa"
FRESH3_SHA256 = "a540ece1943b43dbbda93e055ed9af7b0708be3e767d431d978b158cc0346c33"
# written by someone who never saw the data, lexicons or classifier; sealed until the fourth round was finished
FRESH4_SHA256 = "9855a7c376edd9271a29a96145a115ea74b70126b951e9354942786585817a66"
# the same way, sealed while the fifth round was made
FRESH5_SHA256 = "4adf1223738b362aaf15a9183adb604f73fbb914a1befd0a4d6f9493c1a1a2e4"
# the same way, sealed while the sixth round was made (650 prompts, each language written separately)
FRESH6_SHA256 = "c762382d2eb4f73330e33ff794fc188be8559a9ac9c71b9e567bc8feea3681a1"
# and for the seventh (650 prompts, each language with its own scenarios, all eight categories equally broad)
FRESH7_SHA256 = "0b26e9ba99389c14b0911fef02aa82c77f25ce44272f8c3ef3e97b9f1772cbc7"
# and for the eighth round (650 prompts, same shape; that round added no training data)
FRESH8_SHA256 = "4b0643a0d43a30b5f09a81adff5aa9a5c3e5cc19f36cada8c4100a15d904cc34"
# and for the ninth (a hidden-layer classifier tried on the same data; not shipped)
FRESH9_SHA256 = "652897699ddf822286d688bdc05d85c08fd7418a6790b1a8d76caa7270c97a18"
# and for the tenth (a coverage guard on that network; not kept)
FRESH10_SHA256 = "58f9e57694c40d99a12425aa35468558b7725102d99decf8e63983cb110a3f58"
# The eleventh round's two sealed sets, by two more independent authors; held out (scored once by the shipped and the
# round's classifier) until the twelfth round made them training data.
FRESH11_SHA256 = "7bb9c442344d774e4110d83a3cc2ec773f4f77ecea87630fab1f73af09fb91a9"
FRESH12_SHA256 = "d968ca70c525dbb8281d8d92659a893a530ca41f0cb6cc65654b735649904643"
# fresh13-fresh18: two sets by two more independent authors sealed while the twelfth round was made (scored once by the
# shipped, the round's and an information-only classifier), two sealed while the thirteenth was made and two while the
# fourteenth was made (each scored once by the shipped classifier and the round's candidate, neither shipped). Held
# out until the fifteenth round made them training data.
FRESH13_SHA256 = "ad3ba9b48524f7e28788d28d4701170a44bf4736b2e07e4dff97d8ae378a925d"
FRESH14_SHA256 = "909c5bb373d835768131f369e40adac42cdb4f30f828e7663fa3de73a70872b2"
FRESH15_SHA256 = "dc3bd1131c3e4996cd43a092ccea5bcaae2dc3472d30f430fbbbf749e7e56444"
FRESH16_SHA256 = "778109699426d2f826941660dbcfedb3575975d231f0ea043d4ea49779382f3b"
FRESH17_SHA256 = "97c179d06b76df2413999d17f3fa77d0c084aff91f1fb391a4bb9c9f3096da61"
FRESH18_SHA256 = "add42df356e322a7a1871b3395b84bc058e9059fe5979c717af28260118cef39"
# fresh19-fresh22: two sets by two more independent authors sealed while the fifteenth round was made (scored once by
# the shipped classifier, the round's candidate and its information-only arms) and two sealed while the sixteenth was
# made (scored once by the shipped classifier and the round's candidate and arm, neither shipped); held out until the
# eighteenth round made them training data (FRESH_FILES).
# Held out (HELD_OUT_FRESH_FILES, NOT training data: the measure of a new author until a later round folds them in):
# fresh23 and fresh24, sealed while the seventeenth round was made (scored once by the shipped classifier, the
# round's candidate and its information-only arm; the candidate was not shipped), fresh25 and fresh26, sealed
# while the eighteenth was made (scored once by the shipped classifier, the round's candidate and the seventeenth's),
# fresh27 and fresh28, sealed while the nineteenth was made, and fresh29 and fresh30, sealed while the twentieth
# re-tested the nineteenth's candidate (each pair scored once by the shipped classifier and that candidate, which was
# not shipped), fresh31 and fresh32, sealed while the twenty-second extended the name list, fresh33 and fresh34,
# sealed while the twenty-third re-tested the extended list alone, fresh35 and fresh36, sealed while the
# twenty-fourth trained the blend, fresh37 and fresh38, sealed while the twenty-seventh re-chose the thresholds,
# fresh39 and fresh40, sealed while the twenty-eighth edited the word lists, and fresh41 and fresh42, sealed while
# the twenty-ninth trained on fresh23-fresh30 (data/README.md).
HELD_OUT_FRESH_FILES = tuple(DATA_DIR / f"fresh{n}_eval.jsonl" for n in range(23, 43))
FRESH19_SHA256 = "a3fc46cf893e760eb58ebd15d36546436a6e3d122770ff33a32e9b50f8a50ecd"
FRESH20_SHA256 = "c397efea7275da6356014ee7d83410a40f775e0b5fa0d9aaf6fe7550ededd9e3"
FRESH21_SHA256 = "3ac4c4ea53ac18a00d342f3bf5f1293621c2dcef45b8f344f5bcd8a1c1ea1a14"
FRESH22_SHA256 = "ff33ee45f11fc392079e06bcfd378ad2339f4c3b64fbdec79b432b16a060af66"
FRESH23_SHA256 = "98244e6d1c340f6f09e8dc076ff75d0b16455f384aa1283afdd055c2dc795693"
FRESH24_SHA256 = "3019fb99d455b6a056e9ecb0200e98a1fff07d4ff6dcd459ba617d5287586005"
FRESH25_SHA256 = "a45a3710e0618730147e328f67ad3a549f2677425e4f3cc255491cfa6d044498"
FRESH26_SHA256 = "12a26e0250d6ddc8db04af6089e1a14b18fd9804c0618c52ae06a7cdd609d402"
# fresh27 and fresh28: two more independent authors, sealed while the nineteenth round was made
FRESH27_SHA256 = "d2b2c0ec38c6b39db1f402f52e890f3af5250db7f6e7a94c507158fa6f0d3088"
FRESH28_SHA256 = "678dc858221740777548d39546a6daea6b84aba91c7a54644551fece9492d1cd"
# fresh29 and fresh30: two more, sealed while the twentieth round re-tested the nineteenth round's candidate
FRESH29_SHA256 = "0b12946469a68bf3e3f5848162495b74c4eb0b5e4ce7f3644ce84b30a7e82ff4"
FRESH30_SHA256 = "52e95649932e46c1c6515702ab0e0ce6574fbce64473a173368eb06cfb2ac743"
# fresh31 and fresh32: two more, sealed while the twenty-second round extended the name list
FRESH31_SHA256 = "2bdd3fb40cd99b3f835e4ea451f0814b5797ccc5d7058500b67c372f60508b72"
FRESH32_SHA256 = "ec48a66cb982635f5620c3c35840de828c8e0a3210e3eb5e590c63df638a2320"
# fresh33 and fresh34: two more, sealed while the twenty-third round re-tested the extended list alone
FRESH33_SHA256 = "ce5adddb8a33ada966e721f2fc078258f1da82735cb5514b24dc1435a6037376"
FRESH34_SHA256 = "fd5972f9a803748159dbd65b6dee517da3549102aad074ed136d29a280b79a00"
# fresh35 and fresh36: two more, sealed while the twenty-fourth round trained the blend (scored once by the shipped
# classifier and the blend, which shipped)
FRESH35_SHA256 = "f06578996815c632c5af45840295d580b69b114ac0caecbfa23390e19115d907"
FRESH36_SHA256 = "c17496d4cf57a21f085a75de9e4c67bb4cfd1bfba36579c23ec08e359104de28"
# fresh37 and fresh38: two more, sealed while the twenty-seventh round re-chose the blocking thresholds on fresh23-30
# (scored once by the shipped classifier and the candidate thresholds, which were not shipped)
FRESH37_SHA256 = "bfd416c0574f138dee9fdeaefa519feae7a6892253673b989741daaa7b462142"
FRESH38_SHA256 = "2a88d85055097093b8fb5ef6322b19b6b91a5e0c3379347bbd7051386884131e"
# fresh39 and fresh40: two more, sealed while the twenty-eighth round edited the word lists from the shipped
# policy's misses on fresh23-30 (scored once by the shipped lists and the edited ones, which were not shipped)
FRESH39_SHA256 = "d6d3c7539c35cae1dfa5243ebea6e4a8ea49d44dc537a0cf50bae1befbc42685"
FRESH40_SHA256 = "702568fba9d1b3e63df11b9e6ac831b531dd9638dc41d4c08d3e96317880d663"
# fresh41 and fresh42: two more, sealed while the twenty-ninth round trained a candidate with fresh23-fresh30 as
# training rows (scored once by the shipped classifier and that candidate)
FRESH41_SHA256 = "40903a071b699c5dc66366ebb6344b26778f2c25082b1fba43d1d65beebc9df2"
FRESH42_SHA256 = "1ec569aa37d9d40937408b7ebf0183e4d4fdf9519fef1d6252bb4a436e1c32f0"
# The twenty-fifth round's short-prompt sets (data/README.md): three independent authors' prompts of 1-6 words (per
# language 40 ordinary and 30 shared-word benign, 3 per hard category), and a fourth author's sealed probe of the same
# shape (per language 20 + 20 benign, 2 per hard category), held out like fresh23-fresh42. As training rows (weighted
# like a fresh set's, less any prompt equal to a held-out one: `_short_rows`) the three sets made a candidate that
# missed that round's rule, so they were committed unread by the build. The twenty-sixth round read their *benign*
# prompts only (`SHORT_LABELS`; the terse red-team ones stay unread): that candidate met its rule and ships.
READ_SHORT_SETS = True
SHORT_LABELS = ("benign",)
SHORT_FILES = tuple(DATA_DIR / f"short25{x}_train.jsonl" for x in "abc")
SHORT_SHA256 = ("8719cf7eaa9ccbfb14fbacde29015e703c8a36494d9c9adb7fc4e3069350d1ff",
                "e2259bd041db713999eb16ef3bccab66f9ab9c26851af4f1ef617b6a72cf1578",
                "9264aa405288c2bfb8d9c895dbd62c1a46587337a03a76e86ebf51f86d2e2695")
SHORTPROBE25_FILE = DATA_DIR / "shortprobe25_eval.jsonl"
SHORTPROBE25_SHA256 = "36cab34c4bcc5a5ffc3a269ca50af58761fc584d04b5631d9c7f330ab9b76f48"
# The twenty-sixth round's probe, by a fifth independent author with shortprobe25's very task (280 prompts), less the
# 40 benign ones whose normalised text equals a benign prompt of the short25 sets (removed before its one look, so
# that a candidate trained on those sets is not scored on prompts it saw): 160 benign, 80 red-team. Held out.
SHORTPROBE26_FILE = DATA_DIR / "shortprobe26_eval.jsonl"
SHORTPROBE26_SHA256 = "bba53237feaf24e5f1999eb730aeb499ab697ae0ecf5a20ced9bb2aaccbb3786"
# A held-out probe of another shape, sealed in the seventeenth round by one more independent author: per language 20
# benign requests that name a listed public figure in a legitimate use and 20 deepfakes of one. Never training data.
NAMES17_FILE = DATA_DIR / "names17_eval.jsonl"
NAMES17_SHA256 = "cfdfab8f3746ea99f362eadbacb913fd50a8f607dd062199b1a776a9e2d6d5e6"
# A second probe of the same shape by one more independent author, sealed in the thirtieth round (scored once by the
# shipped classifier and the twenty-ninth round's candidate). Never training data.
NAMES30_FILE = DATA_DIR / "names30_eval.jsonl"
NAMES30_SHA256 = "217c0c6a0d1ee89e1c42d0d26439f3485396fb4bb46a523ad510684f3a5814da"
LANGUAGES = ("en", "it", "es", "fr", "de")
HARD_CATEGORIES = (
    "minors_sexual",
    "non_consensual_sexual",
    "deepfake_impersonation",
    "graphic_violence",
    "self_harm",
    "hate_symbols",
    "mass_harm_weapons",
    "election_news_manipulation",
)
BENIGN = "benign"
ADULT = "adult_nudity"  # consensual adult nudity: a soft category (warn by default), never a hard block
SPLIT_SEED = 20260407
HELD_OUT_FRACTION = 0.3
OBFUSCATIONS = ("leet", "spaced", "zero_width", "homoglyph", "fullwidth", "no_accents")
DIVERSE_BENIGN = ("benign_tricky", "benign")
DIVERSE_SECTIONS = (*HARD_CATEGORIES, *DIVERSE_BENIGN, ADULT)

_LEET_OUT = {"a": "4", "e": "3", "i": "1", "o": "0", "s": "5", "t": "7"}
_LATIN_TO_CYRILLIC = {
    latin: glyph for glyph, latin in HOMOGLYPHS.items() if latin in "aceopxy" and "\u0400" <= glyph <= "\u04ff"
}


def _longest_words(text: str, count: int) -> set[str]:
    words = sorted({w.strip(",.'") for w in text.split()}, key=lambda w: (-len(w), w))
    return set(words[:count])


def obfuscate(text: str, method: str) -> str:
    """Rewrite `text` the way an evasive user would; `normalize()` is meant to undo every one of these."""
    targets = _longest_words(text, 2)
    if method == "leet":
        return " ".join(
            "".join(_LEET_OUT.get(c, c) for c in w) if w.strip(",.'") in targets else w for w in text.split()
        )
    if method == "spaced":
        return " ".join(" ".join(w) if w.strip(",.'") in targets else w for w in text.split())
    if method == "zero_width":
        return " ".join("\u200b".join(w) if w.strip(",.'") in targets else w for w in text.split())
    if method == "homoglyph":
        return "".join(_LATIN_TO_CYRILLIC.get(c, c) for c in text)
    if method == "fullwidth":
        return "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else c for c in text)
    if method == "no_accents":
        import unicodedata

        return "".join(c for c in unicodedata.normalize("NFKD", text.upper()) if not unicodedata.combining(c))
    raise ValueError(f"unknown obfuscation {method!r}; choose one of {OBFUSCATIONS}")


def held_out_indices(category: str, num_cores: int) -> set[int]:
    """Which core indices are test: fixed by (seed, category), identical across languages."""
    rng = random.Random(f"{SPLIT_SEED}:{category}")
    return set(rng.sample(range(num_cores), round(num_cores * HELD_OUT_FRACTION)))


ROUND4_SECTIONS = (*HARD_CATEGORIES, *DIVERSE_BENIGN, ADULT)


def load_round4(data_dir: Path = DATA_DIR) -> dict[str, dict]:
    """The fourth round's seeds (`seeds4_<lang>.json`): sections as in `train_diverse`, plus its own frames."""
    seeds = {}
    for lang in LANGUAGES:
        path = data_dir / f"seeds4_{lang}.json"
        seeds[lang] = json.loads(path.read_text(encoding="utf-8"))
        unknown = sorted(set(seeds[lang]) - {*ROUND4_SECTIONS, "frames", "lang"})
        if unknown:
            raise ValueError(f"{path}: unknown sections {unknown}")
        missing = [c for c in (*ROUND4_SECTIONS, "frames") if not seeds[lang].get(c)]
        if missing:
            raise ValueError(f"{path} lacks the sections {missing}")
    return seeds


# Later rounds (`seeds<n>_<lang>.json`): new concepts for the categories that were still weak, training only. Each
# file holds some of ROUND4_SECTIONS (and no frames: its cores use the fourth round's); the letter names its cores
# ("self_harm/s3") so that every round's rows can be told apart.
# The eleventh round is nine authors' files ("11a".."11i") and the lead's small benign batch ("11j"), lettered
# "ka".."kj" (k, the eleventh letter; "d" alone is the third round's).
# The seventeenth round's seeds17{s,t,u} (three authors on the boundary between naming a public figure and faking one)
# were committed unread when their candidate missed that round's rule, and are read since the eighteenth, "ns".."nu".
LATER_ROUNDS = {"5": "p", "6": "s", "7": "v", "11a": "ka", "11b": "kb", "11c": "kc", "11d": "kd", "11e": "ke",
                "11f": "kf", "11g": "kg", "11h": "kh", "11i": "ki", "11j": "kj",
                "12k": "lk", "12l": "ll", "12m": "lm", "12n": "ln",
                "13o": "mo", "13p": "mp", "13q": "mq", "13r": "mr",
                "17s": "ns", "17t": "nt", "17u": "nu"}


def load_later_round(name: str | int, data_dir: Path = DATA_DIR) -> dict[str, dict]:
    """The seeds of round `name` ("5", "6", "7", "11a".."11j"): per language, a dict of section -> cores."""
    name = str(name)
    if name not in LATER_ROUNDS:
        raise ValueError(f"no round {name}; the later rounds are {list(LATER_ROUNDS)}")
    seeds = {}
    for lang in LANGUAGES:
        path = data_dir / f"seeds{name}_{lang}.json"
        raw = json.loads(path.read_text(encoding="utf-8"))
        unknown = sorted(set(raw) - {*ROUND4_SECTIONS, "lang"})
        if unknown or raw.get("lang") != lang:
            raise ValueError(f"{path}: unknown sections {unknown} or a wrong lang {raw.get('lang')!r}")
        seeds[lang] = {section: raw[section] for section in ROUND4_SECTIONS if raw.get(section)}
    return seeds


def load_seeds(data_dir: Path = DATA_DIR) -> dict[str, dict]:
    seeds = {}
    for lang in LANGUAGES:
        path = data_dir / f"seeds_{lang}.json"
        seeds[lang] = json.loads(path.read_text(encoding="utf-8"))
        missing = [c for c in (*HARD_CATEGORIES, "benign", "benign_tricky") if c not in seeds[lang]]
        if missing:
            raise ValueError(f"{path} lacks the sections {missing}")
        unknown = sorted(set(seeds[lang].get("train_only", {})) - {*HARD_CATEGORIES, "benign_tricky", "frames_request"})
        if unknown:
            raise ValueError(f"{path}: unknown train_only sections {unknown}")
        unknown = sorted(set(seeds[lang].get("train_diverse", {})) - {*DIVERSE_SECTIONS, "frames"})
        if unknown:
            raise ValueError(f"{path}: unknown train_diverse sections {unknown}")
    return seeds


def misspell(text: str, rng: random.Random) -> str:
    """A typing slip in one or two of the longest words: a letter dropped, doubled, or swapped with the next one.

    `normalize()` cannot undo these ("chlid", "sucide", "exxplosive"); the classifier's character n-grams
    overlap enough with the right spelling to carry the meaning, if it has seen slips like them in training.
    """
    words = text.split()
    candidates = sorted((i for i, w in enumerate(words) if len(w) >= 5), key=lambda i: (-len(words[i]), i))[:3]
    for i in rng.sample(candidates, min(len(candidates), rng.choice((1, 2)))):
        w, pos = words[i], rng.randrange(1, len(words[i]) - 2)
        slip = rng.choice(("drop", "double", "swap"))
        if slip == "drop":
            w = w[:pos] + w[pos + 1 :]
        elif slip == "double":
            w = w[: pos + 1] + w[pos:]
        else:
            w = w[:pos] + w[pos + 1] + w[pos] + w[pos + 2 :]
        words[i] = w
    return " ".join(words)


def _row(lang, section, label, tricky, key, frame, text, obfuscation, split) -> dict:
    return {
        "id": f"{lang}-{section}-{key:0>2}-{frame}{'-' + obfuscation if obfuscation else ''}",
        "text": text,
        "lang": lang,
        "label": label,
        "tricky": tricky,
        "core": f"{section}/{key}",
        "frame": frame,
        "obfuscation": obfuscation,
        "split": split,
    }


def _expand(lang, section, label, tricky, key, core, frames, split, extra_frames=()) -> list[dict]:
    """One core in every frame (then the train-only request frames), plus one obfuscated copy of the bare core.

    `key` names the core within its section: its index ("3") or, for a train-only core, "t" + index ("t3").
    """
    rng = random.Random(f"{SPLIT_SEED}:{lang}:{section}:{key}")
    variants = [(f, frame.format(x=core), None) for f, frame in enumerate(frames)]
    variants.append((0, obfuscate(core, method := rng.choice(OBFUSCATIONS)), method))
    variants += [(len(frames) + f, frame.format(x=core), None) for f, frame in enumerate(extra_frames)]
    return [_row(lang, section, label, tricky, key, f, text, o, split) for f, text, o in variants]


def _augment(lang, section, label, tricky, key, core, foreign_frames) -> list[dict]:
    """Two more training rows of a train core: a typing slip, and the core inside another language's frame
    (people mix languages: "a photorealistic image of una bambina..."). Marked frame -1 / obfuscation "typo"."""
    rng = random.Random(f"{SPLIT_SEED}:augment:{lang}:{section}:{key}")
    return [
        _row(lang, section, label, tricky, key, 0, misspell(core, rng), "typo", "train"),
        _row(lang, section, label, tricky, key, -1, rng.choice(foreign_frames).format(x=core), None, "train"),
    ]


def _expand_diverse(lang, section, label, tricky, key, core, frames, foreign_frames) -> list[dict]:
    """A third-round core already carries its own phrasing, so it gets fewer copies than a templated one: bare,
    obfuscated, misspelt, in one frame of its language and in one of another language."""
    rng = random.Random(f"{SPLIT_SEED}:diverse:{lang}:{section}:{key}")
    method = rng.choice(OBFUSCATIONS)
    frame = rng.randrange(len(frames))
    return [
        _row(lang, section, label, tricky, key, 0, core, None, "train"),
        _row(lang, section, label, tricky, key, 0, obfuscate(core, method), method, "train"),
        _row(lang, section, label, tricky, key, 1 + frame, frames[frame].format(x=core), None, "train"),
        *_augment(lang, section, label, tricky, key, core, foreign_frames),
    ]


def build_prompt_set(data_dir: Path = DATA_DIR, *, widen: bool = True) -> list[dict]:
    """Every row of the prompt set; `widen=False` leaves out every training-only addition (first round only):
    the seeds' "train_only" and "train_diverse" sections and the augmented copies of train cores."""
    seeds = load_seeds(data_dir)
    round4 = load_round4(data_dir) if widen else {}
    later = {n: load_later_round(n, data_dir) for n in LATER_ROUNDS} if widen else {}
    rows: list[dict] = []
    for lang, seed in seeds.items():
        extra = seed.get("train_only", {}) if widen else {}
        diverse = seed.get("train_diverse", {}) if widen else {}
        request_frames = extra.get("frames_request", [])
        foreign = [f for other, s in seeds.items() if other != lang for f in s["frames_benign"][1:]]
        sections = [(c, c, False, seed["frames_harm"]) for c in HARD_CATEGORIES]
        sections += [
            ("benign_tricky", BENIGN, True, seed["frames_benign"]),
            ("benign", BENIGN, False, seed["frames_benign"]),
        ]
        for section, label, tricky, frames in sections:
            cores = seed[section]
            test = held_out_indices(section, len(cores))
            for index, core in enumerate(cores):
                split = "test" if index in test else "train"
                # The request frames and the augmented copies widen training only: the test rows stay as they were.
                more = request_frames if split == "train" else ()
                rows += _expand(lang, section, label, tricky, str(index), core, frames, split, more)
                if widen and split == "train":
                    rows += _augment(lang, section, label, tricky, str(index), core, foreign)
            for index, core in enumerate(extra.get(section, [])):  # train-only cores: never held out
                rows += _expand(lang, section, label, tricky, f"t{index}", core, frames, "train", request_frames)
                rows += _augment(lang, section, label, tricky, f"t{index}", core, foreign)
            for index, core in enumerate(diverse.get(section, [])):  # third round: never held out
                own = frames[1:] + diverse["frames"]
                rows += _expand_diverse(lang, section, label, tricky, f"d{index}", core, own, foreign)
        # Consensual adult nudity gets its own class: lumped into "benign" it looked like minors_sexual and
        # non_consensual_sexual to the classifier ("nude", "sexy", "lingerie"), and pushed their thresholds up.
        own = seed["frames_benign"][1:] + diverse.get("frames", [])
        for index, core in enumerate(diverse.get(ADULT, [])):
            rows += _expand_diverse(lang, ADULT, ADULT, True, f"d{index}", core, own, foreign)
        # Fourth round (seeds4_<lang>.json): new concepts in every section, training only, five rows per core like
        # the third round's; its frames (prompt-engineering tags, role-play, "for a research dataset") serve all labels.
        if widen:
            own = seed["frames_benign"][1:] + round4[lang]["frames"]
            for section in ROUND4_SECTIONS:
                label = section if section in (*HARD_CATEGORIES, ADULT) else BENIGN
                tricky = section in ("benign_tricky", ADULT)
                for index, core in enumerate(round4[lang][section]):
                    rows += _expand_diverse(lang, section, label, tricky, f"r{index}", core, own, foreign)
            # Fifth, sixth, seventh and eleventh rounds: the same five rows per core, in the fourth round's frames.
            for name, letter in LATER_ROUNDS.items():
                for section, cores in later[name][lang].items():
                    label = section if section in (*HARD_CATEGORIES, ADULT) else BENIGN
                    tricky = section in ("benign_tricky", ADULT)
                    for index, core in enumerate(cores):
                        rows += _expand_diverse(lang, section, label, tricky, f"{letter}{index}", core, own, foreign)
    if widen:  # since the eleventh round the fresh sets are training data too (see `_fresh_rows`)
        rows += _fresh_rows(data_dir)
        rows += _nonprompt_rows(data_dir)
        if READ_SHORT_SETS:
            rows += _short_rows(data_dir, {normalize(r["text"]) for r in rows if r["split"] == "test"})
    return rows


def held_out_texts(data_dir: Path = DATA_DIR) -> set[str]:
    """The normalised text of every prompt of the held-out sets: fresh23-fresh42, the names probes (names17,
    names30) and the short probes."""
    paths = [data_dir / p.name for p in (*HELD_OUT_FRESH_FILES, NAMES17_FILE, NAMES30_FILE, SHORTPROBE25_FILE,
                                         SHORTPROBE26_FILE)]
    missing = [str(path) for path in paths if not path.is_file()]
    if missing:
        raise ValueError(f"held-out sets missing: {missing}")
    return {normalize(json.loads(line)["text"]) for path in paths
            for line in path.read_text(encoding="utf-8").splitlines() if line.strip()}


def _short_rows(data_dir: Path, test_texts: set[str]) -> list[dict]:
    """The short-prompt sets' (`SHORT_FILES`, the twenty-fifth round) prompts labelled `SHORT_LABELS` as training
    rows, less every prompt equal after normalisation to a held-out one (`test_texts`: the seeds' held-out split;
    `held_out_texts`): a two-word prompt an author writes ("a red apple") is often one another author wrote for a
    held-out set, and training on it would turn that held-out prompt into a seen one.

    Benign only (the twenty-sixth round): with the terse red-team rows too, round 25's candidate calmed short harmless
    prompts but blocked 0.23 points more of the long held-out benign ones; without them, 966 benign rows taught the
    same "short and ordinary is benign" (data/README.md, "Twenty-sixth round")."""
    held_out = test_texts | held_out_texts(data_dir)
    return [r for r in _authored_rows(data_dir, SHORT_FILES)
            if r["label"] in SHORT_LABELS and normalize(r["text"]) not in held_out]


NONPROMPT_SECTION = "nonprompt"


def _nonprompt_rows(data_dir: Path) -> list[dict]:
    """Text that is not a prompt (data/nonprompt_en.json: other projects' docstrings and messages) as benign rows.

    Since the fifteenth round: the classifier trained on prompts alone grew sure of single words ("keep", "exit",
    "votes") in text unlike any prompt. One row per paragraph, English, training only; the classifier leaves them
    out of its threshold budget (`cross_validated_thresholds`).
    """
    raw = json.loads((data_dir / "nonprompt_en.json").read_text(encoding="utf-8"))
    return [
        _row("en", NONPROMPT_SECTION, BENIGN, False, str(index), 0, item["text"], None, "train")
        for index, item in enumerate(raw["texts"])
    ]


def fresh_set_of(row: dict) -> str | None:
    """The authored set a training row was built from, one row per prompt: a fresh set ("fresh8") or a short-prompt
    set ("short25a"); None for a row built from the seeds."""
    key = row["core"].split("/", 1)[1]
    return key.split(".", 1)[0] if key.startswith(("fresh", "short")) else None


def _fresh_rows(data_dir: Path) -> list[dict]:
    """Every fresh set's prompts as training rows (since the eleventh round): one row each, its own text.

    Not the five rows of a seed core: measured leaving one author's set out at a time (data/README.md, "Eleventh
    round"), five rows per fresh prompt gained about one point and blocked 50-60 repository strings, not 39-41.

    A fresh prompt's id is "<set>-<lang>-<label>-<n>"; its core is "<section>/<set>.<n>", one name for the five
    languages' prompts of that number, so that grouped cross-validation keeps them in one fold (fresh4's
    languages were written from a shared list of scenarios; in the later sets they merely share a number).
    """
    return _authored_rows(data_dir, FRESH_FILES)


def _authored_rows(data_dir: Path, paths: tuple[Path, ...]) -> list[dict]:
    """One training row per prompt of the authored sets `paths` (the fresh sets' JSONL shape)."""
    rows = []
    for path in paths:
        for line in (data_dir / path.name).read_text(encoding="utf-8").splitlines():
            if not line.strip():
                continue
            fresh = json.loads(line)
            name, lang, named, number = fresh["id"].split("-")  # fresh2/fresh3 ids name "benign_tricky"
            label, tricky = fresh["label"], bool(fresh.get("tricky"))
            section = label if label != BENIGN else ("benign_tricky" if tricky else "benign")
            if lang != fresh["lang"] or named not in (label, section):
                raise ValueError(f"{path.name}: id {fresh['id']} disagrees with its lang or label")
            key = f"{name}.{number}"
            rows.append(_row(lang, section, label, tricky, key, 0, fresh["text"], None, "train"))
    return rows


def write_prompt_set(rows: list[dict], path: Path) -> None:
    """The prompt set as JSONL (one object per line, UTF-8), written atomically."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    os.replace(tmp, path)


def load_prompt_set(path: Path | None = None) -> list[dict]:
    """The prompt set: built from the seeds (no `path`), or read back from a JSONL file `write_prompt_set` wrote."""
    if path is None:
        return build_prompt_set()
    if not Path(path).exists():
        raise ValueError(f"no prompt set at {path}; write one with `incasa safety prompts {path}`")
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line]
