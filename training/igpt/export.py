"""`python3 -m igpt export`: a checkpoint -> a model package (models/README.md, format version 2).

Writes decoder.onnx (fp32) and its step segments, decoder.fp16.onnx (unless --no-fp16), classifier.onnx
and classifier.fp16.onnx (when the checkpoint has a `score` head), analysis.onnx (per-layer embeddings and
per-pixel bits; its OOD calibration and probe-chosen layer come from `igpt analysis`), their weights (weights.data, each weight
stored once; the fp16 graphs cast them to float16), genai_config.json, parity.json, MODEL_CARD.md and, last,
model.json (so a half-written folder is never a package).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import re
from typing import Any, Dict, List, Optional

import torch

from . import analysis, onnx_graph, weights_file
from .checkpoint import load_checkpoint
from .genai_config import build_genai_config
from .model import IGpt, IGptConfig
from .model_card import SEGMENTS_CARD_TEXT, build_model_card
from .sampling_defaults import argument as sampling_argument, with_sampling

FORMAT_VERSION = 2
PARITY_TOLERANCE = 1e-4
PARITY_PROMPT_LEN = 8      # SOS + 7 pixels (capped by n_positions)
PARITY_DECODE_STEPS = 4
PARITY_CLASSIFIER_ROWS = 2
PARITY_ANALYSIS_ROWS = 2


def add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--ckpt", required=True, help="training checkpoint (.pt)")
    p.add_argument("--out", required=True, help="package folder to write, e.g. models/fashion-mnist-28")
    p.add_argument("--id", default=None, help="model id (default: the --out folder's name)")
    p.add_argument("--description", default=None, help="one line for the manifest and the card")
    p.add_argument("--no-fp16", action="store_true", help="skip the fp16 graphs (the CUDA variants)")
    p.add_argument("--card-extra", default=None, help="markdown file appended to MODEL_CARD.md")
    p.add_argument("--sampling", type=sampling_argument, default=None, metavar="JSON",
                   help='default sampling settings for the manifest, any of temperature, top_k, top_p, e.g. '
                        '\'{"temperature": 0.9, "top_p": 0.95}\' (python3 -m igpt sampling sets them later)')
    p.add_argument("--embedding-layer", type=int, default=None,
                   help="analysis.embedding_layer (0..n_layer; default: the checkpoint's best probe layer, else the "
                        "middle; `python3 -m igpt analysis --data` measures it on the package)")


def main(args) -> int:
    model, ckpt = load(args.ckpt)
    extra = open(args.card_extra, encoding="utf-8").read() if args.card_extra else None
    files = export_package(model, ckpt, args.out, model_id=args.id, description=args.description,
                           fp16=not args.no_fp16, card_extra=extra,
                           sampling=getattr(args, "sampling", None),  # scripts build their own Namespace
                           embedding_layer=getattr(args, "embedding_layer", None))
    for name in sorted(files):
        print(f"{os.path.join(args.out, name)}  {os.path.getsize(os.path.join(args.out, name)):,} bytes")
    return 0


def load(path: str):
    """(model in fp32 eval mode on the CPU, checkpoint dict)."""
    model, ckpt = load_checkpoint(path)
    return model.float().cpu().eval(), ckpt


# --------------------------------------------------------------------------------------------
# the package


def export_package(model: IGpt, ckpt: Dict[str, Any], out: str, model_id: Optional[str] = None,
                   description: Optional[str] = None, fp16: bool = True,
                   card_extra: Optional[str] = None, sampling: Optional[Dict[str, Any]] = None,
                   embedding_layer: Optional[int] = None) -> List[str]:
    """Write every package file into `out`; returns the file names written. `sampling`: the manifest's default
    sampling settings (igpt/sampling_defaults.py), none when None; `embedding_layer`: analysis.embedding_layer."""
    cfg: IGptConfig = model.config
    if getattr(cfg, "bidirectional", False):
        raise ValueError("a bidirectional (BERT-objective) model has no causal KV-cache decoder, which a "
                         "model package requires; fine-tune it causally or export a causal model")
    model = model.float().cpu().eval()
    model_id = model_id or os.path.basename(os.path.normpath(out))
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", model_id):
        raise ValueError(f"model id {model_id!r}: use letters, digits, '.', '_' and '-'")
    palette = _palette(ckpt, cfg)
    classes = [str(c) for c in (ckpt.get("classes") or [])]
    state = model.state_dict()
    has_classifier = cfg.n_classes > 0 and "score.weight" in state
    if not has_classifier:
        classes = []
    elif len(classes) != cfg.n_classes:
        print(f"warning: the checkpoint names {len(classes)} classes for a {cfg.n_classes}-class head; "
              "using 'class 0' ..")
        classes = [f"class {i}" for i in range(cfg.n_classes)]
    description = description or _default_description(ckpt, cfg)
    if embedding_layer is None:
        embedding_layer = analysis.default_embedding_layer(cfg.n_layer, ckpt.get("metrics") or {})
    if not 0 <= embedding_layer <= cfg.n_layer:
        raise ValueError(f"embedding layer {embedding_layer}: the model has layers 0..{cfg.n_layer} (n_layer: ln_f)")
    os.makedirs(out, exist_ok=True)
    manifest_path = os.path.join(out, "model.json")
    if os.path.exists(manifest_path):
        os.remove(manifest_path)  # the folder is not a package until the new manifest is written

    written = write_graphs(cfg, state, out, fp16, has_classifier)

    manifest = build_manifest(cfg, ckpt, model_id, description, palette, classes, fp16, has_classifier,
                              model.num_params(), weights_entries(out), embedding_layer)
    manifest = with_sampling(manifest, sampling)
    _write_json(os.path.join(out, "genai_config.json"), build_genai_config(cfg))
    _write_json(os.path.join(out, "parity.json"), build_parity(model, has_classifier))
    with open(os.path.join(out, "MODEL_CARD.md"), "w", encoding="utf-8") as f:
        f.write(build_model_card(cfg, ckpt, manifest, model.num_params(), card_extra))
    _write_json(manifest_path, manifest)
    return written + ["genai_config.json", "parity.json", "MODEL_CARD.md", "model.json"]


def write_graphs(cfg: IGptConfig, state: Dict[str, Any], out: str, fp16: bool, has_classifier: bool) -> List[str]:
    """The ONNX graphs and their weights file (each weight once, the fp16 graphs casting the fp32 tensors:
    weights_file.py); files of an earlier export that these would not match are removed. Returns the file names written."""
    fp32 = {"decoder.onnx": onnx_graph.build_decoder(cfg, state, fp16=False)}
    fp32.update(zip(onnx_graph.step_segment_names(cfg.n_layer),
                    onnx_graph.build_step_segments(cfg, onnx_graph.decoder_weights(cfg, state))))
    half = {"decoder.fp16.onnx": onnx_graph.build_decoder(cfg, state, fp16=True)} if fp16 else {}
    if has_classifier:
        fp32["classifier.onnx"] = onnx_graph.build_classifier(cfg, state)
        if fp16:
            half["classifier.fp16.onnx"] = onnx_graph.build_classifier(cfg, state, fp16=True)
    fp32[analysis.GRAPH_FILE] = onnx_graph.build_analysis(cfg, state)  # the decoder's tensors: nothing new stored
    written = list(fp32) + list(half) + [weights_file.FP32_FILE]
    for name in os.listdir(out):
        optional = re.fullmatch(r"(decoder\.step\.\d+|decoder\.fp16|classifier(\.fp16)?)\.onnx", name)
        if (optional or name.endswith(".onnx.data") or name == weights_file.FP16_FILE) and name not in written:
            os.remove(os.path.join(out, name))  # earlier layouts' weights files, or a graph these weights do not match
    tensors = {t.name: t for m in fp32.values() for t in m.graph.initializer}
    for m in half.values():
        weights_file.cast_from_fp32(m, tensors)
    graphs = {**fp32, **half}
    weights_file.save_graphs(list(graphs.values()), [os.path.join(out, n) for n in graphs], weights_file.FP32_FILE)
    return written


def weights_entries(package: str) -> List[Dict[str, Any]]:
    """model.json's files.weights: the weights file and its size (the fp16 graphs read it too)."""
    return [weights_file.manifest_entry(package, weights_file.FP32_FILE, "float32")]


