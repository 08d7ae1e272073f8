#!/usr/bin/env python3
"""Write a model package's example images (models/<model>/examples/*.png) from its test split.

    /usr/bin/python3 scripts/make_examples.py --model fashion-mnist-28
    /usr/bin/python3 scripts/make_examples.py --model emoji-32 --dataset emoji --data /tmp/emoji

The web page shows them as thumbnails to complete in one click. One image per class (the first test
image of each of the first --count classes, the originals of samples.png), at the model's resolution as
the service sees it, named after its class: `<n>-<class>.png`. The test split is the one `prepare`
made (service_client.load_test_set), so no example was trained on.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys

import numpy as np
from PIL import Image

from service_client import REPO, add_test_set_args, load_test_set


def slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="fashion-mnist-28")
    add_test_set_args(p)
    p.add_argument("--count", type=int, default=6, help="how many classes get an example")
    args = p.parse_args()

    from igpt.data import preprocess

    package = os.path.join(REPO, "models", args.model)
    with open(os.path.join(package, "model.json")) as f:
        manifest = json.load(f)
    h, w, c = (manifest["image"][k] for k in ("height", "width", "channels"))
    classes = manifest["classes"]
    images, labels = load_test_set(args, h, w, c)
    picks = [(k, int(np.flatnonzero(labels == k)[0])) for k in range(min(args.count, len(classes)))]
    out = os.path.join(package, "examples")
    os.makedirs(out, exist_ok=True)
    for old in os.listdir(out):
        if old.endswith(".png"):
            os.remove(os.path.join(out, old))
    for n, (k, i) in enumerate(picks, start=1):
        pixels = preprocess(images[i:i + 1], h, w, c)[0]
        image = Image.fromarray(pixels[..., 0], "L") if c == 1 else Image.fromarray(pixels, "RGB")
        path = os.path.join(out, f"{n}-{slug(classes[k])}.png")
        image.save(path, optimize=True)
        print(f"{path}: test image {i}, class {classes[k]!r}, {os.path.getsize(path)} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
