"""The scale machinery on CPU: FSDP2 over 2 gloo processes against 1 process, DCP checkpoints across world sizes,
activation checkpointing, regional compile, and which linears the FP8 filter picks (without running FP8).

One module-scoped fixture runs everything distributed once (a 2-process spawn costs seconds on 2 cores):
    reference   1 process, no process group: 6 AdamW steps of the tiny DiT; saves a DCP checkpoint at step 3
    two ranks   FSDP2 (+ activation checkpointing) over 2 gloo processes, each on half of the same global batch:
                6 steps, saving at step 3;
                then a fresh sharded model loads the 1-process checkpoint and runs steps 4-6
    back to 1   1 process loads the 2-rank checkpoint and runs steps 4-6
All three must give the reference's losses. The global batch is two micro-batches whose noise is seeded by
(step, micro-batch), so 1 process (both micro-batches) and 2 ranks (one each) optimise the same objective.
"""

from __future__ import annotations

import json
import os
import socket

import pytest
import torch
import torch.distributed as dist
from torch import nn

from incasa.image.dit import PRESETS, DiT, DoubleStreamBlock, SingleStreamBlock
from incasa.image.flow import rf_loss
from incasa.train.dcp import load_dcp, read_dcp_meta, save_dcp
from incasa.train.parallelize import (apply_activation_checkpointing, apply_fsdp, apply_regional_compile,
                                      convert_float8, destroy_distributed, init_distributed,
                                      make_float8_filter)

BLOCKS = (DoubleStreamBlock, SingleStreamBlock)
NUM_MICRO, MICRO_B, STEPS, SAVE_AT = 2, 2, 6, 3


def _model() -> DiT:
    torch.manual_seed(0)
    model = DiT(PRESETS["tiny"])
    with torch.no_grad():  # leave adaLN-Zero's identity start, so every parameter gets a gradient from step 1
        g = torch.Generator().manual_seed(1)
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    return model


def _micro_batch(step: int, micro: int):
    g = torch.Generator().manual_seed(10_000 + micro)  # the data: the same micro-batch every step (overfitting)
    x0 = torch.randn(MICRO_B, 3, 16, 16, generator=g)
    cond = {"tokens": torch.randn(MICRO_B, 5, 32, generator=g), "mask": torch.tensor([[1, 1, 1, 0, 0], [1] * 5]),
            "pooled": torch.randn(MICRO_B, 32, generator=g)}
    return x0, cond, torch.Generator().manual_seed(100 * step + micro)  # the noise: new every step


def _loss(model, step: int, micros) -> torch.Tensor:
    losses = [rf_loss(model, x0, cond, num_tokens=4, generator=g) for x0, cond, g in
              (_micro_batch(step, m) for m in micros)]
    return torch.stack(losses).mean()


def _train(model, opt, steps, micros) -> list[float]:
    out = []
    for step in steps:
        loss = _loss(model, step, micros)
        opt.zero_grad()
        loss.backward()  # FSDP2 averages gradients over ranks: each rank's loss is the mean over its micro-batches
        opt.step()
        loss = loss.detach()
        if dist.is_initialized():
            dist.all_reduce(loss, op=dist.ReduceOp.AVG)
        out.append(loss.item())
    return out


def _optimizer(model):
    return torch.optim.AdamW(model.parameters(), lr=3e-3)


