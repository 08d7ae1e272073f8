#!/usr/bin/env python3
"""Checks the embeddings and likelihoods routes of a running service against the issue's goals (issue 23).

    /usr/bin/python3 scripts/analysis_eval.py --model fashion-mnist-28                    # starts the service itself
    /usr/bin/python3 scripts/analysis_eval.py --model fashion-mnist-28 --url http://localhost:8080
    /usr/bin/python3 scripts/analysis_eval.py --model fashion-mnist-28 --pytorch          # no service: the same
                                                                                          # numbers from PyTorch

(a) Likelihoods: posts --test test images (brought to the model's resolution with the training project's
    preprocessing, so the service sees the pixels the card was measured on) and each out-of-distribution set of
    scripts/ood_sets.py (generated into its cache when missing) to POST /v1/models/{model}/likelihoods as JSON
    {"image": base64 PNG}. Prints the mean bits_per_pixel against the card's test_bits_per_token (goal: within 3%),
    and per OOD set the AUROC of the raw bits_per_pixel and of the service's ood_score (goal: >= 0.95 each). Also
    checks that ood_score is bits_per_pixel minus the context model's bits per pixel of the quantized image
    (models/README.md, "The out-of-distribution score").
(b) Embeddings: posts --train training images and the test images to POST /v1/models/{model}/embeddings
    ({"model", "layer", "dimensions", "embedding"}) and fits a multinomial logistic regression on the training
    embeddings (standardized; L2 chosen on a fifth of them held out, then refitted on all), printing the test
    accuracy (goal for fashion-mnist-28: >= 87%).
--pytorch computes the same answers with the package's own weights in PyTorch (igpt/analysis.py, what
analysis.onnx computes), for comparison with the service's. Exits 1 when a goal is missed.
"""
from __future__ import annotations

import argparse
import base64
import json
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import List

import numpy as np

from service_client import REPO, png_bytes, post_json, request, running_service

GOAL_BITS_PERCENT = 3.0
GOAL_AUROC = 0.95
GOAL_ACCURACY = {"fashion-mnist-28": 0.87}


def service_backend(base: str, model: str, workers: int):
    """(likelihoods, embeddings): each maps a list of images to the service's JSON answers, in order."""

    def post_all(route: str, images: np.ndarray, extra: dict) -> List[dict]:
        url = f"{base}/v1/models/{model}/{route}"

        def one(i: int) -> dict:
            payload = {"image": base64.b64encode(png_bytes(images[i])).decode(), **extra}
            status, _, body = post_json(url, payload)
            if status != 200:
                raise RuntimeError(f"{route} image {i}: HTTP {status} {body[:300]!r}")
            return json.loads(body)

        with ThreadPoolExecutor(workers) as pool:
            return list(pool.map(one, range(len(images))))

    return (lambda images: post_all("likelihoods", images, {}),
            lambda images, layer=None: post_all("embeddings", images, {} if layer is None else {"layer": layer}))


def pytorch_backend(package: str):
    """The same answers from the package's weights in PyTorch: what analysis.onnx computes, the OOD score as
    models/README.md defines it."""
    from igpt import analysis
    from igpt.palette import quantize

    model, manifest = analysis.load_package_model(package)
    palette = np.asarray(manifest["palette"])
    default_layer = manifest["analysis"]["embedding_layer"]

    def tokens_of(images):
        return quantize(images, palette).reshape(len(images), -1)

    def likelihoods(images):
        t = tokens_of(images)
        _, bits = analysis.analyse(model, t)
        bpp = bits.double().mean(1).numpy()
        ood = analysis.ood_score(bpp, t, manifest["palette_size"], manifest["image"]["width"])
        w = manifest["image"]["width"]
        rows = bits.double().reshape(len(t), -1, w).mean(2).numpy()
        return [{"bits_per_pixel": float(b), "ood_score": float(o), "rows": r.tolist()} for b, o, r in zip(bpp, ood, rows)]

    def embeddings(images, layer=None):
        layer = default_layer if layer is None else layer
        feats, _ = analysis.analyse(model, tokens_of(images))
        return [{"model": manifest["id"], "layer": layer, "dimensions": feats.shape[2], "embedding": f[layer].tolist()}
                for f in feats]

    return likelihoods, embeddings


