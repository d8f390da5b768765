import pytest
import torch

from incasa.image.dit import PRESETS, DiT, count_parameters


def _inputs(B=2, C=3, H=16, W=16, L=5, E=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    mask = torch.ones(B, L, dtype=torch.bool)
    mask[0, 3:] = False  # padded text in the first sample
    return (torch.randn(B, C, H, W, generator=g), torch.rand(B, generator=g), torch.randn(B, L, E, generator=g), mask,
            torch.randn(B, E, generator=g))


def _perturbed(model, seed=1):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    return model


def test_shapes_and_identity_at_init():
    model = DiT(PRESETS["tiny"])
    v = model(*_inputs())
    assert v.shape == (2, 3, 16, 16)
    assert torch.count_nonzero(v) == 0  # adaLN-Zero: a fresh network outputs 0
    v = _perturbed(model)(*_inputs())
    assert v.abs().mean() > 0 and torch.isfinite(v).all()


def test_determinism_by_seed_and_padding_is_ignored():
    torch.manual_seed(3)
    a = _perturbed(DiT(PRESETS["tiny"]))
    torch.manual_seed(3)
    b = _perturbed(DiT(PRESETS["tiny"]))
    x, t, txt, mask, pooled = _inputs()
    torch.testing.assert_close(a(x, t, txt, mask, pooled), b(x, t, txt, mask, pooled), rtol=0, atol=0)
    txt2 = txt.clone()
    txt2[0, 3:] = 100.0  # change only padded positions: output must not move
    torch.testing.assert_close(a(x, t, txt2, mask, pooled), a(x, t, txt, mask, pooled))


def test_non_multiple_size_is_refused():
    with pytest.raises(ValueError, match="multiple of the patch size"):
        DiT(PRESETS["tiny"])(*_inputs(H=12))


def test_preset_parameter_counts():
    assert count_parameters(PRESETS["tiny"]) < 1_000_000
    assert 7.5e9 <= count_parameters(PRESETS["8b"]) <= 8.5e9
    counts = [count_parameters(PRESETS[k]) for k in ("tiny", "small", "base", "1b", "8b")]
    assert counts == sorted(counts)


def test_fixed_text_len_attends_without_a_mask_and_ignores_batch_padding(monkeypatch):
    """text_len > 0 (FLUX-style): padding is zeroed and padded to a fixed length, SDPA never gets a mask, and a
    prompt's output does not depend on how much padding its batch-mates forced on it."""
    from dataclasses import replace

    import incasa.nn.layers as layers

    torch.manual_seed(3)
    model = _perturbed(DiT(replace(PRESETS["tiny"], text_len=8)))
    x, t, txt, mask, pooled = _inputs()
    masks = []
    real_sdpa = layers.F.scaled_dot_product_attention

    def spy(q, k, v, attn_mask=None, **kw):
        masks.append(attn_mask)
        return real_sdpa(q, k, v, attn_mask=attn_mask, **kw)

    monkeypatch.setattr(layers.F, "scaled_dot_product_attention", spy)
    out = model(x, t, txt, mask, pooled)
    assert masks and all(m is None for m in masks)
    # the first sample alone, without the padding its batch-mate forced (3 real tokens of 5)
    alone = model(x[:1], t[:1], txt[:1, :3], None, pooled[:1])
    torch.testing.assert_close(alone, out[:1], rtol=1e-5, atol=1e-6)
    txt2 = txt.clone()
    txt2[0, 3:] = 100.0  # padded positions are zeroed, so their values cannot matter
    torch.testing.assert_close(model(x, t, txt2, mask, pooled), out)
    with pytest.raises(ValueError, match="at most 8"):
        model(*_inputs(L=9))
