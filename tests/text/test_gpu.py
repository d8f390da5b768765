"""CUDA checks (marked gpu: excluded from the default run; run with `pytest -m gpu tests/text` on a GPU machine)."""

import pytest
import torch

from incasa.nn.moe import MoE, MoEConfig, grouped_mm_works

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


def test_grouped_dispatch_equals_loop_in_bf16_on_cuda():
    assert grouped_mm_works("cuda", torch.bfloat16)
    torch.manual_seed(0)
    a = MoE(MoEConfig(dim=256, num_experts=16, top_k=4, expert_hidden=128, dispatch="grouped")).cuda()
    b = MoE(MoEConfig(dim=256, num_experts=16, top_k=4, expert_hidden=128, dispatch="loop")).cuda()
    b.load_state_dict(a.state_dict())
    x = torch.randn(2, 999, 256, device="cuda")  # token counts per expert are not multiples of anything
    up = torch.randn_like(x)
    grads = []
    for m in (a, b):
        xi = x.clone().requires_grad_()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            y, _ = m(xi)
        y.float().backward(up)
        grads.append((y.detach().float(), xi.grad, m.w13.grad.float()))
    for g, r in zip(*grads):
        assert torch.allclose(g, r, atol=2e-2 * r.abs().max().item())


def test_training_steps_run_on_cuda_with_bf16(tmp_path):
    from incasa.text.train import train

    from .conftest import make_corpus, tiny_train_config

    r = train(tiny_train_config(make_corpus(tmp_path / "c"), tmp_path / "run", steps=4, device="cuda"))
    assert len(r["losses"]) == 4 and all(x == x for x in r["losses"])
