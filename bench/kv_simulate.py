"""Candidate KV cache quantizations simulated in PyTorch, before any kernel is written: test-set bits per token of a shipped
model with its keys and values rounded as a cache type would store them, against float32.

    nice -n 5 /usr/bin/python3 bench/kv_simulate.py [--model fashion-mnist-28]... [--images 300]

Each model (models/<id>, loaded into training/igpt's model) runs the first --images test images teacher-forced in one
pass, its attention's keys and values quantized per (position, head) over the head's dimensions before the attention
reads them (what a cache written one entry at a time holds; the queries, weights and everything else stay fp32):
- sym N: N-bit symmetric, scale = largest magnitude / (2^(N-1) - 1), as the int8 cache stores them;
- asym N: N-bit with the entry's minimum as its offset, scale = (max - min) / (2^N - 1).
Prints bits per token and the difference from float32 in percent (the quality guard's goal: within 0.5%). The service's
own figures come from bench/kv_quality.py, which runs the real cache; this one says which types are worth building.
"""
from __future__ import annotations

import argparse
import math
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from kv_quality import MODELS, test_tokens  # noqa: E402
from run import ROOT  # noqa: E402
from igpt import model as igpt_model  # noqa: E402  (training/ is on the path through kv_quality)
from igpt.package_model import load_package_model  # noqa: E402

VARIANTS = [  # (label, keys, values): None = fp32
    ("float32", None, None),
    ("int8 (sym 8 / sym 8)", ("sym", 8), ("sym", 8)),
    ("keys sym 8, values sym 4", ("sym", 8), ("sym", 4)),
    ("keys sym 8, values asym 4", ("sym", 8), ("asym", 4)),
    ("keys sym 4, values sym 8", ("sym", 4), ("sym", 8)),
    ("keys sym 4, values sym 4", ("sym", 4), ("sym", 4)),
    ("keys asym 4, values asym 4", ("asym", 4), ("asym", 4)),
]


def quantize(x: torch.Tensor, how) -> torch.Tensor:
    """x [..., head_size] rounded per entry as `how` says, back in fp32."""
    if how is None:
        return x
    kind, bits = how
    if kind == "sym":
        levels = 2 ** (bits - 1) - 1
        scale = x.abs().amax(-1, keepdim=True) / levels
        scale = torch.where(scale > 0, scale, torch.ones_like(scale))
        return torch.round(x / scale).clamp(-levels, levels) * scale
    levels = 2 ** bits - 1
    low, high = x.amin(-1, keepdim=True), x.amax(-1, keepdim=True)
    scale = (high - low) / levels
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    return torch.round((x - low) / scale).clamp(0, levels) * scale + low


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", action="append", help="a shipped model's id (default: all)")
    ap.add_argument("--images", type=int, default=300)
    ap.add_argument("--emoji-sets", default="google,twitter", help="the emoji sets emoji-32 was prepared from")
    args = ap.parse_args()
    torch.set_num_threads(2)
    chosen = {"keys": None, "values": None}
    full_attention = igpt_model.Attention._full_attention

    def quantized_attention(self, q, k, v):  # [B, nh, S, hs] each
        return full_attention(self, q, quantize(k, chosen["keys"]), quantize(v, chosen["values"]))

    igpt_model.Attention._full_attention = quantized_attention
    print("| model | keys, values | bits / token | against float32 |")
    print("|---|---|---|---|")
    for model_id in args.model or MODELS:
        model, manifest = load_package_model(os.path.join(ROOT, "models", model_id))
        tokens = torch.tensor(np.asarray(test_tokens(manifest, args.images, args.emoji_sets)), dtype=torch.long)
        inputs = torch.cat([torch.full((tokens.shape[0], 1), manifest["palette_size"]), tokens[:, :-1]], 1)  # [SOS, x0..]
        base = None
        for label, keys, values in VARIANTS:
            chosen["keys"], chosen["values"] = keys, values
            total = 0.0
            with torch.no_grad():
                for i in range(0, len(inputs), 50):
                    logits = model(inputs[i:i + 50])[0]
                    total += torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(),
                                                               tokens[i:i + 50].reshape(-1), reduction="sum").item()
            bits = total / tokens.numel() / math.log(2)
            base = base or bits
            print(f"| {model_id} | {label} | {bits:.5f} | {100 * (bits / base - 1):+.3f}% |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
