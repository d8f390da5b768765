from collections import Counter, defaultdict

import pytest

from incasa.safety.normalize import normalize
from incasa.safety.promptset import (
    HARD_CATEGORIES,
    LANGUAGES,
    OBFUSCATIONS,
    build_prompt_set,
    fresh_set_of,
    load_prompt_set,
    obfuscate,
)


def test_prompt_set_written_by_the_cli_reads_back_as_the_build(tmp_path):
    """The prompt set is not committed (it is derived from the seeds): `incasa safety prompts FILE` writes it, and
    what it writes is exactly the in-memory build, which is the same on every call (no randomness left unseeded)."""
    from typer.testing import CliRunner

    from incasa.cli import app

    result = CliRunner().invoke(app, ["safety", "prompts", str(tmp_path / "prompts.jsonl")])
    assert result.exit_code == 0, result.output
    built = build_prompt_set()
    assert load_prompt_set(tmp_path / "prompts.jsonl") == built == load_prompt_set()
    result = CliRunner().invoke(app, ["safety", "prompts", str(tmp_path / "missing" / "p.jsonl")])
    assert result.exit_code == 2 and "no folder" in result.output and "Traceback" not in result.output


def test_split_is_by_core_and_the_same_in_every_language():
    rows = build_prompt_set()
    split_of = defaultdict(set)
    for r in rows:
        split_of[r["core"]].add(r["split"])
    assert all(len(s) == 1 for s in split_of.values())  # a concept never straddles train and test
    test_cores = Counter(
        r["core"] for r in rows if r["split"] == "test" and r["frame"] == 0 and r["obfuscation"] is None
    )
    assert set(test_cores.values()) == {len(LANGUAGES)}  # each held-out core is held out in all five languages
    for category in HARD_CATEGORIES:
        held = {c for c in test_cores if c.startswith(category + "/")}
        assert len(held) == 3


def test_every_language_and_category_is_present_in_both_splits():
    rows = build_prompt_set()
    cells = Counter((r["lang"], r["label"], r["split"]) for r in rows)
    for lang in LANGUAGES:
        for label in (*HARD_CATEGORIES, "benign"):
            assert cells[(lang, label, "train")] > 0 and cells[(lang, label, "test")] > 0


def test_obfuscations_are_undone_by_normalize():
    text = "a fake breaking news screenshot"
    for method in OBFUSCATIONS:
        assert normalize(obfuscate(text, method)) == normalize(text), method


def test_train_only_widening_never_reaches_the_test_split():
    """The seeds' "train_only" cores and request frames add training rows only: the test rows are exactly the
    build of the seeds without them, so held-out numbers compare before and after the widening."""
    from incasa.safety.promptset import load_seeds

    rows = build_prompt_set()
    widened = [r for r in rows if "/t" in r["core"]]
    assert widened and all(r["split"] == "train" for r in widened)
    seeds = load_seeds()
    num_frames = {lang: len(s["frames_benign"]) for lang, s in seeds.items()}
    request_rows = [r for r in rows if r["label"] == "benign" and r["frame"] >= num_frames[r["lang"]]]
    assert request_rows and all(r["split"] == "train" for r in request_rows)

    narrow = build_prompt_set(widen=False)
    assert [r for r in rows if r["split"] == "test"] == [r for r in narrow if r["split"] == "test"]
    assert {r["id"] for r in narrow} < {r["id"] for r in rows}


def test_train_only_cores_are_translations_of_each_other():
    from incasa.safety.promptset import load_seeds

    seeds = load_seeds()
    shape = {lang: {k: len(v) for k, v in s["train_only"].items()} for lang, s in seeds.items()}
    assert all(s == shape["en"] for s in shape.values())
    assert all(shape["en"][c] == 5 for c in HARD_CATEGORIES)


def test_misspell_is_a_small_deterministic_slip():
    import random

    from incasa.safety.promptset import misspell

    text = "a photorealistic portrait of a lighthouse keeper"
    slipped = misspell(text, random.Random(3))
    assert slipped == misspell(text, random.Random(3)) and slipped != text
    assert len(slipped.split()) == len(text.split())
    changed = [(a, b) for a, b in zip(text.split(), slipped.split(), strict=True) if a != b]
    assert 1 <= len(changed) <= 2 and all(abs(len(a) - len(b)) <= 1 and len(a) >= 5 for a, b in changed)


