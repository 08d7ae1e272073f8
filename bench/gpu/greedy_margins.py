#!/usr/bin/env python3
"""How close a greedy completion comes to a tie: the fp32 model's margin between its top two colours at every
generated pixel of the GPU driver's test images, smallest first. Where that margin is below the fp16 graph's logit
error (ortcheck: about 1e-2 for fashion-mnist-28), an fp16 decoder may pick the other colour and the rest of the
image parts from the fp32 one; benchmarks/README.md ("CUDA") reads the driver's greedy parity against it.

    /usr/bin/python3 bench/gpu/greedy_margins.py models/fashion-mnist-28 [--driver-json benchmarks/gpu/service-h200.json]

The images are bench/gpu/build_kit.sh's (Fashion-MNIST test images 8000-8015) with the top half as the prompt, as
gpu_driver.py sends them; only for packages at their size (28x28, grey), where the service uses them as they are.
With --driver-json the table adds the row where CUDA's completion first differed from the CPU's.
"""
from __future__ import annotations

import argparse
import gzip
import json
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "training"))
from igpt.package_model import load_package_model  # noqa: E402

FASHION = "/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz"
FIRST_IMAGE = 8000  # build_kit.sh's test_images.npz starts here


def margins(model, palette_size: int, prompt: np.ndarray, steps: int, width: int) -> np.ndarray:
    """Greedy decoding after [SOS, prompt]: the top-1 minus top-2 logit at each of `steps` pixels."""
    out = np.empty(steps)
    with torch.no_grad():
        logits, past = model(torch.tensor([[palette_size] + prompt.tolist()]))[:2]
        position = 1 + len(prompt)
        for s in range(steps):
            top = torch.topk(logits[0, -1, :palette_size].double(), 2)
            out[s] = float(top.values[0] - top.values[1])
            if s + 1 < steps:
                logits, past = model(top.indices[:1].view(1, 1), past=past, position_offset=position)[:2]
                position += 1
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("package")
    p.add_argument("--images", type=int, default=16)
    p.add_argument("--driver-json", default=None, help="gpu_driver.py's JSON: adds CUDA's first differing row")
    a = p.parse_args()
    model, manifest = load_package_model(a.package)
    h, w, c = (manifest["image"][k] for k in ("height", "width", "channels"))
    if (h, w, c) != (28, 28, 1):
        print(f"{a.package}: {h}x{w}x{c}; only 28x28 grey packages take the test images as they are", file=sys.stderr)
        return 2
    palette = np.array(manifest["palette"])[:, 0]
    images = np.frombuffer(gzip.open(FASHION).read()[16:], np.uint8).reshape(-1, 28, 28)[FIRST_IMAGE:FIRST_IMAGE + a.images]
    cuda_rows = [None] * a.images
    if a.driver_json:
        record = json.load(open(a.driver_json))["models"].get(manifest["id"], {})
        cuda_rows = (record.get("greedy_first_differing_row") or cuda_rows) + [None] * a.images
    rows = h // 2
    print(f"{manifest['id']}: greedy decoding in fp32 (PyTorch), prompt {rows} rows, {(h - rows) * w} pixels drawn")
    print("| image | smallest top-2 margin | at (row, column) | next two | CUDA's first differing row |")
    print("|--:|--:|---|---|---|")
    for i, image in enumerate(images):
        tokens = np.abs(image.reshape(-1, 1).astype(int) - palette[None]).argmin(1)
        m = margins(model, manifest["palette_size"], tokens[:rows * w], (h - rows) * w, w)
        k, rest = int(m.argmin()), np.sort(m)[1:3]
        differed = "same image" if cuda_rows[i] is None else cuda_rows[i]
        print(f"| {i} | {m.min():.2g} | ({k // w + rows}, {k % w}) | {rest[0]:.2g}, {rest[1]:.2g} | "
              f"{differed if a.driver_json else '-'} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
