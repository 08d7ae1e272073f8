#!/usr/bin/env python3
"""Copy a training checkpoint without its optimizer and RNG state: what export, soup and the card
need, small enough to bring back from a lent GPU machine.

    python3 scripts/weights_only.py SRC DST
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from igpt.checkpoint import load_checkpoint, save_checkpoint  # noqa: E402

if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    model, ck = load_checkpoint(sys.argv[1])
    save_checkpoint(sys.argv[2], model, **{k: v for k, v in ck.items() if k not in ("config", "model", "optimizer", "rng")})
