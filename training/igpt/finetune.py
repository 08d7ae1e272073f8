"""Fine-tune a pretrained iGPT as a classifier (Chen et al. 2020, section 3.3).

    python3 -m igpt finetune --data PREPARED_DIR --init CKPT --out DIR [--max-minutes 20]

The classifier is the one a model package serves (models/README.md, classifier.onnx): the
generative input [SOS, x0..x(n-2)] runs through the whole model, the final-norm hidden states are
averaged over positions and a linear layer (`score`, HF's name) gives class logits. The loss is
the paper's joint objective L = L_CLF + gen_weight * L_GEN: L_GEN (next-pixel cross-entropy on the
same forward pass) costs almost nothing, regularizes, and keeps the fine-tuned model a good
generator, which matters because the same weights serve completions. AdamW, linear warm-up then
cosine decay; the schedule's progress is the larger of the step fraction and the time fraction
(with --max-minutes), so a time-boxed run still anneals. Validation accuracy is checked every
--eval-every steps; the best model is kept (DIR/best.pt), training stops after --patience checks
without improvement, and DIR/last.pt (optimizer and all) lets `--resume` continue. At the end the
best model is evaluated on the test split: accuracy, confusion matrix and the fine-tuned model's
bits per token go to the checkpoint's `metrics`.

On a CPU, --freeze-layers K keeps the embeddings and the first K blocks fixed: no gradients flow
below block K, so a step costs about (1 + 2 (L-K)/L) forward passes instead of 3.
"""
from __future__ import annotations

import argparse
import math
import os
import time
from typing import Dict, List

import numpy as np
import torch
from torch.nn import functional as F

from .model import IGpt, IGptConfig, shift_inputs

LN2 = math.log(2.0)


# ---------------------------------------------------------------------------------------------
# Model set-up and evaluation


def with_classifier(model: IGpt, n_classes: int) -> IGpt:
    """The model with an n_classes `score` head: kept when it already has one of that size, else a
    new zero-initialized head (uniform predictions at the start, so early gradients are clean)."""
    if model.score is not None and model.config.n_classes == n_classes:
        return model
    cfg = IGptConfig.from_dict({**model.config.to_dict(), "n_classes": n_classes})
    new = IGpt(cfg)
    sd = {k: v for k, v in model.state_dict().items() if not k.startswith("score.")}
    missing, unexpected = new.load_state_dict(sd, strict=False)
    assert set(missing) == {"score.weight"} and not unexpected, (missing, unexpected)
    torch.nn.init.zeros_(new.score.weight)
    return new.to(next(model.parameters()).device)


def rebuild(model: IGpt, **overrides) -> IGpt:
    """The same weights under a config with some fields changed (e.g. bidirectional=False)."""
    cfg = IGptConfig.from_dict({**model.config.to_dict(), **overrides})
    new = IGpt(cfg)
    new.load_state_dict(model.state_dict())
    return new.to(next(model.parameters()).device)


def freeze_lower(model: IGpt, k: int) -> None:
    """Embeddings and blocks 0..k-1 stop needing gradients (k = 0: nothing frozen)."""
    t = model.transformer
    frozen = [t.wte, t.wpe] + list(t.h[:k]) if k > 0 else []
    for m in frozen:
        for p in m.parameters():
            p.requires_grad_(False)


