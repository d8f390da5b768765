"""The batched engine renders what one-request-at-a-time generation renders; the resident-model cache obeys its
budget and idle time; the scheduler batches compatible jobs, bounds its queue and drains on close."""

import threading
import time

import numpy as np
import pytest
from PIL import Image

from incasa.image.generate import generate_images, load_pipeline
from incasa.serve.engines import ImageJob, IncasaImageEngine, ResidentPipelines, generate_batch, preview_steps
from incasa.serve.scheduler import BatchQueue, QueueFull, ShuttingDown

from .helpers import SolidEngine


def _diff(a: Image.Image, b: Image.Image) -> int:
    return int(np.abs(np.asarray(a, dtype=np.int16) - np.asarray(b, dtype=np.int16)).max())


def test_batch_of_different_prompts_equals_separate_generation(tiny_checkpoint):
    pipe = load_pipeline(tiny_checkpoint, device="cpu")
    jobs = [ImageJob("a red square", n=2, seed=5, steps=3), ImageJob("green", n=1, seed=11, steps=3),
            ImageJob("a big blue square on white", n=2, seed=0, steps=3)]
    batched = generate_batch(pipe, jobs)
    for job, got in zip(jobs, batched, strict=True):
        want, params = generate_images(job.prompt, n=job.n, seed=job.seed, steps=3, pipeline=pipe, return_params=True)
        assert [p["seed"] for p in got.params] == [p["seed"] for p in params]
        assert {k: v for k, v in got.params[0].items()} == params[0]
        for a, b in zip(got.images, want, strict=True):
            assert _diff(a, b) <= 1  # float rounding of a bigger batch, at most one 8-bit level


def test_batched_inpainting_keeps_the_unmasked_region(tiny_checkpoint):
    pipe = load_pipeline(tiny_checkpoint, device="cpu")
    init = Image.new("RGB", (16, 16), (10, 200, 30))
    mask = Image.new("L", (16, 16), 0)
    mask.paste(255, (0, 0, 8, 16))  # repaint the left half
    jobs = [ImageJob("a red square", n=1, seed=1, steps=3, init_image=init, mask=mask),
            ImageJob("blue", n=2, seed=2, steps=3, init_image=init, mask=mask)]
    out = generate_batch(pipe, jobs)
    for rendered in out:
        for img in rendered.images:
            right = np.asarray(img)[:, 8:]
            assert (right == (10, 200, 30)).all()
            assert rendered.params[0]["mode"] == "inpaint"


def test_previews_arrive_before_the_final_step(tiny_checkpoint):
    pipe = load_pipeline(tiny_checkpoint, device="cpu")
    seen = []
    job = ImageJob("red", n=2, seed=0, steps=6, partial_images=2,
                   on_preview=lambda i, r: seen.append((i, len(r.images))))
    generate_batch(pipe, [job, ImageJob("blue", n=1, seed=0, steps=6)])
    assert seen == [(0, 2), (1, 2)]
    assert preview_steps(25, 2) == [7, 16]
    assert preview_steps(25, 0) == [] and preview_steps(1, 3) == []
    assert all(s <= 23 for s in preview_steps(25, 3))


def test_batch_key_separates_what_one_sampler_call_cannot_mix(tiny_checkpoint):
    engine = IncasaImageEngine(tiny_checkpoint, ResidentPipelines(device="cpu"))
    assert engine.name == "incasa-tiny"
    init = Image.new("RGB", (16, 16))
    a = engine.batch_key(ImageJob("x", steps=4))
    assert a == engine.batch_key(ImageJob("other prompt", n=3, seed=9, steps=4))
    assert a != engine.batch_key(ImageJob("x", steps=5))
    assert a != engine.batch_key(ImageJob("x", steps=4, guidance=2.0))
    assert a != engine.batch_key(ImageJob("x", steps=4, init_image=init, mask=Image.new("L", (16, 16))))
    assert engine.batch_key(ImageJob("x", init_image=init, strength=0.5)) != engine.batch_key(
        ImageJob("x", init_image=init, strength=0.7))