def _worker(rank: int, world_size: int, port: int, root: str) -> None:
    torch.set_num_threads(1)
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world_size), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    d = init_distributed()
    micros = [rank]  # this rank's share of the global batch
    model = apply_fsdp(apply_activation_checkpointing(_model(), BLOCKS), d.mesh, block_types=BLOCKS)
    opt = _optimizer(model)
    first = _train(model, opt, range(SAVE_AT), micros)
    save_dcp(os.path.join(root, "two"), model, opt, SAVE_AT, extra={"saved_by": "2 ranks"})
    rest = _train(model, opt, range(SAVE_AT, STEPS), micros)
    model = apply_fsdp(_model(), d.mesh, block_types=BLOCKS)  # fresh, then resume from the 1-process checkpoint
    opt = _optimizer(model)
    step, extra = load_dcp(os.path.join(root, "one"), model, opt)
    resumed = _train(model, opt, range(step, STEPS), micros)
    if d.is_main:
        result = {"losses": first + rest, "resumed": resumed, "step": step, "extra": extra,
                  "sharded": type(next(model.parameters())).__name__, "mesh": d.mesh.device_type}
        with open(os.path.join(root, "two_ranks.json"), "w") as f:
            json.dump(result, f)
    del model, opt  # before the process group goes (see destroy_distributed)
    destroy_distributed()  # only after success: with a rank down, its barrier would wait for the timeout


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("dist")
    assert not dist.is_initialized()
    all_micros = list(range(NUM_MICRO))
    model = _model()
    opt = _optimizer(model)
    reference = _train(model, opt, range(SAVE_AT), all_micros)
    save_dcp(root / "one", model, opt, SAVE_AT, extra={"saved_by": "1 process"})
    reference += _train(model, opt, range(SAVE_AT, STEPS), all_micros)
    with torch.no_grad():
        fresh_loss = _loss(_model(), SAVE_AT, all_micros).item()  # what step 4 would give without the first 3

    torch.multiprocessing.spawn(_worker, args=(NUM_MICRO, _free_port(), str(root)), nprocs=NUM_MICRO, join=True)
    two = json.loads((root / "two_ranks.json").read_text())

    model = _model()
    opt = _optimizer(model)
    step, extra = load_dcp(root / "two", model, opt)
    back = _train(model, opt, range(step, STEPS), all_micros)
    return {"root": root, "reference": reference, "two": two, "back": back, "back_step": step, "back_extra": extra,
            "fresh_loss": fresh_loss}


def test_fsdp2_on_two_ranks_matches_one_process(runs):
    ref, two = runs["reference"], runs["two"]
    assert two["sharded"] == "DTensor" and two["mesh"] == "cpu"  # it really ran sharded, over gloo
    assert abs(runs["fresh_loss"] - ref[SAVE_AT]) > 1e-2  # training changed the model: matching is not trivial
    assert two["losses"] == pytest.approx(ref, abs=1e-5)


def test_dcp_checkpoint_resumes_on_a_different_world_size(runs):
    ref = runs["reference"]
    # 2 ranks -> 1 process
    assert runs["back_step"] == SAVE_AT and runs["back_extra"] == {"saved_by": "2 ranks"}
    assert runs["back"] == pytest.approx(ref[SAVE_AT:], abs=1e-5)
    # 1 process -> 2 ranks
    assert runs["two"]["step"] == SAVE_AT and runs["two"]["extra"] == {"saved_by": "1 process"}
    assert runs["two"]["resumed"] == pytest.approx(ref[SAVE_AT:], abs=1e-5)
    assert read_dcp_meta(runs["root"] / "two")["world_size"] == 2
    assert sorted(p.name for p in runs["root"].iterdir() if "tmp" in p.name or "old" in p.name) == []


def test_dcp_overwrite_is_atomic_and_missing_is_clear(tmp_path):
    model = nn.Linear(4, 4)
    save_dcp(tmp_path / "ck", model, None, 1)
    with torch.no_grad():
        model.weight.add_(1.0)
    save_dcp(tmp_path / "ck", model, None, 2, extra={"k": 1})  # replaces the previous one
    fresh = nn.Linear(4, 4)
    assert load_dcp(tmp_path / "ck", fresh) == (2, {"k": 1})
    assert torch.equal(fresh.weight, model.weight)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck"]  # no .tmp / .old left behind
    (tmp_path / "half").mkdir()  # e.g. a copy interrupted before incasa.json
    with pytest.raises(FileNotFoundError, match="not a complete"):
        load_dcp(tmp_path / "half", fresh)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_dcp(tmp_path / "nowhere", fresh)
    with pytest.raises(TypeError):  # extra must be JSON: refused before anything is written
        save_dcp(tmp_path / "bad", model, None, 3, extra={"t": torch.zeros(1)})
    assert not (tmp_path / "bad.tmp").exists()


def _grads(model) -> dict[str, torch.Tensor]:
    model.zero_grad()
    _loss(model, 0, [0, 1]).backward()
    return {n: p.grad.clone() for n, p in model.named_parameters()}


