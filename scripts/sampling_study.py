#!/usr/bin/env python3
"""Measure a model's completions over a grid of sampling settings, through the service, to choose its defaults.

    nice -n 5 /usr/bin/python3 scripts/sampling_study.py --model emoji-32                # starts the service itself
    /usr/bin/python3 scripts/sampling_study.py --model fashion-mnist-28 --url http://localhost:8080 --images 32

N test images (a seeded pick from the test split of the model's data set, `prepare`'s split) are each posted whole to
POST /v1/models/{model}/completions with `rows` = half the height, n completions per image, for every setting of the
grid (temperature x top_p x top_k). Image i has seed --seed + i under every setting, so the settings are compared on
the same random draws. A row "model defaults" sends no sampling field at all (what a request gets from the package's
`sampling`); it is added when the service serves the model with defaults other than its global ones.

Measured on the drawn half (the rows below the kept ones), against the same rows of the true images:

- streaky rows: the share of drawn rows (those with a row below them) that hold a *streak*: a horizontal run of at
  least --streak-length pixels (default: an eighth of the width, at least 3) alike each other (every channel within
  32 of the run's first pixel), not background (alike the image's top-left pixel, which is given), on which more
  than half of the pixels are alike neither the pixel above nor the pixel below: a dash one pixel tall, as in the
  emoji-32 sheet's completions. Shapes' rows continue the rows around them and do not count. The true images' share
  on the same rows is printed as "true images" (outlines and flags' stripes give a few).
- h/v: the share of drawn pixels alike their left neighbour divided by the share alike the pixel above; near the
  true images' value for pictures with their structure, higher for horizontal streaks.
- bits/token: the drawn pixels' negative log2-likelihood under the model itself at temperature 1 (no top-k/top-p),
  per pixel, from the package's weights rebuilt in PyTorch (checked against parity.json). Speckle (unlikely colours)
  raises it; lowering the temperature lowers it by construction, so read it with the other columns. The true
  images' value is the model's loss on their bottom halves.
- |diff| truth: mean absolute difference (0-255, per channel) between a completion and the true image's drawn rows
  (quantized to the palette: what the model could have drawn). Many completions are plausible, so it is a weak measure.
- spread: mean absolute difference between the completions of the same image: the variety a setting keeps.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import itertools
import json
import os
import sys
from typing import Dict, List, Optional

import numpy as np

from service_client import (REPO, add_test_set_args, decode_png, load_test_set, png_bytes, post_image, request,
                            running_service)

GLOBAL_SAMPLING = {"temperature": 1, "top_k": 0, "top_p": 1}  # the service's, for a package that names none
ALIKE = 32          # colours alike: every channel within this (0-255)


def floats(text: str) -> List[float]:
    return [float(x) for x in text.split(",") if x.strip()]


def ints(text: str) -> List[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def grid(temperatures: List[float], top_ps: List[float], top_ks: List[int]) -> List[Dict[str, float]]:
    return [{"temperature": t, "top_k": k, "top_p": p} for t, p, k in itertools.product(temperatures, top_ps, top_ks)]


def label(settings: Optional[Dict[str, float]]) -> str:
    if settings is None:
        return "model defaults"
    return f"T={settings['temperature']:g} top_p={settings['top_p']:g} top_k={settings['top_k']}"


# ----------------------------------------------------------------------------------------------- measures


def alike(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """[..., C] colours -> [...] bool: every channel within ALIKE."""
    return (np.abs(a.astype(np.int32) - b.astype(np.int32)) <= ALIKE).all(-1)


def streaky_rows(image: np.ndarray, first_row: int, length: int) -> int:
    """How many rows first_row..H-2 of an [H, W, C] uint8 image hold a streak (module docstring)."""
    h, w, _ = image.shape
    background = image[0, 0]
    count = 0
    for y in range(max(first_row, 1), h - 1):
        row = image[y]
        lone = ~alike(row, image[y - 1]) & ~alike(row, image[y + 1])  # [W]: unlike the pixels above and below
        x = 0
        while x < w:
            end = x + 1
            while end < w and alike(row[end], row[x]):
                end += 1
            if end - x >= length and not alike(row[x], background) and lone[x:end].sum() * 2 > end - x:
                count += 1
                break
            x = end
    return count


def alike_shares(image: np.ndarray, first_row: int):
    """(pixels alike their left neighbour, pixels alike the one above), counted over rows first_row.. (x >= 1)."""
    rows = image[first_row:, 1:]
    left = alike(rows, image[first_row:, :-1]).sum()
    up = alike(rows, image[first_row - 1:-1, 1:]).sum()
    return int(left), int(up)


class Likelihood:
    """Bits per drawn token under the model, from the package's weights rebuilt in PyTorch (bench/torch_bench.py)."""

    def __init__(self, package: str):
        sys.path.insert(0, os.path.join(REPO, "bench"))
        import torch
        from torch_bench import Worker  # noqa: E402  (its loader and its parity.json check)

        worker = Worker("torch-eager")
        self.parity = worker.load(package)["parity_max_abs_diff"]
        self.model, self.torch = worker.model, torch

    def bits(self, tokens: np.ndarray, first: int, batch: int = 16) -> np.ndarray:
        """tokens [B, n] -> [B] mean bits of tokens[:, first:] given the ones before them."""
        torch, cfg = self.torch, self.model.config
        out = []
        with torch.no_grad():
            for s in range(0, len(tokens), batch):
                x = torch.from_numpy(tokens[s:s + batch]).long()
                inp = torch.cat([torch.full((len(x), 1), cfg.sos_token_id, dtype=torch.long), x[:, :-1]], 1)
                logits, _ = self.model(inp)
                logp = torch.log_softmax(logits[..., :cfg.palette_size].float(), -1)
                nll = -logp.gather(-1, x[..., None])[..., 0][:, first:]
                out.append((nll.mean(1) / np.log(2)).numpy())
        return np.concatenate(out)


