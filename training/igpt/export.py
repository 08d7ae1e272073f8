"""`python3 -m igpt export`: a checkpoint -> a model package (models/README.md, format version 1).

Writes decoder.onnx (fp32), decoder.fp16.onnx (unless --no-fp16), classifier.onnx and
classifier.fp16.onnx (when the checkpoint has a `score` head), genai_config.json, parity.json,
MODEL_CARD.md and, last, model.json (so a half-written folder is never a package).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import re
from typing import Any, Dict, List, Optional

import torch

from . import onnx_graph
from .checkpoint import load_checkpoint
from .model import IGpt, IGptConfig

FORMAT_VERSION = 1
PARITY_TOLERANCE = 1e-4
PARITY_PROMPT_LEN = 8      # SOS + 7 pixels (capped by n_positions)
PARITY_DECODE_STEPS = 4
PARITY_CLASSIFIER_ROWS = 2


def add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--ckpt", required=True, help="training checkpoint (.pt)")
    p.add_argument("--out", required=True, help="package folder to write, e.g. models/fashion-mnist-28")
    p.add_argument("--id", default=None, help="model id (default: the --out folder's name)")
    p.add_argument("--description", default=None, help="one line for the manifest and the card")
    p.add_argument("--no-fp16", action="store_true", help="skip the fp16 graphs (the CUDA variants)")
    p.add_argument("--card-extra", default=None, help="markdown file appended to MODEL_CARD.md")


def main(args) -> int:
    model, ckpt = load(args.ckpt)
    extra = open(args.card_extra, encoding="utf-8").read() if args.card_extra else None
    files = export_package(model, ckpt, args.out, model_id=args.id, description=args.description,
                           fp16=not args.no_fp16, card_extra=extra)
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
                   card_extra: Optional[str] = None) -> List[str]:
    """Write every package file into `out`; returns the file names written."""
    cfg: IGptConfig = model.config
    if getattr(cfg, "bidirectional", False):
        raise ValueError("a bidirectional (BERT-objective) model has no causal KV-cache decoder, which a "
                         "model package (format v1) requires; fine-tune it causally or export a causal model")
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
    os.makedirs(out, exist_ok=True)
    manifest_path = os.path.join(out, "model.json")
    if os.path.exists(manifest_path):
        os.remove(manifest_path)  # the folder is not a package until the new manifest is written

    written = []
    onnx_graph.save(onnx_graph.build_decoder(cfg, state, fp16=False), os.path.join(out, "decoder.onnx"))
    written.append("decoder.onnx")
    written += write_step_segments(cfg, onnx_graph.decoder_weights(cfg, state), out)
    if fp16:
        onnx_graph.save(onnx_graph.build_decoder(cfg, state, fp16=True), os.path.join(out, "decoder.fp16.onnx"))
        written.append("decoder.fp16.onnx")
    if has_classifier:
        onnx_graph.save(onnx_graph.build_classifier(cfg, state), os.path.join(out, "classifier.onnx"))
        written.append("classifier.onnx")
        if fp16:
            onnx_graph.save(onnx_graph.build_classifier(cfg, state, fp16=True),
                            os.path.join(out, "classifier.fp16.onnx"))
            written.append("classifier.fp16.onnx")
    stale = {"decoder.fp16.onnx", "classifier.onnx", "classifier.fp16.onnx"} - set(written)
    for name in stale:  # left from an earlier export: they would not match these weights
        for path in (os.path.join(out, name), os.path.join(out, name + ".data")):
            if os.path.exists(path):
                os.remove(path)

    manifest = build_manifest(cfg, ckpt, model_id, description, palette, classes, fp16, has_classifier,
                              model.num_params())
    _write_json(os.path.join(out, "genai_config.json"), build_genai_config(cfg))
    _write_json(os.path.join(out, "parity.json"), build_parity(model, has_classifier))
    with open(os.path.join(out, "MODEL_CARD.md"), "w", encoding="utf-8") as f:
        f.write(build_model_card(cfg, ckpt, manifest, model.num_params(), card_extra))
    _write_json(manifest_path, manifest)
    return written + ["genai_config.json", "parity.json", "MODEL_CARD.md", "model.json"]


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
                   n_params: int) -> Dict[str, Any]:
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
            "decoder": decoder,
            "classifier": classifier if has_classifier else None,
            "genai_config": "genai_config.json",
            "parity": "parity.json",
            "model_card": "MODEL_CARD.md",
        },
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


SEGMENTS_CARD_TEXT = "`decoder.step.*.onnx` (the decoder cut at attention, for CPU steps with the service's own attention), "


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
# genai_config.json


def build_genai_config(cfg: IGptConfig) -> Dict[str, Any]:
    """onnxruntime-genai's config: "llama" is its generic decoder-only model (input_ids,
    attention_mask, position_ids, per-layer BNSH past/present)."""
    sos = cfg.sos_token_id
    return {
        "model": {
            "bos_token_id": sos,
            "context_length": cfg.n_positions,
            "decoder": {
                "session_options": {"log_id": "onnxruntime-genai", "provider_options": []},
                "filename": "decoder.onnx",
                "head_size": cfg.head_size,
                "hidden_size": cfg.n_embd,
                "inputs": {
                    "input_ids": "input_ids",
                    "attention_mask": "attention_mask",
                    "position_ids": "position_ids",
                    "past_key_names": "past_key_values.%d.key",
                    "past_value_names": "past_key_values.%d.value",
                },
                "outputs": {
                    "logits": "logits",
                    "present_key_names": "present.%d.key",
                    "present_value_names": "present.%d.value",
                },
                "num_attention_heads": cfg.n_head,
                "num_hidden_layers": cfg.n_layer,
                "num_key_value_heads": cfg.n_head,
            },
            "eos_token_id": sos,
            "pad_token_id": sos,
            "type": "llama",
            "vocab_size": cfg.vocab_size,
        },
        "search": {
            "diversity_penalty": 0.0,
            "do_sample": True,
            "early_stopping": False,
            "length_penalty": 1.0,
            "max_length": cfg.n_positions,
            "min_length": 0,
            "no_repeat_ngram_size": 0,
            "num_beams": 1,
            "num_return_sequences": 1,
            "past_present_share_buffer": True,
            "repetition_penalty": 1.0,
            "temperature": 1.0,
            "top_k": 0,
            "top_p": 1.0,
        },
    }


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
    return parity


# --------------------------------------------------------------------------------------------
# MODEL_CARD.md


def _fmt(v: Any) -> str:
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, float):
        return f"{v:.4g}" if abs(v) < 1e6 else f"{v:.3e}"
    return str(v).replace("|", "\\|").replace("\n", " ")


def _is_scalar(v: Any) -> bool:
    return isinstance(v, (int, float, str, bool))


def _is_matrix(v: Any) -> bool:
    return (isinstance(v, (list, tuple)) and len(v) > 0 and all(isinstance(r, (list, tuple)) for r in v)
            and all(_is_scalar(x) for r in v for x in r))


def _table(header: List[str], rows: List[List[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_fmt(x) for x in r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def _metrics_sections(metrics: Dict[str, Any], classes: List[str]) -> str:
    """Scalars as one table; dicts of scalars (e.g. per-layer probe accuracy) as key/value tables;
    square matrices as confusion matrices (rows = true class, columns = predicted); other lists
    of scalars as a row."""
    out = []
    scalars = [[k, v] for k, v in metrics.items() if _is_scalar(v)]
    if scalars:
        out.append(_table(["metric", "value"], scalars))
    for k, v in metrics.items():
        if _is_scalar(v):
            continue
        title = k.replace("_", " ")
        if isinstance(v, dict) and v and all(_is_scalar(x) for x in v.values()):
            label = "layer" if any(s in k for s in ("layer", "probe")) else "key"
            out.append(f"#### {title}\n\n" + _table([label, "value"], [[kk, vv] for kk, vv in v.items()]))
        elif isinstance(v, dict) and v and all(isinstance(x, dict) for x in v.values()):
            cols = list(dict.fromkeys(c for x in v.values() for c in x if _is_scalar(x[c])))
            rows = [[kk] + [x.get(c, "") for c in cols] for kk, x in v.items()]
            label = "layer" if any(s in k for s in ("layer", "probe")) else "key"
            out.append(f"#### {title}\n\n" + _table([label] + cols, rows))
        elif isinstance(v, (list, tuple)) and v and all(isinstance(x, dict) for x in v):
            cols = sorted({c for x in v for c in x if _is_scalar(x[c])})
            out.append(f"#### {title}\n\n" + _table(cols, [[x.get(c, "") for c in cols] for x in v]))
        elif _is_matrix(v) and len(v) == len(v[0]):
            names = classes if len(classes) == len(v) else [str(i) for i in range(len(v))]
            rows = [[names[i]] + list(r) for i, r in enumerate(v)]
            out.append(f"#### {title}\n\nRows: true class; columns: predicted class.\n\n"
                       + _table(["true \\ predicted"] + names, rows))
        elif _is_matrix(v):
            out.append(f"#### {title}\n\n" + _table([str(i) for i in range(len(v[0]))], [list(r) for r in v]))
        elif isinstance(v, (list, tuple)) and v and all(_is_scalar(x) for x in v):
            out.append(f"#### {title}\n\n" + _table([str(i) for i in range(len(v))], [list(v)]))
        elif isinstance(v, dict):
            sub = _metrics_sections(v, classes)
            if sub:
                out.append(f"#### {title}\n\n{sub}")
    return "\n".join(out)


def build_model_card(cfg: IGptConfig, ckpt: Dict[str, Any], manifest: Dict[str, Any], n_params: int,
                     extra: Optional[str] = None) -> str:
    m = manifest
    ds = ckpt.get("dataset") or {}
    lines = [f"# {m['id']}", "", m["description"], ""]
    lines += ["## Model", "",
              "iGPT (Chen et al. 2020, \"Generative Pretraining from Pixels\"): a GPT-2-style decoder-only "
              "transformer that predicts an image's pixels one at a time in raster order, with iGPT's RMS "
              "norm (no mean subtraction, no bias), quick_gelu, learned positions and an untied output "
              "head over the colour palette.", "",
              _table(["", ""], [
                  ["image", f"{cfg.height} x {cfg.width} x {cfg.channels} ({'grey' if cfg.channels == 1 else 'RGB'})"],
                  ["layers", cfg.n_layer], ["heads", cfg.n_head], ["width (n_embd)", cfg.n_embd],
                  ["head size", cfg.head_size], ["context (n_positions)", cfg.n_positions],
                  ["palette", f"{cfg.palette_size} colours (SOS token = {cfg.sos_token_id})"],
                  ["parameters", f"{n_params:,}"],
                  ["classification head", f"{cfg.n_classes} classes" if m["classes"] else "none"],
              ])]
    lines += ["## Palette", "",
              f"{cfg.palette_size} entries of {cfg.channels} channel value(s) 0-255; a pixel's token is its "
              "nearest entry (squared Euclidean distance, ties to the lowest index).", "",
              "```", "\n".join(f"{i:4d}: {tuple(e) if len(e) > 1 else e[0]}" for i, e in enumerate(m["palette"])),
              "```", ""]
    if m["classes"]:
        lines += ["## Classes", "", ", ".join(f"{i}: {c}" for i, c in enumerate(m["classes"])), ""]
    lines += ["## Data", ""]
    if ds:
        lines += [_table(["", ""], [[k, v] for k, v in ds.items() if _is_scalar(v)])]
        splits = ds.get("splits") or ds.get("split_sizes")
        if isinstance(splits, dict):
            lines += [_table(["split", "images"], [[k, v] for k, v in splits.items()])]
    else:
        lines += ["No dataset recorded in the checkpoint.", ""]
    lines += ["## Training", ""]
    tr = [["step", f"{int(ckpt.get('step', 0) or 0):,}"], ["tokens seen", f"{int(ckpt.get('tokens_seen', 0) or 0):,}"],
          ["wall time", f"{float(ckpt.get('wall_time_s', 0) or 0) / 3600:.2f} h"],
          ["hardware", ckpt.get("hardware", "unknown")]]
    lines += [_table(["", ""], tr)]
    args = ckpt.get("train_args") or {}
    if isinstance(args, dict) and args:
        lines += ["Arguments:", "", _table(["argument", "value"],
                                           [[k, v if _is_scalar(v) else json.dumps(v)] for k, v in args.items()])]
    lines += ["## Metrics", ""]
    metrics = ckpt.get("metrics") or {}
    body = _metrics_sections(metrics, m["classes"]) if isinstance(metrics, dict) else ""
    lines += [body if body else "No metrics recorded in the checkpoint.", ""]
    lines += ["## Files", "",
              "Model package format version 1 (see `models/README.md`): `decoder.onnx` (fp32, CPU), "
              + (SEGMENTS_CARD_TEXT if m["files"]["decoder"]["cpu"].get("step_segments") else "")
              + ("`decoder.fp16.onnx` (fp16, CUDA), " if "cuda" in m["files"]["decoder"] else "")
              + ("`classifier.onnx`, " if m["files"]["classifier"] else "")
              + ("`classifier.fp16.onnx` (CUDA), " if (m["files"]["classifier"] or {}).get("cuda") else "")
              + "`genai_config.json` (onnxruntime-genai), `parity.json` (PyTorch reference logits).", ""]
    if extra:
        lines += [extra.rstrip(), ""]
    return "\n".join(lines)
