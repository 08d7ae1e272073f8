"""`python3 -m igpt soup`: average the weights of fine-tuned classifiers that share a pretrained start.

Fine-tuning runs that start from the same pretrained checkpoint end in one basin, so their
averaged weights ("model soup", Wortsman et al. 2022) usually classify better than any one of
them, at no cost when serving: the soup is one model of the same shape. The greedy soup takes
the ingredients best-first by validation accuracy and keeps each one only if the average with it
scores higher on the validation split; the test split is used once, for the chosen soup.

    python3 -m igpt soup --data runs/fm14/data --out runs/fm14/soup/best.pt \
        --ckpt runs/fm14/finetune/best.pt runs/fm14/finetune2/best.pt runs/fm14/finetune3/best.pt

`--mode interpolate` blends two checkpoints instead (WiSE-FT, Wortsman et al. 2022): the start (the
pretrained model with a linear-probe head, `finetune --lr 0`) and its fine-tune, (1 - a) start + a
fine-tune for each a of `--alphas`. Fine-tuning for classification costs the generative side
bits per token; the blend keeps most of the accuracy for less of that. It takes the a with the best
validation accuracy among those whose validation bits per token stay within `--max-bits-increase`
(relative) of the start's, so a package serves both completion and classification from one set of
weights.

    python3 -m igpt soup --mode interpolate --data runs/emoji32-c2/data --out runs/emoji32-c2/wise/best.pt \
        --ckpt runs/emoji32-c2/lp/best.pt runs/emoji32-c2/ft/best.pt
"""
from __future__ import annotations

import argparse
import os
import time
from typing import Dict, List

import numpy as np
import torch

from .model import IGpt


