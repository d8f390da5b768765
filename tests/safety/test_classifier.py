import time
from dataclasses import replace

import numpy as np
import pytest

from incasa.safety.classifier import (
    DEFAULT_MODEL,
    HIDDEN_UNITS,
    MIN_THRESHOLD,
    cross_validated_thresholds,
    features,
    fresh_weights,
    load_model,
    predict_proba_batch,
    save_model,
    train,
    train_blend,
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
    # The project's 25 MB per shipped file: 4.6 MB in round 7, 8.9 MB in round 11, 12.4 MB in 15, 13.0 MB in 18,
    # 24.2 MB in 24 (the blend: its (F, 32) first layer as int8 rows)
    assert DEFAULT_MODEL.stat().st_size < 25_000_000
    assert model.hidden_weight is not None  # kind "blend" since round 24
    assert set(model.thresholds) == set(HARD_CATEGORIES) and model.name_token  # names as one word since round 15
    assert {f"fresh{n}" for n in range(2, 23)} <= set(model.fresh_sets_seen) and "fresh23" not in model.fresh_sets_seen
    assert all(MIN_THRESHOLD <= t < 1.0 for t in model.thresholds.values())  # never below the floor
    model.predict_proba("warm-up")  # the first call compiles the name lists' regexes (~0.4 s, once per process)
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


def _conjunction_set(rng: np.random.Generator) -> tuple[list[str], list[str]]:
    """'knife and throat' and 'bath and shop' are harm, 'knife and shop' and 'bath and throat' are not.

    "and" sits between the two words, so every bigram and character n-gram is a function of one of them alone:
    only a conjunction of two word features separates the classes (an XOR), which a linear model cannot express
    (at best 3 of the 4 pairs right).
    """
    texts, labels = [], []
    for _ in range(400):
        first, second = rng.integers(2), rng.integers(2)
        texts.append(f"{('knife', 'bath')[first]} and {('throat', 'shop')[second]}")
        labels.append("graphic_violence" if first == second else "benign")
    # a third, easy class: scikit-learn fits two classes as one binary vector, the model expects one per class
    texts += ["swastika flag"] * 100
    labels += ["hate_symbols"] * 100
    return texts, labels


def test_hidden_layer_learns_a_conjunction_the_linear_model_cannot():
    texts, labels = _conjunction_set(np.random.default_rng(0))
    blend, _ = train_blend(texts, labels, epochs=30, seed=0)
    linear, _ = train(texts, labels)
    hidden_only = replace(blend, coef=np.zeros_like(blend.coef), intercept=np.zeros_like(blend.intercept))

    def accuracy(model):
        predicted = [max(model.predict_proba(t).items(), key=lambda kv: kv[1])[0] for t in texts[:400]]
        return np.mean([p == y for p, y in zip(predicted, labels[:400], strict=True)])  # the XOR rows

    # with its linear half zeroed (a uniform 1/3) the blend's argmax is the hidden network's
    assert accuracy(hidden_only) > 0.95
    assert accuracy(blend) > 0.95
    assert accuracy(linear) < 0.8


def test_row_weights_reach_the_hidden_layer_as_the_linear_model():
    """An ambiguous text, 50 rows benign and 50 violent, each class padded with 50 rows of an easy text: balanced
    class weights make it a tie. Row weights x5 on one side's ambiguous rows move mass within that class (the
    balancing is on weighted counts, as scikit-learn's), to 250 : 300 of it against 50 : 100 on the other side,
    so the weighted optimum for the ambiguous text is 5/6 : 1/2, P = 0.625 for the heavy side, in both halves."""
    texts = ["a knife on the table"] * 50 + ["a sunny beach"] * 50 + ["a knife on the table"] * 50 + [
        "a bloody knife wound"] * 50 + ["swastika flag"] * 100
    labels = ["benign"] * 100 + ["graphic_violence"] * 100 + ["hate_symbols"] * 100
    for heavy, winner, loser in ((slice(100, 150), "graphic_violence", "benign"),
                                 (slice(0, 50), "benign", "graphic_violence")):
        weights = np.ones(len(texts))
        weights[heavy] = 5.0
        blend, _ = train_blend(texts, labels, epochs=20, seed=0, sample_weight=weights)
        linear_only = replace(blend, hidden_weight=None)
        probs = linear_only.predict_proba("a knife on the table")
        assert 0.55 < probs[winner] < 0.7, (winner, probs)
        # the hidden half alone shows through the zeroed linear half's uniform 1/3: compare the two labels
        hidden_only = replace(blend, coef=np.zeros_like(blend.coef), intercept=np.zeros_like(blend.intercept))
        probs = hidden_only.predict_proba("a knife on the table")
        assert probs[winner] > 1.15 * probs[loser], (winner, probs)
    with pytest.raises(ValueError, match="sample_weight"):  # scikit-learn refuses first
        train_blend(texts, labels, epochs=1, sample_weight=np.ones(3))


def test_blend_kind_survives_save_load_and_matches_its_batch_scores(tmp_path, small):
    texts, labels, linear, linear_pipeline = small
    model, pipeline = train_blend(texts, labels, epochs=3, seed=0)
    path = tmp_path / "h.safetensors"
    save_model(replace(model, thresholds={c: 0.8 for c in HARD_CATEGORIES}), path)
    loaded = load_model(path)
    assert loaded.hidden_weight.shape == (len(loaded.vocabulary), HIDDEN_UNITS)
    probe = texts[:20] + ["a completely new prompt about a lighthouse", ""]
    expected = predict_proba_batch(model, pipeline[0].transform(probe))
    # its linear half is the linear model, and the hidden half moves the probabilities
    np.testing.assert_allclose(predict_proba_batch(linear, pipeline[0].transform(probe)),
                               linear_pipeline.predict_proba(probe), atol=1e-9)
    assert np.abs(expected - linear_pipeline.predict_proba(probe)).max() > 0.01
    got = np.array([[loaded.predict_proba(t)[c] for c in model.classes] for t in probe])
    np.testing.assert_allclose(got, expected, atol=3e-3)  # float16 weights on disk
    from safetensors import safe_open

    with safe_open(str(path), framework="np") as f:
        assert set(f.keys()) == {"idf", "coef", "intercept", "hidden_weight_q", "hidden_weight_scale", "hidden_bias",
                                 "hidden_coef", "hidden_intercept"}
        assert f.get_tensor("hidden_weight_q").dtype == np.int8
        assert f.metadata()["kind"] == "blend"
    # the int8 rows: each entry within half a step (1/254 of its row's largest) of the trained weight, plus the
    # float16 rounding before it (at most ~0.05 of a step)
    step = np.abs(model.hidden_weight).max(axis=1, keepdims=True) / 127
    assert np.all(np.abs(loaded.hidden_weight - model.hidden_weight) <= 0.6 * step)
    start = time.process_time()
    for _ in range(200):
        loaded.predict_proba("a photorealistic image of a red sports car on a coastal road, cinematic lighting")
    assert (time.process_time() - start) / 200 < 0.005


def test_unknown_kind_is_refused():
    rows = [r for r in load_prompt_set() if r["split"] == "train" and r["lang"] == "en" and r["obfuscation"] is None]
    with pytest.raises(ValueError, match="unknown classifier kind"):
        cross_validated_thresholds(rows, folds=3, kind="forest")


def test_row_weights_pull_the_model_towards_the_weighted_rows(small):
    """`fresh_weights`: a fresh set's row weighs `fresh_weight`, a seed's row 1; `train` with all-one weights is the
    unweighted fit, and weighting some rows up raises the probability the model gives their own labels."""
    rows = [{"core": "benign_tricky/fresh8.3"}, {"core": "self_harm/p4"}, {"core": "benign/fresh21.40"}]
    assert fresh_weights(rows, 3.0).tolist() == [3.0, 1.0, 3.0]
    with pytest.raises(ValueError, match="positive"):
        fresh_weights(rows, 0.0)
    texts, labels, model, pipeline = small
    same, _ = train(texts, labels, sample_weight=np.ones(len(texts)))
    np.testing.assert_allclose(same.coef, model.coef, atol=1e-8)
    heavy_rows = list(range(0, len(texts), 10))  # every tenth prompt, weighted 20
    weights = np.ones(len(texts))
    weights[heavy_rows] = 20.0
    _, heavy = train(texts, labels, sample_weight=weights)

    def own_label_probability(fitted) -> float:
        probs = fitted.predict_proba([texts[i] for i in heavy_rows])  # (R, C)
        columns = [list(fitted.classes_).index(labels[i]) for i in heavy_rows]
        return float(np.mean(probs[np.arange(len(heavy_rows)), columns]))

    assert own_label_probability(heavy) > own_label_probability(pipeline) + 0.01


def test_a_model_records_the_fresh_sets_it_was_trained_on(tmp_path):
    """Since round 11 the fresh sets are training data: `train_on_prompt_set` lists the ones in its training rows in
    the file, so that benchmarks/guardrails.py never reports them as held out; a file without the entry saw none."""
    from collections import Counter

    from incasa.safety.classifier import train_on_prompt_set
    from incasa.safety.promptset import fresh_set_of

    rows = [r for r in load_prompt_set() if r["lang"] == "en" and r["obfuscation"] is None and r["frame"] == 0]
    taken, picked = Counter(), []
    for r in rows:  # a small set: 12 concepts per label from the seeds, plus fresh8's English prompts
        if fresh_set_of(r) is None and r["split"] == "train" and taken[r["label"]] < 12:
            taken[r["label"]] += 1
            picked.append(r)
    fresh8 = [r for r in rows if fresh_set_of(r) == "fresh8"]
    assert len(fresh8) == 130 and all(r["split"] == "train" for r in fresh8)
    path = tmp_path / "m.safetensors"
    model, _ = train_on_prompt_set(picked + fresh8 + [r for r in rows if r["split"] == "test"][:5], path)
    assert model.fresh_sets_seen == ("fresh8",) and load_model(path).fresh_sets_seen == ("fresh8",)
    model, _ = train_on_prompt_set(picked, path)
    assert load_model(path).fresh_sets_seen == ()


def test_a_public_figures_name_is_one_placeholder_word():
    """With name_token, a listed name leaves no character n-grams, only NAME_TOKEN in the word uni- and bigrams, so a
    pattern learned on one name holds for every listed one; without it the name's pieces are features."""
    from incasa.safety.classifier import NAME_TOKEN

    with_token = features("Angela Merkel drunk at her desk", name_token=True)
    assert f"w:{NAME_TOKEN} drunk" in with_token and f"w:{NAME_TOKEN}" in with_token
    assert not any("merk" in g or "angel" in g for g in with_token)
    assert features("Emmanuel Macron drunk at her desk", name_token=True) == with_token
    plain = features("Angela Merkel drunk at her desk")
    assert " merk" in plain and "w:angela merkel" in plain and not any(NAME_TOKEN in g for g in plain)
    # an unlisted word stays itself
    assert "w:grandma drunk" in features("grandma drunk at her desk", name_token=True)


def test_a_name_token_model_scores_every_listed_name_alike_and_keeps_the_flag(tmp_path):
    texts = ["Angela Merkel drunk, leaked photo", "Joe Biden arrested, real photo", "a red apple on a table",
             "a lighthouse at dusk", "Olaf Scholz in handcuffs, realistic", "a bowl of soup",
             "a severed head, gore"] * 3
    labels = ["deepfake_impersonation", "deepfake_impersonation", "benign", "benign", "deepfake_impersonation",
              "benign", "graphic_violence"] * 3
    model, _ = train(texts, labels, min_df=1, name_token=True)
    path = tmp_path / "m.safetensors"
    save_model(model, path)
    loaded = load_model(path)
    assert loaded.name_token and not train(texts, labels, min_df=1)[0].name_token
    # a name no training prompt used (Meloni) gets the same scores as one it did (Merkel)
    a, b = loaded.predict_proba("Giorgia Meloni drunk"), loaded.predict_proba("Angela Merkel drunk")
    assert a == pytest.approx(b) and a["deepfake_impersonation"] > 0.5


def test_non_prompt_rows_are_left_out_of_the_threshold_budget():
    """Thresholds come from the benign *prompts'* out-of-fold scores: adding any number of non-prompt benign rows
    (other projects' docstrings, promptset.NONPROMPT_SECTION) leaves every threshold as it was."""
    from incasa.safety.classifier import thresholds_from_scores

    rng = np.random.default_rng(0)
    classes = sorted(["benign", *HARD_CATEGORIES])
    n = 800
    probs = rng.dirichlet(np.ones(len(classes)) * 0.3, size=n)  # (N, C)
    labels = np.array(rng.choice(classes, size=n))
    groups = [f"x/{i}" for i in range(n)]
    base = thresholds_from_scores(probs, classes, labels, groups)
    extra = np.full((4000, len(classes)), 0.0)
    extra[:, classes.index("benign")] = 1.0
    more = thresholds_from_scores(np.vstack([probs, extra]), classes, np.concatenate([labels, ["benign"] * 4000]),
                                  groups + [f"nonprompt/{i}" for i in range(4000)])
    assert more == base
    # counted as prompts they would have diluted the budget: the thresholds drop (to the floor or near it)
    diluted = thresholds_from_scores(np.vstack([probs, extra]), classes, np.concatenate([labels, ["benign"] * 4000]),
                                     groups + [f"benign/{i}" for i in range(4000)])
    assert all(diluted["thresholds"][k] <= base["thresholds"][k] for k in base["thresholds"])
    assert any(diluted["thresholds"][k] < base["thresholds"][k] for k in base["thresholds"])


def test_an_organisations_name_is_one_placeholder_word_after_the_people():
    """org_token does for the organisation list (news media, institutions, parties) what name_token does for people;
    people are replaced first, and a model without the flag never sees ORG_TOKEN."""
    from incasa.safety.classifier import NAME_TOKEN, ORG_TOKEN

    grams = features("fake ANSA screenshot: Giorgia Meloni resigns", name_token=True, org_token=True)
    assert f"w:fake {ORG_TOKEN}" in grams and f"w:{ORG_TOKEN} screenshot" in grams
    assert f"w:{NAME_TOKEN} resigns" in grams
    assert not any("ansa" in g for g in grams)
    assert features("fake Tagesschau screenshot", org_token=True) == features("fake Reuters screenshot", org_token=True)
    assert not any(ORG_TOKEN in g for g in features("fake ANSA screenshot", name_token=True))
    # "nato" is Italian for "born": dropped from the list (scripts/name_lists.py), so it stays a word
    assert "w:nato a" in features("nato a Roma nel 1990", org_token=True)


def test_lazy_adam_is_torch_sparse_adam():
    """The hidden layer's row-wise Adam makes torch.optim.SparseAdam's updates, including rows a step skips."""
    import torch

    from incasa.safety.classifier import _LazyAdam

    torch.manual_seed(0)
    ours, ref = (torch.nn.EmbeddingBag(50, 4, mode="sum", sparse=True) for _ in range(2))
    ref.weight.data.copy_(ours.weight.data)
    start = ours.weight.detach().clone()
    optimizers = ((ours, _LazyAdam(ours.weight, lr=0.01)), (ref, torch.optim.SparseAdam([ref.weight], lr=0.01)))
    for step in range(30):
        ids = torch.randint(0, 20 if step < 15 else 50, (12,))  # rows 20-49 join late: their moments start later
        offsets, weights = torch.tensor([0, 5]), torch.rand(12)
        for bag, optimizer in optimizers:
            optimizer.zero_grad()
            bag(ids, offsets, per_sample_weights=weights).square().sum().backward()
            optimizer.step()
    assert (ours.weight - ref.weight).abs().max() < 1e-6
    assert (ours.weight - start).abs().max() > 0.05  # it moved
