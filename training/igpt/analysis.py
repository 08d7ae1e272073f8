"""What a model knows besides completions: per-layer embeddings, per-pixel likelihoods and an out-of-distribution
score, computed the way the package's `analysis.onnx` computes them (models/README.md, "analysis.onnx").

    python3 -m igpt analysis models/<id> [--data PREPARED_DIR] [--max-train N] [--ood-sets DIR]

adds analysis.onnx (and its parity rows) to a package exported before it, from the package's own weights; with
--data it also measures on the model rebuilt from those weights (so what the service serves, not a checkpoint):
- a linear probe per layer (probe.py), whose best layer by validation accuracy becomes the manifest's
  `analysis.embedding_layer` (a fine-tuned model's best layer need not be its pretrained model's);
- the mean test bits per pixel through the analysis path (against the card's test_bits_per_token);
- the OOD score's quantiles on the test split (`analysis.ood.test_quantiles`), and with --ood-sets (written by
  scripts/ood_sets.py) the AUROC of each score against each out-of-distribution set.
The results go into model.json and a section of MODEL_CARD.md.

The OOD score (OOD_SCORE) is the complexity-corrected likelihood of Serra et al. (ICLR 2020): the model's bits per
pixel minus a generic image compressor's, here the code length of an adaptive context model (each pixel's token coded
with counts, learned within the image, in the context of its left and upper neighbours: what a JBIG- or LOCO-I-style
arithmetic coder achieves to within 2 bits). It separated Fashion-MNIST from emoji, font digits and noise better
than zlib's code length (the model cards' tables; zlib and PNG stay in the study as variants).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import time
import zlib
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import onnx
import torch
from torch.nn import functional as F

from . import onnx_graph, runtime, weights_file
from .model import IGpt, shift_inputs
from .package_model import load_package_model
from .model_card import ANALYSIS_CARD_TEXT

GRAPH_FILE = "analysis.onnx"
OOD_SCORE = "bits_per_pixel_minus_context_model"
CONTEXT_PRIOR = 0.5  # the Krichevsky-Trofimov estimator's pseudo-count per symbol
QUANTILES = (0.5, 0.95, 0.99)
CARD_SECTION = "## Likelihoods and out-of-distribution score"
LOG2E = 1.0 / math.log(2.0)


# --------------------------------------------------------------------------------------------
# the numbers, in PyTorch


@torch.no_grad()
def analyse(model: IGpt, tokens: np.ndarray, batch_size: int = 64,
            progress: bool = False) -> Tuple[torch.Tensor, torch.Tensor]:
    """What analysis.onnx outputs, from one teacher-forced pass per batch: (features float32 [N, n_layer + 1, C],
    as probe.layer_features; token_bits float32 [N, n], -log2 p(x_i | SOS, x0..x(i-1))). tokens: [N, n] palette
    tokens, no SOS."""
    model.eval()
    cfg = model.config
    blocks = model.transformer.h
    device = next(model.parameters()).device
    feats = torch.empty(len(tokens), cfg.n_layer + 1, cfg.n_embd)
    bits = torch.empty(len(tokens), tokens.shape[1])
    batch_size = runtime.eval_batch_size(batch_size, cfg.n_head, tokens.shape[1], device)
    t0 = time.time()
    for s in range(0, len(tokens), batch_size):
        x = torch.from_numpy(np.asarray(tokens[s:s + batch_size], dtype=np.int64)).to(device)
        h, _, inputs = model.hidden(shift_inputs(x, cfg.sos_token_id), return_layer_inputs=True)
        f = [blocks[i].ln_1(inputs[i]).mean(dim=1) for i in range(cfg.n_layer)] + [h.mean(dim=1)]
        feats[s:s + len(x)] = torch.stack(f, dim=1).float().cpu()                            # [B, L+1, C]
        log_p = F.log_softmax(model.lm_head(h).float(), dim=-1)                               # [B, n, palette]
        bits[s:s + len(x)] = (-log_p.gather(-1, x[..., None])[..., 0] * LOG2E).cpu()           # [B, n]
        if progress and (s // batch_size) % 10 == 0:
            done = s + len(x)
            print(f"  analysed {done}/{len(tokens)} ({(time.time() - t0) / done * (len(tokens) - done):.0f}s left)",
                  flush=True)
    return feats, bits


def pixel_bytes(tokens: np.ndarray, palette: Sequence[Sequence[int]]) -> np.ndarray:
    """[N, n] tokens -> uint8 [N, n * channels]: each pixel's palette colour (grey: 1 byte; colour: R, G, B), raster
    order: the bytes the compressor of the OOD score reads."""
    pal = np.asarray(palette, dtype=np.uint8).reshape(len(palette), -1)
    return pal[np.asarray(tokens, dtype=np.int64)].reshape(len(tokens), -1)


def zlib_bits_per_pixel(tokens: np.ndarray, palette: Sequence[Sequence[int]]) -> np.ndarray:
    """8 * len(zlib.compress(pixel bytes, 9)) / n per image: float64 [N]."""
    raw = pixel_bytes(tokens, palette)
    n = tokens.shape[1]
    return np.array([8.0 * len(zlib.compress(r.tobytes(), 9)) / n for r in raw])


def png_bits_per_pixel(tokens: np.ndarray, palette: Sequence[Sequence[int]], height: int, width: int) -> np.ndarray:
    """PNG's code length in bits per pixel (PIL, level 9, its adaptive row filters), minus nothing: a variant
    compressor the study compares with plain zlib."""
    import io

    from PIL import Image

    raw = pixel_bytes(tokens, palette)
    channels = raw.shape[1] // tokens.shape[1]
    out = np.empty(len(raw))
    for i, r in enumerate(raw):
        im = Image.fromarray(r.reshape(height, width, channels)[..., 0] if channels == 1
                             else r.reshape(height, width, channels), "L" if channels == 1 else "RGB")
        buf = io.BytesIO()
        im.save(buf, "PNG", compress_level=9)
        # the IDAT payload only: PNG's fixed chunks (signature, IHDR, IEND: 57 bytes) say nothing about the image
        out[i] = 8.0 * (len(buf.getvalue()) - 57) / tokens.shape[1]
    return out


def context_model_bits_per_pixel(tokens: np.ndarray, palette_size: int, width: int) -> np.ndarray:
    """The OOD score's generic compressor (models/README.md, "The out-of-distribution score"): float64 [N], the code
    length in bits per pixel of each image's tokens under an adaptive model that starts empty for every image and
    codes the pixels in raster order, pixel (i, j) with token x in the context c = (left, up), left = the token at
    (i, j-1) or K (= palette_size) in column 0, up = the token at (i-1, j) or K in row 0:
        bits += -log2((count[c][x] + 0.5) / (total[c] + 0.5 K)),  then count[c][x] += 1, total[c] += 1.
    """
    K = int(palette_size)
    out = np.empty(len(tokens))
    log2 = math.log2
    for n, row in enumerate(np.asarray(tokens, dtype=np.int64).tolist()):
        counts: Dict[int, int] = {}
        totals: Dict[int, int] = {}
        bits = 0.0
        for p, x in enumerate(row):
            left = row[p - 1] if p % width else K
            up = row[p - width] if p >= width else K
            c = left * (K + 1) + up
            key = c * K + x
            k, t = counts.get(key, 0), totals.get(c, 0)
            bits -= log2((k + CONTEXT_PRIOR) / (t + CONTEXT_PRIOR * K))
            counts[key], totals[c] = k + 1, t + 1
        out[n] = bits / len(row)
    return out


def ood_score(bits_per_pixel: np.ndarray, tokens: np.ndarray, palette_size: int, width: int) -> np.ndarray:
    """OOD_SCORE: bits per pixel under the model minus the context model's; higher = less like the training images."""
    return np.asarray(bits_per_pixel, dtype=np.float64) - context_model_bits_per_pixel(tokens, palette_size, width)


