"""The seams for text and voice models: registering an engine is all it takes. An echo chat engine and a tone speech
engine (defined in tests/serve/helpers.py, not shipped) answer through the official `openai` client."""

import io
import wave

import openai
import pytest

from incasa.serve.app import create_app
from incasa.serve.engines import Registry

from .conftest import tiny_settings
from .helpers import EchoChat, SolidEngine, ToneSpeech


@pytest.fixture
def seam_client(tmp_path, live_server):
    registry = Registry(image={"solid": SolidEngine()}, chat={"echo": EchoChat()}, speech={"tone": ToneSpeech()})
    server = live_server(create_app(tiny_settings(tmp_path, queue_size=4), registry))
    return openai.OpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0)


def test_chat_streams_tokens_and_usage(seam_client):
    messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "one two three four"}]
    chunks = list(seam_client.chat.completions.create(model="echo", messages=messages, stream=True,
                                                      stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "one two three four"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    usage = chunks[-1].usage
    assert chunks[-1].choices == [] and (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (6, 4, 10)


def test_chat_without_streaming_and_the_token_limit(seam_client):
    r = seam_client.chat.completions.create(model="echo", messages=[{"role": "user", "content": "a b c d e"}],
                                            max_tokens=3)
    assert r.choices[0].message.content == "a b c" and r.choices[0].finish_reason == "length"
    assert r.usage.completion_tokens == 3
    assert [m.id for m in seam_client.models.list().data] == ["solid", "echo", "tone"]
    with pytest.raises(openai.BadRequestError) as e:  # an image model is not a chat model... and vice versa
        seam_client.images.generate(prompt="x", model="echo")
    assert e.value.body["param"] == "model"


def test_speech_returns_wav(seam_client):
    audio = seam_client.audio.speech.create(model="tone", voice="alloy", input="hello there world",
                                            response_format="wav")
    with wave.open(io.BytesIO(audio.content)) as w:
        assert (w.getframerate(), w.getnchannels(), w.getnframes()) == (8000, 1, 2400)
    with pytest.raises(openai.BadRequestError) as e:
        seam_client.audio.speech.create(model="tone", voice="alloy", input="hi", response_format="aac")
    assert e.value.body["param"] == "response_format"


def test_the_shipped_text_model_answers_through_the_openai_client(tmp_path, live_server):
    from incasa.serve.engines import text_registry

    registry = Registry(image={"solid": SolidEngine()}, chat=text_registry([("", None)], "cpu"))
    server = live_server(create_app(tiny_settings(tmp_path), registry))
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0)
    (name,) = registry.chat
    assert name == "incasa-text-small" and name in [m.id for m in client.models.list().data]
    ask = [{"role": "user", "content": "What does dog mean?"}]
    chunks = list(client.chat.completions.create(model=name, messages=ask, stream=True, max_tokens=8, seed=1,
                                                 temperature=0.0, stream_options={"include_usage": True}))
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    usage = chunks[-1].usage
    assert streamed and 0 < usage.completion_tokens <= 8 and usage.prompt_tokens > 0
    whole = client.chat.completions.create(model=name, messages=ask, max_tokens=8, seed=1, temperature=0.0)
    assert whole.choices[0].message.content == streamed  # greedy: the same reply streamed or not
    with pytest.raises(openai.BadRequestError):  # unknown role: a 400 in the OpenAI shape, not a 500
        client.chat.completions.create(model=name, messages=[{"role": "wizard", "content": "hi"}])


def test_the_shipped_voice_model_speaks_through_the_openai_client(tmp_path, live_server):
    import soundfile as sf

    from incasa.serve.engines import voice_registry

    registry = Registry(image={"solid": SolidEngine()}, speech=voice_registry([("", None)], "cpu"))
    server = live_server(create_app(tiny_settings(tmp_path), registry))
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0)
    (name,) = registry.speech
    wav = client.audio.speech.create(model=name, voice="default", input="Hello there.", response_format="wav")
    audio, rate = sf.read(io.BytesIO(wav.content))
    assert rate == 16000 and 0.3 < len(audio) / rate < 5 and abs(audio).max() > 0.01
    slow = client.audio.speech.create(model=name, voice="default", input="Hello there.", speed=0.5)
    assert len(sf.read(io.BytesIO(slow.content))[0]) > 1.5 * len(audio)  # speed is the length scale
    for fmt, magic in (("flac", b"fLaC"), ("opus", b"OggS"), ("mp3", None)):
        data = client.audio.speech.create(model=name, voice="default", input="Hi.", response_format=fmt).content
        assert len(data) > 100 and (magic is None or data.startswith(magic))
    with pytest.raises(openai.BadRequestError) as e:  # a voice the model does not have
        client.audio.speech.create(model=name, voice="alloy", input="Hello.")
    assert "alloy" in e.value.body["message"]