# ----------------------------------------------------------------------------------------------- the study


def complete_all(base: str, model: str, images: np.ndarray, rows: int, n: int, seed: int,
                 settings: Optional[Dict[str, float]], concurrency: int) -> np.ndarray:
    """[N, n, H, W, C] completions of each image, image i with seed + i."""
    fields = dict(settings or {})

    def one(i: int) -> np.ndarray:
        status, _, body = post_image(f"{base}/v1/models/{model}/completions", png_bytes(images[i]),
                                     {"rows": rows, "n": n, "seed": seed + i, **fields})
        if status != 200:
            raise RuntimeError(f"completion of image {i} ({label(settings)}): HTTP {status} {body[:300]!r}")
        mode = "L" if images.shape[-1] == 1 else "RGB"
        return np.stack([np.asarray(decode_png(b).convert(mode)).reshape(images[i].shape) for b in json.loads(body)["images"]])

    with concurrent.futures.ThreadPoolExecutor(concurrency) as pool:
        return np.stack(list(pool.map(one, range(len(images)))))


def measure(drawn: np.ndarray, truth_pixels: np.ndarray, tokens: np.ndarray, rows: int, length: int,
            likelihood: Optional[Likelihood]) -> Dict[str, float]:
    """drawn [N, n, H, W, C] pixels, truth_pixels [N, H, W, C] (palette colours), tokens [N, n, H*W]."""
    N, n, H, W, _ = drawn.shape
    flat = drawn.reshape(N * n, H, W, -1)
    streaks = sum(streaky_rows(im, rows, length) for im in flat)
    left, up = map(sum, zip(*(alike_shares(im, rows) for im in flat)))
    diff = np.abs(drawn[:, :, rows:].astype(np.int32) - truth_pixels[:, None, rows:].astype(np.int32)).mean()
    spread = (np.mean([np.abs(drawn[:, a, rows:].astype(np.int32) - drawn[:, b, rows:].astype(np.int32)).mean()
                       for a, b in itertools.combinations(range(n), 2)]) if n > 1 else float("nan"))
    result = {"streaky_rows": streaks / (N * n * (H - 1 - rows)), "h_over_v": left / max(up, 1),
              "diff_truth": float(diff), "spread": float(spread), "completions": N * n}
    if likelihood is not None:
        result["bits_per_token"] = float(likelihood.bits(tokens.reshape(N * n, -1), rows * W).mean())
    return result


