"""Rectified flow: the training objective and the samplers (text-to-image, img2img, inpainting), apart from the network.

Convention (SD3 / FLUX): t = 0 is data, t = 1 is noise, and the straight path between them is
    x_t = (1 - t) * x_0 + t * eps,        so the velocity along it is  v = dx_t/dt = eps - x_0.
The network learns v. Training draws t from a logit-normal (more weight to the middle of the path, where prediction is
hardest) and shifts it towards noise for larger images: with more pixels, an image stays recognisable under more
noise, so more of the schedule must be spent at high noise (FLUX's shift, mu linear in the token count).
Sampling integrates dx/dt = v from t = 1 to 0 with Euler steps over the same shifted schedule, with classifier-free
guidance v = v_uncond + g * (v_cond - v_uncond).

The network's output is read as the clean image x_0 and the velocity is derived from the path,
    v_hat = (x_t - x0_hat) / t,
which is "x-prediction with the velocity loss" (Li & He 2025, "Back to Basics: Let Denoising Generative Models
Denoise"). The loss and the sampler still work on velocities. Why: in pixel space an 8x8x3 patch is a 192-value token,
as wide as the small network itself, and asking that network to output the noise it was given (which direct
velocity prediction needs near t = 0) left patch-shaped grain in every sample of our first CPU run (step 1000 of
runs/emoji-small, v-prediction); clean images lie on a low-dimensional manifold that a narrow network can predict.
t is clamped at T_MIN in the division, which caps the loss weight 1/t^2 near clean data.

Shapes: x [B, C, H, W]; t [B]; cond is a dict of text tensors (tokens [B, L, E], mask [B, L], pooled [B, E]).
"""

from __future__ import annotations

import math

import torch


def time_shift(t: torch.Tensor, num_tokens: int) -> torch.Tensor:
    """Warp t towards 1 (noise) by exp(mu), mu growing linearly from 0.5 at 256 tokens to 1.15 at 4096 (FLUX)."""
    mu = 0.5 + (1.15 - 0.5) * (num_tokens - 256) / (4096 - 256)
    shift = math.exp(mu)
    return shift * t / (1 + (shift - 1) * t)


T_MIN = 0.05


def velocity(model, x_t: torch.Tensor, t_B: torch.Tensor, tokens, mask, pooled) -> torch.Tensor:
    """The network predicts x_0; the velocity of the straight path through x_t follows from it."""
    x0_hat = model(x_t, t_B, tokens, mask, pooled)
    return (x_t - x0_hat) / t_B.clamp(min=T_MIN).view(-1, 1, 1, 1).to(x_t.dtype)


def rf_loss(model, x0: torch.Tensor, cond: dict, num_tokens: int, generator: torch.Generator | None = None):
    """Mean squared error between predicted and true velocity at a logit-normal, resolution-shifted t."""
    B = x0.shape[0]
    # draw where the generator lives (a CPU generator also drives a CUDA model, e.g. in evaluation), then move
    g_dev = generator.device if generator is not None else x0.device
    u = torch.randn(B, generator=generator, device=g_dev).to(x0.device)
    t = time_shift(torch.sigmoid(u), num_tokens)  # logit-normal(0, 1), then shifted
    eps = torch.randn(x0.shape, generator=generator, device=g_dev, dtype=x0.dtype).to(x0.device)
    tb = t.view(B, 1, 1, 1).to(x0.dtype)
    x_t = (1 - tb) * x0 + tb * eps
    v_hat = velocity(model, x_t, t, cond["tokens"], cond["mask"], cond["pooled"])
    v = (x_t - x0) / t.clamp(min=T_MIN).view(B, 1, 1, 1)  # = eps - x0 away from the clamp
    return ((v_hat.float() - v.float()) ** 2).mean()


def _joint_text(cond: dict, uncond: dict) -> dict:
    """[uncond; cond] as one text batch, padded to the longer of the two (built once, before the Euler loop)."""
    L = max(cond["tokens"].shape[1], uncond["tokens"].shape[1])

    def pad(c, key, dims):
        return torch.nn.functional.pad(c[key], dims(L - c[key].shape[1]))

    return {"tokens": torch.cat([pad(c, "tokens", lambda e: (0, 0, 0, e)) for c in (uncond, cond)]),
            "mask": torch.cat([pad(c, "mask", lambda e: (0, e)) for c in (uncond, cond)]),
            "pooled": torch.cat([uncond["pooled"], cond["pooled"]])}


