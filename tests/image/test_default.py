"""The shipped default: small enough for git, self-describing, and it draws the prompted colours."""

import numpy as np

from incasa.image.generate import DEFAULT_CHECKPOINT, generate_images, load_pipeline
from incasa.train.checkpoint import read_metadata


def test_default_is_small_and_records_how_it_was_trained():
    assert DEFAULT_CHECKPOINT.stat().st_size <= 25 * 1024 * 1024
    meta = read_metadata(DEFAULT_CHECKPOINT)
    assert meta["text_encoder"] == "minilm" and meta["image_size"] == [64, 64]
    assert meta["data_version"].startswith("emoji-") and meta["step"] > 0
    assert "train" in meta["command"] and "--preset" in meta["command"]  # `incasa train image` or gpu_kit.py train


def test_default_draws_a_red_apple_redder_than_a_blue_butterfly():
    pipe = load_pipeline()
    apple = np.stack([np.asarray(i, dtype=np.float32) for i in generate_images("a red apple, noto style", n=3, seed=7,
                                                                                pipeline=pipe)])
    butterfly = np.stack([np.asarray(i, dtype=np.float32) for i in generate_images("butterfly, noto style", n=3,
                                                                                    seed=7, pipeline=pipe)])

    def redness(x):  # mean (R - B) over non-white pixels
        fg = x.min(-1) < 230
        return float((x[..., 0] - x[..., 2])[fg].mean())

    assert redness(apple) > redness(butterfly) + 20