def write_sheet(path: str, sheet_rows, rows: int, columns: int = 12, scale: int = 3) -> None:
    """One labelled row per setting: its first completion of each of the first `columns` images."""
    from PIL import Image, ImageDraw

    _, h, w, c = sheet_rows[0][1].shape
    pad, label_h = 4, 12
    count = min(columns, len(sheet_rows[0][1]))
    sheet = Image.new("RGB", (pad + count * (w * scale + pad), len(sheet_rows) * (label_h + h * scale + pad) + pad), "white")
    draw = ImageDraw.Draw(sheet)
    for r, (name, images) in enumerate(sheet_rows):
        y = pad + r * (label_h + h * scale + pad)
        draw.text((pad, y), name, fill="black")
        for k in range(count):
            im = Image.fromarray(images[k][..., 0] if c == 1 else images[k]).convert("RGB")
            x = pad + k * (w * scale + pad)
            sheet.paste(im.resize((w * scale, h * scale), Image.NEAREST), (x, y + label_h))
            if r:  # where the kept rows end
                draw.line([(x - pad + 1, y + label_h + rows * scale), (x - 1, y + label_h + rows * scale)], fill=(220, 40, 40))
    sheet.save(path)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="emoji-32")
    p.add_argument("--url", help="a running service; default: start one on a free loopback port")
    p.add_argument("--package", help="the package folder (default models/<model>); a service this script starts serves "
                                     "its parent folder")
    add_test_set_args(p)
    p.set_defaults(dataset=None)  # the package's training.dataset
    p.add_argument("--images", type=int, default=16, help="test images (a seeded pick)")
    p.add_argument("--n", type=int, default=2, help="completions per image and setting")
    p.add_argument("--seed", type=int, default=2026)
    p.add_argument("--temperatures", type=floats, default=floats("1,0.9,0.8"))
    p.add_argument("--top-p", type=floats, default=floats("1,0.95,0.9"))
    p.add_argument("--top-k", type=ints, default=ints("0"), help="0 = off; e.g. 0,32")
    p.add_argument("--streak-length", type=int, default=None, help="shortest streak in pixels (default: width/8, at least 3)")
    p.add_argument("--concurrency", type=int, default=4, help="requests in flight (the service batches them)")
    p.add_argument("--no-likelihood", action="store_true", help="skip bits/token (no PyTorch)")
    p.add_argument("--json", help="also write the results here")
    p.add_argument("--sheet", help="also write a PNG: the true images, then each setting's first completions, a row each")
    args = p.parse_args()

    from igpt.data import preprocess
    from igpt.palette import quantize

    package = args.package or os.path.join(REPO, "models", args.model)
    with open(os.path.join(package, "model.json"), encoding="utf-8") as f:
        manifest = json.load(f)
    h, w, c = (manifest["image"][k] for k in ("height", "width", "channels"))
    args.dataset = args.dataset or manifest.get("training", {}).get("dataset") or "fashion-mnist"
    test_images, _ = load_test_set(args, h, w, c)
    picks = np.sort(np.random.default_rng(args.seed).permutation(len(test_images))[:args.images])
    images = preprocess(test_images[picks], h, w, c)           # [N, H, W, C] uint8, what is posted
    palette = np.asarray(manifest["palette"], dtype=np.uint8)
    truth_tokens = quantize(images, palette)                   # [N, H, W]
    truth_pixels = palette[truth_tokens]                       # what the model sees
    rows = h // 2
    length = args.streak_length or max(3, w // 8)

    likelihood = None if args.no_likelihood else Likelihood(package)
    settings: List[Optional[Dict[str, float]]] = grid(args.temperatures, args.top_p, args.top_k)

    results = []
    sheet_rows = [("true images (quantized)", truth_pixels)]
    truth = measure(truth_pixels[:, None], truth_pixels, truth_tokens.reshape(len(picks), 1, -1), rows, length, likelihood)
    truth.update(spread=float("nan"), diff_truth=0.0)
    with running_service(args.url, os.path.dirname(os.path.abspath(package)) if args.package else None) as base:
        # The defaults the service serves (the package's `sampling` over its global ones), not the file's: what users get.
        status, _, body = request(f"{base}/v1/models/{args.model}")
        if status != 200:
            raise RuntimeError(f"GET /v1/models/{args.model}: HTTP {status} {body[:300]!r}")
        served = json.loads(body).get("sampling")
        if served and served != GLOBAL_SAMPLING:
            settings.insert(0, None)
        print(f"{args.model}: {len(picks)} test images of {args.dataset} ({len(test_images)} in the split), {args.n} "
              f"completions each per setting, rows {rows}/{h} kept, streaks of {length}+ pixels; served defaults: "
              f"{json.dumps(served)}" + (f"; PyTorch rebuild within {likelihood.parity:.2g} of parity.json" if likelihood else ""),
              flush=True)
        for s in settings:
            drawn = complete_all(base, args.model, images, rows, args.n, args.seed, s, args.concurrency)
            drawn_tokens = quantize(drawn, palette).reshape(len(picks), args.n, -1)
            if not (drawn_tokens[..., :rows * w] == truth_tokens.reshape(len(picks), 1, -1)[..., :rows * w]).all():
                raise RuntimeError("the service's kept rows are not the test images' quantized rows")
            r = measure(drawn, truth_pixels, drawn_tokens, rows, length, likelihood)
            results.append({"settings": s, "label": label(s), **r})
            sheet_rows.append((label(s), drawn[:, 0]))
            print(f"  {label(s)}: done", file=sys.stderr, flush=True)

    header = f"| setting | streaky rows | h/v | bits/token | \\|diff\\| truth | spread |"
    print("\n" + header + "\n|---|---|---|---|---|---|")
    for name, r in [("true images", truth)] + [(r["label"], r) for r in results]:
        bits = f"{r['bits_per_token']:.3f}" if "bits_per_token" in r else "-"
        spread = "-" if np.isnan(r["spread"]) else f"{r['spread']:.1f}"
        print(f"| {name} | {100 * r['streaky_rows']:.1f}% | {r['h_over_v']:.2f} | {bits} | {r['diff_truth']:.1f} | {spread} |")
    if args.sheet:
        write_sheet(args.sheet, sheet_rows, rows)
        print(f"wrote {args.sheet}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"model": args.model, "dataset": args.dataset, "images": [int(i) for i in picks], "n": args.n,
                       "seed": args.seed, "rows": rows, "served_sampling": served, "true_images": truth,
                       "results": results}, f, indent=1)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
