"""`python3 -m igpt train`: pretrain iGPT on prepared tokens.

Objectives: `ar` (next pixel: input [SOS, x0..x(n-2)], targets [x0..x(n-1)]) or `bert` (15% of
the pixels replaced by the SOS id used as a mask token, bidirectional attention, loss on the
masked pixels only). AdamW (0.9, 0.95) with weight decay on matrices only, linear warm-up then
cosine decay, gradient clipping, bf16 autocast on CUDA. Checkpoints `OUT/last.pt` (every
--ckpt-interval steps, every --ckpt-minutes, at the end, on SIGTERM/SIGINT) and `OUT/best.pt`
(lowest validation loss). `--resume` continues from OUT/last.pt: weights, optimizer, step, RNG
and data position. Multi-process with `torchrun --nproc_per_node N -m igpt train ...` (DDP;
nccl on CUDA, gloo on CPU).
"""
from __future__ import annotations

import argparse
import contextlib
import gc
import json
import math
import os
import random
import signal
import time
from typing import Optional

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
from torch.nn import functional as F

from . import checkpoint as ckp
from . import data, runtime
from .model import PRESETS, IGpt, IGptConfig, shift_inputs


def add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True, help="prepared data folder (python3 -m igpt prepare)")
    p.add_argument("--out", required=True, help="output folder for last.pt / best.pt / log.jsonl")
    p.add_argument("--preset", default="fashion-mnist", choices=sorted(PRESETS))
    p.add_argument("--n-layer", type=int)
    p.add_argument("--n-embd", type=int)
    p.add_argument("--n-head", type=int)
    p.add_argument("--dropout", type=float)
    p.add_argument("--objective", choices=("ar", "bert"), default="ar")
    p.add_argument("--mask-prob", type=float, default=0.15, help="BERT: fraction of pixels masked")
    p.add_argument("--batch-size", type=int, default=16, help="images per optimizer step per process")
    p.add_argument("--micro-batch", type=int, default=0,
                   help="images per forward/backward (gradient accumulation); 0 = --batch-size")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--min-lr-ratio", type=float, default=0.1, help="cosine decays to lr * this")
    p.add_argument("--warmup-steps", type=int, default=200)
    p.add_argument("--weight-decay", type=float, default=0.01)
    p.add_argument("--grad-clip", type=float, default=1.0)
    p.add_argument("--max-steps", type=int, default=100_000)
    p.add_argument("--max-minutes", type=float, default=0,
                   help="total training wall-time budget (earlier runs of a resumed job count); "
                        "the cosine schedule ends when the budget or --max-steps does; 0 = none")
    p.add_argument("--steps-this-run", type=int, default=0,
                   help="stop cleanly after this many steps in this run (the schedule still follows "
                        "--max-steps / --max-minutes; continue with --resume); 0 = no limit")
    p.add_argument("--eval-interval", type=int, default=250)
    p.add_argument("--eval-samples", type=int, default=512, help="validation images per periodic eval")
    p.add_argument("--final-eval-samples", type=int, default=2000,
                   help="val and test images for the final numbers (0 = all)")
    p.add_argument("--ckpt-interval", type=int, default=1000)
    p.add_argument("--ckpt-minutes", type=float, default=10)
    p.add_argument("--resume", action="store_true",
                   help="continue from OUT/last.pt if it exists (the model config comes from the checkpoint)")
    p.add_argument("--seed", type=int, default=1337)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = cores / local processes)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1 ...")
    p.add_argument("--amp", action="store_true",
                   help="bf16 autocast on CPU too (CUDA always uses it); pays off on CPUs with AVX512-BF16/AMX")
    p.add_argument("--compile", action="store_true", help="torch.compile the model (PyTorch 2)")
    p.add_argument("--no-progress", action="store_true", help="no tqdm bar: a log line every --log-interval steps")
    p.add_argument("--log-interval", type=int, default=100, help="steps between log lines with --no-progress")


# ----------------------------------------------------------------------------- data order

