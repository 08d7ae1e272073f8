"""The training loop's parts, written once for `train` (pretraining) and `finetune` (L_CLF + L_GEN).

The two commands are flat scripts (karpathy/nanoGPT's train.py is the model) around these:
`Dist` (device and DDP ranks), `Batches` (the seeded order of the training examples),
`make_optimizer` (AdamW and its parameter groups), `lr_factor` (linear warm-up, then cosine
decay), `autocast` (bf16), `train_step` (one optimizer step with gradient accumulation) and
`evaluate` (sums of a per-batch measure over a split). Each command keeps only what is its own:
its loss, its flags and what it checkpoints.
"""
from __future__ import annotations

import contextlib
import math
import os
import random
import signal
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn

from . import runtime


class Dist:
    """This process's device and place among the DDP ranks (torchrun's environment; one process without it)."""

    def __init__(self, device_name: str):
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        self.local_world = int(os.environ.get("LOCAL_WORLD_SIZE", str(self.world)))
        self.enabled = self.world > 1
        device = runtime.pick_device(device_name)
        if device.type == "cuda" and device.index is None:  # set_device needs an index on PyTorch 2.x
            device = torch.device("cuda", self.local_rank if self.enabled else torch.cuda.current_device())
        if device.type == "cuda":
            torch.cuda.set_device(device)
        self.device = device
        if self.enabled and not dist.is_initialized():
            dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")

    @property
    def master(self) -> bool:
        return self.rank == 0

    def all_sum(self, values: Sequence[float]) -> List[float]:
        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        if self.enabled:
            dist.all_reduce(t)
        return t.tolist()

    def any(self, flag: bool) -> bool:
        return self.all_sum([1.0 if flag else 0.0])[0] > 0 if self.enabled else flag

    def close(self) -> None:
        if self.enabled and dist.is_initialized():
            dist.destroy_process_group()


class Batches:
    """Seeded epoch permutations of n training examples in global batches of batch x world;
    rank r takes the r-th `batch` of each. An epoch's ragged tail is dropped; a single process
    with fewer examples than a batch takes all of them every step.

    state_dict() is the data position (epoch, offset), so a resumed run sees the same sequence;
    seek(step) puts it where `step` batches from the start leave it.
    """

    def __init__(self, n: int, batch: int, rank: int = 0, world: int = 1, seed: int = 0, sort: bool = False):
        if n < batch * world and world > 1:
            raise ValueError(f"{n} training examples < global batch {batch * world}")
        self.n, self.batch, self.rank, self.world, self.seed, self.sort = n, batch, rank, world, seed, sort
        self.global_batch = min(batch * world, n)
        self.epoch, self.offset = 0, 0
        self._perm = self._permutation()

    @property
    def steps_per_epoch(self) -> int:
        return max(1, self.n // self.global_batch)

    def _permutation(self) -> np.ndarray:
        return np.random.default_rng([self.seed, self.epoch]).permutation(self.n)

    def next(self) -> np.ndarray:
        if self.offset + self.global_batch > self.n:  # drop the ragged tail, start the next epoch
            self.epoch, self.offset = self.epoch + 1, 0
            self._perm = self._permutation()
        start = self.offset + self.rank * self.batch
        idx = self._perm[start:start + self.batch]
        self.offset += self.global_batch
        return np.sort(idx) if self.sort else idx

    def seek(self, step: int) -> None:
        epoch, i = divmod(step, self.steps_per_epoch)
        self.load_state_dict({"epoch": epoch, "offset": i * self.global_batch})

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "offset": self.offset, "seed": self.seed}

    def load_state_dict(self, s: dict) -> None:
        self.epoch, self.offset, self.seed = s["epoch"], s["offset"], s.get("seed", self.seed)
        self._perm = self._permutation()


def make_optimizer(model: nn.Module, lr: float, weight_decay: float,
                   head_lr: Optional[float] = None) -> torch.optim.Optimizer:
    """AdamW (0.9, 0.95): weight decay on matrices and embeddings, none on norm gains and biases.
    With head_lr the classifier head (`score`) is a third group with its own peak rate (decayed
    too). Each group's "lr" starts at its peak; set_lr scales them."""
    def is_head(name: str) -> bool:
        return head_lr is not None and name.startswith("score.")

    body = [p for n, p in model.named_parameters() if p.requires_grad and not is_head(n)]
    groups = [{"params": [p for p in body if p.dim() >= 2], "weight_decay": weight_decay, "lr": lr},
              {"params": [p for p in body if p.dim() < 2], "weight_decay": 0.0, "lr": lr},
              {"params": [p for n, p in model.named_parameters() if is_head(n)], "weight_decay": weight_decay,
               "lr": head_lr}]
    kw = {}
    if next(model.parameters()).is_cuda and "fused" in torch.optim.AdamW.__init__.__code__.co_varnames:
        kw["fused"] = True
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=lr, betas=(0.9, 0.95), **kw)


