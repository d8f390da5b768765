"""Text-to-speech trained in-house (issue 8).

Public API (incasa.voice.speak): synthesize(text, voice=, speed=, pitch=, energy=, lang=, checkpoint=) ->
(float32 waveform, sample rate); stream(...) yields one waveform per sentence; voices(checkpoint) lists speakers;
load_voice(checkpoint, device) loads and caches a model; write_audio(path, audio, sr) writes WAV/FLAC/MP3/Opus.
Modules: frontend (normalise, split, G2P), model (acoustic), vocoder (iSTFT head), data (corpus), train, eval.
"""