class Batches:
    """Seeded epoch permutations of the training set; the global batch is split across ranks.

    state_dict() is the data position (epoch, offset), so a resumed run sees the same sequence.
    """

    def __init__(self, n: int, batch: int, rank: int, world: int, seed: int):
        self.n, self.batch, self.rank, self.world, self.seed = n, batch, rank, world, seed
        if n < batch * world:
            raise ValueError(f"{n} training examples < global batch {batch * world}")
        self.epoch, self.offset = 0, 0
        self._perm = self._permutation()

    def _permutation(self) -> np.ndarray:
        return np.random.default_rng([self.seed, self.epoch]).permutation(self.n)

    def next(self) -> np.ndarray:
        g = self.batch * self.world
        if self.offset + g > self.n:  # drop the ragged tail, start the next epoch
            self.epoch, self.offset = self.epoch + 1, 0
            self._perm = self._permutation()
        idx = self._perm[self.offset + self.rank * self.batch: self.offset + (self.rank + 1) * self.batch]
        self.offset += g
        return np.sort(idx)

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "offset": self.offset, "seed": self.seed}

    def load_state_dict(self, s: dict) -> None:
        self.epoch, self.offset, self.seed = s["epoch"], s["offset"], s.get("seed", self.seed)
        self._perm = self._permutation()


# ----------------------------------------------------------------------------- helpers

class Dist:
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

    def all_sum(self, values) -> list:
        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        if self.enabled:
            dist.all_reduce(t)
        return t.tolist()

    def any(self, flag: bool) -> bool:
        return self.all_sum([1.0 if flag else 0.0])[0] > 0 if self.enabled else flag

    def close(self) -> None:
        if self.enabled and dist.is_initialized():
            dist.destroy_process_group()


def model_config(args, meta: dict) -> IGptConfig:
    over = {k: getattr(args, k) for k in ("n_layer", "n_embd", "n_head", "dropout") if getattr(args, k, None) is not None}
    cfg = dict(PRESETS[args.preset], **over)
    cfg.update(palette_size=meta["palette_size"], height=meta["height"], width=meta["width"],
               channels=meta["channels"], n_positions=meta["height"] * meta["width"],
               bidirectional=args.objective == "bert")
    return IGptConfig(**cfg)


def make_optimizer(model: nn.Module, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]  # matrices, embeddings
    no_decay = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]  # norms, biases
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    kw = {}
    if next(model.parameters()).is_cuda and "fused" in torch.optim.AdamW.__init__.__code__.co_varnames:
        kw["fused"] = True
    return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.95), **kw)


def lr_at(step: int, progress_time: float, args) -> float:
    """Linear warm-up, then cosine to lr * min_lr_ratio; progress is the further of steps and time."""
    if step < args.warmup_steps:
        return args.lr * (step + 1) / args.warmup_steps
    frac = (step - args.warmup_steps) / max(1, args.max_steps - args.warmup_steps)
    frac = min(1.0, max(frac, progress_time))
    min_lr = args.lr * args.min_lr_ratio
    return min_lr + 0.5 * (args.lr - min_lr) * (1.0 + math.cos(math.pi * frac))


