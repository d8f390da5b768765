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
