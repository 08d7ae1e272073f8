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
pixel minus a generic compressor's (zlib level 9 over the quantized image's palette colours, raster order).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import re
import time
import zlib
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import onnx
import torch
from onnx import TensorProto
from torch.nn import functional as F

from . import onnx_graph
from .model import IGpt, shift_inputs
from .model_card import ANALYSIS_CARD_TEXT

GRAPH_FILE = "analysis.onnx"
OOD_SCORE = "bits_per_pixel_minus_zlib"
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


def ood_score(bits_per_pixel: np.ndarray, tokens: np.ndarray, palette: Sequence[Sequence[int]]) -> np.ndarray:
    """OOD_SCORE: bits per pixel under the model minus zlib's; higher = less like the training images."""
    return np.asarray(bits_per_pixel, dtype=np.float64) - zlib_bits_per_pixel(tokens, palette)


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


def load_package_model(package: str) -> Tuple[IGpt, Dict[str, Any]]:
    """The PyTorch model a package's fp32 graphs hold (decoder.onnx's weights, classifier.onnx's head), in eval mode:
    what the service computes with, whatever checkpoint it came from."""
    from .export import config_from_manifest

    manifest = read_manifest(package)
    cfg = config_from_manifest(manifest)
    files = manifest["files"]
    w = onnx_graph.load_initializers(os.path.join(package, files["decoder"]["cpu"]["path"]))
    state = {k: torch.from_numpy(np.array(v, dtype=np.float32)) for k, v in w.items() if k.startswith("transformer.")}
    state["lm_head.weight"] = torch.from_numpy(np.ascontiguousarray(w["lm_head.weight_padded"][:, :cfg.palette_size].T))
    if cfg.n_classes:
        c = onnx_graph.load_initializers(os.path.join(package, files["classifier"]["cpu"]["path"]))
        state["score.weight"] = torch.from_numpy(np.ascontiguousarray(c["score.weight_t"].T))
    model = IGpt(cfg)
    model.load_state_dict(state, strict=True)
    return model.eval(), manifest


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


def _point_at_package_weights(graph: onnx.ModelProto, package: str, manifest: Dict[str, Any]) -> None:
    """Makes the graph's float initializers external data at the offsets the decoder's tensors of the same names
    have in the package's weights file (checking the bytes are the same): analysis.onnx adds nothing to it."""
    from . import weights_file

    decoder_path = os.path.join(package, manifest["files"]["decoder"]["cpu"]["path"])
    where = {}
    for t in onnx.load(decoder_path, load_external_data=False).graph.initializer:
        if t.data_location == TensorProto.EXTERNAL:
            e = {kv.key: kv.value for kv in t.external_data}
            where[t.name] = (e["location"], int(e["offset"]), int(e["length"]))
    blobs: Dict[str, bytes] = {}
    for t in graph.graph.initializer:
        if t.data_type not in weights_file.FLOAT_TYPES:
            continue
        if t.name not in where:
            raise ValueError(f"{t.name}: not a tensor of {decoder_path}'s weights file")
        location, offset, length = where[t.name]
        if location not in blobs:
            with open(os.path.join(package, location), "rb") as f:
                blobs[location] = f.read()
        if blobs[location][offset:offset + length] != weights_file.tensor_bytes(t):
            raise ValueError(f"{t.name}: the package's weights differ from the model rebuilt from them")
        weights_file._point(t, location, offset, length)


def add_graph(package: str, embedding_layer: Optional[int] = None) -> List[str]:
    """Writes analysis.onnx into a package from its own weights (pointing into its weights file), adds its parity
    rows to parity.json (the other entries kept; they are recomputed first, to check the rebuilt model is the
    package's), `analysis` to model.json and the file to the card's list. Returns the files written."""
    from .export import _write_json, build_parity

    model, manifest = load_package_model(package)
    cfg = model.config
    has_classifier = bool(manifest["files"].get("classifier"))
    graph = onnx_graph.build_analysis(cfg, model.state_dict())
    _point_at_package_weights(graph, package, manifest)
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
