#!/usr/bin/env python3
"""Gather a shipped model's measured numbers into its final checkpoint before `export`.

    /usr/bin/python3 scripts/card_metrics.py --ckpt runs/fm14/finetune/best.pt \
        --pretrain runs/fm14/pretrain/last.pt --probe runs/fm14/probe.json [--hardware "..."]

The fine-tuned checkpoint already carries its test accuracy, confusion matrix and fine-tuned
bits per token. This adds the pretrained model's test bits per token, the per-layer linear-probe
table (probe.py's JSON, measured on the pretrained model as in the paper), tokens seen and wall
time of both stages, and a hardware description; export then writes them into model.json and
MODEL_CARD.md.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from igpt.checkpoint import load_checkpoint, save_checkpoint  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ckpt", required=True, help="the final (fine-tuned) checkpoint; updated in place")
    p.add_argument("--pretrain", required=True, help="the pretraining checkpoint it started from")
    p.add_argument("--probe", default=None, help="probe.py's JSON for the pretrained model (without it the card has no "
                   "pretrained-model probe table; `igpt analysis` adds the package's own per-layer probes)")
    p.add_argument("--hardware", default=None, help="replaces the checkpoint's hardware string")
    args = p.parse_args()

    model, ck = load_checkpoint(args.ckpt)
    _, pre = load_checkpoint(args.pretrain)
    probe = None
    if args.probe:
        with open(args.probe) as f:
            probe = json.load(f)

    pm = pre.get("metrics") or {}
    metrics = dict(ck.get("metrics") or {})
    for k in ("train_loss", "val_loss", "best_val_loss", "test_loss", "val_bits_per_token", "final_eval_samples",
              "stop_reason"):
        metrics.pop(k, None)  # pretraining's own numbers, renamed below so nothing reads as the fine-tuned model's
    for k in ("test_bits_per_token", "val_bits_per_token"):  # absent when pretraining skipped its final evaluation
        if k in pm:
            metrics[f"pretrain_{k}"] = round(float(pm[k]), 5)
    metrics["pretrain_tokens_seen"] = int(pre.get("tokens_seen", 0))
    metrics["pretrain_minutes"] = round(float(pre.get("wall_time_s", 0)) / 60, 1)
    if probe:
        metrics["linear_probe"] = {r["what"].replace("ln_1 of block ", "block ").replace(" input", ""):
                                   {"val_accuracy": r["val_accuracy"], "test_accuracy": r["test_accuracy"],
                                    "l2": r["l2"]} for r in probe["layers"]}
        metrics["probe_best_layer"] = probe["best_layer"]
        metrics["probe_best_test_accuracy"] = probe["best_test_accuracy"]
        metrics["probe_train_images"] = probe["splits"]["train"]

    fields = {k: v for k, v in ck.items() if k not in ("config", "model")}
    fields["metrics"] = metrics
    if args.hardware:
        fields["hardware"] = args.hardware
    save_checkpoint(args.ckpt, model, **fields)
    print(f"updated {args.ckpt}: {len(metrics)} metrics")
    return 0


if __name__ == "__main__":
    sys.exit(main())
