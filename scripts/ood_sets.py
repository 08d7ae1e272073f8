#!/usr/bin/env python3
"""Out-of-distribution image sets for a model's likelihood study (issue 23), generated, never committed.

    /usr/bin/python3 scripts/ood_sets.py --model fashion-mnist-28 [--out ~/.cache/igpt/ood] [--count 2000]

Writes OUT/<model>/{emoji,digits,noise}.npz, each `images` uint8 [N, height, width, channels] at the model's size
and channels, the pixels a client would post (`igpt analysis --ood-sets` and scripts/analysis_eval.py read them):
- emoji: the emoji-datasource Google and Twitter PNGs (the emoji cache that `python3 -m igpt prepare --dataset
  emoji` fills, ~/.cache/igpt/emoji by default; nothing is fetched here), without skin-tone variants, alpha on
  white, BT.601 grey, resized to the model's size (igpt.emoji's loader, as training does);
- digits: 0-9 rendered from the Debian fonts installed here (DejaVu and Liberation: sans, serif, mono, bold,
  condensed, light, italic), white on black like MNIST and Fashion-MNIST, the digit's height 50-80% of the
  image, shifted by up to 10% and rotated by up to 12 degrees, drawn at 4x and reduced with an antialiasing
  filter (so edges are grey, as in MNIST), then resized to the model's size as prepare resizes (PIL bicubic);
- noise: every pixel an independent uniform draw from the model's palette (so its tokens are uniform too).
A fixed seed makes each set the same on every run.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import sys

import numpy as np
from PIL import Image, ImageDraw, ImageFont

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "training"))

SETS = ("emoji", "digits", "noise")
FONT_DIRS = ("/usr/share/fonts/truetype/dejavu", "/usr/share/fonts/truetype/liberation")
DEFAULT_OUT = os.path.join(os.path.expanduser("~"), ".cache", "igpt", "ood")
DEFAULT_EMOJI = os.path.join(os.path.expanduser("~"), ".cache", "igpt", "emoji")
MNIST_SIZE = 28  # digits are drawn on MNIST's 28 x 28 frame, then resized to the model's size


def fonts() -> list:
    """The installed Debian TrueType fonts with Latin digits (DejaVu, Liberation), Math's excluded (its digits are
    the serif ones again)."""
    found = sorted(p for d in FONT_DIRS for p in glob.glob(os.path.join(d, "*.ttf")) if "Math" not in p)
    if not found:
        raise SystemExit(f"no fonts under {FONT_DIRS}: apt-get install fonts-dejavu-core fonts-liberation")
    return found


def render_digits(count: int, seed: int) -> np.ndarray:
    """uint8 [count, 28, 28]: white digits on black, MNIST's frame; digit i % 10 for image i."""
    rng = np.random.default_rng(seed)
    paths = fonts()
    scale = 4
    big = MNIST_SIZE * scale
    out = np.empty((count, MNIST_SIZE, MNIST_SIZE), np.uint8)
    for i in range(count):
        font_path = paths[rng.integers(len(paths))]
        height = rng.uniform(0.5, 0.8) * big
        font = ImageFont.truetype(font_path, size=max(8, int(round(height * 1.35))))
        canvas = Image.new("L", (2 * big, 2 * big), 0)
        draw = ImageDraw.Draw(canvas)
        text = str(i % 10)
        left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
        draw.text((big - (left + right) / 2, big - (top + bottom) / 2), text, fill=255, font=font)
        canvas = canvas.rotate(rng.uniform(-12, 12), resample=Image.BICUBIC, center=(big, big))
        dx, dy = rng.uniform(-0.1, 0.1, 2) * big
        box = (int(round(big / 2 - dx)), int(round(big / 2 - dy)))
        crop = canvas.crop((box[0], box[1], box[0] + big, box[1] + big))
        out[i] = np.asarray(crop.resize((MNIST_SIZE, MNIST_SIZE), Image.LANCZOS))
    return out


def load_emoji_images(cache: str, height: int, width: int, channels: int, count: int, seed: int) -> np.ndarray:
    from igpt.emoji import load_emoji

    raw = load_emoji(cache, height, width, channels, sets=("google", "twitter"), skin_tones=False, download=False)
    images = np.concatenate([raw.train.images, raw.test.images])
    rng = np.random.default_rng(seed)
    return images[np.sort(rng.permutation(len(images))[:count])] if count < len(images) else images


def noise_images(palette, height: int, width: int, count: int, seed: int) -> np.ndarray:
    pal = np.asarray(palette, np.uint8).reshape(len(palette), -1)
    tokens = np.random.default_rng(seed).integers(0, len(pal), (count, height, width))
    return pal[tokens]  # [N, H, W, C]


def make_sets(manifest: dict, count: int, seed: int, emoji_cache: str, which=SETS) -> dict:
    from igpt.data import preprocess

    h, w, c = (manifest["image"][k] for k in ("height", "width", "channels"))
    out = {}
    if "emoji" in which:
        out["emoji"] = load_emoji_images(emoji_cache, h, w, c, count, seed)
    if "digits" in which:
        digits = render_digits(count, seed + 1)[..., None]
        out["digits"] = preprocess(digits, h, w, c)
    if "noise" in which:
        out["noise"] = noise_images(manifest["palette"], h, w, count, seed + 2)
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="model id (a folder under models/) or a package folder")
    p.add_argument("--out", default=DEFAULT_OUT, help="cache folder; the sets go to OUT/<model id>/")
    p.add_argument("--count", type=int, default=2000, help="images per set")
    p.add_argument("--sets", default=",".join(SETS), help="comma-separated subset of " + ",".join(SETS))
    p.add_argument("--emoji-cache", default=DEFAULT_EMOJI, help="the emoji npm cache (igpt prepare --dataset emoji)")
    p.add_argument("--seed", type=int, default=23)
    p.add_argument("--sheet", action="store_true", help="also write OUT/<model>/<set>.png, a sheet of the first 64")
    args = p.parse_args()
    package = args.model if os.path.isdir(args.model) else os.path.join(REPO, "models", args.model)
    with open(os.path.join(package, "model.json"), encoding="utf-8") as f:
        manifest = json.load(f)
    which = [s for s in args.sets.split(",") if s]
    if set(which) - set(SETS):
        raise SystemExit(f"--sets: choose from {SETS}")
    folder = os.path.join(args.out, manifest["id"])
    os.makedirs(folder, exist_ok=True)
    for name, images in make_sets(manifest, args.count, args.seed, args.emoji_cache, which).items():
        path = os.path.join(folder, f"{name}.npz")
        np.savez_compressed(path, images=images)
        print(f"{path}: {len(images)} images {images.shape[1]}x{images.shape[2]}x{images.shape[3]}")
        if args.sheet:
            k = min(64, len(images))
            rows = (k + 7) // 8
            sheet = np.zeros((rows * images.shape[1], 8 * images.shape[2], images.shape[3]), np.uint8)
            for i in range(k):
                r, col = divmod(i, 8)
                sheet[r * images.shape[1]:(r + 1) * images.shape[1], col * images.shape[2]:(col + 1) * images.shape[2]] = images[i]
            Image.fromarray(sheet[..., 0] if sheet.shape[2] == 1 else sheet).save(os.path.join(folder, f"{name}.png"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