def add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True, help="prepared data dir (its val split chooses, its test split reports)")
    p.add_argument("--ckpt", nargs="+", required=True, help="fine-tuned checkpoints from one pretrained model")
    p.add_argument("--out", required=True, help="checkpoint to write (a finetune-style best.pt)")
    p.add_argument("--mode", choices=("greedy", "uniform", "interpolate"), default="greedy",
                   help="greedy: add ingredients best-first while val accuracy improves; uniform: average all; "
                        "interpolate: blend two checkpoints (start, fine-tune) at --alphas")
    p.add_argument("--alphas", default="0,0.25,0.5,0.75,1", help="interpolate: fine-tune weights to try (0: the start)")
    p.add_argument("--max-bits-increase", type=float, default=0.02,
                   help="interpolate: largest relative rise of val bits per token over the start's")
    p.add_argument("--val-limit", type=int, default=0, help="validation images (0: all)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=0, help="CPU threads (0: all cores)")


def average_states(states: List[Dict[str, torch.Tensor]]) -> Dict[str, torch.Tensor]:
    """The element-wise mean of state dicts with the same keys and shapes (float tensors; others from the first)."""
    keys = list(states[0])
    for s in states[1:]:
        if list(s) != keys or any(s[k].shape != states[0][k].shape for k in keys):
            raise SystemExit("soup: the checkpoints do not have the same architecture")
    out = {}
    for k in keys:
        if states[0][k].is_floating_point():
            out[k] = torch.stack([s[k].float() for s in states]).mean(0).to(states[0][k].dtype)
        else:
            out[k] = states[0][k].clone()
    return out


def interpolate_states(start: Dict[str, torch.Tensor], end: Dict[str, torch.Tensor], alpha: float) -> Dict[str, torch.Tensor]:
    """(1 - alpha) start + alpha end for float tensors (others from start)."""
    return {k: ((1.0 - alpha) * v.float() + alpha * end[k].float()).to(v.dtype) if v.is_floating_point() else v.clone()
            for k, v in start.items()}


def choose_alpha(rows: List[Dict[str, float]], max_bits_increase: float) -> Dict[str, float]:
    """The row (alpha, accuracy, bits) with the best val accuracy among those within max_bits_increase of alpha 0's bits."""
    start = next(r for r in rows if r["alpha"] == 0.0)
    allowed = [r for r in rows if r["bits"] <= start["bits"] * (1.0 + max_bits_increase)]
    return max(allowed, key=lambda r: (r["accuracy"], -r["alpha"]))


def main(args) -> int:
    from .checkpoint import load_checkpoint
    from .classifier import classification_metrics, load_splits
    from .runtime import configure_threads, pick_device

    configure_threads(args.threads)
    device = pick_device(args.device)
    _, (xva, yva), (xte, yte) = load_splits(args.data, 0, 0)
    if args.val_limit > 0:
        xva, yva = xva[:args.val_limit], yva[:args.val_limit]
    loaded = [load_checkpoint(p) for p in args.ckpt]
    models = [m for m, _ in loaded]
    if any(m.config.n_classes <= 0 or m.score is None for m in models):
        raise SystemExit("soup: every checkpoint must be a fine-tuned classifier")
    cfg = models[0].config
    if any(m.config.to_dict() != cfg.to_dict() for m in models):
        raise SystemExit("soup: the checkpoints' configs differ")
    states = [{k: v.detach().cpu() for k, v in m.state_dict().items()} for m in models]

    def val_metrics(state: Dict[str, torch.Tensor]) -> Dict[str, object]:
        m = IGpt(cfg)
        m.load_state_dict(state)
        return classification_metrics(m.to(device), xva, yva, args.batch_size)

    def val_accuracy(state: Dict[str, torch.Tensor]) -> float:
        return val_metrics(state)["accuracy"]

    t0 = time.time()
    if args.mode == "interpolate":
        return interpolate(args, loaded, states, cfg, val_metrics, xte, yte, device, t0)
    scores = [val_accuracy(s) for s in states]
    for p, a in zip(args.ckpt, scores):
        print(f"ingredient {p}: val accuracy {a:.4f} on {len(yva)} images", flush=True)
    order = sorted(range(len(states)), key=lambda i: -scores[i])
    if args.mode == "uniform":
        chosen = order
        best = val_accuracy(average_states([states[i] for i in chosen]))
    else:
        chosen, best = [order[0]], scores[order[0]]
        for i in order[1:]:
            a = val_accuracy(average_states([states[j] for j in chosen + [i]]))
            kept = a > best
            print(f"  + {args.ckpt[i]}: val accuracy {a:.4f} -> {'kept' if kept else 'left out'}", flush=True)
            if kept:
                chosen, best = chosen + [i], a
    soup = IGpt(cfg)
    soup.load_state_dict(average_states([states[i] for i in chosen]))

    first = loaded[chosen[0]][1]
    ingredients = [os.path.relpath(args.ckpt[i]) for i in chosen]
    minutes = sum(float((loaded[i][1].get("metrics") or {}).get("finetune_minutes", 0.0)) for i in chosen)
    metrics = {"finetune_minutes": round(minutes, 2),
               "finetune_steps": sum(int((loaded[i][1].get("metrics") or {}).get("finetune_steps", 0)) for i in chosen),
               "finetune_stop": (f"{args.mode} soup of {len(chosen)} fine-tuning runs" if len(chosen) > 1 else
                                 f"the best by val of {len(states)} fine-tuning runs (no average scored higher)"),
               "soup_ingredients": len(chosen),
               "soup_ingredient_val_accuracy": [round(scores[i], 5) for i in chosen],
               "soup_ingredient_test_accuracy": [
                   (loaded[i][1].get("metrics") or {}).get("classification_accuracy") for i in chosen]}
    # the other ingredients' fine-tuning is compute this model cost too
    others = [loaded[i][1] for i in chosen[1:]]
    extra_s = sum(60.0 * float((c.get("metrics") or {}).get("finetune_minutes", 0.0)) for c in others)
    extra_tokens = sum(int(((c.get("train_args") or {}).get("finetune_state") or {}).get("images", 0)) * cfg.n_positions
                       for c in others)
    write_result(args, soup.to(device), first, {"mode": args.mode, "ingredients": ingredients}, best, metrics, xte, yte,
                 f"soup of {len(chosen)} ({', '.join(ingredients)}): val accuracy {best:.4f}", t0,
                 wall_time_s=float(first.get("wall_time_s", 0.0) or 0.0) + extra_s,
                 tokens_seen=int(first.get("tokens_seen", 0) or 0) + extra_tokens)
    return 0


def write_result(args, model: IGpt, base: dict, soup: dict, val_accuracy: float, metrics: dict, xte, yte, headline: str,
                 t0: float, **overrides) -> None:
    """Measures `model` once on the test split and saves it as a finetune-style checkpoint to args.out: `base`'s fields
    (and `overrides`), its metrics updated with the test figures, the chosen val accuracy and `metrics`."""
    from .checkpoint import save_checkpoint
    from .classifier import classification_metrics, confusion_table

    r = classification_metrics(model, xte, yte, args.batch_size)  # fp32, like finetune's final numbers
    metrics = {**(base.get("metrics") or {}),
               "classification_accuracy": round(r["accuracy"], 5),
               "val_accuracy": round(val_accuracy, 5),
               "test_bits_per_token": round(r["bits_per_token"], 5),
               "test_images": r["n"],
               "confusion_matrix": r["confusion"].tolist(),
               **metrics}
    fields = {k: v for k, v in base.items() if k not in ("config", "model", "optimizer", "metrics")}
    fields["train_args"] = {**(base.get("train_args") or {}), "soup": soup}
    out = args.out
    save_checkpoint(out, model, **{**fields, **overrides}, metrics=metrics)
    print(f"\n{headline}; test accuracy {r['accuracy']:.4f} on {r['n']} images, bits per token {r['bits_per_token']:.4f} "
          f"({time.time() - t0:.0f}s)\n")
    print(confusion_table(r["confusion"], list(base.get("classes") or [])))
    print(f"\nwrote {out}")


def interpolate(args, loaded, states, cfg, val_metrics, xte, yte, device, t0) -> int:
    """--mode interpolate: blend the start and its fine-tune, choose the blend on val, report it on test."""
    if len(states) != 2:
        raise SystemExit("soup --mode interpolate: give two checkpoints, the start (probe head) and its fine-tune")
    alphas = sorted({float(a) for a in args.alphas.split(",")} | {0.0})
    rows = []
    for a in alphas:
        r = val_metrics(interpolate_states(states[0], states[1], a))
        rows.append({"alpha": a, "accuracy": float(r["accuracy"]), "bits": float(r["bits_per_token"])})
        print(f"alpha {a:.2f}: val accuracy {r['accuracy']:.4f}, val bits per token {r['bits_per_token']:.4f} "
              f"on {r['n']} images", flush=True)
    pick = choose_alpha(rows, args.max_bits_increase)
    model = IGpt(cfg)
    model.load_state_dict(interpolate_states(states[0], states[1], pick["alpha"]))
    metrics = {"finetune_stop": (f"interpolated: {1 - pick['alpha']:.2f} x the probe-headed start + {pick['alpha']:.2f} x its "
                                 f"fine-tune, chosen on val (best accuracy within {args.max_bits_increase:.0%} of the start's "
                                 f"val bits per token)"),
               "interpolation_alpha": pick["alpha"],
               "interpolation_val": rows}
    write_result(args, model.to(device), loaded[1][1], {"mode": "interpolate", "alpha": pick["alpha"],
                                                      "ingredients": [os.path.relpath(p) for p in args.ckpt]},
                 pick["accuracy"], metrics, xte, yte, f"interpolated at alpha {pick['alpha']:.2f}: val accuracy {pick['accuracy']:.4f}, val bits {pick['bits']:.4f}", t0)
    return 0
