"""`python3 -m igpt finetune`: fine-tune a pretrained iGPT as a classifier (Chen et al. 2020, section 3.3).

    python3 -m igpt finetune --data PREPARED_DIR --init CKPT --out DIR [--max-minutes 20]

The classifier is the one a model package serves (igpt/classifier.py). The loss is the paper's
joint objective L = L_CLF + gen_weight * L_GEN: L_GEN (next-pixel cross-entropy on the same forward
pass) costs almost nothing, regularizes, and keeps the fine-tuned model a good generator, which
matters because the same weights serve completions. AdamW with its own peak rate for the score
head, linear warm-up then cosine decay to 0.1x; the schedule's progress is the larger of the step
fraction and the time fraction (with --max-minutes), so a time-boxed run still anneals. Validation
accuracy is checked every --eval-every steps and when training stops; the best model is kept
(DIR/best.pt), training stops after --patience checks without improvement, and DIR/last.pt
(optimizer and all) lets `--resume` continue. At the end the best model is evaluated on the test
split: accuracy, confusion matrix and the fine-tuned model's bits per token go to the checkpoint's
`metrics`. The loop's parts (batches, optimizer, schedule, step, evaluation) are igpt/loop.py's.

On a CPU, --freeze-layers K keeps the embeddings and the first K blocks fixed: no gradients flow
below block K, so a step costs about (1 + 2 (L-K)/L) forward passes instead of 3.
"""
from __future__ import annotations

import argparse
import os
import time
from functools import partial

import numpy as np
import torch
from torch.nn import functional as F

from . import classifier as clf
from . import loop, runtime
from .checkpoint import BEST, LAST, load_checkpoint, save_checkpoint
from .data import read_meta
from .model import IGpt, shift_inputs


def add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True, help="prepared data dir (python3 -m igpt prepare)")
    p.add_argument("--init", required=True, help="pretrained checkpoint to start from")
    p.add_argument("--out", required=True, help="output folder (best.pt, last.pt)")
    p.add_argument("--gen-weight", type=float, default=0.5, help="weight of L_GEN in L_CLF + w * L_GEN")
    p.add_argument("--lr", type=float, default=1e-4, help="peak learning rate of the transformer")
    p.add_argument("--head-lr", type=float, default=1e-3, help="peak learning rate of the new score head")
    p.add_argument("--weight-decay", type=float, default=0.01)
    p.add_argument("--warmup", type=float, default=0.05, help="warm-up fraction of the run")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--epochs", type=float, default=3.0, help="upper bound on training epochs")
    p.add_argument("--max-steps", type=int, default=0, help="upper bound on steps (0: from --epochs)")
    p.add_argument("--max-minutes", type=float, default=0.0,
                   help="time budget for training and validation (0: none); the final test pass comes after")
    p.add_argument("--max-train", type=int, default=0, help="use a seeded subset of N training images (0: all)")
    p.add_argument("--freeze-layers", type=int, default=0, help="keep embeddings and the first K blocks fixed")
    p.add_argument("--eval-every", type=int, default=100, help="validate every N steps")
    p.add_argument("--val-limit", type=int, default=1000, help="validation images per check (0: all)")
    p.add_argument("--test-limit", type=int, default=0, help="test images for the final report (0: all)")
    p.add_argument("--patience", type=int, default=5, help="stop after N checks without a better val accuracy")
    p.add_argument("--eval-batch-size", type=int, default=64)
    p.add_argument("--head-init", choices=("probe", "zero"), default="probe",
                   help="start a new score head at the linear probe of --head-init-images training images "
                        "(LP-FT; counts in --max-minutes) or at zero")
    p.add_argument("--head-init-images", type=int, default=1000)
    p.add_argument("--causal", action="store_true",
                   help="fine-tune a BERT-pretrained (bidirectional) model with causal attention, so it can be "
                        "exported as a package; without it such a model keeps bidirectional attention and L_GEN is off")
    p.add_argument("--hflip", action="store_true",
                   help="mirror each training image left-right with probability 0.5 (for data whose labels "
                        "survive a mirror, such as clothing; not for digits or text)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--resume", action="store_true", help="continue from OUT/last.pt if present")
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=0, help="CPU threads (0: all cores)")
    p.add_argument("--amp", action="store_true", help="bf16 autocast (CUDA, or a CPU with AVX512-BF16/AMX: about 1.7x faster here)")


