import time

import numpy as np

from incasa.safety.classifier import DEFAULT_MODEL, features, load_model, save_model, train
from incasa.safety.promptset import load_prompt_set


def small_training_set():
    rows = [r for r in load_prompt_set() if r["split"] == "train" and r["lang"] == "en" and r["obfuscation"] is None]
    return [r["text"] for r in rows], [r["label"] for r in rows]


def test_numpy_inference_matches_sklearn_and_survives_save_load(tmp_path):
    texts, labels = small_training_set()
    model, pipeline = train(texts, labels)
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
        assert set(f.metadata()) >= {"classes", "vocabulary", "threshold"}


def test_training_separates_its_own_data():
    texts, labels = small_training_set()
    model, _ = train(texts, labels)
    predicted = [max(model.predict_proba(t).items(), key=lambda kv: kv[1])[0] for t in texts]
    assert np.mean([p == y for p, y in zip(predicted, labels)]) > 0.95


def test_shipped_model_is_small_fast_and_complete():
    model = load_model(DEFAULT_MODEL)
    assert set(model.classes) == {"benign", "minors_sexual", "non_consensual_sexual", "deepfake_impersonation",
                                  "graphic_violence", "self_harm", "hate_symbols", "mass_harm_weapons",
                                  "election_news_manipulation"}
    assert DEFAULT_MODEL.stat().st_size < 2_000_000
    assert 0.5 <= model.threshold < 1.0
    start = time.perf_counter()
    for _ in range(200):
        model.predict_proba("a photorealistic image of a red sports car on a coastal road, cinematic lighting")
    assert (time.perf_counter() - start) / 200 < 0.005


def test_features_see_through_obfuscation():
    assert features("N 4 K E D") == features("naked")
    assert "w:naked" in features("naked girl") and " na" in features("naked")