def auroc(in_scores: np.ndarray, out_scores: np.ndarray) -> float:
    """P(an out-of-distribution score > an in-distribution one), ties counted half (Mann-Whitney U)."""
    a = np.asarray(in_scores, dtype=np.float64)
    b = np.asarray(out_scores, dtype=np.float64)
    both = np.concatenate([a, b])
    order = both.argsort(kind="mergesort")
    ranks = np.empty(len(both))
    sorted_ = both[order]
    i = 0
    while i < len(both):  # average ranks over ties
        j = i
        while j + 1 < len(both) and sorted_[j + 1] == sorted_[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2.0 + 1
        i = j + 1
    u = ranks[len(a):].sum() - len(b) * (len(b) + 1) / 2.0
    return float(u / (len(a) * len(b)))


# --------------------------------------------------------------------------------------------
# a package's model


def read_manifest(package: str) -> Dict[str, Any]:
    with open(os.path.join(package, "model.json"), encoding="utf-8") as f:
        return json.load(f)


def default_embedding_layer(n_layer: int, metrics: Dict[str, Any]) -> int:
    """The checkpoint's best probe layer when it recorded one (probe --write-ckpt), else the middle of the network,
    where the paper finds the best linear-probe features. `igpt analysis --data` measures it on the package."""
    best = metrics.get("probe_best_layer") if isinstance(metrics, dict) else None
    if isinstance(best, int) and 0 <= best <= n_layer:
        return best
    return n_layer // 2


def manifest_entry(embedding_layer: int, ood: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """model.json's `analysis` (models/README.md)."""
    entry: Dict[str, Any] = {"cpu": {"path": GRAPH_FILE, "dtype": "float32"}, "embedding_layer": int(embedding_layer)}
    if ood:
        entry["ood"] = ood
    return entry


def add_graph(package: str, embedding_layer: Optional[int] = None) -> List[str]:
    """Writes analysis.onnx into a package from its own weights (pointing into its weights file), adds its parity
    rows to parity.json (the other entries kept; they are recomputed first, to check the rebuilt model is the
    package's), `analysis` to model.json and the file to the card's list. Returns the files written."""
    from .export import _write_json, build_parity

    model, manifest = load_package_model(package)
    cfg = model.config
    has_classifier = bool(manifest["files"].get("classifier"))
    graph = onnx_graph.build_analysis(cfg, model.state_dict())
    weights_file.point_into_package(graph, package, [manifest["files"]["decoder"]["cpu"]["path"]])
    onnx.save_model(graph, os.path.join(package, GRAPH_FILE))

    parity_path = os.path.join(package, manifest["files"].get("parity") or "parity.json")
    with open(parity_path, encoding="utf-8") as f:
        parity = json.load(f)
    fresh = build_parity(model, has_classifier)
    if fresh["prompt"] != parity["prompt"] or fresh["decode_tokens"] != parity["decode_tokens"]:
        raise ValueError(f"{parity_path}: not the exporter's parity tokens; re-export the package instead")
    worst = float(np.abs(np.array(fresh["prefill_logits"]) - np.array(parity["prefill_logits"])).max())
    if worst > parity.get("tolerance", 1e-4):
        raise ValueError(f"{parity_path}: the rebuilt model's logits differ by {worst:g} from the package's parity")
    parity["analysis"] = fresh["analysis"]
    _write_json(parity_path, parity)

    old = manifest.get("analysis") or {}
    layer = embedding_layer if embedding_layer is not None else old.get(
        "embedding_layer", default_embedding_layer(cfg.n_layer, manifest.get("metrics") or {}))
    set_manifest_analysis(package, manifest_entry(layer, old.get("ood")))
    card = os.path.join(package, manifest["files"].get("model_card") or "MODEL_CARD.md")
    if os.path.exists(card):
        text = open(card, encoding="utf-8").read()
        if ANALYSIS_CARD_TEXT not in text and "`weights.data` (" in text:  # where export puts it
            text = text.replace("`weights.data` (", ANALYSIS_CARD_TEXT + "`weights.data` (", 1)
            with open(card, "w", encoding="utf-8") as f:
                f.write(text)
    return [GRAPH_FILE, os.path.basename(parity_path), "model.json"]


def set_manifest_analysis(package: str, entry: Dict[str, Any]) -> None:
    """model.json with `analysis` = entry, placed after `files` (the rest untouched)."""
    from .export import _write_json

    manifest = read_manifest(package)
    manifest.pop("analysis", None)
    out: Dict[str, Any] = {}
    for k, v in manifest.items():
        out[k] = v
        if k == "files":
            out["analysis"] = entry
    if "analysis" not in out:
        out["analysis"] = entry
    _write_json(os.path.join(package, "model.json"), out)


# --------------------------------------------------------------------------------------------
# `python3 -m igpt analysis`: measure on the package's own weights


def add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("package", help="package folder, e.g. models/fashion-mnist-28")
    p.add_argument("--data", default=None, help="prepared data of the model's data set (igpt prepare): probes, bits, "
                                                "OOD quantiles; without it only the graph is added")
    p.add_argument("--max-train", type=int, default=2000, help="seeded subset of N training images for the probes")
    p.add_argument("--max-val", type=int, default=500, help="first N validation images (the probes' layer choice)")
    p.add_argument("--max-test", type=int, default=1000, help="first N test images (probe accuracy, bits, OOD)")
    p.add_argument("--ood-sets", default=None, help="folder of scripts/ood_sets.py's <set>.npz for this model: AUROCs")
    p.add_argument("--max-ood", type=int, default=300, help="first N images of each OOD set")
    p.add_argument("--embedding-layer", type=int, default=None, help="use this layer instead of the probes' best")
    p.add_argument("--cache", default=None, help="folder keeping each split's features and bits between runs")
    p.add_argument("--no-card", action="store_true", help="leave MODEL_CARD.md alone")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--threads", type=int, default=0, help="CPU threads (0: all cores)")
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda")
    p.add_argument("--seed", type=int, default=0)


def _split_tokens(data_dir: str, split: str, limit: int, seed: int, random_subset: bool):
    from .data import load_prepared

    x, y = load_prepared(data_dir, split)
    if 0 < limit < len(y):
        idx = (np.sort(np.random.default_rng(seed).permutation(len(y))[:limit]) if random_subset
               else np.arange(limit))
        x, y = x[idx], y[idx]
    return x.astype(np.int64), y


def _measured(model: IGpt, name: str, tokens: np.ndarray, cache: Optional[str], batch_size: int):
    """(features, bits) of a set, from the cache when it holds these very tokens."""
    path = os.path.join(cache, f"{name}.npz") if cache else None
    if path and os.path.exists(path):
        with np.load(path) as z:
            if z["tokens"].shape == tokens.shape and np.array_equal(z["tokens"], tokens):
                return torch.from_numpy(z["features"]), torch.from_numpy(z["bits"])
    t0 = time.time()
    print(f"{name}: {len(tokens)} images", flush=True)
    feats, bits = analyse(model, tokens, batch_size, progress=True)
    print(f"{name}: {time.time() - t0:.0f}s", flush=True)
    if path:
        os.makedirs(cache, exist_ok=True)
        np.savez(path, tokens=tokens.astype(np.uint16), features=feats.numpy(), bits=bits.numpy())
    return feats, bits


def scores(bits: torch.Tensor, tokens: np.ndarray, manifest: Dict[str, Any]) -> Dict[str, np.ndarray]:
    """The candidate OOD scores of a set (higher = less like the training images): raw bits per pixel, the chosen
    complexity-corrected score (the context model), the same with zlib's and with PNG's code lengths, and a two-sided
    typicality score |bpp - median test bpp| (filled in by the caller, which knows the test median)."""
    img = manifest["image"]
    bpp = bits.double().mean(1).numpy()
    return {"bits_per_pixel": bpp,
            OOD_SCORE: ood_score(bpp, tokens, manifest["palette_size"], img["width"]),
            "bits_per_pixel_minus_zlib": bpp - zlib_bits_per_pixel(tokens, manifest["palette"]),
            "bits_per_pixel_minus_png": bpp - png_bits_per_pixel(tokens, manifest["palette"], img["height"], img["width"])}


def main(args) -> int:
    from .palette import quantize
    from .probe import markdown_table, probe_all
    from .runtime import configure_threads, pick_device

    configure_threads(args.threads)
    package = args.package
    if not os.path.exists(os.path.join(package, GRAPH_FILE)):
        print(f"{package}: added {', '.join(add_graph(package, args.embedding_layer))}")
    if not args.data:
        if args.embedding_layer is not None:
            entry = read_manifest(package)["analysis"]
            set_manifest_analysis(package, manifest_entry(args.embedding_layer, entry.get("ood")))
        return 0
    model, manifest = load_package_model(package)
    model = model.to(pick_device(args.device))  # fp32 on any device: the numbers are the package's
    cfg = model.config
    cache = os.path.join(args.cache, manifest["id"]) if args.cache else None
    tr = _split_tokens(args.data, "train", args.max_train, args.seed, True)
    va = _split_tokens(args.data, "val", args.max_val, args.seed, False)
    te = _split_tokens(args.data, "test", args.max_test, args.seed, False)
    if tr[0].shape[1] != cfg.n_positions:
        raise SystemExit(f"{args.data}: {tr[0].shape[1]} tokens per image, the model {cfg.n_positions}")
    # bits per pixel and the OOD scores (first: the test split serves the probes too)
    test_feats, test_bits = _measured(model, "test", te[0], cache, args.batch_size)
    test_scores = scores(test_bits, te[0], manifest)
    median = float(np.median(test_scores["bits_per_pixel"]))
    typical = lambda s: np.abs(s["bits_per_pixel"] - median)
    test_scores["typicality"] = typical(test_scores)
    results: Dict[str, Dict[str, Any]] = {}
    cut = {q: float(np.quantile(test_scores[OOD_SCORE], q)) for q in QUANTILES}
    if args.ood_sets:
        for name in sorted(f[:-4] for f in os.listdir(args.ood_sets) if f.endswith(".npz")):
            with np.load(os.path.join(args.ood_sets, f"{name}.npz")) as z:
                images = z["images"][:args.max_ood]
            tokens = quantize(images, np.asarray(manifest["palette"])).reshape(len(images), -1).astype(np.int64)
            s = scores(_measured(model, f"ood-{name}", tokens, cache, args.batch_size)[1], tokens, manifest)
            s["typicality"] = typical(s)
            results[name] = {"images": len(tokens), "mean_bits_per_pixel": float(s["bits_per_pixel"].mean()),
                             **{k: auroc(test_scores[k], s[k]) for k in test_scores},
                             "above_test_quantile": {str(q): float((s[OOD_SCORE] > cut[q]).mean()) for q in QUANTILES[1:]}}

    # probes on the package's own weights (a fine-tuned model's best layer is not its pretrained model's)
    train_feats, _ = _measured(model, "train", tr[0], cache, args.batch_size)
    val_feats, _ = _measured(model, "val", va[0], cache, args.batch_size)
    n_classes = len(manifest.get("classes") or []) or int(max(tr[1].max(), va[1].max(), te[1].max())) + 1
    rows = probe_all(train_feats, tr[1], val_feats, va[1], test_feats, te[1], n_classes)
    best = max(rows, key=lambda r: r["val_accuracy"])
    layer = args.embedding_layer if args.embedding_layer is not None else best["layer"]
    print("\n" + markdown_table(rows) + "\n")

    chosen = test_scores[OOD_SCORE]
    ood = {"score": OOD_SCORE, "test_quantiles": {str(q): round(float(np.quantile(chosen, q)), 4) for q in QUANTILES}}
    set_manifest_analysis(package, manifest_entry(layer, ood))
    report = {
        "test_images": len(te[1]), "mean_bits_per_pixel": float(test_scores["bits_per_pixel"].mean()),
        "card_test_bits_per_token": (manifest.get("metrics") or {}).get("test_bits_per_token"),
        "probe_images": {"train": len(tr[1]), "val": len(va[1]), "test": len(te[1])},
        "probe": rows, "embedding_layer": layer, "ood": ood, "auroc": results,
        "mean_compressor_bits_per_pixel": float((test_scores["bits_per_pixel"] - chosen).mean()),
    }
    print(json.dumps({k: v for k, v in report.items() if k != "probe"}, indent=1))
    if cache:
        with open(os.path.join(cache, "report.json"), "w") as f:
            json.dump(report, f, indent=1)
    if not args.no_card:
        write_card_section(package, card_section(report, manifest))
    return 0


def card_section(report: Dict[str, Any], manifest: Dict[str, Any]) -> str:
    """The card's "Likelihoods and out-of-distribution score" section from a report of main()."""
    n_layer = manifest["architecture"]["n_layer"]
    card_bits = report["card_test_bits_per_token"]
    bpp = report["mean_bits_per_pixel"]
    lines = [CARD_SECTION, "",
             "Measured by `python3 -m igpt analysis` on the model rebuilt from this package's own weights (what the "
             "service computes with `analysis.onnx`).", "",
             f"**Bits per pixel.** Mean over the first {report['test_images']:,} test images: {bpp:.4f} bits per pixel"
             + (f" (the card's `test_bits_per_token`, over the whole test split: {card_bits:.4f}; "
                f"{100 * (bpp - card_bits) / card_bits:+.1f}%)." if card_bits else "."), "",
             f"**Embeddings.** A linear probe per layer on this package's weights ({report['probe_images']['train']:,} "
             f"training images, layer chosen on {report['probe_images']['val']:,} validation images, scored on "
             f"{report['probe_images']['test']:,} test images); layer {n_layer} is the final norm's output. The "
             f"default embedding layer is {report['embedding_layer']}.", "",
             "| layer | val accuracy | test accuracy |", "|---|---|---|"]
    for r in report["probe"]:
        mark = " **(default)**" if r["layer"] == report["embedding_layer"] else ""
        lines.append(f"| {r['layer']}{mark} | {r['val_accuracy']:.4f} | {r['test_accuracy']:.4f} |")
    recorded = (manifest.get("metrics") or {}).get("probe_best_layer")
    if isinstance(recorded, int) and recorded != report["embedding_layer"]:
        lines += ["", f"The metrics' `linear_probe` table above is the checkpoint's record (for a fine-tuned model, the "
                  f"pretrained model's probes: best layer {recorded}); these weights read best at layer "
                  f"{report['embedding_layer']}."]
    q = report["ood"]["test_quantiles"]
    lines += ["", f"**Out-of-distribution score.** `ood_score` = bits per pixel - the bits per pixel of a generic "
              "image coder (an adaptive context model over each pixel's left and upper neighbours, learned within the "
              "image: `models/README.md`), the complexity-corrected likelihood of Serrà et al. (ICLR 2020): higher "
              f"means less like the training images. On the test images its median is {q['0.5']}, its 95th percentile "
              f"{q['0.95']} and its 99th {q['0.99']} (the manifest's `analysis.ood.test_quantiles`)."]
    if report["auroc"]:
        lines += ["", "AUROC of each score, test images against each out-of-distribution set (1 = every OOD image "
                  "scores above every test image; 0.5 = chance; below 0.5 = the score ranks them as more typical than "
                  "the test images). Sets from `scripts/ood_sets.py`.", "",
                  "| set | images | mean bits/pixel | raw bits/pixel | bits - context model (`ood_score`) | bits - zlib "
                  "| bits - PNG | typicality |",
                  "|---|---|---|---|---|---|---|---|"]
        inverted = [name for name, r in report["auroc"].items() if r["bits_per_pixel"] < 0.5]
        for name, r in report["auroc"].items():
            lines.append(f"| {name} | {r['images']} | {r['mean_bits_per_pixel']:.3f} | {r['bits_per_pixel']:.3f} | "
                         f"{r[OOD_SCORE]:.3f} | {r['bits_per_pixel_minus_zlib']:.3f} | "
                         f"{r['bits_per_pixel_minus_png']:.3f} | {r['typicality']:.3f} |")
        lines += ["", "bits - zlib: zlib level 9 over the palette colours' bytes; bits - PNG: PIL's PNG (level 9, adaptive "
                  "filters) less its fixed chunks; typicality: |bits per pixel - the test median| (two-sided, Nalisnick "
                  "et al. 2019). Each score's AUROC is measured on the same test images whose quantiles are above."]
        lines += ["", "Share of each set whose `ood_score` lies above the test images' 95th and 99th percentiles (the test "
                  "images: 5% and 1% by construction), what a threshold at those quantiles flags:", "",
                  "| set | above the 95th | above the 99th |", "|---|---|---|"]
        for name, r in report["auroc"].items():
            a = r["above_test_quantile"]
            lines.append(f"| {name} | {a['0.95']:.3f} | {a['0.99']:.3f} |")
        if inverted:
            lines += ["", f"Raw likelihood fails as Nalisnick et al. (2019) found: the model gives {', '.join(inverted)} "
                      "*higher* likelihood than its own test images (AUROC below 0.5); subtracting the image's "
                      "complexity (the `ood_score` column) separates them."]
    return "\n".join(lines) + "\n"


def write_card_section(package: str, section: str) -> None:
    """Replaces the card's section (up to the next '## ' heading) or appends it."""
    path = os.path.join(package, "MODEL_CARD.md")
    text = open(path, encoding="utf-8").read()
    start = text.find(CARD_SECTION)
    if start < 0:
        text = text.rstrip("\n") + "\n\n" + section
    else:
        end = text.find("\n## ", start + len(CARD_SECTION))
        text = text[:start] + section + (text[end + 1:] if end >= 0 else "")
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
