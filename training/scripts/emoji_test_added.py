#!/usr/bin/env python3
"""The added emoji sets' test images under their own metric keys, before `export`.

    /usr/bin/python3 scripts/emoji_test_added.py --ckpt runs/emoji32/lp/best.pt --data runs/emoji32/data [--write]

`prepare --dataset emoji` with SVG sets (openmoji, fluent) keeps the emoji-datasource sets' test
images in test.npz, so a checkpoint's `test_bits_per_token` and classification accuracy stay the
figures on the images every earlier emoji card was measured on, and writes the added sets' test
images to test_added.npz (in set order; meta.json's source.test_added counts them per set). This
measures bits per token and, with a classification head, accuracy on them: in total as
`test_added_bits_per_token`, `test_added_classification_accuracy` and `test_added_images`, and
per set under `test_added_by_set`. `--write` adds them to the checkpoint's metrics (export copies
them into model.json and the card).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
from typing import Dict

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from igpt import data  # noqa: E402
from igpt.checkpoint import load_checkpoint, save_checkpoint  # noqa: E402
from igpt.model import IGpt, shift_inputs  # noqa: E402
from igpt.runtime import eval_batch_size  # noqa: E402


@torch.no_grad()
def per_image(model: IGpt, tokens: np.ndarray, batch_size: int, device: torch.device):
    """(nats of each image summed over its tokens, predicted class or -1 without a head)."""
    model.eval()
    nats, pred = np.zeros(len(tokens)), np.full(len(tokens), -1)
    # on the CPU, micro-batches whose attention scores stay cache-sized (runtime.eval_batch_size): the same sums, faster
    batch_size = eval_batch_size(batch_size, model.config.n_head, tokens.shape[1], device)
    for s in range(0, len(tokens), batch_size):
        x = torch.from_numpy(tokens[s:s + batch_size].astype(np.int64)).to(device)
        h, _ = model.hidden(shift_inputs(x, model.config.sos_token_id))
        logits = model.lm_head(h).float()
        loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), x.reshape(-1), reduction="none")
        nats[s:s + len(x)] = loss.reshape(len(x), -1).sum(1).cpu().numpy()
        if model.score is not None:
            pred[s:s + len(x)] = model.score(h.mean(dim=1)).argmax(-1).cpu().numpy()
    return nats, pred


def summary(nats: np.ndarray, pred: np.ndarray, labels: np.ndarray, tokens_per_image: int) -> Dict[str, float]:
    out = {"images": int(len(nats)), "bits_per_token": round(float(nats.sum()) / max(nats.size * tokens_per_image, 1)
                                                             / math.log(2), 5)}
    if (pred >= 0).all():
        out["classification_accuracy"] = round(float((pred == labels).mean()) if len(pred) else 0.0, 5)
    return out


def added_metrics(model: IGpt, data_dir: str, batch_size: int, device: torch.device) -> Dict[str, object]:
    meta = data.read_meta(data_dir)
    per_set = (meta.get("source") or {}).get("test_added") or {}
    path = os.path.join(data_dir, "test_added.npz")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: the data has no added test images (prepare with --emoji-sets ...,openmoji,fluent)")
    with np.load(path) as z:
        tokens, labels = z["tokens"], z["labels"]
    if sum(per_set.values()) != len(labels):
        raise ValueError(f"{data_dir}: meta.json counts {sum(per_set.values())} added test images, test_added.npz "
                         f"holds {len(labels)}")
    nats, pred = per_image(model, tokens, batch_size, device)
    if model.score is None:
        pred[:] = -1
    n = tokens.shape[1]
    metrics: Dict[str, object] = {f"test_added_{k}": v for k, v in summary(nats, pred, labels, n).items()}
    by_set, start = {}, 0
    for name, count in per_set.items():  # the added sets' images lie in set order
        part = slice(start, start + count)
        by_set[name] = summary(nats[part], pred[part], labels[part], n)
        start += count
    metrics["test_added_by_set"] = by_set
    return metrics


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ckpt", required=True)
    p.add_argument("--data", required=True, help="the prepared data the checkpoint was trained on")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--device", default="auto")
    p.add_argument("--write", action="store_true", help="add the metrics to the checkpoint (in place)")
    args = p.parse_args()
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device)
    model, ck = load_checkpoint(args.ckpt)
    metrics = added_metrics(model.to(device), args.data, args.batch_size, device)
    print(json.dumps(metrics, indent=1))
    if args.write:
        fields = {k: v for k, v in ck.items() if k not in ("config", "model")}
        fields["metrics"] = {**(ck.get("metrics") or {}), **metrics}
        save_checkpoint(args.ckpt, model.cpu(), **fields)
        print(f"updated {args.ckpt}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
