"""`python3 -m igpt train`: pretrain iGPT on prepared tokens.

Objectives: `ar` (next pixel: input [SOS, x0..x(n-2)], targets [x0..x(n-1)]) or `bert` (15% of
the pixels replaced by the SOS id used as a mask token, bidirectional attention, loss on the
masked pixels only). AdamW (0.9, 0.95) with weight decay on matrices only, linear warm-up then
cosine decay, gradient clipping, bf16 autocast on CUDA. Checkpoints `OUT/last.pt` (every
--ckpt-interval steps, every --ckpt-minutes, at the end, on SIGTERM/SIGINT) and `OUT/best.pt`
(lowest validation loss). `--resume` continues from OUT/last.pt: weights, optimizer, step, RNG
and data position. Multi-process with `torchrun --nproc_per_node N -m igpt train ...` (DDP;
nccl on CUDA, gloo on CPU). The loop's parts (ranks, batches, optimizer, schedule, step,
evaluation) are igpt/loop.py's.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import time
from functools import partial
from typing import Optional

import numpy as np
import torch
import torch.nn as nn
from torch.nn import functional as F

from . import checkpoint as ckp
from . import data, loop, runtime
from .loop import bits
from .model import PRESETS, IGpt, IGptConfig, shift_inputs
from .package_model import load_package_model


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
    p.add_argument("--init", default=None,
                   help="start from these weights (a checkpoint .pt or a model package folder; its architecture "
                        "wins over --preset) with a fresh optimizer and schedule: continued pretraining on new "
                        "data quantized with the model's palette (prepare --palette-from)")
    p.add_argument("--seed", type=int, default=1337)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = cores / local processes)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1 ...")
    p.add_argument("--amp", action="store_true",
                   help="bf16 autocast on CPU too (CUDA always uses it); pays off on CPUs with AVX512-BF16/AMX")
    p.add_argument("--compile", action="store_true", help="torch.compile the model (PyTorch 2)")
    p.add_argument("--no-progress", action="store_true", help="no tqdm bar: a log line every --log-interval steps")
    p.add_argument("--log-interval", type=int, default=100, help="steps between log lines with --no-progress")


def model_config(args, meta: dict) -> IGptConfig:
    over = {k: getattr(args, k) for k in ("n_layer", "n_embd", "n_head", "dropout") if getattr(args, k, None) is not None}
    cfg = dict(PRESETS[args.preset], **over)
    cfg.update(palette_size=meta["palette_size"], height=meta["height"], width=meta["width"],
               channels=meta["channels"], n_positions=meta["height"] * meta["width"],
               bidirectional=args.objective == "bert")
    return IGptConfig(**cfg)


def objective_loss(model: nn.Module, x: torch.Tensor, cfg: IGptConfig, objective: str, mask_prob: float,
                   generator: Optional[torch.Generator] = None):
    """(mean loss in nats over the predicted pixels, number of predicted pixels) of tokens x [B, S]."""
    if objective == "ar":
        logits, _ = model(shift_inputs(x, cfg.sos_token_id))  # [B, S, V]
        return F.cross_entropy(logits.float().reshape(-1, cfg.palette_size), x.reshape(-1)), x.numel()
    mask = torch.rand(x.shape, generator=generator, device=x.device if generator is None else generator.device) < mask_prob
    mask = mask.to(x.device)
    logits, _ = model(x.masked_fill(mask, cfg.sos_token_id))  # SOS doubles as the mask token
    n = int(mask.sum())
    if n == 0:
        return logits.sum() * 0.0, 0
    return F.cross_entropy(logits.float()[mask], x[mask]), n  # [n, V] against [n]: masked pixels only


def step_loss(net: nn.Module, x: torch.Tensor, cfg: IGptConfig, args):
    """loop.train_step's loss: the objective's mean loss, reported as `loss`."""
    loss, _ = objective_loss(net, x, cfg, args.objective, args.mask_prob)
    return loss, {"loss": loss}


def pixel_nats(model: nn.Module, x: torch.Tensor, cfg: IGptConfig, args, generator: torch.Generator) -> dict:
    """loop.evaluate's measure: summed nats and the number of predicted pixels."""
    loss, k = objective_loss(model, x, cfg, args.objective, args.mask_prob, generator)
    return {"nats": float(loss) * k, "pixels": k}