def _dumps(obj: Any, indent: int = 1) -> str:
    """JSON with indentation, but every list of numbers on one line (palette entries, logits rows)."""
    text = json.dumps(obj, indent=indent)
    def one_line(m: re.Match) -> str:
        body = m.group(1).strip()
        return "[" + ", ".join(x.strip() for x in body.split(",")) + "]" if body else "[]"

    return re.sub(r"\[\s*([-0-9.eE+,\s]*?)\s*\]", one_line, text)


def _write_json(path: str, obj: Any) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(_dumps(obj))
        f.write("\n")
    os.replace(tmp, path)


def _palette(ckpt: Dict[str, Any], cfg: IGptConfig) -> List[List[int]]:
    palette = ckpt.get("palette")
    if palette is None:
        raise ValueError("checkpoint has no palette")
    palette = [[int(c) for c in (entry if isinstance(entry, (list, tuple)) else [entry])] for entry in
               (palette.tolist() if hasattr(palette, "tolist") else palette)]
    if len(palette) != cfg.palette_size or any(len(e) != cfg.channels for e in palette):
        raise ValueError(f"palette must have {cfg.palette_size} entries of {cfg.channels} channel(s)")
    if any(not 0 <= c <= 255 for e in palette for c in e):
        raise ValueError("palette values must be 0-255")
    return palette


