"""Engine and chat: cached decoding == recompute, batching, sampling controls, stop strings, usage, bad input."""

import pytest
import torch

from incasa.text.chat import build_prompt, chat, chat_batch, load_model
from incasa.text.engine import Decoder, Sampling, _safe_end, full_recompute_greedy, generate, sample_next

Q = [{"role": "user", "content": "What does dog mean?"}]


@pytest.fixture(scope="module")
def tm(text_checkpoint):
    return load_model(text_checkpoint, device="cpu")


def test_cached_greedy_generation_equals_full_recompute(tm):
    ids = tm.tokenizer.chat_prompt(Q)
    ref = full_recompute_greedy(tm.model, ids, 12)
    got = generate(tm.model, tm.tokenizer, [ids], Sampling(max_tokens=12, temperature=0))[0]
    n = len(got.token_ids)  # the engine stops at an end token; the reference does not know about them
    assert got.token_ids == ref[:n] and (n == 12 or ref[n] in (tm.tokenizer.end_id, tm.tokenizer.eot_id))


def test_batched_left_padded_generation_equals_one_at_a_time(tm):
    convs = [Q, [{"role": "user", "content": "Define the word river, please, in a few words."}]]
    prompts = [tm.tokenizer.chat_prompt(c) for c in convs]
    s = Sampling(max_tokens=10, temperature=0)
    batched = generate(tm.model, tm.tokenizer, prompts, s)
    single = [generate(tm.model, tm.tokenizer, [p], s)[0] for p in prompts]
    assert [c.token_ids for c in batched] == [c.token_ids for c in single]
    assert [c.prompt_tokens for c in batched] == [len(p) for p in prompts]


def test_sampling_controls():
    logits = torch.tensor([[0.0, 3.0, 1.0, 2.0]])
    g = torch.Generator().manual_seed(0)
    assert int(sample_next(logits, Sampling(temperature=0), g)) == 1
    assert all(int(sample_next(logits, Sampling(temperature=5.0, top_k=1), g)) == 1 for _ in range(20))
    assert all(int(sample_next(logits, Sampling(temperature=1.0, top_p=0.01), g)) == 1 for _ in range(20))
    picks = {int(sample_next(logits, Sampling(temperature=1.0, top_k=2), g)) for _ in range(200)}
    assert picks == {1, 3}
    for bad in (dict(temperature=-1), dict(top_p=0), dict(top_k=-2), dict(max_tokens=0), dict(stop=("",))):
        with pytest.raises(ValueError):
            Sampling(**bad)


def test_stop_string_hold_back_and_utf8():
    assert _safe_end("hello wor", ("world",)) == 6  # "wor" might start the stop string
    assert _safe_end("hello", ("world",)) == 5
    assert _safe_end("caf\ufffd", ()) == 3  # half a UTF-8 character waits for its next byte


def test_chat_streams_deltas_with_usage_seed_and_stops(tm):
    s1 = chat(Q, model=tm, max_tokens=16, temperature=1.0, seed=5)
    text1 = "".join(s1)
    s2 = chat(Q, model=tm, max_tokens=16, temperature=1.0, seed=5)
    assert "".join(s2) == text1 and s1.usage == s2.usage  # same seed, same reply
    assert s1.usage["prompt_tokens"] == len(tm.tokenizer.chat_prompt(Q))
    assert s1.usage["total_tokens"] == s1.usage["prompt_tokens"] + s1.usage["completion_tokens"]
    assert s1.finish_reason in ("stop", "length")
    full = chat(Q, model=tm, max_tokens=24, temperature=0)
    reply = "".join(full)
    assert len(reply) >= 3, reply  # the tiny model has learned to answer something
    stop = reply[1:3]  # cut at a stop string taken from the greedy reply itself
    cut = chat(Q, model=tm, max_tokens=24, temperature=0, stop=[stop])
    assert "".join(cut) == reply[:reply.find(stop)] and cut.finish_reason == "stop"
    one = chat(Q, model=tm, max_tokens=1, temperature=1.0, top_k=50, seed=1, stop=["<never>"])
    list(one)
    assert one.usage["completion_tokens"] <= 1


def test_chat_batch_and_bad_input(tm):
    out = chat_batch([Q, Q], model=tm, max_tokens=6, temperature=0)
    assert out[0].text == out[1].text and all(c.finish_reason for c in out)
    with pytest.raises(ValueError, match="non-empty"):
        chat([], model=tm)
    with pytest.raises(ValueError, match="unknown role"):
        chat([{"role": "bot", "content": "hi"}], model=tm)
    with pytest.raises(ValueError, match="last message"):
        chat(Q + [{"role": "assistant", "content": "x"}], model=tm)
    with pytest.raises(ValueError, match="top_p"):
        chat(Q, model=tm, top_p=2.0)
    with pytest.raises(ValueError, match="not fit"):
        Decoder(tm.model, tm.tokenizer, [[1] * tm.context], Sampling())


def test_context_overflow_truncates_with_a_warning_or_errors(tm):
    long_turns = []
    for i in range(30):
        long_turns += [{"role": "user", "content": f"What does dog number {i} mean?"},
                       {"role": "assistant", "content": "dog (noun): a domesticated animal that barks."}]
    convo = [{"role": "system", "content": "Be brief."}] + long_turns + Q
    ids, notes = build_prompt(tm, convo, max_tokens=16, overflow="truncate")
    assert len(ids) <= tm.context - 16 and notes and "dropped" in notes[0]
    assert tm.tokenizer.decode(ids).startswith("<|system|>\nBe brief.")  # the system message is kept
    with pytest.raises(ValueError, match="context"):
        build_prompt(tm, convo, max_tokens=16, overflow="error")
    with pytest.warns(UserWarning, match="dropped"):
        stream = chat(convo, model=tm, max_tokens=4, temperature=0)
    list(stream)
    with pytest.raises(ValueError, match="Shorten"):  # a single message longer than the context
        build_prompt(tm, [{"role": "user", "content": "dog " * 400}], max_tokens=16, overflow="truncate")
