"""Balance-bias rules: adaptive beats sign on a skewed toy, each rule does what it says, its state survives resume."""

import pytest
import torch

from incasa.nn.moe import (MoE, MoEConfig, balance_state_dict, bias_step, load_balance_state,
                           update_balance_bias)
from incasa.text.train import train
from incasa.train.checkpoint import read_file

from .conftest import tiny_train_config


def _skewed_layer():
    """8 experts, top-2, and a router that strongly prefers experts 0 and 1 for every token."""
    torch.manual_seed(0)
    moe = MoE(MoEConfig(dim=16, num_experts=8, top_k=2, expert_hidden=8))
    with torch.no_grad():
        moe.router.weight.normal_(0, 0.3)
        moe.router.weight[:, 0] = 0.0
        moe.router.weight[0, 0], moe.router.weight[1, 0] = 3.0, 2.5
    return moe.train()


def _balance(rule: str, rate: float, steps: int = 200, tokens: int = 512):
    """A fresh batch every step (sampling noise, as in training) -> (first step below 1.3, per-step max/mean,
    mean |bias change| per step)."""
    moe, g = _skewed_layer(), torch.Generator().manual_seed(1)
    ratios, moves = [], []
    for _ in range(steps):
        x = torch.randn(tokens, 16, generator=g)
        x[:, 0] = 1.0
        moe(x[None])
        before = moe.expert_bias.clone()
        ratios.append(update_balance_bias(moe, rate, rule)["load_max_over_mean"])
        moves.append(float((moe.expert_bias - before).abs().mean()))
    first = next(i for i, r in enumerate(ratios) if r < 1.3)
    return first, torch.tensor(ratios), torch.tensor(moves)


def _floor(tokens: int, E: int = 8, k: int = 2, trials: int = 200) -> float:
    """Expected max/mean when every token picks k distinct experts uniformly at random."""
    g = torch.Generator().manual_seed(0)
    out = []
    for _ in range(trials):
        c = torch.bincount(torch.rand(tokens, E, generator=g).topk(k, -1).indices.reshape(-1), minlength=E).float()
        out.append(float(c.max() / c.mean()))
    return sum(out) / len(out)


def test_adaptive_rule_balances_faster_and_dithers_less_than_sign():
    slow_first, slow_ratio, slow_moves = _balance("sign", 5e-3)
    fast_first, fast_ratio, fast_moves = _balance("sign", 1e-2)
    ad_first, ad_ratio, ad_moves = _balance("adaptive", 1e-2)
    floor = _floor(512)
    # from far away the adaptive rule moves at the full step, as sign at the same rate does; the smaller sign
    # step that dithers less is slower by about its factor
    assert ad_first <= fast_first < slow_first, (ad_first, fast_first, slow_first)
    # once balanced, sign keeps moving every bias by its full step; the adaptive step shrinks toward its floor
    tail = slice(-100, None)
    assert ad_moves[tail].mean() < 0.3 * slow_moves[tail].mean() < 0.15 * fast_moves[tail].mean(), (
        float(ad_moves[tail].mean()), float(slow_moves[tail].mean()), float(fast_moves[tail].mean()))
    # ... and the load sits near the sampling floor of a perfectly balanced router, both sign rates well above it
    assert ad_ratio[tail].mean() < floor + 0.04 < slow_ratio[tail].mean() - 0.05 < fast_ratio[tail].mean(), (
        float(ad_ratio[tail].mean()), floor, float(slow_ratio[tail].mean()), float(fast_ratio[tail].mean()))