def test_activation_checkpointing_gives_the_same_gradients():
    plain, ac = _model(), apply_activation_checkpointing(_model(), BLOCKS)
    assert list(ac.state_dict()) == list(plain.state_dict())  # names unchanged: checkpoints interchange
    g_plain, g_ac = _grads(plain), _grads(ac)
    assert all(g_plain[n].abs().sum() > 0 for n in g_plain)
    for n in g_plain:
        torch.testing.assert_close(g_ac[n], g_plain[n], rtol=1e-5, atol=1e-7, msg=n)
    with pytest.raises(ValueError, match="already"):
        apply_activation_checkpointing(ac, BLOCKS)
    with pytest.raises(ValueError, match="no module of type"):
        apply_activation_checkpointing(nn.Linear(2, 2), BLOCKS)


def test_regional_compile_compiles_only_the_blocks_and_keeps_results():
    plain = _model()
    compiled = apply_regional_compile(apply_activation_checkpointing(_model(), BLOCKS), BLOCKS, backend="aot_eager")
    blocks = [m for m in compiled.modules() if isinstance(m, BLOCKS)]
    assert len(blocks) == 2 and all(b._compiled_call_impl is not None for b in blocks)
    assert compiled._compiled_call_impl is None  # the model itself stays eager
    g_plain, g_compiled = _grads(plain), _grads(compiled)
    for n in g_plain:
        torch.testing.assert_close(g_compiled[n], g_plain[n], rtol=1e-5, atol=1e-6, msg=n)


def _picked(preset: str) -> set[str]:
    keep = make_float8_filter()
    with torch.device("meta"):
        model = DiT(PRESETS[preset])
    return {name for name, m in model.named_modules() if keep(m, name)}


@pytest.mark.parametrize("preset", ["tiny", "8b"])
def test_float8_filter_picks_the_token_wise_linears_of_the_blocks(preset):
    cfg = PRESETS[preset]
    expected = set()
    for i in range(cfg.num_double):
        for s in ("img", "txt"):
            expected |= {f"double_blocks.{i}.{s}_{n}" for n in ("qkv", "proj", "mlp.fc1", "mlp.fc2")}
    for i in range(cfg.num_single):
        expected |= {f"single_blocks.{i}.linear1", f"single_blocks.{i}.linear2"}
    assert _picked(preset) == expected  # no *mod (adaLN), no *_in (embeddings), no final_*


def test_float8_filter_refuses_dimensions_that_are_not_multiples_of_16():
    keep = make_float8_filter()
    assert keep(nn.Linear(32, 48), "blocks.0.fc1")
    assert not keep(nn.Linear(32, 40), "blocks.0.fc1") and not keep(nn.Linear(24, 48), "blocks.0.fc1")
    assert not keep(nn.LayerNorm(32), "blocks.0.norm") and not keep(nn.Linear(32, 48), "blocks.0.img_mod")
    # a DiT whose MLP is 48 -> 120 -> 48 (120 is not a multiple of 16) keeps only the attention linears
    from incasa.image.dit import DiTConfig

    with torch.device("meta"):
        model = DiT(DiTConfig(width=48, num_heads=2, num_double=1, num_single=0, text_dim=32, mlp_ratio=2.5))
    picked = {n for n, m in model.named_modules() if keep(m, n)}
    assert picked == {"double_blocks.0.img_qkv", "double_blocks.0.img_proj",
                      "double_blocks.0.txt_qkv", "double_blocks.0.txt_proj"}


def test_float8_conversion_swaps_exactly_the_filtered_linears():
    pytest.importorskip("torchao.float8", reason="torchao not installed (pip install 'incasa[gpu]')")
    model = convert_float8(_model(), recipe="rowwise", emulate=True)  # conversion only; FP8 is not run on CPU
    swapped = {n for n, m in model.named_modules() if type(m).__name__ == "Float8Linear"}
    assert swapped == _picked("tiny")
    with pytest.raises(ValueError, match="unknown float8 recipe"):
        convert_float8(_model(), recipe="blockwise")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_apply_float8_and_init_distributed_refuse_clearly_here(monkeypatch):
    from incasa.train.parallelize import apply_float8

    with pytest.raises(RuntimeError, match="(CUDA GPU|torchao)"):
        apply_float8(_model())
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(k, raising=False)
    with pytest.raises(RuntimeError, match="torchrun"):
        init_distributed()
