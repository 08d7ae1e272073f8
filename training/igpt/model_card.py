"""MODEL_CARD.md of a model package: the model, palette, data, training and metrics as markdown tables."""
from __future__ import annotations

import json
from typing import Any, Dict, List, Optional

from .model import IGptConfig

SEGMENTS_CARD_TEXT = "`decoder.step.*.onnx` (the decoder cut at attention, for CPU steps with the service's own attention), "
FILES_INTRO = "Model package format version {} (see `models/README.md`): "
GENAI_CARD_TEXT = "`genai_config.json` (onnxruntime-genai)"
ANALYSIS_CARD_TEXT = "`analysis.onnx` (per-layer embeddings and per-pixel bits, fp32), "


def weights_card_text(fp16: bool) -> str:
    """The card's words for the weights file (format version 2)."""
    return ("`weights.data` (the graphs' weights, each stored once"
            + ("; the fp16 graphs cast them to float16 when loaded" if fp16 else "") + "), ")


# What cards of format 2 packages with a separate fp16 weights file said instead (`igpt convert` rewrites it).
FP16_FILE_CARD_TEXT = "`weights.data` (the fp32 graphs' weights, each stored once), `weights.fp16.data` (the fp16 graphs' weights), "


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
    if m.get("sampling"):
        from .sampling_defaults import card_section
        lines += [card_section(m["sampling"])]
    lines += ["## Files", "",
              FILES_INTRO.format(m["format_version"]) + "`decoder.onnx` (fp32, CPU), "
              + (SEGMENTS_CARD_TEXT if m["files"]["decoder"]["cpu"].get("step_segments") else "")
              + ("`decoder.fp16.onnx` (fp16, CUDA), " if "cuda" in m["files"]["decoder"] else "")
              + ("`classifier.onnx`, " if m["files"]["classifier"] else "")
              + ("`classifier.fp16.onnx` (CUDA), " if (m["files"]["classifier"] or {}).get("cuda") else "")
              + (ANALYSIS_CARD_TEXT if m.get("analysis") else "")
              + weights_card_text("cuda" in m["files"]["decoder"])
              + GENAI_CARD_TEXT + ", `parity.json` (PyTorch reference logits).", ""]
    if extra:
        lines += [extra.rstrip(), ""]
    return "\n".join(lines)