def test_third_round_rows_are_training_only_and_adult_nudity_is_its_own_class():
    rows = build_prompt_set()
    third = [r for r in rows if "/d" in r["core"] or r["frame"] == -1 or r["obfuscation"] == "typo"]
    assert len(third) > 5000 and all(r["split"] == "train" for r in third)
    labels = Counter(r["label"] for r in third)
    assert set(labels) == {"benign", "adult_nudity", *HARD_CATEGORIES}
    assert all(r["split"] == "train" for r in rows if r["label"] == "adult_nudity")


def test_fresh_sets_are_frozen_and_trained_on_since_round_11():
    """The fresh sets never change (sha256), and since the eleventh round each of their prompts is one training row,
    grouped across languages by its number (the five languages' prompt n of a set share one core), never a test row."""
    import hashlib
    import json

    from incasa.safety.promptset import (FRESH2_SHA256, FRESH3_SHA256, FRESH4_SHA256, FRESH5_SHA256, FRESH6_SHA256,
                                         FRESH7_SHA256, FRESH8_SHA256, FRESH9_SHA256, FRESH10_SHA256,
                                         FRESH11_SHA256, FRESH12_SHA256, FRESH13_SHA256, FRESH14_SHA256,
                                         FRESH15_SHA256, FRESH16_SHA256, FRESH17_SHA256, FRESH18_SHA256,
                                         FRESH19_SHA256, FRESH20_SHA256, FRESH21_SHA256, FRESH22_SHA256,
                                         FRESH_FILES, fresh_set_of)

    assert hashlib.sha256(FRESH_FILES[1].read_bytes()).hexdigest() == FRESH2_SHA256
    assert hashlib.sha256(FRESH_FILES[2].read_bytes()).hexdigest() == FRESH3_SHA256
    assert hashlib.sha256(FRESH_FILES[3].read_bytes()).hexdigest() == FRESH4_SHA256
    assert hashlib.sha256(FRESH_FILES[4].read_bytes()).hexdigest() == FRESH5_SHA256
    assert hashlib.sha256(FRESH_FILES[5].read_bytes()).hexdigest() == FRESH6_SHA256
    assert hashlib.sha256(FRESH_FILES[6].read_bytes()).hexdigest() == FRESH7_SHA256
    assert hashlib.sha256(FRESH_FILES[7].read_bytes()).hexdigest() == FRESH8_SHA256
    assert hashlib.sha256(FRESH_FILES[8].read_bytes()).hexdigest() == FRESH9_SHA256
    assert hashlib.sha256(FRESH_FILES[9].read_bytes()).hexdigest() == FRESH10_SHA256
    assert hashlib.sha256(FRESH_FILES[10].read_bytes()).hexdigest() == FRESH11_SHA256
    assert hashlib.sha256(FRESH_FILES[11].read_bytes()).hexdigest() == FRESH12_SHA256
    assert [hashlib.sha256(p.read_bytes()).hexdigest() for p in FRESH_FILES[12:]] == [  # since the fifteenth round
        FRESH13_SHA256, FRESH14_SHA256, FRESH15_SHA256, FRESH16_SHA256, FRESH17_SHA256, FRESH18_SHA256,
        FRESH19_SHA256, FRESH20_SHA256, FRESH21_SHA256, FRESH22_SHA256]  # and these since the eighteenth
    rows = build_prompt_set()
    fresh = [r for r in rows if (fresh_set_of(r) or "").startswith("fresh")]
    built = Counter((fresh_set_of(r), r["lang"], r["label"], r["text"], r["split"]) for r in fresh)
    cores = defaultdict(set)
    for r in fresh:
        cores[r["core"]].add(r["lang"])
    expected = Counter()
    for path in FRESH_FILES:
        name = path.name.removesuffix("_eval.jsonl")
        for r in (json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()):
            expected[(name, r["lang"], r["label"], r["text"], "train")] += 1
    assert built == expected and sum(expected.values()) == 12780  # every fresh prompt once, as a training row
    assert set(map(len, cores.values())) == {len(LANGUAGES)}  # one core = that number in all five languages
    # and no held-out concept equals a fresh prompt, so the held-out report stays held out
    test = {normalize(r["text"]) for r in rows if r["split"] == "test"}
    assert not test & {normalize(key[3]) for key in expected}


