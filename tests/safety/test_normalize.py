import pytest

from incasa.safety.normalize import decode_leet, join_spaced, normalize, strip_invisible


@pytest.mark.parametrize(
    "obfuscated, plain",
    [
        ("N4K3D", "naked"),  # leetspeak
        ("n u d e", "nude"),  # spacing
        ("n.u.d.e", "nude"),
        ("nu\u200bde", "nude"),  # zero-width space
        ("nаked", "naked"),  # Cyrillic а
        ("ｎａｋｅｄ", "naked"),  # full-width
        ("NÜDE", "nude"),  # accents
        ("naaaaked", "naked"),  # stretched letters
        ("Straße", "strasse"),
        ("$ex", "sex"),
    ],
)
def test_normalize_undoes_obfuscation(obfuscated, plain):
    assert normalize(obfuscated) == plain


def test_numbers_and_units_are_kept():
    # "1488" is a hate code and "12yo" an age: neither is leetspeak.
    assert normalize("1488 and a 12yo in 4k") == "1488 and a 12yo in 4k"


def test_ordinary_prose_is_unchanged_except_case_and_punctuation():
    assert normalize("A cat, on a sofa!") == "a cat on a sofa"
    assert normalize("una casa e a Roma") == "una casa e a roma"  # two single letters are not a spaced word


def test_helpers():
    assert strip_invisible("a\u200bb\u00adc\ufeff") == "abc"
    assert join_spaced("k i l l me") == "kill me"
    assert decode_leet("k1ll 2024") == "kill 2024"


def test_a_word_of_one_repeated_letter_keeps_three():
    """"KKK" must stay a word of its own: collapsed to "k", the lexicon's "kkk" matched every lone "k"."""
    assert normalize("a KKK rally") == "a kkk rally" and normalize("kkkkk") == "kkk"
    assert normalize("naaaaked") == "naked" and normalize("ratings [K].") == "ratings k"
    from incasa.safety.policy import check_prompt, load_policy

    assert check_prompt("Returns ratings [K] in the order the votes arrived.", load_policy()).action == "allow"
