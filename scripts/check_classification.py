#!/usr/bin/env python3
"""Classify a test set through the running service and compare with the model card's accuracy.

    /usr/bin/python3 scripts/check_classification.py --model fashion-mnist-14            # starts the service itself
    /usr/bin/python3 scripts/check_classification.py --model fashion-mnist-14 --url http://localhost:8080

Every test image is posted to POST /v1/models/{model}/classifications as a PNG, the way a client
would. By default the image is first brought to the model's resolution with the training project's
preprocessing (so the service sees the exact pixels the card's accuracy was measured on, and the
two numbers must agree to --tolerance); --original posts the dataset's own images instead and lets
the service resize them (a user's view; a different resampler, so a slightly different number).
Exits 1 when the service's accuracy differs from the manifest's `classification_accuracy` by more
than --tolerance percentage points.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from service_client import REPO, add_test_set_args, load_test_set, png_bytes, post_image, request, running_service


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="fashion-mnist-14", help="model id (a folder under models/)")
    p.add_argument("--url", help="a running service; default: start one on a free loopback port")
    add_test_set_args(p)
    p.add_argument("--limit", type=int, default=0, help="first N test images only (0 = all)")
    p.add_argument("--original", action="store_true", help="post the original images; the service resizes")
    p.add_argument("--workers", type=int, default=4, help="concurrent requests")
    p.add_argument("--tolerance", type=float, default=0.2, help="allowed difference, percentage points")
    args = p.parse_args()

    from igpt.data import preprocess

    with open(os.path.join(REPO, "models", args.model, "model.json")) as f:
        manifest = json.load(f)
    h, w, c = (manifest["image"][k] for k in ("height", "width", "channels"))
    expected = manifest.get("metrics", {}).get("classification_accuracy")

    images, labels = load_test_set(args, h, w, c)
    if args.limit:
        images, labels = images[:args.limit], labels[:args.limit]
    if not args.original:
        images = preprocess(images, h, w, c)

    with running_service(args.url) as base:
        url = f"{base}/v1/models/{args.model}/classifications"
        status, _, body = request(f"{base}/v1/models/{args.model}")
        if status != 200:
            print(f"model {args.model}: HTTP {status} {body[:300]!r}")
            return 1

        def classify(i: int) -> int:
            status, _, body = post_image(url, png_bytes(images[i]), {"top": 1})
            if status != 200:
                raise RuntimeError(f"image {i}: HTTP {status} {body[:300]!r}")
            return json.loads(body)["predictions"][0]["index"]

        t0 = time.time()
        with ThreadPoolExecutor(args.workers) as pool:
            preds = np.array(list(pool.map(classify, range(len(labels)))))
        seconds = time.time() - t0

    n_classes = len(manifest["classes"])
    conf = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(conf, (labels, preds), 1)
    accuracy = float(np.trace(conf)) / len(labels)
    print(f"{args.model}: {len(labels)} test images classified by the service in {seconds:.1f} s "
          f"({len(labels) / seconds:.0f} images/s, {args.workers} concurrent clients, "
          f"{'original images, resized by the service' if args.original else 'images at model resolution'})")
    print(f"service accuracy {accuracy * 100:.2f}%", end="")
    if expected is None:
        print("; the manifest has no classification_accuracy to compare with")
        return 0
    diff = abs(accuracy - expected) * 100
    print(f"; model card {expected * 100:.2f}%; difference {diff:.2f} points (tolerance {args.tolerance})")
    if args.original or args.limit:
        return 0  # a different input or a subset: reported, not judged
    return 0 if diff <= args.tolerance else 1


if __name__ == "__main__":
    sys.exit(main())
