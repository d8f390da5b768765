import json

from incasa.safety.lexicon import PAIR_SCORE, STRONG_SCORE, WEAK_SCORE, load_lexicons, match
from incasa.safety.normalize import normalize


def hits(text: str) -> dict:
    return {c: h.score for c, h in match(normalize(text), load_lexicons()).items()}


def test_strong_term_blocks_alone_in_every_language():
    assert hits("a swastika flag")["hate_symbols"] == STRONG_SCORE
    assert hits("una svastica")["hate_symbols"] == STRONG_SCORE
    assert hits("ein Hakenkreuz")["hate_symbols"] == STRONG_SCORE
    assert hits("pornografía infantil")["minors_sexual"] == STRONG_SCORE
    assert hits("pédopornographie")["minors_sexual"] == STRONG_SCORE


def test_pairs_need_both_sets():
    assert hits("a naked child")["minors_sexual"] == PAIR_SCORE
    assert "minors_sexual" not in hits("a child's drawing of a cat")
    assert "minors_sexual" not in hits("a naked greek statue")


def test_age_numbers_count_as_minor_only_under_18():
    assert hits("sexy 12 year old")["minors_sexual"] == PAIR_SCORE
    assert hits("una foto sexy di 15 anni")["minors_sexual"] == PAIR_SCORE
    assert "minors_sexual" not in hits("sexy 25 year old")


def test_weak_hint_and_exceptions():
    assert hits("a portrait of Angela Merkel")["deepfake_impersonation"] == WEAK_SCORE
    assert hits("Angela Merkel arrested, real photo")["deepfake_impersonation"] == PAIR_SCORE
    assert "self_harm" not in hits("a suicide prevention hotline poster")
    assert "hate_symbols" not in hits("a buddhist manji swastika on a temple")
    assert "mass_harm_weapons" not in hits("how to make a bath bomb")


def test_glued_spaced_words_are_searched_inside():
    assert hits("una s i t u a z i o n e s e s s u a l e con un bimbo")["minors_sexual"] == PAIR_SCORE


def test_unknown_set_name_is_rejected(tmp_path):
    path = tmp_path / "lex.json"
    path.write_text(json.dumps({"sets": {}, "categories": {"x": {"pairs": [["nope"]]}}}))
    try:
        load_lexicons(path)
    except ValueError as e:
        assert "nope" in str(e)
    else:
        raise AssertionError("expected ValueError")
