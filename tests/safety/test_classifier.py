import time

import numpy as np
import pytest

from incasa.safety.classifier import (
    DEFAULT_MODEL,
    MIN_THRESHOLD,
    cross_validated_thresholds,
    features,
    load_model,
    save_model,
    train,
)
from incasa.safety.promptset import HARD_CATEGORIES, load_prompt_set


@pytest.fixture(scope="module")
def small():
    """A model trained on the English, unobfuscated training prompts (~400), shared by the tests below."""
    rows = [r for r in load_prompt_set() if r["split"] == "train" and r["lang"] == "en" and r["obfuscation"] is None]
    texts, labels = [r["text"] for r in rows], [r["label"] for r in rows]
    model, pipeline = train(texts, labels)
    return texts, labels, model, pipeline


def test_numpy_inference_matches_sklearn_and_survives_save_load(tmp_path, small):
    texts, labels, model, pipeline = small
    path = tmp_path / "m.safetensors"
    save_model(model, path)
    loaded = load_model(path)
    probe = texts[:20] + ["a completely new prompt about a lighthouse", ""]
    expected = pipeline.predict_proba(probe)
    got = np.array([[loaded.predict_proba(t)[c] for c in pipeline.classes_] for t in probe])
    # coefficients are stored as float16: agreement to ~1e-3 is what the format allows
    np.testing.assert_allclose(got, expected, atol=2e-3)
    from safetensors import safe_open

    with safe_open(str(path), framework="np") as f:  # plain tensors + JSON metadata, no pickle
        assert set(f.keys()) == {"idf", "coef", "intercept"}
        assert set(f.metadata()) >= {"classes", "vocabulary", "thresholds"}


def test_training_separates_its_own_data(small):
    texts, labels, model, _ = small
    predicted = [max(model.predict_proba(t).items(), key=lambda kv: kv[1])[0] for t in texts]
    assert np.mean([p == y for p, y in zip(predicted, labels, strict=True)]) > 0.95


def test_shipped_model_is_small_fast_and_complete():
    model = load_model(DEFAULT_MODEL)
    assert set(model.classes) == {"benign", "adult_nudity", *HARD_CATEGORIES}
    assert DEFAULT_MODEL.stat().st_size < 5_000_000
    assert set(model.thresholds) == set(HARD_CATEGORIES)
    assert all(MIN_THRESHOLD <= t < 1.0 for t in model.thresholds.values())  # never below the floor
    start = time.process_time()  # CPU time: the budget is per prompt on one core, whatever else the machine runs
    for _ in range(200):
        model.predict_proba("a photorealistic image of a red sports car on a coastal road, cinematic lighting")
    assert (time.process_time() - start) / 200 < 0.005


def test_features_see_through_obfuscation():
    assert features("N 4 K E D") == features("naked")
    assert "w:naked" in features("naked girl") and " na" in features("naked")


def test_per_category_thresholds_keep_the_out_of_fold_budget():
    """Each class may spend max_fp / 8 of the benign prompts out of fold; together they stay within max_fp."""
    rows = [r for r in load_prompt_set() if r["split"] == "train" and r["lang"] == "en" and r["obfuscation"] is None]
    cv = cross_validated_thresholds(rows, folds=3, max_fp=0.04)
    assert set(cv["thresholds"]) == set(HARD_CATEGORIES)
    assert cv["oof_false_positive_rate"] <= 0.04
    assert cv["oof_recall"] > 0.0  # it blocks something out of fold, not just everything or nothing
    stricter = cross_validated_thresholds(rows, folds=3, max_fp=0.0)
    assert stricter["oof_false_positive_rate"] == 0.0
    assert all(stricter["thresholds"][c] >= t for c, t in cv["thresholds"].items())
