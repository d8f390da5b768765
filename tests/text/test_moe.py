"""The MoE layer: routing invariants, grouped GEMM == reference loop, bias balancing, optional losses."""

import pytest
import torch

from incasa.nn.moe import (MoE, MoEConfig, dispatch_rows, expert_mm, grouped_mm_works, sequence_balance_loss,
                           update_balance_bias)


def _layer(**kw):
    torch.manual_seed(0)
    return MoE(MoEConfig(**{**dict(dim=16, num_experts=6, top_k=2, expert_hidden=8), **kw}))


@pytest.mark.parametrize("score_func", ["softmax", "sigmoid"])
def test_each_token_goes_to_exactly_k_distinct_experts_with_weights_summing_as_configured(score_func):
    moe = _layer(score_func=score_func, route_scale=2.5)
    moe.expert_bias.copy_(torch.linspace(-0.3, 0.3, 6))  # a bias must change the choice, never the weights
    x = torch.randn(50, 16)
    idx, w, scores, _ = moe.route(x)
    assert idx.shape == (50, 2) and (idx[:, 0] != idx[:, 1]).all()
    assert torch.allclose(w.sum(-1), torch.full((50,), 2.5), atol=1e-5)
    picked = scores.gather(-1, idx)
    assert torch.allclose(w, 2.5 * picked / picked.sum(-1, keepdim=True), atol=1e-6)
    assert torch.equal(idx, torch.topk(scores + moe.expert_bias, 2).indices)
    assert not torch.equal(idx, torch.topk(scores, 2).indices)  # the bias did move some choices


def test_unnormalised_weights_are_the_raw_scores():
    moe = _layer(norm_topk=False, score_func="sigmoid")
    idx, w, scores, _ = moe.route(torch.randn(10, 16))
    assert torch.equal(w, scores.gather(-1, idx))


def test_layer_output_equals_a_per_token_reference():
    moe = _layer(num_shared_experts=1).eval()
    x = torch.randn(2, 5, 16)
    y, aux = moe(x)
    idx, w, _, _ = moe.route(x.reshape(10, 16))
    ref = moe.shared(x.reshape(10, 16)).clone()
    for t in range(10):
        for j in range(2):
            e = int(idx[t, j])
            gate, up = (x.reshape(10, 16)[t] @ moe.w13[e].t()).chunk(2)
            ref[t] += w[t, j] * (torch.nn.functional.silu(gate) * up) @ moe.w2[e].t()
    assert torch.allclose(y.reshape(10, 16), ref, atol=1e-5) and float(aux) == 0.0


@pytest.mark.skipif(not grouped_mm_works("cpu", torch.float32),
                    reason="torch._grouped_mm unavailable on this CPU build (the loop path is tested above)")
def test_grouped_mm_equals_the_reference_loop_forward_and_backward():
    g = torch.Generator().manual_seed(1)
    counts = torch.tensor([5, 0, 9, 3, 0, 7])  # empty experts included
    x = torch.randn(int(counts.sum()), 16, generator=g, requires_grad=True)
    w = torch.randn(6, 24, 16, generator=g, requires_grad=True)
    up = torch.randn(int(counts.sum()), 24, generator=g)
    outs, grads = {}, {}
    for mode in ("grouped", "loop"):
        x.grad = w.grad = None
        y = expert_mm(x, w, counts, mode)
        y.backward(up)
        outs[mode], grads[mode] = y.detach(), (x.grad.clone(), w.grad.clone())
    assert torch.allclose(outs["grouped"], outs["loop"], atol=1e-5)
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(grads["grouped"], grads["loop"]))
    # and the whole layer gives the same output either way
    a, b = _layer(dispatch="grouped"), _layer(dispatch="loop")
    xx = torch.randn(3, 7, 16)
    assert torch.allclose(a(xx)[0], b(xx)[0], atol=1e-5)


def test_dispatch_rows_forward_and_gradient_equal_plain_indexing():
    g = torch.Generator().manual_seed(2)
    N, k, D = 9, 3, 5
    flat = torch.randint(0, 4, (N * k,), generator=g)
    order = torch.argsort(flat, stable=True)
    x = torch.randn(N, D, generator=g, requires_grad=True)
    up = torch.randn(N * k, D, generator=g)
    ref = x[order // k]
    (gx_ref,) = torch.autograd.grad(ref, x, up)
    out = dispatch_rows(x, order, k)
    (gx,) = torch.autograd.grad(out, x, up)
    assert torch.equal(out, ref)
    assert torch.allclose(gx, gx_ref, atol=1e-6)


@pytest.mark.skipif(not grouped_mm_works("cpu", torch.bfloat16), reason="torch._grouped_mm unavailable in bf16 here")
def test_the_layer_compiles_to_one_graph():
    # a graph break per layer (bincount's data-dependent size did this) splits the compiled step and syncs the GPU;
    # bf16 autocast as in GPU training (the compiled grouped mm takes bf16 only)
    moe = _layer(balance_loss_weight=1e-2, dispatch="grouped")

    def loss(t):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return moe(t)[0].float().sum()

    explained = torch._dynamo.explain(loss)(torch.randn(2, 8, 16))
    assert explained.graph_break_count == 0, [str(b.reason)[:200] for b in explained.break_reasons]


def test_balance_bias_moves_a_skewed_load_toward_uniform():
    moe = _layer(num_experts=8, top_k=2)
    x = torch.randn(256, 16)
    x[:, 0] = 1.0  # a constant feature the router reads as a strong preference for experts 0 and 1
    with torch.no_grad():
        moe.router.weight.normal_(0, 0.3)
        moe.router.weight[:, 0] = 0.0
        moe.router.weight[0, 0], moe.router.weight[1, 0] = 3.0, 2.5
    moe.train()
    moe(x[None])
    first = update_balance_bias(moe, rate=0.005)["load_max_over_mean"]
    ratios = []
    for _ in range(300):
        moe(x[None])
        ratios.append(update_balance_bias(moe, rate=0.005)["load_max_over_mean"])
    assert first > 3.0 and max(ratios[-10:]) < 1.3, (first, ratios[-10:])
    assert moe.expert_bias[0] < 0 and moe.expert_bias[7] > 0
    assert moe.tokens_per_expert.sum() == 0  # counters emptied after each update


def test_optional_losses():
    moe = _layer(balance_loss_weight=0.1, z_loss_weight=0.01)
    _, aux = moe(torch.randn(2, 8, 16))
    assert aux > 0 and aux.requires_grad
    # the sequence balance loss is 1 for a perfectly even split, E/k for a collapse
    B, L, E, k = 1, 4, 4, 1
    even = sequence_balance_loss(torch.arange(4).view(B, L, k), torch.eye(4).view(B, L, E) * 0.9 + 0.025)
    collapsed = sequence_balance_loss(torch.zeros(B, L, k, dtype=torch.long), torch.tensor([[[1.0, 0, 0, 0]] * 4]))
    assert torch.isclose(collapsed, torch.tensor(4.0)) and even < 1.01


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match="top_k"):
        MoEConfig(dim=8, num_experts=4, top_k=5)
    with pytest.raises(ValueError, match="score_func"):
        MoEConfig(dim=8, score_func="relu")