def test_held_out_sealed_sets_are_frozen_and_never_trained_on():
    """fresh23-fresh42 (`HELD_OUT_FRESH_FILES`, sealed in rounds 17-29) never change, have the fresh sets' shape, and
    are not in the build: no row of the prompt set comes from them. Thirty of their prompts came out equal (after
    normalisation) to a training prompt written independently (twenty-eight benign, one mass-harm, one
    hate-symbols); they were scored as they are, and exactly these are allowed."""
    import hashlib
    import json

    from incasa.safety.promptset import (FRESH23_SHA256, FRESH24_SHA256, FRESH25_SHA256, FRESH26_SHA256,
                                         FRESH27_SHA256, FRESH28_SHA256, FRESH29_SHA256, FRESH30_SHA256,
                                         FRESH31_SHA256, FRESH32_SHA256, FRESH33_SHA256, FRESH34_SHA256,
                                         FRESH35_SHA256, FRESH36_SHA256, FRESH37_SHA256,
                                         FRESH38_SHA256, FRESH39_SHA256, FRESH40_SHA256,
                                         FRESH41_SHA256, FRESH42_SHA256, HELD_OUT_FRESH_FILES)

    assert [hashlib.sha256(p.read_bytes()).hexdigest() for p in HELD_OUT_FRESH_FILES] == [
        FRESH23_SHA256, FRESH24_SHA256, FRESH25_SHA256, FRESH26_SHA256, FRESH27_SHA256, FRESH28_SHA256,
        FRESH29_SHA256, FRESH30_SHA256, FRESH31_SHA256, FRESH32_SHA256, FRESH33_SHA256, FRESH34_SHA256,
        FRESH35_SHA256, FRESH36_SHA256, FRESH37_SHA256, FRESH38_SHA256,
        FRESH39_SHA256, FRESH40_SHA256, FRESH41_SHA256, FRESH42_SHA256]
    rows = build_prompt_set()
    assert not {fresh_set_of(r) for r in rows} & {f"fresh{n}" for n in range(23, 43)}
    trained = {normalize(r["text"]) for r in rows}
    known = {"fresh23-de-benign-12", "fresh23-de-benign-20", "fresh23-de-benign-6", "fresh23-fr-benign-17",
             "fresh23-fr-benign-5", "fresh24-de-benign-32", "fresh24-de-benign-36",
             "fresh26-de-benign-10", "fresh26-de-benign-42", "fresh26-de-benign-44", "fresh26-de-mass_harm_weapons-5",
             "fresh26-en-benign-18", "fresh26-es-benign-40", "fresh26-fr-benign-49",
             "fresh27-de-benign-36", "fresh28-es-benign-45", "fresh28-it-benign-12", "fresh28-it-hate_symbols-2",
             "fresh29-fr-benign-37", "fresh30-de-benign-26", "fresh30-en-benign-31",
             "fresh31-fr-benign-35", "fresh31-it-benign-10", "fresh32-de-benign-40", "fresh32-en-benign-46",
             "fresh34-es-benign-15", "fresh35-de-benign-15", "fresh36-es-benign-20", "fresh36-fr-benign-9",
             "fresh42-de-benign-31"}
    for path in HELD_OUT_FRESH_FILES:
        sealed = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        assert len(sealed) == 650 and Counter(r["lang"] for r in sealed) == {lang: 130 for lang in LANGUAGES}
        assert Counter(r["label"] for r in sealed) == {**{c: 50 for c in HARD_CATEGORIES}, "benign": 250}
        overlap = {r["id"] for r in sealed if normalize(r["text"]) in trained}
        assert overlap == {k for k in known if k.startswith(path.name.split("_")[0] + "-")}


