import pytest
import torch

from incasa.image.flow import rf_loss, sample, time_shift


class Oracle(torch.nn.Module):
    """The exact denoiser when the data distribution is a single image x0: it always answers x0."""

    def __init__(self, x0):
        super().__init__()
        self.x0 = x0
        self.cfg = type("cfg", (), {"patch_size": 2})()

    def forward(self, x, t, tokens, mask, pooled):
        return self.x0.expand_as(x)


def _cond(B):
    return {"tokens": torch.zeros(B, 1, 4), "mask": torch.ones(B, 1, dtype=torch.bool), "pooled": torch.zeros(B, 4)}


def test_time_shift_endpoints_and_direction():
    t = torch.linspace(0, 1, 11)
    s = time_shift(t, 4096)
    assert s[0] == 0 and abs(float(s[-1]) - 1) < 1e-6
    assert (s >= t - 1e-6).all()  # more time at high noise
    assert (time_shift(t, 4096) >= time_shift(t, 256) - 1e-6).all()  # bigger images: stronger shift


def test_euler_with_oracle_reaches_the_data_point():
    x0 = torch.randn(1, 3, 8, 8)
    out = sample(Oracle(x0), torch.randn(2, 3, 8, 8), _cond(2), _cond(2), steps=10, guidance=3.0)
    torch.testing.assert_close(out, x0.expand(2, -1, -1, -1), atol=1e-4, rtol=0)


def test_inpainting_keeps_known_region_and_fills_the_mask():
    target, init = torch.ones(1, 3, 8, 8), -torch.ones(1, 3, 8, 8)
    mask = torch.zeros(1, 1, 8, 8)
    mask[..., 2:6, 2:6] = 1
    out = sample(Oracle(target), torch.randn(1, 3, 8, 8), _cond(1), None, steps=8, init=init, mask=mask)
    out = mask * out + (1 - mask) * init  # the caller's paste-back
    torch.testing.assert_close(out[..., 2:6, 2:6], target[..., 2:6, 2:6], atol=1e-4, rtol=0)
    assert torch.equal(out[..., 0, :], init[..., 0, :])


def test_img2img_strength_and_rf_loss():
    x0 = torch.zeros(1, 3, 8, 8)
    init = torch.full((1, 3, 8, 8), 0.5)
    out = sample(Oracle(x0), torch.randn(1, 3, 8, 8), _cond(1), None, steps=10, init=init, strength=0.3)
    torch.testing.assert_close(out, x0, atol=1e-4, rtol=0)
    with pytest.raises(ValueError):
        sample(Oracle(x0), torch.randn(1, 3, 8, 8), _cond(1), None, strength=0.5)
    # the oracle's loss is the irreducible part only: zero when the data is that single point
    g = torch.Generator().manual_seed(0)
    assert float(rf_loss(Oracle(x0), x0.expand(4, -1, -1, -1), _cond(4), 16, generator=g)) < 1e-8


def test_guidance_as_two_unpadded_batches_equals_one_padded_batch(monkeypatch):
    """On CUDA the [uncond; cond] halves run as two batches (no padding, so no mask for SDPA's flash kernels); the
    picture must equal the one padded batch's, which the CPU keeps."""
    from incasa.image import flow
    from incasa.image.dit import PRESETS, DiT

    torch.manual_seed(0)
    model = DiT(PRESETS["tiny"])
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape))
    g = torch.Generator().manual_seed(1)
    cond = {"tokens": torch.randn(2, 5, 32, generator=g), "mask": torch.ones(2, 5, dtype=torch.bool),
            "pooled": torch.randn(2, 32, generator=g)}
    uncond = {"tokens": torch.randn(2, 2, 32, generator=g), "mask": torch.ones(2, 2, dtype=torch.bool),
              "pooled": torch.randn(2, 32, generator=g)}
    noise = torch.randn(2, 3, 16, 16, generator=g)
    assert not flow.split_guidance(noise, cond, uncond)  # CPU: one batch
    joint = flow.sample(model, noise, cond, uncond, steps=4, guidance=3.0)
    monkeypatch.setattr(flow, "split_guidance", lambda *a: True)
    split = flow.sample(model, noise, cond, uncond, steps=4, guidance=3.0)
    torch.testing.assert_close(split, joint, rtol=1e-4, atol=1e-5)
    assert (split - noise).abs().mean() > 0.01  # the model did something
