"""The metric must be able to fail: known-good pictures score high, known-bad ones score near chance.

"Generators" here are plain functions (prompt, n, seed) -> pictures: the real picture of the prompt (a perfect,
memorising generator), pure noise, the real pictures under shuffled prompts, a 10-step model and the shipped default.
"""

import numpy as np
import pytest
from PIL import Image

from incasa.image.eval import (FAMILIES, TRAIN_FAMILIES, EvalConfig, Prompt, build_prompts, evaluate_generator)


@pytest.fixture(scope="module")
def prompts(real, judge):
    return build_prompts(real.train_metas, real.combo_metas, judge, EvalConfig(num_prompts=16))


def picture_generator(mapping: dict[str, np.ndarray]):
    blank = Image.new("RGB", (64, 64), "white")

    def generate(text: str, n: int, seed: int) -> list[Image.Image]:
        return [Image.fromarray(mapping[text]) if text in mapping else blank.copy() for _ in range(n)]

    return generate


def noise_generator(text: str, n: int, seed: int) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)) for _ in range(n)]


@pytest.fixture(scope="module")
def real_result(prompts, real, judge, memory):
    pics = real.pictures()
    mapping = {p.text: pics[p.real_key] for p in prompts if p.real_key}
    return evaluate_generator(picture_generator(mapping), prompts, judge, real, variants=2, memory=memory)[0]


def test_the_prompt_suite_covers_every_family_and_is_seeded(prompts, real, judge):
    families = {p.family for p in prompts}
    assert set(FAMILIES) <= families
    assert {"two_objects", "colour", "colour_binding", "count", "position"} <= families
    again = build_prompts(real.train_metas, real.combo_metas, judge, EvalConfig(num_prompts=16))
    assert again == prompts
    other = build_prompts(real.train_metas, real.combo_metas, judge, EvalConfig(num_prompts=16, seed=1))
    assert [p.text for p in other] != [p.text for p in prompts]
    assert any(p.family == "it" and "stile" in p.text for p in prompts)


def test_held_out_real_pictures_score_high_and_exact_copies_are_memorised(real_result):
    fid = real_result["fidelity"]
    assert fid["in_distribution"]["top5"] >= 0.5
    assert fid["heldout_combo"]["top5"] >= 0.5
    assert real_result["fidelity_overall"]["top1"] >= 0.3  # chance: 1/1829
    mem = real_result["memorisation"]
    for fam in TRAIN_FAMILIES:  # the "generator" returns the training picture itself
        assert mem["per_family"][fam] == 1.0
    assert mem["exact_share"] > 0.5
    assert mem["per_family"]["heldout_combo"] <= 0.25  # those pictures are not in the training set
    # identical variants are collapse; the Fréchet distance equals its floor (the same pictures)
    assert real_result["diversity"]["collapsed_share"] == 1.0
    fd = real_result["frechet"]
    assert fd["generated"] == pytest.approx(fd["floor_same_prompts"], rel=1e-6)


def test_pure_noise_scores_near_chance_and_is_not_memorised(prompts, real, judge, memory, real_result):
    result, _ = evaluate_generator(noise_generator, prompts, judge, real, variants=2, memory=memory)
    assert result["fidelity_overall"]["top5"] <= 0.05
    assert result["fidelity_overall"]["median_rank"] > 100
    assert result["memorisation"]["share"] == 0.0
    # with only 8 reference pictures in 256-d most of the distance is sampling noise, so the margin is modest here
    assert result["frechet"]["generated"] > 1.1 * real_result["frechet"]["generated"]
    assert result["probes"]["position"]["accuracy"] <= 0.1


def test_shuffled_prompts_score_near_chance(prompts, real, judge, real_result):
    # perfect pictures, wrong prompts: each prompt gets the picture of the next prompt of its family
    pics = real.pictures()
    mapping = {}
    for fam in FAMILIES:
        fam_prompts = [p for p in prompts if p.family == fam]
        for p, q in zip(fam_prompts, fam_prompts[1:] + fam_prompts[:1]):
            mapping[p.text] = pics[q.real_key]
    result, _ = evaluate_generator(picture_generator(mapping), prompts, judge, real, variants=1)
    assert result["fidelity_overall"]["top1"] <= 0.1
    assert result["fidelity_overall"]["top5"] <= 0.2
    assert result["fidelity_overall"]["top5"] < real_result["fidelity_overall"]["top5"] - 0.4


def test_a_ten_step_model_scores_worse_than_the_shipped_default(real, judge, ten_step_checkpoint):
    from incasa.image.generate import generate_images, load_pipeline

    prompts = [Prompt(m["captions"][0], "in_distribution", (m["hexcode"],), m["style"],
                      real_key=f"{m['style']}_{m['hexcode']}") for m in real.train_metas]
    results = {}
    for name, ck in (("ten_step", ten_step_checkpoint), ("default", None)):
        pipe = load_pipeline(ck, device="cpu")
        results[name], _ = evaluate_generator(
            lambda text, n, seed, pipe=pipe: generate_images(text, n=n, seed=seed, steps=10, pipeline=pipe),
            prompts, judge, real, variants=2)
    ten, default = results["ten_step"], results["default"]
    assert default["fidelity"]["in_distribution"]["target_prob"] > 2 * ten["fidelity"]["in_distribution"]["target_prob"]
    assert default["frechet"]["generated"] < ten["frechet"]["generated"]
    assert ten["diversity"]["mode_collapse"] and not default["diversity"]["mode_collapse"]