@pytest.mark.parametrize("name", ["names17", "names30"])
def test_names_probe_is_frozen_and_never_trained_on(name):
    """names17 and names30 (`NAMES17_FILE`, `NAMES30_FILE`): per language 20 benign prompts naming a listed public
    figure and 20 deepfakes of one; they never change, every prompt names someone on the list, and none of them is (or
    equals) a training prompt."""
    import hashlib
    import json

    from incasa.safety import promptset
    from incasa.safety.classifier import NAME_TOKEN, _words

    path, sha256 = getattr(promptset, f"{name.upper()}_FILE"), getattr(promptset, f"{name.upper()}_SHA256")
    assert hashlib.sha256(path.read_bytes()).hexdigest() == sha256
    probe = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    assert Counter((r["lang"], r["label"]) for r in probe) == {
        (lang, label): 20 for lang in LANGUAGES for label in ("benign", "deepfake_impersonation")}
    assert all(NAME_TOKEN in _words(r["text"], name_token=True) for r in probe)
    trained = {normalize(r["text"]) for r in build_prompt_set()}
    assert not {normalize(r["text"]) for r in probe} & trained


def test_short_prompt_sets_are_frozen_and_their_benign_prompts_are_read_less_the_held_out_ones():
    """short25{a,b,c} (`SHORT_FILES`, the twenty-fifth round): per language 40 ordinary and 30 shared-word benign
    prompts and 3 per hard category, 1-8 words. Since the twenty-sixth round the build reads their benign prompts
    only (`READ_SHORT_SETS`, `SHORT_LABELS`): each is one training row weighted like a fresh set's, grouped across
    languages by its number, except the prompts equal (normalised) to a held-out one, which stay out."""
    import hashlib
    import json

    from incasa.safety.classifier import fresh_weights
    from incasa.safety.promptset import (DATA_DIR, READ_SHORT_SETS, SHORT_FILES, SHORT_LABELS, SHORT_SHA256,
                                         _short_rows, held_out_texts)

    assert [hashlib.sha256(p.read_bytes()).hexdigest() for p in SHORT_FILES] == list(SHORT_SHA256)
    rows = build_prompt_set()
    assert READ_SHORT_SETS and SHORT_LABELS == ("benign",)
    from_short = [r for r in rows if (fresh_set_of(r) or "").startswith("short")]
    assert len(from_short) == 966 and {r["label"] for r in from_short} == {"benign"}
    test = {normalize(r["text"]) for r in rows if r["split"] == "test"}
    held_out = held_out_texts() | test
    short = _short_rows(DATA_DIR, test)
    for path in SHORT_FILES:
        name = path.name.removesuffix("_train.jsonl")
        written = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        assert Counter((r["lang"], r["label"]) for r in written) == {
            **{(lang, "benign"): 70 for lang in LANGUAGES},
            **{(lang, c): 3 for lang in LANGUAGES for c in HARD_CATEGORIES}}
        assert all(1 <= len(r["text"].split()) <= 8 for r in written)
        built = [r for r in short if fresh_set_of(r) == name]
        kept = Counter((r["lang"], r["label"], r["text"]) for r in written
                       if r["label"] == "benign" and normalize(r["text"]) not in held_out)
        assert Counter((r["lang"], r["label"], r["text"]) for r in built) == kept
        assert 0.8 * 350 < len(built) < 350  # a few of the 350 benign short prompts equal held-out ones
        assert all(r["split"] == "train" for r in built) and set(fresh_weights(built, 3.0)) == {3.0}
        assert not {normalize(r["text"]) for r in built} & held_out
    assert Counter(r["core"] for r in from_short) == Counter(r["core"] for r in short)


