"""Scale applied from outside: FSDP2, activation checkpointing, regional compile and FP8, as plain functions.

Model code knows nothing of any of this (STYLE.md rule 2). A training script builds the plain model and then, in
this order (the order torchtitan uses, and the only one in which every step sees the modules it expects):

    mesh = init_distributed().mesh                              # torchrun env -> process group + 1-D device mesh
    apply_float8(model, recipe="tensorwise")                    # swap token-wise nn.Linear -> torchao Float8Linear
    apply_activation_checkpointing(model, BLOCKS)               # recompute each block's activations in backward
    apply_regional_compile(model, BLOCKS)                       # torch.compile each repeated block, not the model
    apply_fsdp(model, mesh, block_types=BLOCKS)                 # FSDP2: shard params per block, then the root
    optimizer = torch.optim.AdamW(model.parameters(), ...)      # built AFTER fully_shard: it sees the DTensor shards
    ... train ...; del model, optimizer; destroy_distributed()  # on success only (it ends with a barrier)

with BLOCKS = (DoubleStreamBlock, SingleStreamBlock) for the image DiT. Checkpoints of a sharded model are written
and read with incasa/train/dcp.py (torch.distributed.checkpoint), which resumes on any world size.

Every function keeps module types and parameter names (fully-qualified names, FQNs) unchanged: activation
checkpointing wraps the block's forward in place instead of inserting a wrapper module, and compile uses
nn.Module.compile(). So a checkpoint written with or without any of them loads into a model built either way.

Launching with torchrun (it sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT for every process):

    # one machine, 8 GPUs
    torchrun --standalone --nproc-per-node 8 -m your.train.script --args ...

    # two machines of 8 GPUs each: run the same line on both, with the address of one of them (the rendezvous host)
    torchrun --nnodes 2 --nproc-per-node 8 --rdzv-backend c10d --rdzv-endpoint HOST0:29500 --rdzv-id job42 \\
             -m your.train.script --args ...
    # (a static alternative: --nnodes 2 --node-rank 0|1 --master-addr HOST0 --master-port 29500)

    # CPU only (tests, debugging): gloo is chosen automatically when CUDA is absent
    torchrun --standalone --nproc-per-node 2 -m your.train.script --args ...

Each process drives one GPU (cuda:LOCAL_RANK). NCCL over InfiniBand needs nothing more; over plain Ethernet set
NCCL_SOCKET_IFNAME to the interface the machines share. The global batch is WORLD_SIZE x the per-process batch.

FSDP2 works on CPU with gloo in torch 2.13 (tests/train/test_parallelize.py runs it with 2 processes); mixed
precision (bf16 params, fp32 gradient reduction) is applied on CUDA only, so CPU runs stay fp32 and match a single
process to ~1e-6.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.distributed.device_mesh import DeviceMesh


# ---------------------------------------------------------------------------------------------- process group


@dataclass(frozen=True)
class Distributed:
    rank: int
    local_rank: int
    world_size: int
    device: torch.device
    mesh: DeviceMesh

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed() -> Distributed:
    """Join the process group torchrun describes in the environment; nccl on CUDA, gloo on CPU; a 1-D device mesh."""
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh

    missing = [k for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT") if k not in os.environ]
    if missing:
        raise RuntimeError(f"init_distributed() needs the environment torchrun sets (missing {', '.join(missing)}); "
                           "launch with `torchrun --nproc-per-node N ...`, or train without it on one device")
    rank, world_size, local_rank = (int(os.environ[k]) for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"))
    if torch.cuda.is_available():
        if local_rank >= torch.cuda.device_count():
            raise RuntimeError(f"LOCAL_RANK {local_rank} but only {torch.cuda.device_count()} GPUs are visible")
        device, backend = torch.device("cuda", local_rank), "nccl"
        torch.cuda.set_device(device)
    else:
        device, backend = torch.device("cpu"), "gloo"
    if not dist.is_initialized():
        # device_id binds the NCCL communicator to this GPU eagerly (avoids a hang-prone lazy init on first collective)
        dist.init_process_group(backend, rank=rank, world_size=world_size,
                                device_id=device if backend == "nccl" else None)
    mesh = init_device_mesh(device.type, (world_size,), mesh_dim_names=("dp",))
    return Distributed(rank=rank, local_rank=local_rank, world_size=world_size, device=device, mesh=mesh)


def destroy_distributed() -> None:
    """Leave the process group cleanly. Drop the sharded model and optimizer first (`del model, opt`).

    Why the collect and the barrier: gloo's worker threads can still hold finished async work (FSDP2's collectives)
    whose tensors reference Python objects; if those are freed during interpreter shutdown, the process aborts
    with "terminate called without an active exception" AFTER all work is done (seen in ~1/3 of 2-rank CPU runs
    here; pytorch/pytorch PR 179291 describes the mechanism). Freeing them while Python is alive avoids it.
    Call it only when every rank succeeded (as torchtitan does): after a crash of one rank the barrier would wait
    for the process-group timeout; let a failing process just exit, torchrun tears the others down.
    """
    import gc

    import torch.distributed as dist

    if dist.is_initialized():
        gc.collect()
        dist.barrier()
        dist.destroy_process_group()


def _blocks(model: nn.Module, block_types: Sequence[type[nn.Module]]) -> list[nn.Module]:
    """The repeated blocks, outermost first; a clear error when there are none (a wrong type would silently no-op)."""
    blocks = [m for m in model.modules() if isinstance(m, tuple(block_types))]
    if not blocks:
        names = ", ".join(t.__name__ for t in block_types)
        raise ValueError(f"{type(model).__name__} has no module of type {names}: nothing to apply to")
    return blocks


# ---------------------------------------------------------------------------------------------- FSDP2


def default_mp_policy(device_type: str):
    """bf16 parameters and activations with fp32 gradient reduction on CUDA; full fp32 elsewhere (gloo has no bf16
    speed to gain, and exact comparison with a single process is what CPU runs are for)."""
    from torch.distributed.fsdp import MixedPrecisionPolicy

    if device_type == "cuda":
        return MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
    return MixedPrecisionPolicy()


_DEFAULT = object()


def apply_fsdp(model: nn.Module, mesh: DeviceMesh, *, block_types: Sequence[type[nn.Module]],
               reshard_after_forward: bool = True, mp_policy=_DEFAULT) -> nn.Module:
    """Shard every block with FSDP2 (fully_shard), then the root for the parameters left outside the blocks.

    Per-block sharding is what bounds memory: only one block's full parameters exist at a time (plus the next one,
    prefetched). reshard_after_forward=True frees them after forward and gathers again in backward (ZeRO-3);
    False keeps them until backward (ZeRO-2-like: more memory, one all-gather less). The root is never resharded
    after forward, since backward starts with it. The model's parameters become DTensors sharded on dim 0.
    mp_policy: a torch.distributed.fsdp.MixedPrecisionPolicy; default default_mp_policy(mesh.device_type).
    """
    from torch.distributed.fsdp import fully_shard

    policy = default_mp_policy(mesh.device_type) if mp_policy is _DEFAULT else mp_policy
    kw = {} if policy is None else {"mp_policy": policy}
    for block in _blocks(model, block_types):
        fully_shard(block, mesh=mesh, reshard_after_forward=reshard_after_forward, **kw)
    fully_shard(model, mesh=mesh, reshard_after_forward=False, **kw)
    return model


# ---------------------------------------------------------------------------------------------- checkpointing, compile


def _checkpointed_forward(forward: Callable, *args, **kwargs):
    from torch.utils.checkpoint import checkpoint

    # non-reentrant: works with kwargs, with torch.compile (traced as one higher-order op) and with FSDP2's hooks
    return checkpoint(forward, *args, use_reentrant=False, **kwargs)


def apply_activation_checkpointing(model: nn.Module, block_types: Sequence[type[nn.Module]]) -> nn.Module:
    """Keep only each block's inputs in forward and recompute its activations in backward (~1/3 more compute,
    activation memory of one block instead of all). The block's forward is wrapped in place, so module types and
    parameter names do not change (no `_checkpoint_wrapped_module.` in the state dict)."""
    for block in _blocks(model, block_types):
        if getattr(block, "_incasa_checkpointed", False):
            raise ValueError(f"{type(block).__name__} already has activation checkpointing")
        block.forward = functools.partial(_checkpointed_forward, block.forward)
        block._incasa_checkpointed = True
    return model


def apply_regional_compile(model: nn.Module, block_types: Sequence[type[nn.Module]], **compile_kwargs) -> nn.Module:
    """torch.compile each repeated block rather than the whole model: identical blocks share one compiled graph,
    so warm-up costs one block per type instead of the full depth (GPU.md: ~40-75 s for the whole 8b), and graph
    breaks elsewhere in the model (data-dependent Python) cost nothing. compile_kwargs go to torch.compile (e.g.
    backend="aot_eager" to test tracing without a C++ compiler, or mode="max-autotune")."""
    for block in _blocks(model, block_types):
        block.compile(**compile_kwargs)
    return model


# ---------------------------------------------------------------------------------------------- FP8 (torchao)

# Linears FP8 should NOT touch in a FLUX/DiT-style model, by fully-qualified name:
#   *mod        adaLN modulation (img_mod, txt_mod, mod, final_mod): one row per sample, so the matmul is [B, D] and
#               torchao refuses it (row count not a multiple of 16); it is also tiny, so FP8 would gain nothing
#   *_in        embeddings (img_in, txt_in, time_in.fc1, pooled_in.fc2, ...): narrow inputs, per-sample vectors
#   final_*     the output projection, where precision shows directly in the image
DEFAULT_FLOAT8_SKIP: tuple[str, ...] = (r"(^|[._])mod$", r"^\w+_in(\.|$)", r"^final_")


def make_float8_filter(skip: Sequence[str] = DEFAULT_FLOAT8_SKIP, multiple: int = 16) -> Callable[[nn.Module, str], bool]:
    """A module_filter_fn for torchao: True for an nn.Linear whose FQN matches none of the `skip` regexes and whose
    in and out features are both multiples of `multiple` (the FP8 GEMMs need 16-aligned dimensions)."""
    patterns = [re.compile(p) for p in skip]

    def keep(module: nn.Module, fqn: str) -> bool:
        if not isinstance(module, nn.Linear):
            return False
        if module.in_features % multiple or module.out_features % multiple:
            return False
        return not any(p.search(fqn) for p in patterns)

    return keep


FLOAT8_RECIPES = ("tensorwise", "rowwise")


def _import_torchao_float8():
    try:
        from torchao.float8 import Float8LinearConfig, convert_to_float8_training
    except ImportError as e:
        raise RuntimeError("FP8 training needs torchao: pip install 'incasa[gpu]' (torchao>=0.10)") from e
    return Float8LinearConfig, convert_to_float8_training


def convert_float8(model: nn.Module, *, recipe: str = "tensorwise",
                   module_filter: Callable[[nn.Module, str], bool] | None = None, emulate: bool = False) -> nn.Module:
    """Swap the filtered nn.Linear modules for torchao Float8Linear, with no hardware check.

    emulate=True makes torchao compute the FP8 casts in higher precision (for testing the conversion on CPU);
    use apply_float8 for training, which checks the GPU first.
    """
    if recipe not in FLOAT8_RECIPES:
        raise ValueError(f"unknown float8 recipe {recipe!r}; choose one of {', '.join(FLOAT8_RECIPES)}")
    Float8LinearConfig, convert_to_float8_training = _import_torchao_float8()
    config = Float8LinearConfig.from_recipe_name(recipe)
    if emulate:
        import dataclasses

        config = dataclasses.replace(config, emulate=True)
    return convert_to_float8_training(model, module_filter_fn=module_filter or make_float8_filter(), config=config)


def apply_float8(model: nn.Module, *, recipe: str = "tensorwise",
                 module_filter: Callable[[nn.Module, str], bool] | None = None) -> nn.Module:
    """FP8 training of the token-wise linears with torchao (dynamic scaling; weights stay in high precision).

    tensorwise: one scale per tensor, fastest (over compiled bf16 at width 3072, forward + backward: 1.22x on an H200
    with cuDNN attention, 1.17x with flash; benchmarks/results/train_fp8_cudnn.json, train_fp8_flash.json).
    rowwise: one scale per row, more robust to outliers, a little slower. Apply BEFORE compile and FSDP.
    """
    _import_torchao_float8()  # a missing torchao is the first thing to report
    if not torch.cuda.is_available():
        raise RuntimeError("FP8 training needs a CUDA GPU of compute capability 8.9+ (Ada, Hopper); none is available")
    major, minor = torch.cuda.get_device_capability()
    if (major, minor) < (8, 9):
        raise RuntimeError(f"FP8 training needs compute capability 8.9+ (Ada, Hopper); "
                           f"{torch.cuda.get_device_name()} has {major}.{minor}")
    return convert_float8(model, recipe=recipe, module_filter=module_filter)