@torch.no_grad()
def probe_head_(model: IGpt, tokens: np.ndarray, labels: np.ndarray, batch_size: int, device: torch.device,
                amp: bool = False, l2: float = 1e-3) -> float:
    """Start the score head at the linear probe of the final-norm features (LP-FT: a fine-tune that
    starts from a fitted head spends its first steps improving features, not undoing a random head).
    `score` has no bias, so neither has this probe. Returns the probe's training accuracy."""
    from .probe import fit_logistic

    was_training = model.training
    model.eval()
    feats = []
    for s in range(0, len(labels), batch_size):
        x = torch.from_numpy(tokens[s:s + batch_size].astype(np.int64)).to(device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            h, _ = model.hidden(shift_inputs(x, model.config.sos_token_id))
        feats.append(h.float().mean(dim=1).cpu())  # [B, C] what `score` sees
    f = torch.cat(feats)
    y = torch.from_numpy(labels.astype(np.int64))
    W, _ = fit_logistic(f, y, model.config.n_classes, l2, max_iter=100, bias=False)
    model.score.weight.copy_(W.T.to(model.score.weight))
    model.train(was_training)
    return float(((f.double() @ W).argmax(-1) == y).double().mean())


@torch.no_grad()
def evaluate(model: IGpt, tokens: np.ndarray, labels: np.ndarray, batch_size: int, device: torch.device,
             amp: bool = False) -> Dict[str, object]:
    """Accuracy, confusion matrix [true][pred], classification loss and bits per token."""
    was_training = model.training
    model.eval()
    n_classes = model.config.n_classes
    conf = np.zeros((n_classes, n_classes), dtype=np.int64)
    clf_loss, gen_nats, n = 0.0, 0.0, 0
    for s in range(0, len(labels), batch_size):
        x = torch.from_numpy(tokens[s:s + batch_size].astype(np.int64)).to(device)
        y = torch.from_numpy(labels[s:s + batch_size].astype(np.int64)).to(device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            c, g = model.classify(shift_inputs(x, model.config.sos_token_id))
        clf_loss += float(F.cross_entropy(c.float(), y, reduction="sum"))
        gen_nats += float(F.cross_entropy(g.float().reshape(-1, g.size(-1)), x.reshape(-1), reduction="sum")) / x.size(1)
        pred = c.argmax(-1)
        np.add.at(conf, (y.cpu().numpy(), pred.cpu().numpy()), 1)
        n += len(y)
    model.train(was_training)
    n = max(n, 1)
    return {"accuracy": float(np.trace(conf)) / n, "loss": clf_loss / n,
            "bits_per_token": gen_nats / n / LN2, "confusion": conf, "n": int(conf.sum())}


def confusion_table(conf: np.ndarray, classes: List[str]) -> str:
    """A markdown confusion matrix (rows true class, columns predicted) with per-class recall."""
    names = [str(c) for c in classes] if len(classes) == len(conf) else [str(i) for i in range(len(conf))]
    head = "| true \\ predicted | " + " | ".join(names) + " | recall |"
    lines = [head, "|" + "---|" * (len(names) + 2)]
    for i, row in enumerate(conf):
        recall = row[i] / row.sum() if row.sum() else float("nan")
        lines.append(f"| {names[i]} | " + " | ".join(str(int(v)) for v in row) + f" | {recall:.3f} |")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Training


def mirror_some(tokens: np.ndarray, height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """Mirror about half of the images (rows of raster-order pixel tokens) left-right."""
    flip = rng.random(len(tokens)) < 0.5
    if not flip.any():
        return tokens
    out = tokens.copy()
    grid = out[flip].reshape(-1, height, width)  # (B, H, W): one token per pixel
    out[flip] = grid[:, :, ::-1].reshape(-1, height * width)
    return out


def lr_factor(progress: float, warmup: float) -> float:
    """Linear warm-up over the first `warmup` fraction of progress, then cosine to 0.1x."""
    if warmup > 0 and progress < warmup:
        return max(progress / warmup, 1e-3)
    p = min(1.0, (progress - warmup) / max(1e-9, 1.0 - warmup))
    return 0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * p))


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


def _load_splits(data_dir: str, max_train: int, seed: int):
    from .data import load_prepared

    train = load_prepared(data_dir, "train")
    try:
        val = load_prepared(data_dir, "val")
    except FileNotFoundError:
        val = (train[0][:0], train[1][:0])
    if len(val[1]) == 0:  # no validation split: hold out 10% of train
        perm = np.random.default_rng(seed + 17).permutation(len(train[1]))
        k = max(1, len(perm) // 10)
        val = (train[0][perm[:k]], train[1][perm[:k]])
        train = (train[0][perm[k:]], train[1][perm[k:]])
    if 0 < max_train < len(train[1]):
        idx = np.sort(np.random.default_rng(seed + 1).permutation(len(train[1]))[:max_train])
        train = (train[0][idx], train[1][idx])
    test = load_prepared(data_dir, "test")
    return train, val, test


def main(args) -> int:
    from .checkpoint import BEST, LAST, load_checkpoint, save_checkpoint
    from .data import read_meta
    from .runtime import configure_threads, hardware_string, pick_device

    configure_threads(args.threads)
    device = pick_device(args.device)
    amp = bool(args.amp)
    torch.manual_seed(args.seed)
    meta = read_meta(args.data)
    (xtr, ytr), (xva, yva), (xte, yte) = _load_splits(args.data, args.max_train, args.seed)
    if args.val_limit > 0:
        xva, yva = xva[:args.val_limit], yva[:args.val_limit]
    if args.test_limit > 0:
        xte, yte = xte[:args.test_limit], yte[:args.test_limit]
    classes = list(meta.get("classes") or [])
    n_classes = max(len(classes), int(max(ytr.max(), yva.max(), yte.max())) + 1)
    if len(classes) != n_classes:
        classes = [str(i) for i in range(n_classes)]

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
    if getattr(cfg, "bidirectional", False):
        if args.causal:
            model = rebuild(model, bidirectional=False)
            cfg = model.config
            print("bidirectional (BERT) model: fine-tuning it with causal attention (--causal)")
        elif gen_weight > 0:
            # with bidirectional attention position i sees the input at i+1, which is x_i: L_GEN would leak
            print("bidirectional (BERT) model: L_GEN is off (its targets are visible); --causal to change that")
            gen_weight = 0.0
    new_head = model.score is None or model.config.n_classes != n_classes
    model = with_classifier(model, n_classes).to(device)
    freeze_lower(model, args.freeze_layers)
    model.train()

    head = [p for n, p in model.named_parameters() if n.startswith("score.")]
    decay = [p for n, p in model.named_parameters() if p.requires_grad and not n.startswith("score.") and p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.requires_grad and not n.startswith("score.") and p.dim() < 2]
    groups = [{"params": decay, "weight_decay": args.weight_decay, "lr": args.lr, "base_lr": args.lr},
              {"params": no_decay, "weight_decay": 0.0, "lr": args.lr, "base_lr": args.lr},
              {"params": head, "weight_decay": args.weight_decay, "lr": args.head_lr, "base_lr": args.head_lr}]
    opt = torch.optim.AdamW([g for g in groups if g["params"]], betas=(0.9, 0.95))

    steps_per_epoch = max(1, len(ytr) // args.batch_size)
    max_steps = args.max_steps or max(1, int(args.epochs * steps_per_epoch))
    budget_s = args.max_minutes * 60.0
    state = {"step": 0, "elapsed": 0.0, "best_acc": -1.0, "best_loss": float("inf"), "bad_checks": 0, "checked_step": -1, "history": [], "images": 0}
    last_path, best_path = os.path.join(args.out, LAST), os.path.join(args.out, BEST)
    if args.resume and os.path.isfile(last_path):
        rmodel, rck = load_checkpoint(last_path)
        model.load_state_dict(rmodel.state_dict())
        if rck.get("optimizer"):
            opt.load_state_dict(rck["optimizer"])
        state.update(rck.get("train_args", {}).get("finetune_state", {}))
        print(f"resumed from {last_path} at step {state['step']} (best val accuracy {state['best_acc']:.4f})")
    hardware = hardware_string(device)
    print(f"fine-tuning {model.num_params() / 1e6:.2f}M params on {len(ytr)} train / {len(yva)} val images, "
          f"{n_classes} classes, batch {args.batch_size}, up to {max_steps} steps"
          + (f" or {args.max_minutes:g} min" if budget_s else "") + f", frozen blocks {args.freeze_layers}, {hardware}")

    base_fields = dict(palette=init.get("palette", meta.get("palette")), classes=classes,
                       dataset={**(init.get("dataset") or {}), "name": meta.get("dataset", meta.get("name", "")),
                                "path": os.path.abspath(args.data), "height": cfg.height, "width": cfg.width,
                                "channels": cfg.channels,
                                "splits": {"train": int(len(ytr)), "val": int(len(yva)), "test": int(len(yte))}},
                       hardware=hardware)
    pre_metrics = dict(init.get("metrics") or {})
    pre_steps, pre_tokens = int(init.get("step", 0) or 0), int(init.get("tokens_seen", 0) or 0)
    pre_wall = float(init.get("wall_time_s", 0.0) or 0.0)

    def fields(extra_metrics: Dict[str, object], with_opt: bool):
        ta = {k: v for k, v in vars(args).items() if not k.startswith("_")}
        ta["command"] = "finetune"
        ta["finetune_state"] = dict(state) if with_opt else {k: v for k, v in state.items() if k != "history"}
        ta["pretrain_args"] = init.get("train_args", {})
        return dict(base_fields, step=pre_steps + state["step"],
                    tokens_seen=pre_tokens + state["images"] * cfg.n_positions,
                    wall_time_s=pre_wall + state["elapsed"], metrics={**pre_metrics, **extra_metrics},
                    optimizer=opt.state_dict() if with_opt else None, train_args=ta)

    sos = cfg.sos_token_id
    epoch_perms: Dict[int, np.ndarray] = {}

    def batch_indices(step: int) -> np.ndarray:
        epoch, i = divmod(step, steps_per_epoch)
        if epoch not in epoch_perms:  # deterministic per epoch, so resume continues the same order
            epoch_perms.clear()
            epoch_perms[epoch] = np.random.default_rng([args.seed, epoch]).permutation(len(ytr))
        return epoch_perms[epoch][i * args.batch_size:(i + 1) * args.batch_size]

    t_start = time.time() - state["elapsed"]
    if state["step"] == 0 and new_head and args.head_init == "probe" and args.head_init_images > 0:
        k = min(args.head_init_images, len(ytr))
        sel = np.sort(np.random.default_rng(args.seed + 2).permutation(len(ytr))[:k])
        acc = probe_head_(model, xtr[sel], ytr[sel], args.eval_batch_size, device, amp)
        state["elapsed"] = time.time() - t_start
        print(f"score head initialized by a linear probe on {k} training images "
              f"(train accuracy {acc:.3f}, {state['elapsed']:.0f}s)", flush=True)
    stop_reason = "max steps"
    run_clf, run_gen, run_acc, run_n = 0.0, 0.0, 0.0, 0
    while state["step"] < max_steps:
        state["elapsed"] = time.time() - t_start
        if budget_s and state["elapsed"] >= budget_s:
            stop_reason = "time budget"
            break
        progress = max(state["step"] / max_steps, state["elapsed"] / budget_s if budget_s else 0.0)
        f = lr_factor(progress, args.warmup)
        for g in opt.param_groups:
            g["lr"] = g["base_lr"] * f
        idx = batch_indices(state["step"])
        xb = xtr[idx]
        if args.hflip:  # seeded per step, so a resumed run mirrors the same images
            xb = mirror_some(xb, cfg.height, cfg.width, np.random.default_rng([args.seed, 7, state["step"]]))
        x = torch.from_numpy(xb.astype(np.int64)).to(device)
        y = torch.from_numpy(ytr[idx].astype(np.int64)).to(device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            c, g_logits = model.classify(shift_inputs(x, sos))
        l_clf = F.cross_entropy(c.float(), y)
        l_gen = F.cross_entropy(g_logits.float().reshape(-1, g_logits.size(-1)), x.reshape(-1))
        loss = l_clf + gen_weight * l_gen if gen_weight > 0 else l_clf
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], 1.0)
        opt.step()
        state["step"] += 1
        state["images"] += len(idx)
        run_clf = run_clf + l_clf.detach()  # tensors: no device sync per step on CUDA
        run_gen = run_gen + l_gen.detach()
        run_acc = run_acc + (c.argmax(-1) == y).float().mean()
        run_n += 1
        if state["step"] % args.eval_every == 0 or state["step"] == max_steps:
            r = evaluate(model, xva, yva, args.eval_batch_size, device, amp)
            state["elapsed"] = time.time() - t_start
            state["checked_step"] = state["step"]
            improved = (r["accuracy"] > state["best_acc"]
                        or r["accuracy"] == state["best_acc"] and r["loss"] < state["best_loss"])
            row = {"step": state["step"], "minutes": round(state["elapsed"] / 60, 2),
                   "train_clf_loss": round(float(run_clf) / run_n, 4),
                   "train_bits_per_token": round(float(run_gen) / run_n / LN2, 4),
                   "train_accuracy": round(float(run_acc) / run_n, 4), "val_accuracy": round(r["accuracy"], 4),
                   "val_bits_per_token": round(r["bits_per_token"], 4)}
            state["history"].append(row)
            run_clf, run_gen, run_acc, run_n = 0.0, 0.0, 0.0, 0
            print(f"step {row['step']:5d} {row['minutes']:6.1f} min  train clf {row['train_clf_loss']:.3f} "
                  f"acc {row['train_accuracy']:.3f} gen {row['train_bits_per_token']:.3f} b/tok | "
                  f"val acc {row['val_accuracy']:.4f} gen {row['val_bits_per_token']:.3f} b/tok"
                  + ("  *best*" if improved else ""), flush=True)
            if improved:
                state["best_acc"], state["best_loss"], state["bad_checks"] = r["accuracy"], r["loss"], 0
                save_checkpoint(best_path, model, **fields({"val_accuracy": r["accuracy"]}, False))
            else:
                state["bad_checks"] += 1
            save_checkpoint(last_path, model, **fields({"val_accuracy": r["accuracy"]}, True))
            if args.patience > 0 and state["bad_checks"] >= args.patience:
                stop_reason = f"no better val accuracy in {args.patience} checks"
                break
    state["elapsed"] = time.time() - t_start
    if not os.path.isfile(best_path) or state["step"] != state["checked_step"]:
        # the steps since the last check: validate them too so nothing is lost
        r = evaluate(model, xva, yva, args.eval_batch_size, device, amp)
        state["checked_step"] = state["step"]
        if r["accuracy"] > state["best_acc"] or r["accuracy"] == state["best_acc"] and r["loss"] < state["best_loss"]:
            state["best_acc"], state["best_loss"] = r["accuracy"], r["loss"]
            save_checkpoint(best_path, model, **fields({"val_accuracy": r["accuracy"]}, False))
        save_checkpoint(last_path, model, **fields({"val_accuracy": r["accuracy"]}, True))
    print(f"stopped: {stop_reason} after {state['step']} steps, {state['elapsed'] / 60:.1f} min")

    best, _ = load_checkpoint(best_path)
    best = best.to(device)
    t0 = time.time()
    # Final numbers in fp32: the exported fp32 graphs are what a CPU service runs, so the card's
    # accuracy is the one the service reproduces (bf16 autocast can flip a few close calls).
    r = evaluate(best, xte, yte, args.eval_batch_size, device, amp=False)
    metrics = {
        "classification_accuracy": round(r["accuracy"], 5),
        "val_accuracy": round(state["best_acc"], 5),
        "test_bits_per_token": round(r["bits_per_token"], 5),
        "test_images": r["n"],
        "finetune_steps": state["step"],
        "finetune_minutes": round(state["elapsed"] / 60, 2),
        "finetune_stop": stop_reason,
        "confusion_matrix": r["confusion"].tolist(),
    }
    if getattr(best.config, "bidirectional", False):
        del metrics["test_bits_per_token"]  # not a likelihood: bidirectional attention sees the targets
    elif "test_bits_per_token" in pre_metrics:
        metrics["pretrain_test_bits_per_token"] = pre_metrics["test_bits_per_token"]
    save_checkpoint(best_path, best, **fields(metrics, False))
    print(f"\ntest accuracy {r['accuracy']:.4f} on {r['n']} images ({time.time() - t0:.0f}s), "
          f"bits per token {r['bits_per_token']:.4f}; best val accuracy {state['best_acc']:.4f}\n")
    print(confusion_table(r["confusion"], classes))
    print(f"\nwrote {best_path}")
    return 0