def test_resident_pipelines_lru_budget_and_idle_ttl(tiny_checkpoint, tmp_path):
    import shutil

    other = tmp_path / "other.safetensors"
    shutil.copy(tiny_checkpoint, other)
    now = [0.0]
    resident = ResidentPipelines(device="cpu", memory_budget_mb=1e6, idle_ttl_s=10, clock=lambda: now[0])
    first = resident.get(tiny_checkpoint)
    assert resident.get(tiny_checkpoint) is first  # loaded once, then resident
    one = resident.resident_bytes()
    assert one > 0
    resident.get(other)
    assert resident.resident_bytes() == 2 * one
    now[0] = 5.0
    resident.get(tiny_checkpoint)
    now[0] = 12.0  # `other` idle for 12 s > ttl; the tiny one for 7 s
    resident.expire()
    assert resident.is_loaded(tiny_checkpoint) and not resident.is_loaded(other)
    tight = ResidentPipelines(device="cpu", memory_budget_mb=1.5 * one / 2**20)
    tight.get(tiny_checkpoint)
    tight.get(other)  # over budget: the least recently used leaves
    assert tight.is_loaded(other) and not tight.is_loaded(tiny_checkpoint)


def test_queue_micro_batches_compatible_jobs_in_order():
    engine = SolidEngine()
    engine.gate.clear()
    queue = BatchQueue(engine, max_waiting=16, max_batch_images=10, batch_wait_s=0.05)
    queue.start()
    blocker = queue.submit(ImageJob("first", steps=1))
    assert engine.started.wait(5)
    # while the worker is busy, six jobs arrive: four with 4 steps, two with 8
    futures = [queue.submit(ImageJob(f"p{i}", n=2, steps=4 if i % 3 else 8)) for i in range(6)]
    engine.gate.set()
    for f in [blocker, *futures]:
        assert len(f.result(10).images) in (1, 2)
    sizes = [[j.prompt for j in b] for b in engine.batches]
    assert sizes[0] == ["first"]
    assert sizes[1] == ["p0", "p3"]  # the oldest job decides the kind; every compatible one joins it
    assert sizes[2] == ["p1", "p2", "p4", "p5"]
    assert queue.close(5)


def test_full_queue_refuses_at_once_with_retry_after_and_skips_cancelled():
    engine = SolidEngine()
    engine.gate.clear()
    queue = BatchQueue(engine, max_waiting=2, max_batch_images=10, batch_wait_s=0.0)
    queue.start()
    running = queue.submit(ImageJob("running"))
    assert engine.started.wait(5)
    waiting = [queue.submit(ImageJob(f"w{i}", steps=i + 2)) for i in range(2)]
    start = time.perf_counter()
    with pytest.raises(QueueFull) as e:
        queue.submit(ImageJob("one too many"))
    assert time.perf_counter() - start < 0.01 and e.value.retry_after_s >= 1
    assert waiting[0].cancel()  # a client gave up: its place frees up and it is never rendered
    late = queue.submit(ImageJob("late", steps=9))
    engine.gate.set()
    assert late.result(10) and running.result(10) and waiting[1].result(10)
    rendered = [j.prompt for b in engine.batches for j in b]
    assert "w0" not in rendered and "late" in rendered
    assert queue.close(5)
    with pytest.raises(ShuttingDown):
        queue.submit(ImageJob("after close"))


def test_close_finishes_accepted_work_and_engine_errors_reach_the_caller():
    engine = SolidEngine(seconds=0.05)
    queue = BatchQueue(engine, max_waiting=8, max_batch_images=10, batch_wait_s=0.0)
    queue.start()
    futures = [queue.submit(ImageJob("x", steps=s)) for s in (1, 2, 3)]
    assert queue.close(10)
    assert all(f.done() and not f.exception() for f in futures)

    class Broken(SolidEngine):
        def run_batch(self, jobs):
            raise ValueError("the model cannot draw that")

    broken = BatchQueue(Broken(), max_waiting=8)
    broken.start()
    with pytest.raises(ValueError, match="cannot draw"):
        broken.submit(ImageJob("x")).result(5)
    ok = threading.Event()
    broken.submit(ImageJob("y")).add_done_callback(lambda f: ok.set())  # the worker survived
    assert ok.wait(5)
    broken.close(5)


def test_reservations_count_against_the_bound_until_released_or_submitted():
    engine = SolidEngine()
    engine.gate.clear()
    queue = BatchQueue(engine, max_waiting=2)
    queue.start()
    queue.reserve()
    queue.reserve()  # two requests being admitted (guardrails running): the queue counts them as waiting
    assert queue.depth() == 2
    with pytest.raises(QueueFull):
        queue.reserve()
    with pytest.raises(QueueFull):
        queue.submit(ImageJob("no place"))
    queue.release()  # one was refused by the content policy: its place frees up
    future = queue.submit(ImageJob("admitted", steps=2), reserved=True)
    assert queue.depth() == 1
    queue.submit(ImageJob("walk-in", steps=3))
    assert queue.depth() == 2
    engine.gate.set()
    assert future.result(5).images
    assert queue.close(5)
