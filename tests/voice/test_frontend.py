"""Text front end: normalisation (en, it), sentence splitting, G2P with lexicon and inline overrides."""

import pytest

from incasa.voice.data import PHONE_ID
from incasa.voice.frontend import check_phones, ipa_to_arpabet, load_lexicon, normalize, phonemize, split_sentences


@pytest.mark.parametrize("text, expected", [
    ("It costs $5.50.", "It costs five dollars and fifty cents."),
    ("Pay €1,200 now", "Pay one thousand two hundred euros now"),
    ("Born on 12/25/2024.", "Born on december twenty fifth twenty twenty four."),
    ("Meet at 10:30 or 7:00 or 9:05", "Meet at ten thirty or seven o'clock or nine oh five"),
    ("At 3:30pm, or 7:00 PM. Or 9:05 a.m. sharp", "At three thirty p m, or seven p m. Or nine oh five a m sharp"),
    ("The 3rd and 21st", "The third and twenty first"),
    ("A 50% share", "A fifty percent share"),
    ("Dr. Smith met Mr. Jones", "doctor Smith met mister Jones"),
    ("apples, pears, etc. Then more", "apples, pears, et cetera. Then more"),
    ("Call 555-1234", "Call five five five one two three four"),
    ("In 1999 we had 42 cats", "In nineteen ninety nine we had forty two cats"),
    ("Pi is 3.14, it is -5 degrees", "Pi is three point one four, it is minus five degrees"),
])
def test_normalize_english(text, expected):
    assert normalize(text, "en") == expected


@pytest.mark.parametrize("text, expected", [
    ("Costa 3,50 €", "Costa tre euro e cinquanta centesimi"),
    ("Il 25/12/2024", "Il venticinque dicembre duemilaventiquattro"),
    ("Alle 10:30", "Alle dieci e trenta"),
    ("Il sig. Rossi, ecc.", "Il signor Rossi, eccetera."),
    ("Il 3º giorno, 1.000 persone", "Il terzo giorno, mille persone"),
])
def test_normalize_italian(text, expected):
    assert normalize(text, "it") == expected


def test_unsupported_language():
    with pytest.raises(ValueError, match="unsupported language"):
        normalize("hola", "es")


def test_unknown_word_gets_plausible_phones():
    (s,) = phonemize("Blorfington")  # not in any lexicon: gruut's trained G2P guesses it
    assert s.phones[0] == s.phones[-1] == "pau"
    assert all(p in PHONE_ID for p in s.phones)
    assert s.phones[1:4] == ("b", "l", "ao")  # starts as spelled


def test_sentences_breaks_and_pauses():
    out = phonemize("Hello, world. Second one!")
    assert [s.text for s in out] == ["Hello world", "Second one"]
    assert out[0].phones.count("pau") == 3  # start, the comma, the end


def test_lexicon_and_inline_override(tmp_path):
    lex = tmp_path / "lex.txt"
    lex.write_text("# a comment\nworld  w er1 l d\n")
    lexicon = load_lexicon(lex)
    assert lexicon == {"world": "w er1 l d"}
    (s,) = phonemize("Hello {tomato|t ah m aa t ow} world", lexicon=lexicon)
    assert s.text == "Hello tomato world"
    assert s.phones[-11:] == ("t", "ah", "m", "aa", "t", "ow", "w", "er", "l", "d", "pau")
    with pytest.raises(ValueError, match="not in the phone set"):
        phonemize("say {this|xx yy}")
    with pytest.raises(ValueError, match="not in the phone set"):
        check_phones("")


def test_italian_g2p_maps_to_model_phones():
    (s,) = phonemize("Buongiorno, costa dodici euro.", "it")
    assert s.phones[:6] == ("pau", "b", "w", "ow", "n", "jh")
    assert ipa_to_arpabet(["ɲ", "ˈa", "t͡s", "‖"]) == ["n", "y", "aa", "t", "s", "pau"]


def test_empty_text_is_refused():
    for text in ["", "   ", "...", "!?"]:
        with pytest.raises(ValueError, match="nothing to speak"):
            phonemize(text)


def test_very_long_text_is_split_not_refused():
    long = " ".join(["word"] * 130) + ". " + ", ".join(["one two three"] * 30) + "."
    parts = split_sentences(long, max_words=40)
    assert len(parts) >= 5 and all(len(p.split()) <= 40 for p in parts)
    assert sum(len(p.split()) for p in parts) == 130 + 90
