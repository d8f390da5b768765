"""incasa.image.scale on CPU: block-by-block loading equals the ordinary model; a None text mask equals an all-true one."""

import pytest
import torch
from safetensors.torch import save_file

from incasa.image.dit import PRESETS, DiT
from incasa.image.scale import fastest_sdpa_backend, load_dit


def _inputs(cfg, B=2, L=5):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(B, cfg.in_channels, 16, 16, generator=g)
    return x, torch.rand(B, generator=g), torch.randn(B, L, cfg.text_dim, generator=g), torch.randn(B, cfg.text_dim, generator=g)


def _trained_like(cfg) -> DiT:
    torch.manual_seed(0)
    model = DiT(cfg)
    with torch.no_grad():  # leave adaLN-Zero: otherwise every block is the identity and the test proves little
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model.eval()


def test_load_dit_piece_by_piece_equals_the_ordinary_model(tmp_path):
    cfg = PRESETS["tiny"]
    ref = _trained_like(cfg)
    path = tmp_path / "model.safetensors"
    save_file({k: v.contiguous() for k, v in ref.state_dict().items()}, str(path))
    model = load_dit(cfg, weights=path, device="cpu", dtype=torch.float32, fp8=None)
    x, t, tok, pooled = _inputs(cfg)
    mask = torch.ones(tok.shape[:2], dtype=torch.bool)
    with torch.no_grad():
        torch.testing.assert_close(model(x, t, tok, mask, pooled), ref(x, t, tok, mask, pooled), rtol=0, atol=0)


def test_none_mask_equals_all_true_mask_and_padding_matters():
    cfg = PRESETS["tiny"]
    model = _trained_like(cfg)
    x, t, tok, pooled = _inputs(cfg)
    ones = torch.ones(tok.shape[:2], dtype=torch.bool)
    with torch.no_grad():
        full = model(x, t, tok, ones, pooled)
        torch.testing.assert_close(model(x, t, tok, None, pooled), full, rtol=1e-5, atol=1e-6)
        padded = ones.clone()
        padded[:, -2:] = False
        assert (model(x, t, tok, padded, pooled) - full).abs().max() > 1e-4


def test_random_weights_are_seeded_and_finite():
    cfg = PRESETS["tiny"]
    a = load_dit(cfg, device="cpu", dtype=torch.float32, fp8=None, seed=3)
    b = load_dit(cfg, device="cpu", dtype=torch.float32, fp8=None, seed=3)
    x, t, tok, pooled = _inputs(cfg)
    with torch.no_grad():
        out = a(x, t, tok, None, pooled)
        assert torch.isfinite(out).all() and out.abs().max() > 0
        torch.testing.assert_close(b(x, t, tok, None, pooled), out, rtol=0, atol=0)


def test_weights_that_do_not_match_the_config_are_refused(tmp_path):
    path = tmp_path / "model.safetensors"
    save_file({"img_in.weight": torch.zeros(2, 2)}, str(path))
    with pytest.raises(ValueError, match="does not match"):
        load_dit(PRESETS["tiny"], weights=path, device="cpu", dtype=torch.float32, fp8=None)


def test_fp8_needs_a_gpu_and_cpu_has_no_backend_to_choose():
    with pytest.raises(RuntimeError, match="CUDA GPU"):
        load_dit(PRESETS["tiny"], device="cpu", fp8="row")
    assert fastest_sdpa_backend(1, 2, 8, 16, device="cpu") == (None, {})
