#!/usr/bin/env python3
"""Make a model package's sample sheet through the service's API (what users get, not PyTorch).

    /usr/bin/python3 scripts/sample_sheet.py --model fashion-mnist-14             # starts the service itself
    /usr/bin/python3 scripts/sample_sheet.py --model fashion-mnist-14 --url http://localhost:8080

Left: 8 test images (one per class, the first 8 classes), each posted whole to
POST /v1/models/{model}/completions with `rows` = half the height, then 4 completions beside the
original. Right: 16 unconditional samples from POST /v1/models/{model}/samples. Written to
models/<model>/samples.png unless --out says otherwise. The requests name no sampling setting (unless --temperature
is given), so the sheet shows what users get: the model's default sampling settings (model.json `sampling`).
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np
from PIL import Image, ImageDraw

from service_client import REPO, add_test_set_args, load_test_set, decode_png, png_bytes, post_image, post_json, running_service


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="fashion-mnist-14")
    p.add_argument("--url", help="a running service; default: start one on a free loopback port")
    add_test_set_args(p)
    p.add_argument("--seed", type=int, default=2026)
    p.add_argument("--temperature", type=float, default=None,
                   help="default: none sent, so the model's default sampling settings apply (GET /v1/models/{model})")
    p.add_argument("--scale", type=int, default=4, help="nearest-neighbour enlargement")
    p.add_argument("--out", default=None)
    args = p.parse_args()

    from igpt.data import preprocess

    package = os.path.join(REPO, "models", args.model)
    with open(os.path.join(package, "model.json")) as f:
        manifest = json.load(f)
    h, w, c = (manifest["image"][k] for k in ("height", "width", "channels"))
    test_images, labels = load_test_set(args, h, w, c)
    picks = [int(np.flatnonzero(labels == k)[0]) for k in range(min(8, len(manifest["classes"])))]
    originals = preprocess(test_images[picks], h, w, c)

    s, pad = args.scale, 6
    sampling = {} if args.temperature is None else {"temperature": args.temperature}
    cell_w, cell_h = w * s, h * s
    with running_service(args.url) as base:
        rows = []
        for i, img in enumerate(originals):
            status, _, body = post_image(f"{base}/v1/models/{args.model}/completions", png_bytes(img),
                                         {"rows": h // 2, "n": 4, "seed": args.seed + i, "scale": s, **sampling})
            if status != 200:
                print(f"completion {i}: HTTP {status} {body[:300]!r}")
                return 1
            rows.append([decode_png(b).convert("RGB") for b in json.loads(body)["images"]])
        status, _, body = post_json(f"{base}/v1/models/{args.model}/samples",
                                    {"n": 16, "seed": args.seed, "scale": s, **sampling})
        if status != 200:
            print(f"samples: HTTP {status} {body[:300]!r}")
            return 1
        samples = [decode_png(b).convert("RGB") for b in json.loads(body)["images"]]

    title_h = 18
    left_w = 5 * cell_w + 6 * pad
    right_w = 4 * cell_w + 5 * pad
    height = title_h + 8 * cell_h + 9 * pad
    sheet = Image.new("RGB", (left_w + right_w + pad * 2, height), "white")
    draw = ImageDraw.Draw(sheet)
    draw.text((pad, 3), "original | 4 completions of the top half", fill="black")
    draw.text((left_w + pad * 2, 3), "16 unconditional samples", fill="black")
    for r, (orig, comps) in enumerate(zip(originals, rows)):
        y = title_h + pad + r * (cell_h + pad)
        o = Image.fromarray(orig[..., 0] if c == 1 else orig).convert("RGB").resize((cell_w, cell_h), Image.NEAREST)
        sheet.paste(o, (pad, y))
        for k, im in enumerate(comps):
            x = pad + (k + 1) * (cell_w + pad) + pad
            sheet.paste(im, (x, y))
            # a tick in the gap on the left marks where the kept rows end
            draw.line([(x - pad + 1, y + cell_h // 2), (x - 2, y + cell_h // 2)], fill=(220, 40, 40), width=2)
    for k, im in enumerate(samples):
        x = left_w + pad * 2 + (k % 4) * (cell_w + pad)
        y = title_h + pad + (k // 4) * (cell_h + pad)
        sheet.paste(im, (x, y))
    out = args.out or os.path.join(package, "samples.png")
    sheet.save(out)
    print(f"wrote {out} ({sheet.width}x{sheet.height})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