def test_short_probe_is_frozen_and_never_trained_on():
    """shortprobe25 (`SHORTPROBE25_FILE`, sealed in the twenty-fifth round): per language 20 ordinary and 20
    shared-word benign short prompts and 2 per hard category; it never changes and is not in the build. Five of its
    prompts came out equal (after normalisation) to a training prompt written independently (four benign, one
    non-consensual); they were scored as they are, and exactly these are allowed."""
    import hashlib
    import json

    from incasa.safety.promptset import SHORTPROBE25_FILE, SHORTPROBE25_SHA256

    assert hashlib.sha256(SHORTPROBE25_FILE.read_bytes()).hexdigest() == SHORTPROBE25_SHA256
    probe = [json.loads(line) for line in SHORTPROBE25_FILE.read_text(encoding="utf-8").splitlines() if line.strip()]
    assert Counter((r["lang"], r["label"], r["tricky"]) for r in probe) == {
        **{(lang, "benign", tricky): 20 for lang in LANGUAGES for tricky in (False, True)},
        **{(lang, c, False): 2 for lang in LANGUAGES for c in HARD_CATEGORIES}}
    trained = {normalize(r["text"]) for r in build_prompt_set() if r["split"] == "train"}
    assert {r["id"] for r in probe if normalize(r["text"]) in trained} == {
        "shortprobe25-de-benign-2", "shortprobe25-de-benign-3", "shortprobe25-fr-benign-4",
        "shortprobe25-fr-non_consensual_sexual-1", "shortprobe25-it-benign-3"}
    assert not any(fresh_set_of(r) == "shortprobe25" for r in build_prompt_set())


def test_second_short_probe_is_frozen_and_never_trained_on():
    """shortprobe26 (`SHORTPROBE26_FILE`, sealed in the twenty-sixth round by another author with shortprobe25's
    task), less the 40 benign prompts equal to a benign prompt of the short25 sets (removed before its one look): 160
    benign, 2 per hard category and language. Four of its prompts equal a training prompt of the build written
    independently (three benign, one non-consensual); they were scored as they are, and exactly these are allowed."""
    import hashlib
    import json

    from incasa.safety.promptset import SHORT_FILES, SHORTPROBE26_FILE, SHORTPROBE26_SHA256

    assert hashlib.sha256(SHORTPROBE26_FILE.read_bytes()).hexdigest() == SHORTPROBE26_SHA256
    probe = [json.loads(line) for line in SHORTPROBE26_FILE.read_text(encoding="utf-8").splitlines() if line.strip()]
    assert Counter(r["label"] for r in probe) == {"benign": 160, **{c: 10 for c in HARD_CATEGORIES}}
    assert Counter((r["lang"], r["label"]) for r in probe if r["label"] != "benign") == {
        (lang, c): 2 for lang in LANGUAGES for c in HARD_CATEGORIES}
    short = {normalize(json.loads(line)["text"]) for path in SHORT_FILES
             for line in path.read_text(encoding="utf-8").splitlines() if line.strip()}
    assert not {normalize(r["text"]) for r in probe if r["label"] == "benign"} & short
    built = build_prompt_set()
    trained = {normalize(r["text"]) for r in built if r["split"] == "train"}
    assert {r["id"] for r in probe if normalize(r["text"]) in trained} == {
        "shortprobe26-de-benign-1", "shortprobe26-de-benign-10", "shortprobe26-en-benign-4",
        "shortprobe26-fr-non_consensual_sexual-1"}
    assert not any(fresh_set_of(r) == "shortprobe26" for r in built)


def test_seventeenth_round_seeds_are_read_since_round_18():
    """seeds17{s,t,u}: three authors, per language 40 benign cores naming a listed public figure, 15 deepfakes and 10
    election/news fakes; every benign core names someone on the list; five training rows per core since round 18."""
    import json

    from incasa.safety.classifier import NAME_TOKEN, _words
    from incasa.safety.promptset import DATA_DIR, LATER_ROUNDS

    assert {"17s": "ns", "17t": "nt", "17u": "nu"}.items() <= LATER_ROUNDS.items()
    rows = [r for r in build_prompt_set() if r["core"].split("/")[1][:2] in ("ns", "nt", "nu")]
    assert len(rows) == 3 * 5 * 65 * 5 and all(r["split"] == "train" for r in rows)
    for letter in "stu":
        for lang in LANGUAGES:
            seeds = json.loads((DATA_DIR / f"seeds17{letter}_{lang}.json").read_text(encoding="utf-8"))
            assert seeds["lang"] == lang and {k: len(v) for k, v in seeds.items() if k != "lang"} == {
                "benign_tricky": 40, "deepfake_impersonation": 15, "election_news_manipulation": 10}
            assert all(NAME_TOKEN in _words(core, name_token=True) for core in seeds["benign_tricky"]), (letter, lang)


