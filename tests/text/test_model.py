"""The language model: presets counted on meta, shapes, determinism, KV cache == full recompute, padding."""

import pytest
import torch

from incasa.text.moe_lm import PRESETS, KVCache, LMConfig, MoELM, count_params, dense_twin


def _model(name="tiny", seed=0):
    torch.manual_seed(seed)
    return MoELM(PRESETS[name]).eval()


def test_presets_count_on_meta_and_dense_twins_match_active_params():
    large = count_params(PRESETS["large"])
    assert large["total"] > 5e9 and large["active"] < 0.25 * large["total"]  # counted without allocating
    for name in ("tiny", "small", "base", "large"):
        moe, dense = count_params(PRESETS[name]), count_params(PRESETS[f"{name}-dense"])
        cfg = PRESETS[name]
        router = cfg.depth * cfg.num_experts * cfg.dim
        assert moe["active"] - dense["active"] == router  # equal active weights except the tiny router
    small = count_params(PRESETS["small"])
    assert small["total"] * 2 < 25e6  # the shipped default fits the 25 MB budget in fp16


def test_shapes_determinism_and_aux_loss():
    a, b = _model(seed=3), _model(seed=3)
    x = torch.randint(0, 512, (2, 17))
    la, aux = a(x)
    lb, _ = b(x)
    assert la.shape == (2, 17, 512) and la.dtype == torch.float32 and torch.equal(la, lb)
    assert float(aux) == 0.0  # no optional router losses in the tiny preset
    with pytest.raises(ValueError, match="context"):
        a(torch.zeros(1, 129, dtype=torch.long))


def test_causality_future_tokens_do_not_change_the_past():
    m = _model()
    x = torch.randint(0, 512, (1, 12))
    y = x.clone()
    y[0, 8:] = (y[0, 8:] + 1) % 512
    assert torch.allclose(m(x)[0][0, :8], m(y)[0][0, :8], atol=1e-5)


def test_kv_cache_incremental_logits_equal_full_recompute():
    m = _model()
    x = torch.randint(0, 512, (2, 20))
    full, _ = m(x)
    cache = KVCache(m.cfg, 2, 20, "cpu", torch.float32)
    parts = [m(x[:, :11], cache=cache)[0]]
    for t in range(11, 20):
        parts.append(m(x[:, t:t + 1], cache=cache)[0])
    assert cache.length == 20
    assert torch.allclose(torch.cat(parts, 1), full, atol=1e-4)


def test_left_padding_with_positions_and_key_mask_matches_the_unpadded_row():
    m = _model()
    x = torch.randint(0, 512, (1, 9))
    alone, _ = m(x)
    pad = torch.cat([torch.zeros(1, 4, dtype=torch.long), x], 1)
    valid = torch.cat([torch.zeros(1, 4, dtype=torch.bool), torch.ones(1, 9, dtype=torch.bool)], 1)
    positions = (valid.long().cumsum(1) - 1).clamp_min(0)
    padded, _ = m(pad, positions_BL=positions, key_valid_BS=valid)
    assert torch.isfinite(padded).all()
    assert torch.allclose(padded[:, 4:], alone, atol=1e-4)


def test_dense_twin_and_config_errors():
    d = dense_twin(PRESETS["small"])
    assert d.num_experts == 0 and d.dense_hidden == 3 * 256
    m = MoELM(PRESETS["tiny-dense"])
    assert m(torch.zeros(1, 4, dtype=torch.long))[0].shape == (1, 4, 512)
    with pytest.raises(ValueError, match="heads"):
        LMConfig(dim=30, num_heads=4)
    with pytest.raises(ValueError, match="dense_hidden"):
        LMConfig(num_experts=0)


def test_rope_table_is_exact_and_not_in_checkpoints():
    # the table holds what the forward computed before it existed (positions x inverse frequencies, float32), is
    # derived from the config (never saved), and stays float32 in a model cast to bf16 for inference
    from incasa.text.moe_lm import rope_table

    cfg = PRESETS["tiny"]
    cos, sin = rope_table(cfg.max_seq_len, cfg.head_dim, cfg.rope_theta)
    inv = 1.0 / cfg.rope_theta ** (torch.arange(0, cfg.head_dim, 2, dtype=torch.float32) / cfg.head_dim)
    angles = torch.tensor([0.0, 5.0, 127.0])[:, None] * inv
    assert torch.equal(cos[[0, 5, 127]], angles.cos()) and torch.equal(sin[[0, 5, 127]], angles.sin())
    model = _model("tiny")
    assert not any(k.startswith("rope_") for k in model.state_dict())
    tokens = torch.randint(0, cfg.vocab_size, (2, 9))
    with torch.no_grad():
        exact = model.to(torch.bfloat16)(tokens)[0]
        model.rope_cos, model.rope_sin = (t.float() for t in rope_table(cfg.max_seq_len, cfg.head_dim, cfg.rope_theta))
        assert torch.equal(model(tokens)[0], exact)
