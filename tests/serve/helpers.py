"""In-test engines (never shipped): they stand in for models so that the server's own machinery is what is tested."""

import threading
import time

from PIL import Image

from incasa.serve.engines import ImageJob, Rendered


def params_for(job: ImageJob, model: str) -> list[dict]:
    return [{"prompt": job.prompt, "seed": job.seed + i, "steps": job.steps, "guidance": job.guidance,
             "size": "8x8", "sampler": "test", "model": model, "model_hash": "0000000000", "mode": "txt2img",
             "strength": None, "incasa_version": "test"} for i in range(job.n)]


class SolidEngine:
    """Draws each picture in one grey level; records every batch; can be held with a gate to fill the queue."""

    def __init__(self, name: str = "solid", seconds: float = 0.0):
        self.name, self.seconds = name, seconds
        self.batches: list[list[ImageJob]] = []
        self.gate = threading.Event()
        self.gate.set()
        self.started = threading.Event()

    def batch_key(self, job: ImageJob) -> tuple:
        return ("txt2img" if job.mask is None else "inpaint", job.steps)

    def loaded(self) -> bool:
        return True

    def run_batch(self, jobs: list[ImageJob]) -> list[Rendered]:
        self.started.set()
        self.gate.wait(30)
        if self.seconds:
            time.sleep(self.seconds)
        self.batches.append(list(jobs))
        return [Rendered([Image.new("RGB", (8, 8), (40 * i, 90, 160)) for i in range(j.n)], params_for(j, self.name))
                for j in jobs]


class EchoChat:
    """A chat engine that answers with the last user message, one word per token."""

    def chat(self, messages, *, max_tokens, temperature, top_p, seed):
        words = messages[-1]["content"].split()
        for i, w in enumerate(words[:max_tokens]):
            yield w if i == 0 else " " + w

    def count_tokens(self, text: str) -> int:
        return len(text.split())


class ToneSpeech:
    """A speech engine: a 440 Hz tone, 0.1 s per word."""

    def speak(self, text, *, voice, speed):
        import numpy as np

        rate = 8000
        t = np.arange(int(rate * 0.1 * len(text.split()) / speed)) / rate
        return 0.5 * np.sin(2 * np.pi * 440 * t), rate