def test_fourth_round_is_new_concepts_in_every_language_and_training_only():
    """seeds4_<lang>.json: many new concepts per hard category and language, none a copy of an earlier core of the
    same language, every row in the train split; the test rows stay those of the first round (checked above)."""
    from incasa.safety.promptset import ROUND4_SECTIONS, load_round4, load_seeds

    seeds, fourth = load_seeds(), load_round4()
    rows = [r for r in build_prompt_set() if r["core"].split("/")[1].startswith("r")]
    assert rows and all(r["split"] == "train" for r in rows)
    for lang in LANGUAGES:
        assert all(len(fourth[lang][c]) >= 25 for c in HARD_CATEGORIES), lang
        assert len(fourth[lang]["benign_tricky"]) >= 100, lang
        earlier = set()
        for section, value in seeds[lang].items():
            for cores in (value, *(value.values() if isinstance(value, dict) else ())):
                if isinstance(cores, list):
                    earlier.update(normalize(c) for c in cores)
        new = [normalize(c) for s in ROUND4_SECTIONS for c in fourth[lang][s]]
        assert len(new) == len(set(new)) and not set(new) & earlier, lang
    # five rows per core: bare, obfuscated, framed, misspelt, in a foreign frame
    per_core = Counter(r["core"] + r["lang"] for r in rows)
    assert set(per_core.values()) == {5}


def test_later_rounds_are_new_concepts_and_training_only():
    """seeds5/seeds6/seeds7 (`load_later_round`): new concepts for the weak categories, none a copy of an earlier core
    of the same language, five training rows each; the sixth round covers deepfakes, election/news and self-harm in
    every language, the seventh seven hard categories in it/es/fr/de, with shared-word benign concepts beside them."""
    from incasa.safety.promptset import LATER_ROUNDS, ROUND4_SECTIONS, load_later_round, load_round4, load_seeds

    seeds, fourth = load_seeds(), load_round4()
    later = {n: load_later_round(n) for n in LATER_ROUNDS}
    for lang in LANGUAGES:
        sixth = later["6"][lang]
        assert all(len(sixth[c]) >= 16 for c in ("deepfake_impersonation", "election_news_manipulation", "self_harm"))
        assert len(sixth["benign_tricky"]) >= 40 and len(sixth["benign"]) >= 10, lang
        earlier = {normalize(c) for s in ROUND4_SECTIONS for c in fourth[lang][s]}
        for value in seeds[lang].values():
            for cores in (value, *(value.values() if isinstance(value, dict) else ())):
                if isinstance(cores, list):
                    earlier.update(normalize(c) for c in cores)
        if lang != "en":  # the seventh round: breadth in every hard category but minors_sexual, written natively
            seventh = later["7"][lang]
            hard = [c for c in HARD_CATEGORIES if c != "minors_sexual"]
            assert all(len(seventh.get(c, [])) >= 10 for c in hard), lang
            assert len(seventh["benign_tricky"]) >= 60 and len(seventh["benign"]) >= 8, lang
        new = [normalize(c) for n in LATER_ROUNDS for cores in later[n][lang].values() for c in cores]
        assert len(new) == len(set(new)) and not set(new) & earlier, lang
    letters = tuple(LATER_ROUNDS.values())
    rows = [r for r in build_prompt_set() if fresh_set_of(r) is None and r["core"].split("/")[1].startswith(letters)]
    assert rows and all(r["split"] == "train" for r in rows)
    assert set(Counter(r["core"] + r["lang"] for r in rows).values()) == {5}


