import torch

from incasa.nn.layers import apply_rope, rope_2d_freqs, timestep_embedding


def test_rope_scores_depend_only_on_relative_offset():
    torch.manual_seed(0)
    K = 16
    q, k = torch.randn(1, 1, 1, K), torch.randn(1, 1, 1, K)
    freqs = rope_2d_freqs(6, 6, K)  # [36, K/2]

    def score(pq, pk):  # same q and k vectors placed at two grid positions
        qi = apply_rope(q.expand(1, 1, 36, K), freqs)[0, 0, pq[0] * 6 + pq[1]]
        ki = apply_rope(k.expand(1, 1, 36, K), freqs)[0, 0, pk[0] * 6 + pk[1]]
        return float(qi @ ki)

    assert abs(score((1, 1), (2, 3)) - score((3, 2), (4, 4))) < 1e-4  # same (dy, dx) = (1, 2)
    assert abs(score((1, 1), (2, 3)) - score((1, 1), (3, 2))) > 1e-3  # (1, 2) vs (2, 1) differ


def test_rope_preserves_norm_and_timestep_embedding_shape():
    x = torch.randn(2, 3, 16, 8)
    y = apply_rope(x, rope_2d_freqs(4, 4, 8))
    torch.testing.assert_close(y.norm(dim=-1), x.norm(dim=-1))
    e = timestep_embedding(torch.tensor([0.0, 0.5, 1.0]), 64)
    assert e.shape == (3, 64) and torch.isfinite(e).all()
    assert not torch.allclose(e[0], e[1])