def _default_description(ckpt: Dict[str, Any], cfg: IGptConfig) -> str:
    name = (ckpt.get("dataset") or {}).get("name", "images")
    colours = "grey" if cfg.channels == 1 else "colour"
    return (f"iGPT trained on {name} at {cfg.height}x{cfg.width} with a {cfg.palette_size}-level "
            f"{colours} palette")


# --------------------------------------------------------------------------------------------
# model.json


def _scalars(d: Any, prefix: str = "", depth: int = 0) -> Dict[str, Any]:
    """The manifest's metrics: numbers and strings, and those in nested dicts (two levels) with their
    keys joined by '.' (e.g. `linear_probe.block 3.test_accuracy`); lists and matrices (the
    confusion matrix) are left to the card."""
    out: Dict[str, Any] = {}
    if not isinstance(d, dict):
        return out
    for k, v in d.items():
        key = f"{prefix}{k}"
        if hasattr(v, "item") and getattr(v, "ndim", 1) == 0:
            v = v.item()
        if isinstance(v, bool):
            out[key] = int(v)
        elif isinstance(v, (int, float)):
            if not (isinstance(v, float) and not math.isfinite(v)):
                out[key] = v
        elif isinstance(v, str):
            out[key] = v
        elif isinstance(v, dict) and depth < 2:
            out.update(_scalars(v, key + ".", depth + 1))
    return out


def build_manifest(cfg: IGptConfig, ckpt: Dict[str, Any], model_id: str, description: str,
                   palette: List[List[int]], classes: List[str], fp16: bool, has_classifier: bool,
                   n_params: int, weights: List[Dict[str, Any]], embedding_layer: int) -> Dict[str, Any]:
    dataset = ckpt.get("dataset") or {}
    decoder = {"cpu": {"path": "decoder.onnx", "dtype": "float32",
                       "step_segments": onnx_graph.step_segment_names(cfg.n_layer)}}
    classifier = {"cpu": {"path": "classifier.onnx", "dtype": "float32"}}
    if fp16:
        decoder["cuda"] = {"path": "decoder.fp16.onnx", "dtype": "float16"}
        classifier["cuda"] = {"path": "classifier.fp16.onnx", "dtype": "float16"}
    training = {
        "dataset": str(dataset.get("name", "unknown")),
        "step": int(ckpt.get("step", 0) or 0),
        "tokens_seen": int(ckpt.get("tokens_seen", 0) or 0),
        "wall_time_s": float(ckpt.get("wall_time_s", 0) or 0),
        "hardware": str(ckpt.get("hardware", "unknown")),
        "parameters": int(n_params),
    }
    return {
        "format_version": FORMAT_VERSION,
        "id": model_id,
        "description": description,
        "image": {"height": cfg.height, "width": cfg.width, "channels": cfg.channels},
        "palette_size": cfg.palette_size,
        "palette": palette,
        "sos_token_id": cfg.sos_token_id,
        "vocab_size": cfg.vocab_size,
        "architecture": {
            "n_layer": cfg.n_layer, "n_head": cfg.n_head, "n_embd": cfg.n_embd, "head_size": cfg.head_size,
            "n_positions": cfg.n_positions, "norm_eps": cfg.norm_eps, "activation": "quick_gelu",
        },
        "classes": classes,
        "files": {
            "weights": weights,
            "decoder": decoder,
            "classifier": classifier if has_classifier else None,
            "genai_config": "genai_config.json",
            "parity": "parity.json",
            "model_card": "MODEL_CARD.md",
        },
        "analysis": analysis.manifest_entry(embedding_layer),
        "training": training,
        "metrics": _scalars(ckpt.get("metrics") or {}),
    }


def write_step_segments(cfg: IGptConfig, weights: Dict[str, Any], out: str) -> List[str]:
    """decoder.step.*.onnx beside decoder.onnx (their weights point into it); stale ones removed."""
    names = onnx_graph.save_step_segments(onnx_graph.build_step_segments(cfg, weights), os.path.join(out, "decoder.onnx"))
    for name in os.listdir(out):
        if re.fullmatch(r"decoder\.step\.\d+\.onnx", name) and name not in names:
            os.remove(os.path.join(out, name))
    return names