def mirror_some(tokens: np.ndarray, height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """Mirror about half of the images (rows of raster-order pixel tokens) left-right."""
    flip = rng.random(len(tokens)) < 0.5
    if not flip.any():
        return tokens
    out = tokens.copy()
    grid = out[flip].reshape(-1, height, width)  # [B, H, W]: one token per pixel
    out[flip] = grid[:, :, ::-1].reshape(-1, height * width)  # [B, H*W] again, each row mirrored
    return out


def joint_loss(model: IGpt, x: torch.Tensor, y: torch.Tensor, gen_weight: float):
    """L_CLF + gen_weight * L_GEN from one forward pass, with the step's statistics."""
    c, g = model.classify(shift_inputs(x, model.config.sos_token_id))  # [B, K] classes, [B, S, V] pixels
    l_clf = F.cross_entropy(c.float(), y)
    l_gen = F.cross_entropy(g.float().reshape(-1, g.size(-1)), x.reshape(-1))  # [B*S, V] against [B*S]
    loss = l_clf + gen_weight * l_gen if gen_weight > 0 else l_clf
    return loss, {"clf": l_clf, "gen": l_gen, "accuracy": (c.argmax(-1) == y).float().mean()}


def save(path: str, model: IGpt, optimizer, state: dict, metrics: dict, args, init: dict, info: dict) -> None:
    """best.pt (optimizer None: weights, no history) or last.pt (optimizer and history, for --resume).
    step, tokens and wall time continue the pretrained checkpoint's; `state` is the fine-tuning's own."""
    train_args = {k: v for k, v in vars(args).items() if not k.startswith("_")}
    train_args.update(command="finetune",
                      finetune_state=state if optimizer else {k: v for k, v in state.items() if k != "history"},
                      pretrain_args=init.get("train_args", {}))
    save_checkpoint(path, model, **info, step=int(init.get("step", 0) or 0) + state["step"],
                    tokens_seen=int(init.get("tokens_seen", 0) or 0) + state["images"] * model.config.n_positions,
                    wall_time_s=float(init.get("wall_time_s", 0.0) or 0.0) + state["elapsed"],
                    metrics={**(init.get("metrics") or {}), **metrics},
                    optimizer=optimizer.state_dict() if optimizer else None, train_args=train_args)


def main(args) -> int:
    runtime.configure_threads(args.threads)
    device = runtime.pick_device(args.device)
    torch.manual_seed(args.seed)
    meta = read_meta(args.data)
    (xtr, ytr), (xva, yva), (xte, yte) = clf.load_splits(args.data, args.max_train, args.seed)
    if args.val_limit > 0:
        xva, yva = xva[:args.val_limit], yva[:args.val_limit]
    if args.test_limit > 0:
        xte, yte = xte[:args.test_limit], yte[:args.test_limit]
    classes = list(meta.get("classes") or [])
    n_classes = max(len(classes), int(max(ytr.max(), yva.max(), yte.max())) + 1)
    if len(classes) != n_classes:
        classes = [str(i) for i in range(n_classes)]

    # the pretrained model, with a classification head
    model, init = load_checkpoint(args.init)
    cfg = model.config
    if xtr.shape[1] != cfg.n_positions:
        raise SystemExit(f"data has {xtr.shape[1]} tokens per image, the model {cfg.n_positions}")
    if int(xtr.max()) >= cfg.palette_size:
        raise SystemExit(f"data tokens reach {int(xtr.max())}, the model's palette has {cfg.palette_size}")
    if init.get("palette") and meta.get("palette") and [list(p) for p in init["palette"]] != [list(p) for p in meta["palette"]]:
        print("warning: the data's palette differs from the checkpoint's; using the checkpoint's")
    if not 0 <= args.freeze_layers <= cfg.n_layer:
        raise SystemExit(f"--freeze-layers must be 0..{cfg.n_layer}")
    gen_weight = args.gen_weight
    if cfg.bidirectional:
        if args.causal:
            model = clf.rebuild(model, bidirectional=False)
            cfg = model.config
            print("bidirectional (BERT) model: fine-tuning it with causal attention (--causal)")
        elif gen_weight > 0:
            # with bidirectional attention position i sees the input at i+1, which is x_i: L_GEN would leak
            print("bidirectional (BERT) model: L_GEN is off (its targets are visible); --causal to change that")
            gen_weight = 0.0
    new_head = model.score is None or cfg.n_classes != n_classes
    model = clf.with_classifier(model, n_classes).to(device)
    clf.freeze_lower(model, args.freeze_layers)
    model.train()

    optimizer = loop.make_optimizer(model, args.lr, args.weight_decay, head_lr=args.head_lr)
    peak_lrs = [g["lr"] for g in optimizer.param_groups]  # before a resumed state replaces the groups
    batches = loop.Batches(len(ytr), args.batch_size, seed=args.seed)
    max_steps = args.max_steps or max(1, int(args.epochs * batches.steps_per_epoch))
    budget_s = args.max_minutes * 60.0
    last_path, best_path = os.path.join(args.out, LAST), os.path.join(args.out, BEST)

    # what last.pt's train_args.finetune_state carries for --resume
    state = {"step": 0, "elapsed": 0.0, "best_acc": -1.0, "best_loss": float("inf"), "bad_checks": 0,
             "checked_step": -1, "history": [], "images": 0}
    if args.resume and os.path.isfile(last_path):
        resumed, ck = load_checkpoint(last_path)
        model.load_state_dict(resumed.state_dict())
        if ck.get("optimizer"):
            optimizer.load_state_dict(ck["optimizer"])
        state.update(ck.get("train_args", {}).get("finetune_state", {}))
        print(f"resumed from {last_path} at step {state['step']} (best val accuracy {state['best_acc']:.4f})")
    batches.seek(state["step"])
    step, images, history = state["step"], state["images"], state["history"]
    best_acc, best_loss, bad_checks, checked_step = (state[k] for k in ("best_acc", "best_loss", "bad_checks", "checked_step"))
    hardware = runtime.hardware_string(device)
    print(f"fine-tuning {model.num_params() / 1e6:.2f}M params on {len(ytr)} train / {len(yva)} val images, "
          f"{n_classes} classes, batch {args.batch_size}, up to {max_steps} steps"
          + (f" or {args.max_minutes:g} min" if budget_s else "") + f", frozen blocks {args.freeze_layers}, {hardware}")
    info = dict(palette=init.get("palette", meta.get("palette")), classes=classes, hardware=hardware,
                dataset={**(init.get("dataset") or {}), "name": meta.get("dataset", meta.get("name", "")),
                         "path": os.path.abspath(args.data), "height": cfg.height, "width": cfg.width,
                         "channels": cfg.channels,
                         "splits": {"train": int(len(ytr)), "val": int(len(yva)), "test": int(len(yte))}})

    t_start = time.time() - state["elapsed"]
    if step == 0 and new_head and args.head_init == "probe" and args.head_init_images > 0:
        k = min(args.head_init_images, len(ytr))
        sel = np.sort(np.random.default_rng(args.seed + 2).permutation(len(ytr))[:k])
        acc = clf.probe_head_(model, xtr[sel], ytr[sel], args.eval_batch_size, device, args.amp)
        print(f"score head initialized by a linear probe on {k} training images "
              f"(train accuracy {acc:.3f}, {time.time() - t_start:.0f}s)", flush=True)
    loss_fn = partial(joint_loss, gen_weight=gen_weight)
    since_check, n_since = {}, 0  # sums of the steps' statistics since the last check
    reason = None
    while True:
        elapsed = time.time() - t_start
        if step >= max_steps:
            reason = "max steps"
        elif budget_s and elapsed >= budget_s:
            reason = "time budget"

        # validate every --eval-every steps and when stopping; best.pt is the best val accuracy so far
        if (step > 0 and step % args.eval_every == 0 and step != checked_step) or \
                (reason and (step != checked_step or not os.path.isfile(best_path))):
            r = clf.classification_metrics(model, xva, yva, args.eval_batch_size, args.amp)
            elapsed, checked_step = time.time() - t_start, step
            improved = r["accuracy"] > best_acc or r["accuracy"] == best_acc and r["loss"] < best_loss
            if improved:
                best_acc, best_loss, bad_checks = r["accuracy"], r["loss"], 0
            else:
                bad_checks += 1
            if n_since:
                row = {"step": step, "minutes": round(elapsed / 60, 2),
                       "train_clf_loss": round(float(since_check["clf"]) / n_since, 4),
                       "train_bits_per_token": round(loop.bits(float(since_check["gen"]) / n_since), 4),
                       "train_accuracy": round(float(since_check["accuracy"]) / n_since, 4),
                       "val_accuracy": round(r["accuracy"], 4), "val_bits_per_token": round(r["bits_per_token"], 4)}
                history.append(row)
                print(f"step {row['step']:5d} {row['minutes']:6.1f} min  train clf {row['train_clf_loss']:.3f} "
                      f"acc {row['train_accuracy']:.3f} gen {row['train_bits_per_token']:.3f} b/tok | "
                      f"val acc {row['val_accuracy']:.4f} gen {row['val_bits_per_token']:.3f} b/tok"
                      + ("  *best*" if improved else ""), flush=True)
            since_check, n_since = {}, 0
            state = {"step": step, "elapsed": elapsed, "best_acc": best_acc, "best_loss": best_loss,
                     "bad_checks": bad_checks, "checked_step": checked_step, "history": history, "images": images}
            if improved:
                save(best_path, model, None, state, {"val_accuracy": r["accuracy"]}, args, init, info)
            save(last_path, model, optimizer, state, {"val_accuracy": r["accuracy"]}, args, init, info)
            if args.patience > 0 and bad_checks >= args.patience:
                reason = f"no better val accuracy in {args.patience} checks"
            elif not reason and budget_s and elapsed >= budget_s:  # the check used up the budget
                reason = "time budget"
        if reason:
            break

        # one step: schedule, batch (mirrored with --hflip, seeded per step so a resumed run
        # mirrors the same images), forward, backward, clip, AdamW
        progress = max(step / max_steps, elapsed / budget_s if budget_s else 0.0)
        warmup_done = max(progress / args.warmup, 1e-3) if progress < args.warmup else 1.0
        decay_done = (progress - args.warmup) / max(1e-9, 1.0 - args.warmup)
        loop.set_lr(optimizer, peak_lrs, loop.lr_factor(warmup_done, decay_done, 0.1))
        idx = batches.next()
        xb = xtr[idx]
        if args.hflip:
            xb = mirror_some(xb, cfg.height, cfg.width, np.random.default_rng([args.seed, 7, step]))
        x = torch.from_numpy(xb.astype(np.int64)).to(device)  # [B, H*W]
        y = torch.from_numpy(ytr[idx].astype(np.int64)).to(device)  # [B]
        stats = loop.train_step(model, optimizer, loss_fn, [x, y], grad_clip=1.0, amp=args.amp)
        step += 1
        images += len(idx)
        since_check = {k: since_check.get(k, 0.0) + v for k, v in stats.items()}  # tensors: no device sync
        n_since += 1
    print(f"stopped: {reason} after {step} steps, {elapsed / 60:.1f} min")

    best, _ = load_checkpoint(best_path)
    best = best.to(device)
    t0 = time.time()
    # Final numbers in fp32: the exported fp32 graphs are what a CPU service runs, so the card's
    # accuracy is the one the service reproduces (bf16 autocast can flip a few close calls).
    r = clf.classification_metrics(best, xte, yte, args.eval_batch_size, amp=False)
    metrics = {
        "classification_accuracy": round(r["accuracy"], 5),
        "val_accuracy": round(best_acc, 5),
        "test_bits_per_token": round(r["bits_per_token"], 5),
        "test_images": r["n"],
        "finetune_steps": step,
        "finetune_minutes": round(elapsed / 60, 2),
        "finetune_stop": reason,
        "confusion_matrix": r["confusion"].tolist(),
    }
    if best.config.bidirectional:
        del metrics["test_bits_per_token"]  # not a likelihood: bidirectional attention sees the targets
    elif "test_bits_per_token" in (init.get("metrics") or {}):
        metrics["pretrain_test_bits_per_token"] = init["metrics"]["test_bits_per_token"]
    save(best_path, best, None, {**state, "elapsed": elapsed}, metrics, args, init, info)  # state: the last check's
    print(f"\ntest accuracy {r['accuracy']:.4f} on {r['n']} images ({time.time() - t0:.0f}s), "
          f"bits per token {r['bits_per_token']:.4f}; best val accuracy {best_acc:.4f}\n")
    print(clf.confusion_table(r["confusion"], classes))
    print(f"\nwrote {best_path}")
    return 0
