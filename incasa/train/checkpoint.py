"""Checkpoints as safetensors, written atomically (temp file + rename), with everything exact resume needs.

A training state is ONE file, so a crash mid-write can never leave a half-updated set:
    model.*   the trained weights (fp32)          ema.*     the EMA weights
    optim.*   AdamW moments and step counts       rng.*     generator states (torch.Generator.get_state())
and a JSON header (safetensors metadata) with the step, the configs and anything else the loop wants back.
Inference weights are exported separately, in half precision, by `save_weights`.
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file


def save_file_atomic(tensors: dict[str, torch.Tensor], path: str | Path, metadata: dict) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # a fresh unique name, not mkstemp: mkstemp's file is 0600, and replacing the checkpoint with it would make
    # shipped weights unreadable to other users; a file save_file creates gets the usual mode (umask)
    tmp = str(path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp"))
    try:
        tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
        save_file(tensors, tmp, metadata={"incasa": json.dumps(metadata)})
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def read_metadata(path: str | Path) -> dict:
    """Only the JSON header, without loading tensors (to check a checkpoint before building a model for it)."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        with safe_open(str(path), "pt") as f:
            header = (f.metadata() or {}).get("incasa")
    except (SafetensorError, OSError) as e:
        raise ValueError(f"checkpoint {path} is corrupt or not a safetensors file ({e})") from None
    if header is None:
        raise ValueError(f"checkpoint {path} was not written by incasa (no 'incasa' metadata)")
    return json.loads(header)


def read_file(path: str | Path) -> tuple[dict[str, torch.Tensor], dict]:
    """Tensors and our JSON header; a clear error for a missing, truncated or foreign file."""
    meta = read_metadata(path)
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError) as e:
        raise ValueError(f"checkpoint {path} is corrupt or not a safetensors file ({e})") from None
    return tensors, meta


def save_weights(model: torch.nn.Module, path: str | Path, metadata: dict, dtype=torch.float16,
                 extra: dict[str, torch.Tensor] | None = None) -> None:
    """The model's weights in `dtype`, plus `extra` tensors as they are (e.g. a latent DiT's autoencoder)."""
    save_file_atomic({k: v.to(dtype) for k, v in model.state_dict().items()} | (extra or {}), path, metadata)


def save_training_state(path, *, model, ema, optimizer, generators: dict[str, torch.Generator], metadata: dict):
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    tensors.update({f"ema.{k}": v for k, v in ema.state_dict().items()})
    opt = optimizer.state_dict()
    for i, state in opt["state"].items():
        for key, value in state.items():
            tensors[f"optim.{i}.{key}"] = value if torch.is_tensor(value) else torch.tensor(value)
    for name, g in generators.items():
        tensors[f"rng.{name}"] = g.get_state()
    save_file_atomic(tensors, path, {**metadata, "optim_param_groups": opt["param_groups"]})


def load_training_state(path, *, model, ema, optimizer, generators: dict[str, torch.Generator]) -> dict:
    tensors, meta = read_file(path)
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    ema.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("ema.")})
    state: dict[int, dict] = {}
    for k, v in tensors.items():
        if k.startswith("optim."):
            _, i, key = k.split(".", 2)
            state.setdefault(int(i), {})[key] = v
    optimizer.load_state_dict({"state": state, "param_groups": meta.pop("optim_param_groups")})
    for name, g in generators.items():
        g.set_state(tensors[f"rng.{name}"])
    return meta