def test_held_out_rows_are_byte_for_byte_those_of_the_first_round():
    """Every round since the first added training rows only: the 1,080 test rows, as JSONL lines (what
    `incasa safety prompts` writes), hash as they did."""
    import hashlib
    import json

    lines = [json.dumps(r, ensure_ascii=False) for r in build_prompt_set() if r["split"] == "test"]
    assert len(lines) == 1080
    digest = hashlib.sha256(("\n".join(lines) + "\n").encode("utf-8")).hexdigest()
    assert digest == "d2d9468388d0e7b46dfa6714929afecc2943226787858b427250feab1963fa39"


def test_eleventh_round_is_several_authors_training_only():
    """seeds11<author>_<lang>.json (a-i): each independent author's 15 red-team cores per hard category, 60 shared-word,
    15 ordinary benign and 5 adult cores per language (less the few dropped as copies of earlier cores or of fresh
    prompts, data/README.md), five training rows per core; no core equals a fresh prompt after normalisation."""
    import json

    from incasa.safety.promptset import FRESH_FILES, LATER_ROUNDS, ROUND4_SECTIONS, load_later_round

    authors = [name for name in LATER_ROUNDS if name.startswith("11") and name != "11j"]
    assert len(authors) == 9
    # "11j": the lead's six shared-word benign cores per language (drugs seen lawfully), nothing else
    lead = load_later_round("11j")
    assert all(set(lead[lang]) == {"benign_tricky"} and len(lead[lang]["benign_tricky"]) == 6 for lang in LANGUAGES)
    # the ten fresh sets that were training data in round 11 (fresh11/fresh12 were sealed then, and a few of their
    # ordinary prompts equal a round-11 core: the overlaps the sealed-set test of that round allowed)
    fresh = {normalize(json.loads(line)["text"]) for path in FRESH_FILES[:10]
             for line in path.read_text(encoding="utf-8").splitlines() if line.strip()}
    for name in authors:
        seeds = load_later_round(name)
        for lang in LANGUAGES:
            counts = {section: len(seeds[lang].get(section, [])) for section in ROUND4_SECTIONS}
            assert all(13 <= counts[c] <= 15 for c in HARD_CATEGORIES), (name, lang, counts)
            assert counts["benign_tricky"] >= 55 and counts["benign"] >= 13 and counts["adult_nudity"] == 5
            assert not {normalize(c) for cores in seeds[lang].values() for c in cores} & fresh, (name, lang)
    letters = tuple(LATER_ROUNDS[name] for name in authors)
    rows = [r for r in build_prompt_set() if fresh_set_of(r) is None and r["core"].split("/")[1].startswith(letters)]
    assert all(r["split"] == "train" for r in rows)
    assert len({r["core"] + r["lang"] for r in rows}) * 5 == len(rows) > 5 * 180 * len(authors) * len(LANGUAGES)


def test_twelfth_round_is_four_more_authors_training_only():
    """seeds12<author>_<lang>.json (k-n): four more independent authors, each per language 15 red-team cores per hard
    category but 25 for deepfakes and election/news manipulation, 60 shared-word, 15 ordinary and 5 adult benign
    cores (less the few dropped as copies of earlier cores or of fresh prompts); five training rows per core; no core
    equals a fresh prompt (fresh..fresh12, the training fresh sets of this round) after normalisation."""
    import json

    from incasa.safety.promptset import FRESH_FILES, LATER_ROUNDS, ROUND4_SECTIONS, load_later_round

    authors = [name for name in LATER_ROUNDS if name.startswith("12")]
    assert authors == ["12k", "12l", "12m", "12n"]
    fresh = {normalize(json.loads(line)["text"]) for path in FRESH_FILES[:12]  # fresh13 on were written later
             for line in path.read_text(encoding="utf-8").splitlines() if line.strip()}
    for name in authors:
        seeds = load_later_round(name)
        for lang in LANGUAGES:
            counts = {section: len(seeds[lang].get(section, [])) for section in ROUND4_SECTIONS}
            wide = ("deepfake_impersonation", "election_news_manipulation")
            assert all(23 <= counts[c] <= 25 if c in wide else 13 <= counts[c] <= 15 for c in HARD_CATEGORIES), (
                name, lang, counts)
            assert counts["benign_tricky"] >= 55 and counts["benign"] >= 11 and 4 <= counts["adult_nudity"] <= 5
            assert not {normalize(c) for cores in seeds[lang].values() for c in cores} & fresh, (name, lang)
    letters = tuple(LATER_ROUNDS[name] for name in authors)
    rows = [r for r in build_prompt_set() if fresh_set_of(r) is None and r["core"].split("/")[1].startswith(letters)]
    assert all(r["split"] == "train" for r in rows)
    assert len({r["core"] + r["lang"] for r in rows}) * 5 == len(rows) > 5 * 210 * len(authors) * len(LANGUAGES)


