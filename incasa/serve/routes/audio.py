"""POST /v1/audio/speech: any SpeechEngine in the registry, answered as WAV (or raw 16-bit PCM).

No voice model installed -> 404 model_not_found in the OpenAI shape. Compressed formats (mp3, opus, aac, flac)
need an encoder we do not ship: they are refused with a 400 that names the formats we have.
"""

import io
import wave

from anyio import to_thread
from fastapi import APIRouter, Request, Response

from incasa.serve.protocol import APIError, SpeechRequest, model_not_found

router = APIRouter(tags=["audio"])
FORMATS = {"wav": "audio/wav", "pcm": "audio/pcm"}


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
             responses={200: {"content": {"audio/wav": {}, "audio/pcm": {}}}})
async def speech(req: SpeechRequest, request: Request) -> Response:
    engine = request.app.state.ctx.registry.speech.get(req.model)
    if engine is None:
        raise model_not_found(req.model, "speech")
    fmt = req.response_format or "wav"
    if fmt not in FORMATS:
        raise APIError(400, f"response_format {fmt!r} is not available here; use wav or pcm.",
                       param="response_format", code="unsupported_value")
    voice = req.voice if isinstance(req.voice, str) else str(req.voice.get("id", "default"))
    try:
        samples, rate = await to_thread.run_sync(lambda: engine.speak(req.input, voice=voice, speed=req.speed or 1.0))
    except ValueError as e:
        raise APIError(400, str(e), code="invalid_value") from None
    data = wav_bytes(samples, rate) if fmt == "wav" else pcm16(samples)
    return Response(data, media_type=FORMATS[fmt])
