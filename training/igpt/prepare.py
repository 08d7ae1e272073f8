"""`python3 -m igpt prepare`: images -> palette + token files (docs/CONTRACTS.md, "Prepared data")."""
from __future__ import annotations

import argparse
import json
import math
import os
import time

import numpy as np

from . import data, palette as pal


def add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", choices=data.DATASETS, default="fashion-mnist")
    p.add_argument("--data", default=None, help="dataset path (default for fashion-mnist: %s)" % data.FASHION_MNIST_DIR)
    p.add_argument("--height", type=int, default=28)
    p.add_argument("--width", type=int, default=28)
    p.add_argument("--channels", type=int, choices=(1, 3), default=1)
    p.add_argument("--palette-size", type=int, default=16, help="k-means clusters (iGPT: 512 for RGB)")
    p.add_argument("--val", type=float, default=5000,
                   help="validation examples held out of train (a count, or a fraction if < 1)")
    p.add_argument("--limit-train", type=int, default=0, help="use a random subset of train (0 = all)")
    p.add_argument("--limit-test", type=int, default=0, help="use a random subset of test (0 = all)")
    p.add_argument("--test-fraction", type=float, default=0.1, help="folder without test/, emoji: held-out fraction")
    p.add_argument("--emoji-sets", default="google",
                   help="emoji: comma-separated sets: emoji-datasource PNGs (google, twitter) and SVGs (openmoji, "
                        "fluent); --data is their npm cache")
    p.add_argument("--emoji-no-skin-tones", action="store_true", help="emoji: leave out the skin-tone variants")
    p.add_argument("--palette-samples", type=int, default=300_000, help="pixels sampled for RGB k-means")
    p.add_argument("--palette-from", default=None,
                   help="quantize with this palette instead of fitting one: a package's model.json or a prepared "
                        "meta.json (continued training of a model on new images keeps its palette)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True)


def prepare(args) -> dict:
    t0 = time.time()
    raw = data.load_raw(args.dataset, args.data, args.height, args.width, args.channels,
                        seed=args.seed, test_fraction=args.test_fraction,
                        emoji_sets=[s for s in args.emoji_sets.split(",") if s],
                        emoji_skin_tones=not args.emoji_no_skin_tones)
    train = data.subset(raw.train, args.limit_train, args.seed + 2)
    # emoji with SVG sets: test.npz keeps the datasource sets' test images (the figures every card
    # compares), the added sets' test images go to test_added.npz with their own metrics
    n_base = int(raw.info.get("test_base_images", len(raw.test.labels)))
    every_test = np.arange(len(raw.test.labels))
    test = data.subset(raw.test.take(every_test[:n_base]), args.limit_test, args.seed + 3)
    test_added = raw.test.take(every_test[n_base:])
    n_val = int(round(args.val * len(train.labels))) if 0 < args.val < 1 else int(args.val)
    if n_val > 0:
        train, val = data.split_off(train, n_val, args.seed)
    else:
        val = data.RawSplit(train.images[:0], train.labels[:0])

    def images(split):
        return data.preprocess(split.images, args.height, args.width, args.channels)

    tr, va, te, ta = images(train), images(val), images(test), images(test_added)
    palette = (_palette_from(args.palette_from, args.channels) if args.palette_from else
               pal.fit_palette(tr, args.palette_size, max_samples=args.palette_samples, seed=args.seed))
    n = args.height * args.width
    splits = {}
    named = [("train", tr, train), ("val", va, val), ("test", te, test)] + ([("test_added", ta, test_added)] if len(ta) else [])
    for name, imgs, split in named:
        tokens = pal.quantize(imgs, palette).reshape(len(imgs), n).astype(np.uint16)
        splits[name] = (tokens, split.labels)
    test_psnr = pal.reconstruction_psnr(te, palette) if len(te) else float("nan")
    meta = {
        "dataset": raw.name,
        "path": args.data or (data.FASHION_MNIST_DIR if args.dataset == "fashion-mnist" else None),
        **({"source": raw.info} if raw.info else {}),
        "height": args.height,
        "width": args.width,
        "channels": args.channels,
        "palette_size": int(len(palette)),
        "palette": palette.astype(int).tolist(),
        "classes": list(raw.classes),
        "splits": {k: int(len(v[1])) for k, v in splits.items()},
        "palette_psnr_db": round(test_psnr, 3) if math.isfinite(test_psnr) else None,
        **({"test_added_palette_psnr_db": round(pal.reconstruction_psnr(ta, palette), 3)} if len(ta) else {}),
        "seed": args.seed,
        **({"palette_from": os.path.abspath(args.palette_from)} if args.palette_from else {}),
        "resize": "PIL bicubic (antialiased)",
        "grey": "ITU-R BT.601 luma",
    }
    data.save_prepared(args.out, meta, splits)
    print(f"prepared {raw.name} {args.height}x{args.width}x{args.channels} -> {args.out}: "
          f"train {meta['splits']['train']}, val {meta['splits']['val']}, test {meta['splits']['test']}"
          f"{', test_added %d' % meta['splits']['test_added'] if 'test_added' in meta['splits'] else ''}; "
          f"palette {len(palette)} colours, test reconstruction PSNR {test_psnr:.2f} dB "
          f"({time.time() - t0:.1f} s)", flush=True)
    return meta


def _palette_from(path: str, channels: int) -> np.ndarray:
    """The integer palette of a package manifest or prepared meta.json, checked against --channels."""
    with open(path) as f:
        palette = np.asarray(json.load(f)["palette"], dtype=np.int64)
    if palette.ndim != 2 or palette.shape[1] != channels:
        raise ValueError(f"{path}: a palette of {palette.shape[-1]} channels, the data has {channels}")
    return palette


def main(args) -> int:
    prepare(args)
    return 0