def eval_loss(model: IGpt, tokens: np.ndarray, cfg: IGptConfig, args, d: loop.Dist, amp: bool, limit: int,
              batch: int) -> float:
    """Mean loss in nats per predicted pixel over the first `limit` examples (0 = all), split over the ranks."""
    tokens = tokens[:limit] if limit > 0 else tokens
    gen = torch.Generator().manual_seed(1234 + d.rank)  # the same BERT masks every time: comparable evals
    measure = partial(pixel_nats, cfg=cfg, args=args, generator=gen)
    s = loop.evaluate(model, measure, [tokens], max(batch, 1), amp, d.rank, d.world)
    nats, pixels = d.all_sum([s.get("nats", 0.0), float(s.get("pixels", 0))])
    return nats / max(pixels, 1.0)


def save(path: str, d: loop.Dist, model: IGpt, optimizer, batches: loop.Batches, **fields) -> None:
    """A resumable checkpoint: weights, optimizer, data position, every rank's RNG states and `fields`.
    A collective under DDP: every rank calls it, rank 0 writes."""
    rngs = loop.gather_rng_states(d)
    if d.master:
        ckp.save_checkpoint(path, model, **fields, optimizer=optimizer.state_dict(),
                            data_state=batches.state_dict(), rng=rngs)


def append_log(path: str, record: dict) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")


