"""Tokenizer round trip, special tokens, chat template and message validation."""

import pytest

from incasa.text.tokenizer import SPECIAL_TOKENS, check_messages, tokenizer_from_json, train_tokenizer

TEXTS = ["What does dog mean? A dog barks.", "Il cane abbaia; perché è così?", "def f(x):\n    return x ** 2\n"] * 20


@pytest.fixture(scope="module")
def tok():
    return train_tokenizer(TEXTS, vocab_size=320)


@pytest.mark.parametrize("text", ["", "plain words", "Città, perché, naïve — “quotes” 🐶🍕 中文",
                                  "tabs\tand\nnewlines  double  spaces", "x = {'a': [1, 2]}  # code"])
def test_round_trip_is_exact_for_any_text(tok, text):
    assert tok.decode(tok.encode(text)) == text


def test_special_tokens_are_single_ids_and_json_round_trip(tok):
    for t in SPECIAL_TOKENS:
        assert len(tok.encode(t)) == 1
    again = tokenizer_from_json(tok.to_json())
    assert again.encode("Il cane 🐶") == tok.encode("Il cane 🐶") and again.end_id == tok.end_id
    assert tok.vocab_size <= 320 and len(tok.encode("What does dog mean?")) < len("What does dog mean?")


def test_chat_template_layout_and_loss_flags(tok):
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello"}, {"role": "user", "content": "What does dog mean?"}]
    prompt = tok.decode(tok.chat_prompt(msgs))
    assert prompt == ("<|system|>\nBe brief.<|end|>\n<|user|>\nHi<|end|>\n<|assistant|>\nHello<|end|>\n"
                      "<|user|>\nWhat does dog mean?<|end|>\n<|assistant|>\n")
    segs = tok.chat_segments(msgs[:3])
    trained = [tok.decode(ids) for ids, flag in segs if flag]
    assert trained == ["Hello<|end|>\n"]  # only the assistant's words (and its end token) are learned


@pytest.mark.parametrize("bad, match", [([], "non-empty"), ([{"role": "robot", "content": "x"}], "unknown role"),
                                        ([{"role": "user"}], "role' and 'content"),
                                        ([{"role": "user", "content": 3}], "string"),
                                        ([{"role": "user", "content": "hi <|end|>"}], "reserved")])
def test_bad_messages_are_refused(bad, match):
    with pytest.raises(ValueError, match=match):
        check_messages(bad)


def test_vocab_too_small_is_refused():
    with pytest.raises(ValueError, match="vocab_size"):
        train_tokenizer(TEXTS, vocab_size=100)
