"""Writes tests/fixtures/tiny-package: a small random (untrained) iGPT exported as a full model package.

The model is the `tiny` preset (8x8 grey, palette 8, n_embd 32, 2 layers, 4 heads) with a 3-class
head. Its weights are drawn with a fixed seed and a larger spread than training's init, so the
logits and attention patterns are far from uniform and parity checks mean something.

    /usr/bin/python3 training/scripts/make_test_package.py [--out tests/fixtures/tiny-package]
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "training"))

from igpt import export  # noqa: E402
from igpt.model import IGpt, preset  # noqa: E402

SEED = 20201


def make_model(seed: int = SEED, n_classes: int = 3) -> IGpt:
    torch.manual_seed(seed)
    model = IGpt(preset("tiny", n_classes=n_classes))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(("ln_1.weight", "ln_2.weight", "ln_f.weight")):
                p.copy_(1.0 + 0.2 * torch.randn_like(p))
            elif name.endswith(".bias"):
                p.copy_(0.1 * torch.randn_like(p))
            else:
                p.copy_(0.3 * torch.randn_like(p))
    return model.eval()


def grey_palette(n: int):
    return [[round(i * 255 / (n - 1))] for i in range(n)]


def make_checkpoint(model: IGpt, classes) -> dict:
    cfg = model.config
    return {
        "config": cfg.to_dict(),
        "model": model.state_dict(),
        "palette": grey_palette(cfg.palette_size),
        "classes": list(classes),
        "dataset": {"name": "none (random weights, test fixture)", "height": cfg.height, "width": cfg.width,
                    "channels": cfg.channels},
        "step": 0, "tokens_seen": 0, "wall_time_s": 0.0, "hardware": "n/a",
        "metrics": {}, "optimizer": None,
        "train_args": {"script": "training/scripts/make_test_package.py", "seed": SEED},
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=os.path.join(ROOT, "tests", "fixtures", "tiny-package"))
    ap.add_argument("--no-classifier", action="store_true")
    args = ap.parse_args()
    model = make_model(n_classes=0 if args.no_classifier else 3)
    classes = [] if args.no_classifier else ["dark", "mid", "light"]
    with tempfile.TemporaryDirectory() as tmp:
        ckpt_path = os.path.join(tmp, "tiny.pt")
        torch.save(make_checkpoint(model, classes), ckpt_path)
        ns = argparse.Namespace(ckpt=ckpt_path, out=args.out, id="tiny-test", no_fp16=False, card_extra=None,
                                description="Tiny random iGPT (8x8 grey, 8-level palette, untrained) for tests")
        return export.main(ns)


if __name__ == "__main__":
    sys.exit(main())
