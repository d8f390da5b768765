"""POST /v1/audio/speech: any SpeechEngine in the registry, answered as WAV, raw 16-bit PCM, or — through
libsndfile (the `soundfile` package of the voice extra) — FLAC, MP3 or Opus.

No voice model installed -> 404 model_not_found in the OpenAI shape. AAC has no maintained open encoder in
libsndfile: it is refused with a 400 that names the formats we have.
"""

import io
import wave

from anyio import to_thread
from fastapi import APIRouter, Request, Response

from incasa.serve.protocol import APIError, SpeechRequest, model_not_found

router = APIRouter(tags=["audio"])
FORMATS = {"wav": "audio/wav", "pcm": "audio/pcm", "flac": "audio/flac", "mp3": "audio/mpeg", "opus": "audio/ogg"}
ENCODED = {"flac": ("FLAC", "PCM_16"), "mp3": ("MP3", "MPEG_LAYER_III"), "opus": ("OGG", "OPUS")}


def encoded_bytes(samples, rate: int, fmt: str) -> bytes:
    import numpy as np
    import soundfile as sf

    container, subtype = ENCODED[fmt]
    buf = io.BytesIO()
    sf.write(buf, np.clip(np.asarray(samples, dtype=np.float32).reshape(-1), -1.0, 1.0), rate, format=container,
             subtype=subtype)
    return buf.getvalue()


def pcm16(samples) -> bytes:
    import numpy as np

    x = np.clip(np.asarray(samples, dtype=np.float32).reshape(-1), -1.0, 1.0)
    return (x * 32767).round().astype("<i2").tobytes()


def wav_bytes(samples, rate: int) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm16(samples))
    return buf.getvalue()


@router.post("/v1/audio/speech", summary="Speak text with a voice model",
             responses={200: {"content": {media: {} for media in FORMATS.values()}}})
async def speech(req: SpeechRequest, request: Request) -> Response:
    engine = request.app.state.ctx.registry.speech.get(req.model)
    if engine is None:
        raise model_not_found(req.model, "speech")
    fmt = req.response_format or "wav"
    if fmt not in FORMATS:
        raise APIError(400, f"response_format {fmt!r} is not available here; use {', '.join(FORMATS)}.",
                       param="response_format", code="unsupported_value")
    if req.input.strip():  # the same guardrail as image prompts and chat; refusal -> 400
        request.app.state.ctx.guard.check_prompt(req.input, source="serve-speech")
    voice = req.voice if isinstance(req.voice, str) else str(req.voice.get("id", "default"))
    try:
        samples, rate = await to_thread.run_sync(lambda: engine.speak(req.input, voice=voice, speed=req.speed or 1.0))
    except ValueError as e:
        raise APIError(400, str(e), code="invalid_value") from None
    if fmt in ENCODED:
        data = await to_thread.run_sync(lambda: encoded_bytes(samples, rate, fmt))
    else:
        data = wav_bytes(samples, rate) if fmt == "wav" else pcm16(samples)
    return Response(data, media_type=FORMATS[fmt])