def test_each_rule_step_is_what_it_says():
    load = torch.tensor([300.0, 100.0, 100.0, 90.0, 10.0, 100.0, 100.0, 100.0])  # mean 112.5
    assert torch.equal(bias_step(load, 0.01, "sign"), 0.01 * torch.sign(load.mean() - load))
    prop = bias_step(load, 0.01, "proportional", band=0.1)
    raw = (0.01 * (load.mean() - load) / (0.1 * load.mean())).clamp(-0.01, 0.01)
    assert torch.allclose(prop, raw - raw.mean()) and abs(float(prop.sum())) < 1e-7
    assert prop[0] < 0 < prop[4] and prop.abs().max() <= 0.02
    even = torch.full((8,), 50.0)
    assert torch.equal(bias_step(even, 0.01, "proportional"), torch.zeros(8))
    state = {}
    first = bias_step(load, 0.01, "adaptive", state=state)
    assert torch.allclose(state["step"], torch.full((8,), 0.01)) and abs(float(first.sum())) < 1e-7
    bias_step(load, 0.01, "adaptive", state=state)  # same signs again: steps grow, but never above the rate
    assert torch.allclose(state["step"], torch.full((8,), 0.01))
    state["step"] = torch.full((8,), 0.004)
    flipped = load.flip(0)  # expert 0 now underloaded, expert 7 overloaded: their steps halve
    bias_step(flipped, 0.01, "adaptive", state=state)
    assert torch.isclose(state["step"][0], torch.tensor(0.002)) and torch.isclose(state["step"][7], torch.tensor(0.002))
    assert torch.isclose(state["step"][1], torch.tensor(0.0048))  # 100 -> 100: same side, grows x1.2
    for _ in range(5):  # flipping for ever: the step halves down to floor * rate and stays there
        flipped = flipped.flip(0)
        bias_step(flipped, 0.01, "adaptive", state=state, floor=0.1)
    assert torch.isclose(state["step"][0], torch.tensor(0.001))
    with pytest.raises(ValueError, match="one of sign, proportional, adaptive"):
        bias_step(load, 0.01, "magic")
    with pytest.raises(ValueError, match="state dict"):
        bias_step(load, 0.01, "adaptive")
    with pytest.raises(ValueError, match="load_ema"):
        update_balance_bias(_skewed_layer(), 0.01, "sign", load_ema=1.0)
    with pytest.raises(ValueError, match="floor"):
        update_balance_bias(_skewed_layer(), 0.01, "adaptive", floor=0.0)


def test_bias_is_selection_only_so_a_uniform_shift_changes_nothing():
    moe = _skewed_layer()
    x = torch.randn(64, 16)
    moe.expert_bias.copy_(torch.linspace(-0.2, 0.2, 8))
    idx, w, _, _ = moe.route(x)
    moe.expert_bias += 0.37  # why the proportional and adaptive steps may be centred freely
    idx2, w2, _, _ = moe.route(x)
    assert torch.equal(idx, idx2) and torch.equal(w, w2)


def test_controller_state_round_trips_and_stays_out_of_the_state_dict():
    moe = _skewed_layer()
    for _ in range(3):
        moe(torch.randn(1, 32, 16))
        update_balance_bias(moe, 0.01, "adaptive", load_ema=0.5)
    state = balance_state_dict(moe)
    assert set(state) == {".step", ".sign", ".share_ema"} and all(len(v) == 8 for v in state.values())
    assert not any("step" in k or "ema" in k for k in moe.state_dict())  # checkpoints of old models still load
    other = _skewed_layer()
    load_balance_state(other, state)
    assert all(torch.equal(other.balance_state[k], moe.balance_state[k]) for k in moe.balance_state)
    with pytest.raises(ValueError, match="does not have"):
        load_balance_state(other, {"layers.9.moe.step": [0.0] * 8})


def test_adaptive_rule_resumes_exactly(tiny_corpus, tmp_path):
    kw = dict(bias_update_rule="adaptive", ckpt_every=3)
    full = train(tiny_train_config(tiny_corpus, tmp_path / "a", steps=6, **kw))
    train(tiny_train_config(tiny_corpus, tmp_path / "b", steps=3, **kw))
    rest = train(tiny_train_config(tiny_corpus, tmp_path / "b", steps=6, **kw))  # resumes at step 3
    assert rest["losses"] == full["losses"][3:]
    wa, _ = read_file(tmp_path / "a" / "model.safetensors")
    wb, _ = read_file(tmp_path / "b" / "model.safetensors")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)  # the biases too: the step sizes were restored
    with pytest.raises(ValueError, match="unknown bias update rule"):
        train(tiny_train_config(tiny_corpus, tmp_path / "c", bias_update_rule="magic"))


def test_cli_names_the_rules_and_refuses_an_unknown_one(tmp_path):
    from typer.testing import CliRunner

    from incasa.cli import app

    runner = CliRunner()
    r = runner.invoke(app, ["train", "text", "--data", str(tmp_path), "--out", str(tmp_path / "run"),
                            "--bias-update-rule", "magic"])
    assert r.exit_code == 2 and "sign, proportional or adaptive" in r.output and "Traceback" not in r.output
    assert "--bias-update-rule" in runner.invoke(app, ["train", "text", "--help"]).output
