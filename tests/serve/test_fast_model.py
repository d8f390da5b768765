"""The shipped 4-step student: its own sampler defaults reach the server's jobs, and `default-fast` names it."""

from incasa.image.generate import DEFAULT_FAST_CHECKPOINT
from incasa.serve.engines import IncasaImageEngine
from incasa.serve.image_service import make_job
from incasa.serve.protocol import ImageGenerationRequest
from incasa.serve.settings import ServeSettings
from incasa.train.checkpoint import read_metadata


def test_the_fast_checkpoint_is_a_small_four_step_student():
    meta = read_metadata(DEFAULT_FAST_CHECKPOINT)
    assert meta["kind"] == "incasa-image-dit" and meta["sampler"] == {"steps": 4, "guidance": 1.0}
    assert DEFAULT_FAST_CHECKPOINT.stat().st_size <= 25 * 2**20
    assert IncasaImageEngine(DEFAULT_FAST_CHECKPOINT).sampler == (4, 1.0)
    assert IncasaImageEngine(None).sampler is None  # the ordinary default names no sampler of its own


def test_jobs_take_the_models_own_steps_and_guidance_unless_the_request_says_otherwise():
    own = (4, 1.0)
    job = make_job(ImageGenerationRequest(prompt="a cat"), None, sampler=own)
    assert (job.steps, job.guidance) == (4, 1.0)
    assert make_job(ImageGenerationRequest(prompt="a cat", quality="low"), None, sampler=own).steps == 2
    assert make_job(ImageGenerationRequest(prompt="a cat", quality="high"), None, sampler=own).steps == 8
    explicit = make_job(ImageGenerationRequest(prompt="a cat", steps=7, guidance=2.0), None, sampler=own)
    assert (explicit.steps, explicit.guidance) == (7, 2.0)
    plain = make_job(ImageGenerationRequest(prompt="a cat"), None)
    assert (plain.steps, plain.guidance) == (25, 4.0)


def test_default_and_default_fast_name_the_shipped_checkpoints():
    s = ServeSettings(image_models="emoji=default,fast=default-fast")
    assert s.image_checkpoints() == [("emoji", None), ("fast", DEFAULT_FAST_CHECKPOINT)]