def fit_probe(xtr: np.ndarray, ytr: np.ndarray, xte: np.ndarray, yte: np.ndarray, n_classes: int):
    """Multinomial logistic regression (igpt.probe's L-BFGS fit): standardize with the training statistics, choose L2
    on the last fifth of the training images, refit on all of them; returns (test accuracy, L2, val accuracy)."""
    import torch

    from igpt.probe import DEFAULT_L2, fit_logistic

    xtr_t, xte_t = torch.tensor(xtr, dtype=torch.float64), torch.tensor(xte, dtype=torch.float64)
    ytr_t, yte_t = torch.tensor(ytr, dtype=torch.int64), torch.tensor(yte, dtype=torch.int64)
    mean, std = xtr_t.mean(0), xtr_t.std(0).clamp_min(1e-6)
    z = lambda a: (a - mean) / std
    k = len(ytr) // 5
    fit, val = slice(k, None), slice(0, k)
    best = None
    for l2 in sorted(DEFAULT_L2, reverse=True):
        W, b = fit_logistic(z(xtr_t[fit]), ytr_t[fit], n_classes, l2)
        acc = float(((z(xtr_t[val]) @ W + b).argmax(1) == ytr_t[val]).double().mean())
        if best is None or acc > best[1]:
            best = (l2, acc)
    W, b = fit_logistic(z(xtr_t), ytr_t, n_classes, best[0])
    return float(((z(xte_t) @ W + b).argmax(1) == yte_t).double().mean()), best[0], best[1]