def lr_factor(warmup_done: float, decay_done: float, min_ratio: float) -> float:
    """The learning rate as a fraction of its peak: `warmup_done` (the share of the warm-up done)
    while it is below 1, then a cosine from 1 down to `min_ratio` as `decay_done` goes from 0 to 1."""
    if warmup_done < 1.0:
        return warmup_done
    decay = min(1.0, max(0.0, decay_done))
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * decay))


def set_lr(optimizer: torch.optim.Optimizer, peak_lrs: Sequence[float], factor: float) -> None:
    for group, peak in zip(optimizer.param_groups, peak_lrs):
        group["lr"] = peak * factor


def autocast(device: torch.device, enabled: bool):
    """bf16 autocast when enabled (on a CPU it pays off with AVX512-BF16 or AMX), else nothing."""
    if not enabled:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16)


LossFn = Callable[..., Tuple[torch.Tensor, Dict[str, torch.Tensor]]]


def train_step(net: nn.Module, optimizer: torch.optim.Optimizer, loss_fn: LossFn, batch: Sequence[torch.Tensor],
               micro: int = 0, grad_clip: float = 0.0, amp: bool = False) -> Dict[str, torch.Tensor]:
    """One optimizer step on `batch` (tensors whose first axis is the example).

    The gradient is accumulated over micro-batches of `micro` examples (0: the whole batch at
    once); under DDP only the last one synchronizes. `loss_fn(net, *micro_batch)` returns
    (mean loss, {name: scalar tensor}). The norm of the gradient is clipped to `grad_clip` (0:
    not clipped). Returns the batch means of those scalars as float64 tensors (no device sync).
    """
    n = batch[0].shape[0]
    micro = micro if 0 < micro < n else n
    starts = range(0, n, micro)
    optimizer.zero_grad(set_to_none=True)
    means: Dict[str, torch.Tensor] = {}
    for i, s in enumerate(starts):
        part = [t[s:s + micro] for t in batch]
        k = part[0].shape[0]
        last = i == len(starts) - 1
        sync = net.no_sync() if isinstance(net, nn.parallel.DistributedDataParallel) and not last \
            else contextlib.nullcontext()
        with sync:
            with autocast(part[0].device, amp):
                loss, stats = loss_fn(net, *part)
            (loss * (k / n)).backward()
        for name, v in stats.items():
            means[name] = means.get(name, 0.0) + v.detach().double() * k / n
    if grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(net.parameters(), grad_clip)
    optimizer.step()
    return means


Measure = Callable[..., Dict[str, object]]


@torch.no_grad()
def evaluate(model: nn.Module, measure: Measure, arrays: Sequence[np.ndarray], batch_size: int,
             amp: bool = False, rank: int = 0, world: int = 1) -> Dict[str, object]:
    """Sums of `measure(model, *batch)` (a dict of numbers or arrays) over every example of
    `arrays` (numpy arrays whose first axis is the example; they reach `measure` as int64 tensors
    on the model's device), with the model in eval mode and under `autocast`. Rank r of `world`
    takes examples r, r + world, ...: the caller sums over the ranks (Dist.all_sum)."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    mine = np.arange(rank, len(arrays[0]), world)
    sums: Dict[str, object] = {}
    cfg = getattr(model, "config", None)
    if cfg is not None and arrays[0].ndim == 2:
        batch_size = runtime.eval_batch_size(batch_size, cfg.n_head, arrays[0].shape[1], device)
    for s in range(0, len(mine), batch_size):
        idx = mine[s:s + batch_size]
        batch = [torch.from_numpy(a[idx].astype(np.int64)).to(device) for a in arrays]
        with autocast(device, amp):
            for name, v in measure(model, *batch).items():
                sums[name] = sums[name] + v if name in sums else v
    model.train(was_training)
    return sums


def bits(nats: float) -> float:
    return nats / math.log(2)


def rng_state() -> dict:
    s = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        s["cuda"] = torch.cuda.get_rng_state_all()
    return s


def set_rng_state(s: dict) -> None:
    random.setstate(s["python"])
    np.random.set_state(s["numpy"])
    torch.set_rng_state(s["torch"])
    if "cuda" in s and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(s["cuda"])


def gather_rng_states(d: Dist) -> Dict[str, dict]:
    """Every rank's RNG states, keyed by rank (a collective under DDP: every rank calls it)."""
    mine = rng_state()
    if not d.enabled:
        return {"0": mine}
    every = [None] * d.world
    dist.all_gather_object(every, mine)
    return {str(r): s for r, s in enumerate(every)}


class StopFlag:
    """Set by SIGTERM/SIGINT: the loop finishes its step, checkpoints and exits cleanly."""

    def __init__(self):
        self.set = False
        self._old = {}
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                self._old[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread
                pass

    def _handle(self, signum, frame):
        if self.set:  # a second signal: give up at once
            raise KeyboardInterrupt
        self.set = True

    def restore(self):
        for sig, h in self._old.items():
            signal.signal(sig, h)