def autocast(device: torch.device, cpu_bf16: bool = False):
    """bf16 autocast on CUDA; on CPU fp32 unless asked (worth it with AVX512-BF16 / AMX)."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    if cpu_bf16:
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def batch_loss(model: nn.Module, x: torch.Tensor, cfg: IGptConfig, objective: str, mask_prob: float,
               generator: Optional[torch.Generator] = None):
    """(mean loss in nats over the predicted pixels, number of predicted pixels)."""
    if objective == "ar":
        logits, _ = model(shift_inputs(x, cfg.sos_token_id))
        return F.cross_entropy(logits.float().reshape(-1, cfg.palette_size), x.reshape(-1)), x.numel()
    mask = torch.rand(x.shape, generator=generator, device=x.device if generator is None else generator.device) < mask_prob
    mask = mask.to(x.device)
    logits, _ = model(x.masked_fill(mask, cfg.sos_token_id))  # SOS doubles as the mask token
    n = int(mask.sum())
    if n == 0:
        return logits.sum() * 0.0, 0
    return F.cross_entropy(logits.float()[mask], x[mask]), n


@torch.no_grad()
def evaluate(model: nn.Module, tokens: np.ndarray, cfg: IGptConfig, args, d: Dist, limit: int = 0,
             batch: int = 0) -> float:
    """Mean loss in nats per predicted pixel over the first `limit` examples (0 = all), sharded over ranks."""
    was_training = model.training
    model.eval()
    n = len(tokens) if limit <= 0 else min(limit, len(tokens))
    mine = np.arange(d.rank, n, d.world)
    batch = batch or max(args.micro_batch or args.batch_size, 1)
    gen = torch.Generator().manual_seed(1234 + d.rank)  # fixed BERT masks: comparable evals
    total, count = 0.0, 0
    for s in range(0, len(mine), batch):
        x = torch.from_numpy(tokens[mine[s:s + batch]].astype(np.int64)).to(d.device)
        with autocast(d.device, args.amp):
            loss, k = batch_loss(model, x, cfg, args.objective, args.mask_prob, generator=gen)
        total += float(loss) * k
        count += k
    total, count = d.all_sum([total, float(count)])
    model.train(was_training)
    return total / max(count, 1.0)


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


def bits(nats: float) -> float:
    return nats / math.log(2)


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


# ----------------------------------------------------------------------------- training

def run(args) -> Optional[IGpt]:
    """Train; returns the (unwrapped) model on every rank."""
    d = Dist(args.device)
    runtime.configure_threads(args.threads, d.local_world if d.device.type == "cpu" else 1)
    meta = data.read_meta(args.data)
    train_tokens, _ = data.load_prepared(args.data, "train")
    val_tokens, _ = data.load_prepared(args.data, "val")
    test_tokens, _ = data.load_prepared(args.data, "test")
    if len(val_tokens) == 0:
        val_tokens = test_tokens[:0]

    resume_path = ckp.latest_checkpoint(args.out) if args.resume else None
    ckpt = ckp.torch_load(resume_path) if resume_path else None
    cfg = IGptConfig.from_dict(ckpt["config"]) if ckpt else model_config(args, meta)
    if cfg.n_positions != meta["height"] * meta["width"] or cfg.palette_size != meta["palette_size"]:
        raise ValueError(f"checkpoint {resume_path} does not match the data in {args.data}")
    if cfg.bidirectional != (args.objective == "bert"):
        raise ValueError(f"checkpoint {resume_path} was trained with the other objective than --objective {args.objective}")
    torch.manual_seed(args.seed)  # the same initial weights on every rank
    model = IGpt(cfg)
    if ckpt:
        model.load_state_dict(ckpt["model"])
    model.to(d.device)
    optimizer = make_optimizer(model, args.lr, args.weight_decay)
    batches = Batches(len(train_tokens), args.batch_size, d.rank, d.world, args.seed)
    step, tokens_seen, wall_before, best_val = 0, 0, 0.0, float("inf")
    metrics = {}
    if ckpt:
        optimizer.load_state_dict(ckpt["optimizer"])
        step, tokens_seen, wall_before = ckpt["step"], ckpt["tokens_seen"], ckpt["wall_time_s"]
        metrics = dict(ckpt.get("metrics", {}))
        metrics.pop("stop_reason", None)  # this run has not finished yet
        best_val = metrics.get("best_val_loss", float("inf"))
        batches.load_state_dict(ckpt["data_state"])
        rngs = ckpt.get("rng", {})
        if str(d.rank) in rngs:
            set_rng_state(rngs[str(d.rank)])
    else:
        torch.manual_seed(args.seed + d.rank)  # per-rank dropout / mask streams
    del ckpt

    net: nn.Module = model
    if args.compile and hasattr(torch, "compile"):
        net = torch.compile(net)
    if d.enabled:
        net = nn.parallel.DistributedDataParallel(
            net, device_ids=[d.device.index] if d.device.type == "cuda" else None)

    if d.master:
        os.makedirs(args.out, exist_ok=True)
    hardware = runtime.hardware_string(d.device, d.world)
    train_args = {k: v for k, v in vars(args).items() if not k.startswith("_")}
    dataset_info = {"name": meta["dataset"], "path": meta.get("path"), "height": meta["height"],
                    "width": meta["width"], "channels": meta["channels"], "splits": meta["splits"],
                    "prepared": os.path.abspath(args.data)}
    n_tok = cfg.n_positions
    micro = args.micro_batch if 0 < args.micro_batch < args.batch_size else args.batch_size
    budget_s = args.max_minutes * 60.0
    start = time.time()

    def elapsed_total() -> float:
        return wall_before + time.time() - start

    def gather_rng() -> dict:
        mine = rng_state()
        if not d.enabled:
            return {"0": mine}
        every = [None] * d.world
        dist.all_gather_object(every, mine)
        return {str(r): s for r, s in enumerate(every)}

    def save(path: str) -> None:
        rngs = gather_rng()  # collective: every rank calls save
        if d.master:
            ckp.save_checkpoint(
                path, model, palette=meta["palette"], classes=meta["classes"], dataset=dataset_info,
                step=step, tokens_seen=tokens_seen, wall_time_s=elapsed_total(), hardware=hardware,
                metrics=metrics, optimizer=optimizer.state_dict(), train_args=train_args,
                data_state=batches.state_dict(), rng=rngs, objective=args.objective)

    def log(record: dict) -> None:
        if d.master:
            with open(os.path.join(args.out, "log.jsonl"), "a") as f:
                f.write(json.dumps(record) + "\n")

    if d.master:
        print(f"igpt train: {model.num_params() / 1e6:.2f}M params, {cfg.n_layer} layers x {cfg.n_embd} "
              f"({cfg.n_head} heads), {cfg.height}x{cfg.width}x{cfg.channels} = {n_tok} tokens, "
              f"palette {cfg.palette_size}, objective {args.objective}, batch {args.batch_size}x{d.world} "
              f"(micro {micro}), {hardware}, {len(train_tokens)} train images"
              + (f", resumed at step {step}" if resume_path else ""), flush=True)

    # time kept back for the final evaluation, from the measured training speed
    final_eval_images = sum(min(len(t), args.final_eval_samples) if args.final_eval_samples > 0 else len(t)
                            for t in (val_tokens, test_tokens)) / d.world
    stop = StopFlag()
    bar = None
    if d.master and not args.no_progress:
        from tqdm import tqdm
        bar = tqdm(total=args.max_steps, initial=step, dynamic_ncols=True, mininterval=2.0)
    model.train()
    last_ckpt_time, t_window, tok_window = time.time(), time.time(), 0
    train_tok_s = 0.0
    first_step = step
    reason = "max steps"
    try:
        while True:
            reserve = final_eval_images * n_tok / (3.0 * train_tok_s) if train_tok_s > 0 else 0.0
            over_time = budget_s > 0 and elapsed_total() + reserve >= budget_s
            halt = d.any(stop.set or over_time) if d.enabled else (stop.set or over_time)
            if step >= args.max_steps or halt or (args.steps_this_run > 0 and step - first_step >= args.steps_this_run):
                reason = "signal" if stop.set else ("time budget" if halt else "max steps" if step >= args.max_steps
                                                     else "steps this run")
                break
            time_frac = elapsed_total() / max(1.0, budget_s - reserve) if budget_s > 0 else 0.0
            lr = lr_at(step, time_frac, args)
            for g in optimizer.param_groups:
                g["lr"] = lr
            x_all = torch.from_numpy(train_tokens[batches.next()].astype(np.int64)).to(d.device)
            optimizer.zero_grad(set_to_none=True)
            loss_sum = 0.0
            chunks = list(range(0, args.batch_size, micro))
            for i, s in enumerate(chunks):
                x = x_all[s:s + micro]
                sync = contextlib.nullcontext() if (not d.enabled or i == len(chunks) - 1) else net.no_sync()
                with sync:
                    with autocast(d.device, args.amp):
                        loss, _ = batch_loss(net, x, cfg, args.objective, args.mask_prob)
                    (loss * (x.shape[0] / args.batch_size)).backward()
                loss_sum += float(loss.detach()) * x.shape[0] / args.batch_size
            if args.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), args.grad_clip)
            optimizer.step()
            step += 1
            tokens_seen += args.batch_size * d.world * n_tok
            tok_window += args.batch_size * d.world * n_tok
            now = time.time()
            if now - t_window >= 5.0 or train_tok_s == 0.0:
                rate = tok_window / max(now - t_window, 1e-9)
                train_tok_s = rate if train_tok_s == 0.0 else 0.5 * train_tok_s + 0.5 * rate
                t_window, tok_window = now, 0
            metrics["train_loss"] = loss_sum
            if bar is None and d.master and args.log_interval > 0 and step % args.log_interval == 0:
                print(f"step {step}: loss {loss_sum:.4f} ({bits(loss_sum):.4f} bits/token), lr {lr:.2e}, "
                      f"{train_tok_s:,.0f} tok/s, {elapsed_total() / 60:.1f} min", flush=True)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{loss_sum:.4f}", bpt=f"{bits(loss_sum):.3f}", lr=f"{lr:.2e}",
                                tok_s=f"{train_tok_s:,.0f}", refresh=False)

            if step % args.eval_interval == 0 and len(val_tokens):
                val = evaluate(model, val_tokens, cfg, args, d, limit=args.eval_samples)
                metrics.update(val_loss=val, val_bits_per_token=bits(val))
                rec = {"step": step, "tokens_seen": tokens_seen, "wall_time_s": round(elapsed_total(), 1),
                       "lr": lr, "train_loss": loss_sum, "val_loss": val, "val_bits_per_token": bits(val),
                       "tok_s": round(train_tok_s)}
                log(rec)
                if d.master:
                    msg = (f"step {step}: train {bits(loss_sum):.4f} bits/token, val {bits(val):.4f} "
                           f"bits/token, {train_tok_s:,.0f} tok/s, {elapsed_total() / 60:.1f} min")
                    (bar.write if bar is not None else print)(msg)
                if val < best_val:
                    best_val = val
                    metrics["best_val_loss"] = val
                    save(os.path.join(args.out, ckp.BEST))
            due = step % args.ckpt_interval == 0 or (args.ckpt_minutes > 0 and time.time() - last_ckpt_time >= args.ckpt_minutes * 60)
            if d.enabled:
                due = d.any(due)
            if due:
                save(os.path.join(args.out, ckp.LAST))
                last_ckpt_time = time.time()
    finally:
        if bar is not None:
            bar.close()
        stop.restore()

    save(os.path.join(args.out, ckp.LAST))
    if reason != "signal":
        final = {}
        if len(val_tokens):
            final["val_loss"] = evaluate(model, val_tokens, cfg, args, d, limit=args.final_eval_samples, batch=2 * micro)
        if len(test_tokens):
            final["test_loss"] = evaluate(model, test_tokens, cfg, args, d, limit=args.final_eval_samples, batch=2 * micro)
        for k, v in list(final.items()):
            final[k.replace("_loss", "_bits_per_token")] = bits(v)
        metrics.update(final)
        metrics["final_eval_samples"] = args.final_eval_samples
        metrics["stop_reason"] = reason
        metrics["palette_psnr_db"] = meta.get("palette_psnr_db")
        save(os.path.join(args.out, ckp.LAST))
        log({"step": step, "final": True, "wall_time_s": round(elapsed_total(), 1), **final})
    if d.master:
        print(f"stopped ({reason}) at step {step}, {tokens_seen:,} tokens, {elapsed_total() / 60:.1f} min; "
              + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items() if isinstance(v, float))
              + f"; checkpoint {os.path.join(args.out, ckp.LAST)}", flush=True)
    # Drop the DDP wrapper (and its reducer) while the process group is still alive: torch 1.13 can
    # deadlock on the GIL when the last reference to a gloo group goes from inside ~Reducer.
    del net
    gc.collect()
    d.close()
    return model


def main(args) -> int:
    run(args)
    return 0
