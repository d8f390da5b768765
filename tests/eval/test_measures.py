"""The building blocks of image evaluation, on inputs whose answer is known."""

import numpy as np
import pytest
import torch
from PIL import Image

from incasa.image.eval import (count_blobs, dominant_colour, frechet_distance, mean_pairwise_distance, retrieval,
                               target_scores)
from incasa.image.eval_classifier import augment, images_to_tensor, topk_accuracy


def test_frechet_distance_matches_the_closed_form_for_diagonal_gaussians():
    rng = np.random.default_rng(0)
    a = rng.normal(0, 1, (20000, 3)) * [1.0, 2.0, 0.5]
    b = rng.normal(0, 1, (20000, 3)) * [2.0, 1.0, 0.5] + [3.0, 0.0, 0.0]
    # ||mu||^2 + sum (s_a + s_b - 2 sqrt(s_a s_b)) with variances (1,4,.25) and (4,1,.25)
    expected = 9.0 + (1 + 4 - 2 * 2) + (4 + 1 - 2 * 2) + 0.0
    assert frechet_distance(a, b) == pytest.approx(expected, abs=0.15)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError):
        frechet_distance(a[:1], b)


def test_pairwise_distance_is_zero_for_copies_and_one_for_orthogonal_features():
    f = torch.tensor([[1.0, 2.0, 0.0]]).repeat(5, 1)
    assert mean_pairwise_distance(f) == pytest.approx(0.0, abs=1e-6)
    assert mean_pairwise_distance(torch.eye(3)) == pytest.approx(1.0)
    assert np.isnan(mean_pairwise_distance(f[:1]))


def test_topk_rank_and_retrieval_scores():
    logits = torch.tensor([[5.0, 4.0, 3.0, 2.0, 1.0, 0.0], [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]])
    target = torch.tensor([1, 0])
    acc = topk_accuracy(logits, target)
    assert acc["top1"] == 0.0 and acc["top5"] == 0.5
    s = target_scores(logits, target)
    assert s["median_rank"] in (1.0, 5.0)  # ranks are 1 and 5; torch's median takes the lower middle
    r = retrieval(logits, target)  # candidates {0, 1}: row 0 picks 0 (wrong), row 1 picks 1 (wrong)
    assert r["retrieval_top1"] == 0.0 and r["retrieval_chance"] == 0.5


def test_dominant_colour_and_blob_count_on_drawn_pictures():
    img = np.full((64, 64, 3), 255, np.uint8)
    img[10:20, 5:15] = (30, 60, 220)
    img[40:52, 30:42] = (30, 60, 220)
    img[20:30, 45:58] = (40, 70, 230)
    x = images_to_tensor([Image.fromarray(img)])[0]
    assert dominant_colour(x) == "blue"
    assert count_blobs(x) == 3
    white = images_to_tensor([Image.new("RGB", (64, 64), "white")])[0]
    assert dominant_colour(white) is None and count_blobs(white) == 0


def test_augment_is_deterministic_and_the_identity_at_strength_zero():
    x = torch.rand(4, 3, 64, 64)
    a = augment(x, torch.Generator().manual_seed(3))
    b = augment(x, torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    assert (a - x).abs().mean() > 0.01
    same = augment(x, torch.Generator().manual_seed(3), strength=0.0)
    assert (same - x).abs().max() < 1e-4