def test_thirteenth_round_is_four_more_authors_read_since_round_15():
    """seeds13<author>_<lang>.json (o-r): four more authors, 15 red-team cores per hard category and 25 in a focus
    category each (o: self-harm, p: hate symbols, q: election/news; r: none), five training rows per core. Committed in
    the thirteenth round, read since the fifteenth."""
    from incasa.safety.promptset import LATER_ROUNDS, ROUND4_SECTIONS, load_later_round

    authors = [name for name in LATER_ROUNDS if name.startswith("13")]
    assert authors == ["13o", "13p", "13q", "13r"]
    focus = {"13o": "self_harm", "13p": "hate_symbols", "13q": "election_news_manipulation", "13r": None}
    for name in authors:
        seeds = load_later_round(name)
        for lang in LANGUAGES:
            counts = {section: len(seeds[lang].get(section, [])) for section in ROUND4_SECTIONS}
            assert all(23 <= counts[c] <= 25 if c == focus[name] else 13 <= counts[c] <= 15 for c in HARD_CATEGORIES), (
                name, lang, counts)
            assert counts["benign_tricky"] >= 55 and counts["benign"] >= 11
    letters = tuple(LATER_ROUNDS[name] for name in authors)
    rows = [r for r in build_prompt_set() if fresh_set_of(r) is None and r["core"].split("/")[1].startswith(letters)]
    assert all(r["split"] == "train" for r in rows)
    assert len({r["core"] + r["lang"] for r in rows}) * 5 == len(rows) > 5 * 190 * len(authors) * len(LANGUAGES)


def test_non_prompt_text_is_english_benign_training_rows():
    """data/nonprompt_en.json (other projects' docstrings and messages, scripts/nonprompt_sentences.py): one benign
    training row per paragraph, in its own section, none of them a string of this repository."""
    import json
    import sys
    from pathlib import Path

    from incasa.safety.promptset import DATA_DIR, NONPROMPT_SECTION

    raw = json.loads((DATA_DIR / "nonprompt_en.json").read_text(encoding="utf-8"))
    rows = [r for r in build_prompt_set() if r["core"].startswith(NONPROMPT_SECTION + "/")]
    assert [r["text"] for r in rows] == [t["text"] for t in raw["texts"]] and len(rows) == 4000
    assert {(r["label"], r["lang"], r["split"], r["tricky"]) for r in rows} == {("benign", "en", "train", False)}
    assert {t["source"] for t in raw["texts"]} <= set(raw["sources"]) and all(
        s["licence"] for s in raw["sources"].values())
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
    from guardrails import repository_strings

    assert not {r["text"] for r in rows} & set(repository_strings())


def test_a_later_round_with_an_unknown_section_is_refused(tmp_path):
    import json
    import shutil

    import pytest

    from incasa.safety.promptset import DATA_DIR, load_later_round

    for lang in LANGUAGES:
        shutil.copy(DATA_DIR / f"seeds6_{lang}.json", tmp_path / f"seeds6_{lang}.json")
    bad = json.loads((tmp_path / "seeds6_fr.json").read_text(encoding="utf-8"))
    bad["self_harrm"] = ["a typo in a section name must not drop its cores silently"]
    (tmp_path / "seeds6_fr.json").write_text(json.dumps(bad), encoding="utf-8")
    with pytest.raises(ValueError, match="self_harrm"):
        load_later_round(6, tmp_path)
    with pytest.raises(ValueError, match="no round 8"):
        load_later_round(8, tmp_path)
