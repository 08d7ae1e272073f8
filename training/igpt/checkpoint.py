"""Training checkpoints (docs/CONTRACTS.md): a torch.save'd dict that carries its own config."""
from __future__ import annotations

import os
import tempfile
from typing import Optional, Tuple

import torch
import torch.nn as nn

from .model import IGpt, IGptConfig

LAST = "last.pt"
BEST = "best.pt"


def unwrap(model: nn.Module) -> IGpt:
    """The IGpt inside a DDP wrapper and/or a torch.compile'd module."""
    while True:
        if hasattr(model, "module") and isinstance(model.module, nn.Module):
            model = model.module
        elif hasattr(model, "_orig_mod"):
            model = model._orig_mod
        else:
            return model


def save_checkpoint(path: str, model: nn.Module, **fields) -> None:
    """Atomically write {config, model, **fields} to path (a temp file in the same folder, then rename)."""
    m = unwrap(model)
    state = {k: v.detach().cpu() for k, v in m.state_dict().items()}
    ckpt = {
        "config": m.config.to_dict(),
        "model": state,
        "palette": [],
        "classes": [],
        "dataset": {},
        "step": 0,
        "tokens_seen": 0,
        "wall_time_s": 0.0,
        "hardware": "",
        "metrics": {},
        "optimizer": None,
        "train_args": {},
    }
    ckpt.update(fields)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".pt", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(ckpt, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def torch_load(path: str, map_location="cpu"):
    """torch.load of our own files: they hold RNG states and numbers as well as tensors, so they
    need the full unpickler (PyTorch >= 2.6 defaults to weights_only=True)."""
    try:
        return torch.load(path, map_location=map_location, weights_only=False)
    except TypeError:  # a PyTorch without the weights_only argument
        return torch.load(path, map_location=map_location)


def load_checkpoint(path: str, map_location="cpu", strict: bool = True) -> Tuple[IGpt, dict]:
    """(model rebuilt from the checkpoint's config with its weights, the checkpoint dict)."""
    ckpt = torch_load(path, map_location=map_location)
    if not isinstance(ckpt, dict) or "config" not in ckpt or "model" not in ckpt:
        raise ValueError(f"{path}: not an IGpt checkpoint (needs 'config' and 'model')")
    model = IGpt(IGptConfig.from_dict(ckpt["config"]))
    model.load_state_dict(ckpt["model"], strict=strict)
    return model, ckpt


def latest_checkpoint(folder: str) -> Optional[str]:
    """The checkpoint to resume from in a training output folder, or None."""
    p = os.path.join(folder, LAST)
    return p if os.path.isfile(p) else None