def table(header: List[str], rows: List[List[object]]) -> str:
    cells = [[str(c) for c in header]] + [[f"{c:.4f}" if isinstance(c, float) else str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    line = lambda r: "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths)))
    return "\n".join([line(cells[0]), "  ".join("-" * w for w in widths)] + [line(r) for r in cells[1:]])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="fashion-mnist-28", help="model id (a folder under models/)")
    p.add_argument("--url", help="a running service; default: start one on a free loopback port")
    p.add_argument("--pytorch", action="store_true", help="no service: the package's weights in PyTorch")
    p.add_argument("--dataset", default="fashion-mnist", help="the model's data set (its test and training splits)")
    p.add_argument("--data", default=None, help="dataset folder (default: the loader's default)")
    p.add_argument("--test", type=int, default=1000, help="first N test images")
    p.add_argument("--train", type=int, default=2000, help="seeded random N training images for the probe")
    p.add_argument("--ood-sets", default=None, help="scripts/ood_sets.py's folder for this model "
                                                    "(default: its cache, ~/.cache/igpt/ood/<model>; made when missing)")
    p.add_argument("--ood", type=int, default=500, help="first N images of each OOD set")
    p.add_argument("--skip", choices=("likelihoods", "embeddings"), default=None, help="leave one part out")
    p.add_argument("--workers", type=int, default=4, help="concurrent requests")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import ood_sets
    from igpt import analysis
    from igpt.data import load_raw, preprocess

    package = os.path.join(REPO, "models", args.model)
    with open(os.path.join(package, "model.json"), encoding="utf-8") as f:
        manifest = json.load(f)
    h, w, c = (manifest["image"][k] for k in ("height", "width", "channels"))
    raw = load_raw(args.dataset, args.data, h, w, c)
    test_images = preprocess(raw.test.images[:args.test], h, w, c)
    test_labels = raw.test.labels[:args.test]
    pick = np.sort(np.random.default_rng(args.seed).permutation(len(raw.train.labels))[:args.train])
    train_images = preprocess(raw.train.images[pick], h, w, c)
    train_labels = raw.train.labels[pick]
    ood_dir = args.ood_sets or os.path.join(ood_sets.DEFAULT_OUT, manifest["id"])
    ood = {}
    for name in ood_sets.SETS:
        path = os.path.join(ood_dir, f"{name}.npz")
        if not os.path.exists(path):
            os.makedirs(ood_dir, exist_ok=True)
            made = ood_sets.make_sets(manifest, 2000, 23, ood_sets.DEFAULT_EMOJI, [name])[name]
            np.savez_compressed(path, images=made)
        with np.load(path) as z:
            ood[name] = z["images"][:args.ood]

    failed = False
    with (_nothing() if args.pytorch else running_service(args.url)) as base:
        if args.pytorch:
            likelihoods, embeddings = pytorch_backend(package)
            source = "PyTorch (the package's weights)"
        else:
            status, _, body = request(f"{base}/v1/models/{args.model}")
            if status != 200:
                print(f"model {args.model}: HTTP {status} {body[:300]!r}")
                return 1
            likelihoods, embeddings = service_backend(base, args.model, args.workers)
            source = f"the service at {base}"
        print(f"{args.model} through {source}: {len(test_labels)} test images, {len(train_labels)} training images, "
              f"OOD sets of {', '.join(f'{k} {len(v)}' for k, v in ood.items())}\n")

        if args.skip != "likelihoods":
            t0 = time.time()
            answers = {"test": likelihoods(test_images)}
            for name, images in ood.items():
                answers[name] = likelihoods(images)
            seconds = time.time() - t0
            n = sum(len(a) for a in answers.values())
            bpp = {k: np.array([r["bits_per_pixel"] for r in a]) for k, a in answers.items()}
            score = {k: np.array([r["ood_score"] for r in a]) for k, a in answers.items()}
            # the service's ood_score against the definition (its bits minus zlib of the quantized image)
            from igpt.palette import quantize
            gaps = []
            for k, images in [("test", test_images)] + list(ood.items()):
                tokens = quantize(images, np.asarray(manifest["palette"])).reshape(len(images), -1)
                gaps.append(np.abs(score[k] - analysis.ood_score(bpp[k], tokens, manifest["palette_size"], w)))
            gaps = np.concatenate(gaps)
            card = (manifest.get("metrics") or {}).get("test_bits_per_token")
            mean = float(bpp["test"].mean())
            print(f"(a) likelihoods: {n} images in {seconds:.1f} s ({n / seconds:.1f} images/s)")
            diff = 100 * (mean - card) / card if card else float("nan")
            print(f"mean bits_per_pixel over {len(bpp['test'])} test images: {mean:.4f}; card's test_bits_per_token "
                  f"{card}; difference {diff:+.2f}% (goal: within {GOAL_BITS_PERCENT:g}%)")
            failed |= not abs(diff) <= GOAL_BITS_PERCENT
            print(f"ood_score vs its definition (bits_per_pixel - the context model's bits per pixel of the quantized "
                  f"image): largest difference {gaps.max():.2e}\n")
            failed |= gaps.max() > 1e-3
            rows = []
            for name in ood:
                raw_auc = analysis.auroc(bpp["test"], bpp[name])
                ood_auc = analysis.auroc(score["test"], score[name])
                rows.append([name, len(bpp[name]), float(bpp[name].mean()), raw_auc, ood_auc])
                failed |= ood_auc < GOAL_AUROC
            print(table(["OOD set", "images", "mean bits/pixel", "AUROC raw bits/pixel", "AUROC ood_score"], rows))
            quantiles = (manifest.get("analysis") or {}).get("ood", {}).get("test_quantiles")
            if quantiles:
                mine = {q: float(np.quantile(score["test"], float(q))) for q in quantiles}
                print("test ood_score quantiles: " + ", ".join(f"{q}: {mine[q]:.4f} (manifest {quantiles[q]})" for q in quantiles))
            print()

        if args.skip != "embeddings":
            t0 = time.time()
            tr = embeddings(train_images)
            te = embeddings(test_images)
            seconds = time.time() - t0
            layer, dims = tr[0]["layer"], tr[0]["dimensions"]
            xtr = np.array([r["embedding"] for r in tr])
            xte = np.array([r["embedding"] for r in te])
            assert xtr.shape[1] == dims, (xtr.shape, dims)
            n_classes = len(manifest.get("classes") or []) or int(train_labels.max()) + 1
            acc, l2, val_acc = fit_probe(xtr, train_labels, xte, test_labels, n_classes)
            goal = GOAL_ACCURACY.get(args.model)
            print(f"(b) embeddings: {len(tr) + len(te)} images in {seconds:.1f} s; layer {layer}, {dims} dimensions")
            print(table(["probe", "train images", "L2 (chosen on a held-out fifth)", "held-out acc", "test acc", "goal"],
                        [["logistic regression", len(tr), f"{l2:g}", val_acc, acc, f">= {goal:.2f}" if goal else "-"]]))
            failed |= goal is not None and acc < goal
    return 1 if failed else 0


class _nothing:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


if __name__ == "__main__":
    sys.exit(main())
