"""Distributed checkpoints (torch.distributed.checkpoint, DCP): every rank writes its own shards, in parallel,
and a checkpoint loads on ANY world size, including one process without a process group.

Why DCP and not checkpoint.py's single safetensors file: with FSDP2 no rank holds the full model, and gathering
8B parameters plus two AdamW moments (~100 GB in fp32) onto one rank to write one file is slow and may not fit.
DCP writes each rank's shard under a global index (metadata: which slice of which tensor lives in which file);
on load, every rank reads exactly the slices its own sharding needs, so 2 ranks -> 1 process, 1 -> 8 or 8 -> 6 all
work. get_state_dict/set_state_dict (torch.distributed.checkpoint.state_dict) give model and optimizer state keyed
by parameter NAME (not by the optimizer's integer ids), which is what makes a re-sharded resume line up.

A checkpoint is a directory:
    path/
      .metadata, __0_0.distcp, __1_0.distcp, ...   DCP's index and one shard file per rank
      incasa.json                                  {"step", "world_size", "extra"}, written last
Atomic: everything is written into path.tmp, and only a complete directory is renamed to `path` (an existing one
is moved aside first and deleted after), so a crash mid-save leaves the previous checkpoint intact and a reader
never sees a half-written one. All ranks must call save_dcp and load_dcp (they are collective), and across
machines `path` must be on a file system they all see (every rank writes its own file into the same directory).
RNG state is not saved: it does not map across world sizes; derive data order and noise from the step instead.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import warnings
from pathlib import Path

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch import nn
from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

META = "incasa.json"


def _rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def _world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def _barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


@contextlib.contextmanager
def _single_process_is_intended():
    """DCP warns on every call without a process group even when told no_dist=True; one process IS a use here."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.distributed is disabled, unavailable or uninitialized")
        yield


def save_dcp(path: str | Path, model: nn.Module, optimizer: torch.optim.Optimizer | None, step: int,
             extra: dict | None = None) -> Path:
    """Write model (+ optimizer) state as a DCP checkpoint directory at `path`; extra must be JSON-serialisable."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    meta = json.dumps({"step": int(step), "world_size": _world_size(), "extra": extra or {}})  # fail before writing
    if _rank() == 0:
        if tmp.exists():  # left by a crash during an earlier save
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
    _barrier()
    model_sd, optim_sd = get_state_dict(model, optimizer if optimizer is not None else [])
    state = {"model": model_sd}
    if optimizer is not None:
        state["optim"] = optim_sd
    with _single_process_is_intended():  # collective: every rank writes its shards, rank 0 the global metadata
        dcp.save(state, checkpoint_id=tmp, no_dist=not dist.is_initialized())
    if _rank() == 0:
        (tmp / META).write_text(meta)
        old = path.with_name(path.name + ".old")
        if path.exists():
            if old.exists():
                shutil.rmtree(old)
            os.replace(path, old)
        os.replace(tmp, path)
        if old.exists():
            shutil.rmtree(old)
    _barrier()  # no rank may read `path` (or save again) before the rename
    return path


def read_dcp_meta(path: str | Path) -> dict:
    """step, world_size and extra of a DCP checkpoint, with a clear error for a missing or incomplete one."""
    path = Path(path)
    if not (path / META).is_file():
        what = "does not exist" if not path.exists() else f"is not a complete incasa DCP checkpoint (no {META})"
        raise FileNotFoundError(f"checkpoint {path} {what}")
    return json.loads((path / META).read_text())


def load_dcp(path: str | Path, model: nn.Module, optimizer: torch.optim.Optimizer | None = None) -> tuple[int, dict]:
    """Load a DCP checkpoint into a model (and optimizer) sharded in any way; returns (step, extra).

    Build the model and optimizer exactly as for training (apply_fsdp etc. first): the current state dict says
    which shards this rank needs, and DCP reads just those, re-sharding as needed.
    """
    path = Path(path)
    meta = read_dcp_meta(path)
    model_sd, optim_sd = get_state_dict(model, optimizer if optimizer is not None else [])
    state = {"model": model_sd}
    if optimizer is not None:
        state["optim"] = optim_sd
    with _single_process_is_intended():
        dcp.load(state, checkpoint_id=path, no_dist=not dist.is_initialized())  # in place, into state's tensors
    set_state_dict(model, optimizer if optimizer is not None else [], model_state_dict=state["model"],
                   optim_state_dict=state.get("optim", {}))
    return meta["step"], meta["extra"]
