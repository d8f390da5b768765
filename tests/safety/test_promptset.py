from collections import Counter, defaultdict

from incasa.safety.normalize import normalize
from incasa.safety.promptset import (
    HARD_CATEGORIES,
    LANGUAGES,
    OBFUSCATIONS,
    PROMPTS_FILE,
    build_prompt_set,
    load_prompt_set,
    obfuscate,
)


def test_committed_prompt_set_is_the_build_of_the_seeds():
    assert load_prompt_set(PROMPTS_FILE) == build_prompt_set()


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