def run(args) -> IGpt:
    """Train; returns the (unwrapped) model on every rank."""
    d = loop.Dist(args.device)
    runtime.configure_threads(args.threads, d.local_world if d.device.type == "cpu" else 1)
    amp = d.device.type == "cuda" or args.amp  # bf16 autocast: always on CUDA, on a CPU when asked
    meta = data.read_meta(args.data)
    train_tokens, _ = data.load_prepared(args.data, "train")
    val_tokens, _ = data.load_prepared(args.data, "val")
    test_tokens, _ = data.load_prepared(args.data, "test")

    # the model: OUT/last.pt's with --resume (its config wins), else a new one from --preset and the data
    resume_path = ckp.latest_checkpoint(args.out) if args.resume else None
    ckpt = ckp.torch_load(resume_path) if resume_path else None
    init_model = None if ckpt or not args.init else _init_model(args.init, meta, args.dropout)
    cfg = (IGptConfig.from_dict(ckpt["config"]) if ckpt else
           init_model.config if init_model is not None else model_config(args, meta))
    if cfg.n_positions != meta["height"] * meta["width"] or cfg.palette_size != meta["palette_size"]:
        raise ValueError(f"checkpoint {resume_path} does not match the data in {args.data}")
    if cfg.bidirectional != (args.objective == "bert"):
        raise ValueError(f"checkpoint {resume_path} was trained with the other objective than --objective {args.objective}")
    torch.manual_seed(args.seed)  # the same initial weights on every rank
    model = IGpt(cfg)
    if ckpt:
        model.load_state_dict(ckpt["model"])
    elif init_model is not None:
        model.load_state_dict(init_model.state_dict())
        del init_model
    model.to(d.device)
    optimizer = loop.make_optimizer(model, args.lr, args.weight_decay)
    peak_lrs = [g["lr"] for g in optimizer.param_groups]  # before a resumed state replaces the groups
    if len(train_tokens) < args.batch_size * d.world:
        raise ValueError(f"{len(train_tokens)} training examples < global batch {args.batch_size * d.world}")
    batches = loop.Batches(len(train_tokens), args.batch_size, d.rank, d.world, args.seed, sort=True)
    step, tokens_seen, wall_before, metrics = 0, 0, 0.0, {}
    if ckpt:
        optimizer.load_state_dict(ckpt["optimizer"])
        batches.load_state_dict(ckpt["data_state"])
        step, tokens_seen, wall_before = ckpt["step"], ckpt["tokens_seen"], ckpt["wall_time_s"]
        metrics = {k: v for k, v in ckpt.get("metrics", {}).items() if k != "stop_reason"}  # not finished yet
        if str(d.rank) in ckpt.get("rng", {}):
            loop.set_rng_state(ckpt["rng"][str(d.rank)])
    else:
        torch.manual_seed(args.seed + d.rank)  # per-rank dropout / mask streams
    best_val = metrics.get("best_val_loss", float("inf"))
    del ckpt

    net: nn.Module = model
    if args.compile and hasattr(torch, "compile"):
        net = torch.compile(net)
    if d.enabled:
        net = nn.parallel.DistributedDataParallel(
            net, device_ids=[d.device.index] if d.device.type == "cuda" else None)

    if d.master:
        os.makedirs(args.out, exist_ok=True)
    last_path, best_path, log_path = (os.path.join(args.out, f) for f in (ckp.LAST, ckp.BEST, "log.jsonl"))
    info = dict(palette=meta["palette"], classes=meta["classes"],
                dataset={"name": meta["dataset"], "path": meta.get("path"), "height": meta["height"],
                         "width": meta["width"], "channels": meta["channels"], "splits": meta["splits"],
                         "prepared": os.path.abspath(args.data)},
                hardware=runtime.hardware_string(d.device, d.world),
                train_args={k: v for k, v in vars(args).items() if not k.startswith("_")}, objective=args.objective)
    n_tok = cfg.n_positions
    micro = args.micro_batch if 0 < args.micro_batch < args.batch_size else args.batch_size
    loss_fn = partial(step_loss, cfg=cfg, args=args)
    budget_s = args.max_minutes * 60.0
    if d.master:
        print(f"igpt train: {model.num_params() / 1e6:.2f}M params, {cfg.n_layer} layers x {cfg.n_embd} "
              f"({cfg.n_head} heads), {cfg.height}x{cfg.width}x{cfg.channels} = {n_tok} tokens, "
              f"palette {cfg.palette_size}, objective {args.objective}, batch {args.batch_size}x{d.world} "
              f"(micro {micro}), {info['hardware']}, {len(train_tokens)} train images"
              + (f", resumed at step {step}" if resume_path else ""), flush=True)

    # time kept back for the final evaluation, from the measured training speed
    final_eval_images = sum(min(len(t), args.final_eval_samples) if args.final_eval_samples > 0 else len(t)
                            for t in (val_tokens, test_tokens)) / d.world
    stop = loop.StopFlag()
    bar = None
    if d.master and not args.no_progress:
        from tqdm import tqdm
        bar = tqdm(total=args.max_steps, initial=step, dynamic_ncols=True, mininterval=2.0)
    model.train()
    t0 = time.time() - wall_before  # the job's training time (earlier runs included) is time.time() - t0
    last_ckpt_time, t_window, tok_window, train_tok_s = time.time(), time.time(), 0, 0.0
    first_step, reason = step, None
    try:
        while True:
            # stop at a signal, the time budget (less the final evaluation's share), --max-steps or --steps-this-run
            reserve = final_eval_images * n_tok / (3.0 * train_tok_s) if train_tok_s > 0 else 0.0
            halt = d.any(stop.set or budget_s > 0 and time.time() - t0 + reserve >= budget_s)
            if halt:
                reason = "signal" if stop.set else "time budget"
            elif step >= args.max_steps:
                reason = "max steps"
            elif 0 < args.steps_this_run <= step - first_step:
                reason = "steps this run"
            if reason:
                break

            # one step: warm-up over --warmup-steps, then the cosine to --max-steps or the time budget, whichever ends first
            time_frac = (time.time() - t0) / max(1.0, budget_s - reserve) if budget_s > 0 else 0.0
            warmup_done = (step + 1) / args.warmup_steps if step < args.warmup_steps else 1.0
            decay_done = max((step - args.warmup_steps) / max(1, args.max_steps - args.warmup_steps), time_frac)
            factor = loop.lr_factor(warmup_done, decay_done, args.min_lr_ratio)
            loop.set_lr(optimizer, peak_lrs, factor)
            lr = args.lr * factor
            x = torch.from_numpy(train_tokens[batches.next()].astype(np.int64)).to(d.device)  # [B, n_tok]
            loss = float(loop.train_step(net, optimizer, loss_fn, [x], micro, args.grad_clip, amp)["loss"])
            step += 1
            tokens_seen += args.batch_size * d.world * n_tok
            tok_window += args.batch_size * d.world * n_tok
            now = time.time()
            if now - t_window >= 5.0 or train_tok_s == 0.0:
                rate = tok_window / max(now - t_window, 1e-9)
                train_tok_s = rate if train_tok_s == 0.0 else 0.5 * train_tok_s + 0.5 * rate
                t_window, tok_window = now, 0
            metrics["train_loss"] = loss
            if bar is None and d.master and args.log_interval > 0 and step % args.log_interval == 0:
                print(f"step {step}: loss {loss:.4f} ({bits(loss):.4f} bits/token), lr {lr:.2e}, "
                      f"{train_tok_s:,.0f} tok/s, {(time.time() - t0) / 60:.1f} min", flush=True)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{loss:.4f}", bpt=f"{bits(loss):.3f}", lr=f"{lr:.2e}",
                                tok_s=f"{train_tok_s:,.0f}", refresh=False)

            # validation every --eval-interval steps; best.pt is the lowest validation loss
            if step % args.eval_interval == 0 and len(val_tokens):
                val = eval_loss(model, val_tokens, cfg, args, d, amp, args.eval_samples, args.micro_batch or args.batch_size)
                metrics.update(val_loss=val, val_bits_per_token=bits(val))
                if d.master:
                    append_log(log_path, {"step": step, "tokens_seen": tokens_seen, "wall_time_s": round(time.time() - t0, 1),
                                          "lr": lr, "train_loss": loss, "val_loss": val, "val_bits_per_token": bits(val),
                                          "tok_s": round(train_tok_s)})
                    msg = (f"step {step}: train {bits(loss):.4f} bits/token, val {bits(val):.4f} "
                           f"bits/token, {train_tok_s:,.0f} tok/s, {(time.time() - t0) / 60:.1f} min")
                    (bar.write if bar is not None else print)(msg)
                if val < best_val:
                    best_val = metrics["best_val_loss"] = val
                    save(best_path, d, model, optimizer, batches, **info, step=step, tokens_seen=tokens_seen,
                         wall_time_s=time.time() - t0, metrics=metrics)
            due = step % args.ckpt_interval == 0 or (args.ckpt_minutes > 0 and time.time() - last_ckpt_time >= args.ckpt_minutes * 60)
            if d.any(due):
                save(last_path, d, model, optimizer, batches, **info, step=step, tokens_seen=tokens_seen,
                     wall_time_s=time.time() - t0, metrics=metrics)
                last_ckpt_time = time.time()
    finally:
        if bar is not None:
            bar.close()
        stop.restore()

    save(last_path, d, model, optimizer, batches, **info, step=step, tokens_seen=tokens_seen,
         wall_time_s=time.time() - t0, metrics=metrics)
    if reason != "signal":  # the final numbers, then last.pt again with them
        final = {}
        if len(val_tokens):
            final["val_loss"] = eval_loss(model, val_tokens, cfg, args, d, amp, args.final_eval_samples, 2 * micro)
        if len(test_tokens):
            final["test_loss"] = eval_loss(model, test_tokens, cfg, args, d, amp, args.final_eval_samples, 2 * micro)
        for k, v in list(final.items()):
            final[k.replace("_loss", "_bits_per_token")] = bits(v)
        metrics.update(final, final_eval_samples=args.final_eval_samples, stop_reason=reason,
                       palette_psnr_db=meta.get("palette_psnr_db"))
        save(last_path, d, model, optimizer, batches, **info, step=step, tokens_seen=tokens_seen,
             wall_time_s=time.time() - t0, metrics=metrics)
        if d.master:
            append_log(log_path, {"step": step, "final": True, "wall_time_s": round(time.time() - t0, 1), **final})
    if d.master:
        print(f"stopped ({reason}) at step {step}, {tokens_seen:,} tokens, {(time.time() - t0) / 60:.1f} min; "
              + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items() if isinstance(v, float))
              + f"; checkpoint {last_path}", flush=True)
    # Drop the DDP wrapper (and its reducer) while the process group is still alive: torch 1.13 can
    # deadlock on the GIL when the last reference to a gloo group goes from inside ~Reducer.
    del net
    gc.collect()
    d.close()
    return model


def _init_model(path: str, meta: dict, dropout: Optional[float]) -> IGpt:
    """--init's weights as a pretraining model: the init's architecture without a classification head,
    dropout from --dropout (packages do not record one), checked against the data's palette."""
    if os.path.isdir(path):
        source, manifest = load_package_model(path)
        palette = manifest["palette"]
    else:
        source, saved = ckp.load_checkpoint(path, strict=False)
        palette = saved.get("palette") or meta["palette"]
    if [list(map(int, c)) for c in palette] != [list(map(int, c)) for c in meta["palette"]]:
        raise ValueError(f"--init {path}: its palette differs from the data's (prepare with --palette-from)")
    cfg = IGptConfig.from_dict({**source.config.to_dict(), "n_classes": 0,
                                **({"dropout": dropout} if dropout is not None else {})})
    model = IGpt(cfg)
    model.load_state_dict({k: v for k, v in source.state_dict().items() if not k.startswith("score.")})
    return model


def main(args) -> int:
    run(args)
    return 0