def config_from_manifest(manifest: Dict[str, Any]) -> IGptConfig:
    """The model config a package's model.json describes (the inverse of build_manifest's shape fields)."""
    a, img = manifest["architecture"], manifest["image"]
    return IGptConfig(palette_size=manifest["palette_size"], n_positions=a["n_positions"], n_embd=a["n_embd"],
                      n_layer=a["n_layer"], n_head=a["n_head"], n_classes=len(manifest.get("classes") or []),
                      norm_eps=a.get("norm_eps", 1e-5), height=img["height"], width=img["width"], channels=img["channels"])


def add_step_segments(package: str) -> List[str]:
    """Adds the step segments to a package exported before them, from its own decoder.onnx."""
    manifest_path = os.path.join(package, "model.json")
    with open(manifest_path, encoding="utf-8") as f:
        manifest = json.load(f)
    cpu = manifest["files"]["decoder"]["cpu"]
    weights = onnx_graph.load_initializers(os.path.join(package, cpu["path"]))
    names = write_step_segments(config_from_manifest(manifest), weights, package)
    cpu["step_segments"] = names
    _write_json(manifest_path, manifest)
    card = os.path.join(package, manifest["files"].get("model_card") or "MODEL_CARD.md")
    if os.path.exists(card):  # the card's list of package files
        with open(card, encoding="utf-8") as f:
            text = f.read()
        line = "`decoder.onnx` (fp32, CPU), "
        if SEGMENTS_CARD_TEXT not in text and line in text:
            with open(card, "w", encoding="utf-8") as f:
                f.write(text.replace(line, line + SEGMENTS_CARD_TEXT, 1))
    return names


# --------------------------------------------------------------------------------------------
# parity.json


def _with_sos_column(logits: torch.Tensor) -> List[List[float]]:
    """[N, palette] -> rows of palette+1 floats with -1e9 at SOS, as the ONNX graphs output."""
    pad = torch.full((logits.shape[0], 1), onnx_graph.SOS_LOGIT, dtype=torch.float32)
    return torch.cat([logits.float(), pad], dim=1).tolist()


@torch.no_grad()
def build_parity(model: IGpt, has_classifier: bool, seed: int = 1234) -> Dict[str, Any]:
    cfg = model.config
    gen = torch.Generator().manual_seed(seed)
    n = cfg.n_positions
    prompt_len = max(1, min(PARITY_PROMPT_LEN, n - PARITY_DECODE_STEPS))
    steps = max(0, min(PARITY_DECODE_STEPS, n - prompt_len))
    pixels = torch.randint(0, cfg.palette_size, (prompt_len - 1 + steps,), generator=gen)
    prompt = torch.cat([torch.tensor([cfg.sos_token_id]), pixels[:prompt_len - 1]])
    decode = pixels[prompt_len - 1:]

    logits, past = model(prompt[None])                     # [1, len, palette]
    prefill = _with_sos_column(logits[0])
    decode_logits = []
    pos = prompt_len
    for tok in decode.tolist():
        step_logits, past = model(torch.tensor([[tok]]), past=past, position_offset=pos)
        decode_logits += _with_sos_column(step_logits[0])
        pos += 1
    parity: Dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "tolerance": PARITY_TOLERANCE,
        "prompt": prompt.tolist(),
        "prefill_logits": prefill,
        "decode_tokens": decode.tolist(),
        "decode_logits": decode_logits,
    }
    if has_classifier:
        rows = torch.randint(0, cfg.palette_size, (PARITY_CLASSIFIER_ROWS, n), generator=gen)
        rows[:, 0] = cfg.sos_token_id                       # [SOS, x0 .. x(n-2)]
        class_logits, _ = model.classify(rows)
        parity["classifier"] = {"input_ids": rows.tolist(), "logits": class_logits.float().tolist()}
    # analysis.onnx: image tokens without SOS; drawn last, so the entries above stay what they were before it
    images = torch.randint(0, cfg.palette_size, (PARITY_ANALYSIS_ROWS, n), generator=gen)
    features, bits = analysis.analyse(model, images.numpy())
    scores = analysis.ood_score(bits.double().mean(1).numpy(), images.numpy(), cfg.palette_size, cfg.width)
    parity["analysis"] = {"input_ids": images.tolist(), "features": features.tolist(), "token_bits": bits.tolist(),
                          "ood_score": scores.tolist()}
    return parity