def _guided_velocity(model, x, t_scalar: float, text, guidance: float | None):
    """guidance None: `text` is the conditional batch alone. Else either the joint [uncond; cond] batch of _joint_text
    (one forward of 2B) or the pair (uncond, cond) as a tuple (two forwards of B, neither padded)."""
    B = x.shape[0]
    t_B = x.new_full((B,), t_scalar)
    if guidance is None:
        return velocity(model, x, t_B, text["tokens"], text["mask"], text["pooled"])
    if isinstance(text, tuple):
        v_u, v_c = (velocity(model, x, t_B, c["tokens"], c["mask"], c["pooled"]) for c in text)
    else:
        v = velocity(model, torch.cat([x, x]), t_B.repeat(2), text["tokens"], text["mask"], text["pooled"])
        v_u, v_c = v.chunk(2)
    return v_u + guidance * (v_c - v_u)


def split_guidance(x: torch.Tensor, cond: dict, uncond: dict) -> bool:
    """Whether to run the unconditional and conditional halves of guidance as two batches instead of one padded one.

    On CUDA, yes when their text lengths differ: padding the shorter one needs a key mask, and SDPA's flash (and
    cuDNN) kernels take none, so the padded joint batch falls back to the memory-efficient kernel, 1.47x slower per
    training step of width-3072 blocks on the H200 (benchmarks/results/train_fp8.json vs train_fp8_flash.json); two
    unpadded batches of B >= 1 at 4,096 image tokens still fill the GPU (not yet timed there). On the CPU one batch
    of 2B is a little faster: 2.00-2.06 s against 2.08-2.14 s for the shipped default's 25 steps of five pictures,
    three runs each on a 2-core machine (stop 23), and the two agree to 3e-5.
    """
    return x.is_cuda and cond["tokens"].shape[1] != uncond["tokens"].shape[1]


@torch.no_grad()
def sample(model, noise: torch.Tensor, cond: dict, uncond: dict | None, *, steps: int = 25, guidance: float = 4.0,
           init: torch.Tensor | None = None, strength: float = 1.0, mask: torch.Tensor | None = None,
           on_step=None) -> torch.Tensor:
    """Euler integration from noise to an image.

    init + strength < 1 (img2img): start part-way, at t = strength on the shifted schedule, from init noised to there.
    init + mask (inpainting, training-free): mask [B, 1, H, W] is 1 where to repaint. After every step the known
    region is replaced by init re-noised to the new time with the *same* noise, so the generated region is always
    conditioned on a consistent picture of its surroundings. The caller pastes only the masked region back at the end.
    """
    if not 0.0 < strength <= 1.0:
        raise ValueError(f"strength must be in (0, 1], got {strength}")
    if (mask is not None or strength < 1.0) and init is None:
        raise ValueError("img2img and inpainting need an init image")
    N = (noise.shape[-2] // model.cfg.patch_size) * (noise.shape[-1] // model.cfg.patch_size)
    ts = time_shift(torch.linspace(1.0, 0.0, steps + 1), N)  # shifted schedule, 1 -> 0
    if strength < 1.0:
        ts = torch.cat([torch.tensor([strength]), ts[ts < strength]])
    x = noise if init is None else (1 - ts[0]) * init + ts[0] * noise  # at strength 1 this is pure noise
    guided = uncond is not None and guidance != 1.0
    if not guided:
        text = cond
    elif split_guidance(x, cond, uncond):
        text = (uncond, cond)
    else:
        text = _joint_text(cond, uncond)
    for i in range(len(ts) - 1):
        t, t_next = float(ts[i]), float(ts[i + 1])
        v = _guided_velocity(model, x, t, text, guidance if guided else None)
        x = x + (t_next - t) * v
        if mask is not None:
            known = (1 - t_next) * init + t_next * noise
            x = mask * x + (1 - mask) * known
        if on_step is not None:
            on_step(i, x)
    return x
