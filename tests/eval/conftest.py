"""Fixtures of the image-evaluation tests: a committed handful of real emoji pictures and the shipped judge.

tests/eval/fixtures/emoji_mini holds 16 real pictures the generator trained on but the judge never saw (the judge's
held-out slice) and 8 held-out style x emoji pictures, in the dataset's own format (see fixtures/build_fixture.py);
so these tests need neither /work/main/data nor the network.
"""

from pathlib import Path

import pytest

FIXTURE = Path(__file__).parent / "fixtures" / "emoji_mini"


@pytest.fixture(scope="session")
def judge():
    from incasa.image.eval_classifier import load_classifier

    return load_classifier()


@pytest.fixture(scope="session")
def real():
    from incasa.image.eval import load_real_data

    return load_real_data(FIXTURE)


@pytest.fixture(scope="session")
def memory(real):
    from incasa.image.eval import TrainingMemory

    return TrainingMemory(real.train_images, [f"{m['style']}_{m['hexcode']}" for m in real.train_metas])


@pytest.fixture(scope="session")
def ten_step_checkpoint(tmp_path_factory):
    """`incasa train image --preset tiny --steps 10` on the fixture: the model that must score worse."""
    from incasa.image.train import TrainConfig, train

    out = tmp_path_factory.mktemp("ten-step")
    train(TrainConfig(data=str(FIXTURE), out=str(out), preset="tiny", text_encoder="hash", steps=10, batch_size=8,
                      warmup=2, sample_every=1000, ckpt_every=1000))
    return out / "model.safetensors"
