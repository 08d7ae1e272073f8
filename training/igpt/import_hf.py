"""Convert a local HuggingFace ImageGPT checkpoint (openai/imagegpt-small/medium/large) to ours.

    python3 -m igpt import-hf --hf-dir DIR --out CKPT

DIR holds what the Hub repo holds: `config.json`; `pytorch_model.bin` or `model.safetensors`
(or sharded with a `*.index.json`); the palette as `preprocessor_config.json` "clusters" or
`kmeans_centers.npy`. HF's clusters are RGB in [-1, 1]; ours are 0-255 ints:
round((c + 1) * 127.5) (half up), clipped.

HF and our model share parameter names and layouts (Conv1D weights [in, out], the RMS-style
ImageGPTLayerNorm with a weight only, lm_head [vocab-1, n_embd]), so the conversion renames
nothing: it checks every key and shape, drops the causal-mask buffers (`attn.bias`,
`attn.masked_bias`), adds the `transformer.` prefix for a bare ImageGPTModel, and refuses
configs our model cannot represent (another activation, non-4x MLP, other attention scaling).
safetensors files are read by the small reader below (the package may be absent).
"""
from __future__ import annotations

import argparse
import json
import math
import mmap
import os
import struct
from typing import Dict, List, Tuple

import numpy as np
import torch

from .model import IGpt, IGptConfig

SAFETENSORS_DTYPES = {
    "F64": np.float64, "F32": np.float32, "F16": np.float16, "BF16": np.uint16,
    "I64": np.int64, "I32": np.int32, "I16": np.int16, "I8": np.int8, "U8": np.uint8, "BOOL": np.bool_,
}


class HfImportError(ValueError):
    """The HF directory is missing something or holds a model we cannot represent."""


# ---------------------------------------------------------------------------------------------
# Reading weights


def read_safetensors(path: str) -> Dict[str, torch.Tensor]:
    """A .safetensors file: u64 little-endian header length N, N bytes of JSON
    {name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {...}}, then the raw
    little-endian tensor bytes (offsets relative to the end of the header)."""
    out: Dict[str, torch.Tensor] = {}
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) != 8:
            raise HfImportError(f"{path}: too short for a safetensors file")
        (n,) = struct.unpack("<Q", head)
        size = os.fstat(f.fileno()).st_size
        if n > size - 8:
            raise HfImportError(f"{path}: header length {n} beyond the file size {size}")
        try:
            header = json.loads(f.read(n).decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise HfImportError(f"{path}: bad safetensors header: {e}") from None
        base = 8 + n
        mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) if size > 0 else b""
        try:
            for name, info in header.items():
                if name == "__metadata__":
                    continue
                dt = info["dtype"]
                if dt not in SAFETENSORS_DTYPES:
                    raise HfImportError(f"{path}: {name}: unsupported dtype {dt}")
                shape = [int(s) for s in info["shape"]]
                begin, end = (int(o) for o in info["data_offsets"])
                np_dt = np.dtype(SAFETENSORS_DTYPES[dt]).newbyteorder("<")
                count = int(np.prod(shape)) if shape else 1
                if end - begin != count * np_dt.itemsize or base + end > size:
                    raise HfImportError(f"{path}: {name}: offsets {begin}..{end} do not fit {dt}{shape}")
                arr = np.frombuffer(mm, dtype=np_dt, count=count, offset=base + begin).reshape(shape)
                arr = arr.astype(np_dt.newbyteorder("="), copy=True)  # own the memory, native order
                if dt == "BF16":  # bf16 is the top half of a float32
                    t = torch.from_numpy((arr.reshape(-1).astype(np.uint32) << 16).view(np.float32).reshape(shape))
                else:
                    t = torch.from_numpy(arr)
                out[name] = t
        finally:
            if isinstance(mm, mmap.mmap):
                mm.close()
    return out


def _load_bin(path: str) -> Dict[str, torch.Tensor]:
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except TypeError:  # torch < 1.13 has no weights_only
        sd = torch.load(path, map_location="cpu")
    if not isinstance(sd, dict):
        raise HfImportError(f"{path}: not a state dict")
    return sd


def load_hf_state_dict(hf_dir: str) -> Tuple[Dict[str, torch.Tensor], str]:
    """(the raw HF state dict, the file(s) it came from). safetensors is preferred, like HF."""
    candidates = [
        ("model.safetensors", read_safetensors),
        ("pytorch_model.bin", _load_bin),
    ]
    for name, reader in candidates:
        p = os.path.join(hf_dir, name)
        if os.path.isfile(p):
            return reader(p), name
        idx = p + ".index.json"  # sharded: {"weight_map": {key: shard file}}
        if os.path.isfile(idx):
            with open(idx) as f:
                shards = sorted(set(json.load(f)["weight_map"].values()))
            sd: Dict[str, torch.Tensor] = {}
            for s in shards:
                sd.update(reader(os.path.join(hf_dir, s)))
            return sd, f"{name} ({len(shards)} shards)"
    raise HfImportError(f"{hf_dir}: no model.safetensors or pytorch_model.bin (or their .index.json)")


# ---------------------------------------------------------------------------------------------
# Config and palette


def hf_clusters_to_palette(clusters) -> List[List[int]]:
    """HF/OpenAI clusters in [-1, 1] -> 0-255 ints, round half up, clipped."""
    c = np.asarray(clusters, dtype=np.float64)
    if c.ndim != 2 or c.shape[1] not in (1, 3):
        raise HfImportError(f"clusters must be [K, 3] (or [K, 1]), got {list(c.shape)}")
    return np.clip(np.floor((c + 1.0) * 127.5 + 0.5), 0, 255).astype(np.int64).tolist()


def load_palette(hf_dir: str) -> Tuple[List[List[int]], str]:
    p = os.path.join(hf_dir, "preprocessor_config.json")
    if os.path.isfile(p):
        with open(p) as f:
            pre = json.load(f)
        if pre.get("clusters") is not None:
            return hf_clusters_to_palette(pre["clusters"]), "preprocessor_config.json"
    p = os.path.join(hf_dir, "kmeans_centers.npy")
    if os.path.isfile(p):
        return hf_clusters_to_palette(np.load(p)), "kmeans_centers.npy"
    raise HfImportError(f"{hf_dir}: no palette: preprocessor_config.json 'clusters' or kmeans_centers.npy")


def _image_size(hf_dir: str, n_positions: int) -> Tuple[int, int]:
    p = os.path.join(hf_dir, "preprocessor_config.json")
    if os.path.isfile(p):
        with open(p) as f:
            size = json.load(f).get("size")
        if isinstance(size, dict) and "height" in size and "width" in size:
            h, w = int(size["height"]), int(size["width"])
        elif isinstance(size, int):
            h = w = size
        elif isinstance(size, (list, tuple)) and len(size) == 2:
            h, w = int(size[0]), int(size[1])
        else:
            h = w = 0
        if h * w == n_positions:
            return h, w
    side = int(round(math.sqrt(n_positions)))
    if side * side != n_positions:
        raise HfImportError(f"n_positions {n_positions} is not a square and preprocessor_config.json gives no size")
    return side, side


def config_from_hf(hf: dict, palette_size: int, channels: int, height: int, width: int,
                   n_classes: int) -> IGptConfig:
    """Our config from HF's config.json, refusing what IGpt cannot represent."""
    def need(key):
        if key not in hf:
            raise HfImportError(f"config.json has no {key!r}")
        return hf[key]

    act = hf.get("activation_function", "quick_gelu")
    if act != "quick_gelu":
        raise HfImportError(f"activation_function {act!r}: IGpt implements quick_gelu only")
    n_embd = int(need("n_embd"))
    n_inner = hf.get("n_inner")
    if n_inner is not None and int(n_inner) != 4 * n_embd:
        raise HfImportError(f"n_inner {n_inner}: IGpt's MLP is 4 * n_embd = {4 * n_embd}")
    if hf.get("scale_attn_weights", True) is not True or hf.get("scale_attn_by_inverse_layer_idx", False):
        raise HfImportError("IGpt scales attention by 1/sqrt(head_size) only "
                            "(scale_attn_weights true, scale_attn_by_inverse_layer_idx false)")
    vocab = int(need("vocab_size"))
    if vocab != palette_size + 1:
        raise HfImportError(f"vocab_size {vocab} != palette size {palette_size} + 1 (SOS)")
    n_positions = int(need("n_positions"))
    if height * width != n_positions:
        raise HfImportError(f"image {height}x{width} != n_positions {n_positions}")
    return IGptConfig(palette_size=palette_size, n_positions=n_positions, n_embd=n_embd,
                      n_layer=int(need("n_layer")), n_head=int(need("n_head")), n_classes=n_classes,
                      dropout=0.0, norm_eps=float(hf.get("layer_norm_epsilon", 1e-5)),
                      height=height, width=width, channels=channels)


# ---------------------------------------------------------------------------------------------
# Conversion


def convert_state_dict(hf_sd: Dict[str, torch.Tensor], cfg: IGptConfig,
                       allow_missing_lm_head: bool = False) -> Tuple[Dict[str, torch.Tensor], List[str]]:
    """HF keys -> ours, every shape checked. Returns (state dict, notes)."""
    notes: List[str] = []
    sd: Dict[str, torch.Tensor] = {}
    bare = not any(k.startswith("transformer.") for k in hf_sd)  # a saved ImageGPTModel
    for k, v in hf_sd.items():
        if k.endswith(".attn.bias") or k.endswith(".attn.masked_bias"):
            continue  # causal-mask buffers, rebuilt by our attention
        if bare and not k.startswith(("lm_head.", "score.")):
            k = "transformer." + k
        sd[k] = v.detach().to(torch.float32).contiguous()
    shapes = _expected_shapes(cfg)
    if "lm_head.weight" not in sd:
        if not allow_missing_lm_head:
            raise HfImportError("no lm_head.weight (an ImageGPTForImageClassification or ImageGPTModel "
                                "checkpoint): pass --allow-missing-lm-head to start the generative head at zero")
        sd["lm_head.weight"] = torch.zeros(cfg.palette_size, cfg.n_embd)
        notes.append("lm_head.weight missing: zero-initialised (uniform next-pixel predictions)")
    missing = sorted(set(shapes) - set(sd))
    unexpected = sorted(set(sd) - set(shapes))
    if missing or unexpected:
        raise HfImportError(f"key mismatch: missing {missing[:8]}{'...' if len(missing) > 8 else ''}, "
                            f"unexpected {unexpected[:8]}{'...' if len(unexpected) > 8 else ''}")
    for k, shape in shapes.items():
        if tuple(sd[k].shape) != shape:
            raise HfImportError(f"{k}: HF shape {tuple(sd[k].shape)}, expected {shape}")
    return sd, notes


def _expected_shapes(cfg: IGptConfig) -> Dict[str, Tuple[int, ...]]:
    C, L = cfg.n_embd, cfg.n_layer
    s: Dict[str, Tuple[int, ...]] = {
        "transformer.wte.weight": (cfg.vocab_size, C),
        "transformer.wpe.weight": (cfg.n_positions, C),
        "transformer.ln_f.weight": (C,),
        "lm_head.weight": (cfg.palette_size, C),
    }
    for i in range(L):
        p = f"transformer.h.{i}."
        s.update({
            p + "ln_1.weight": (C,), p + "ln_2.weight": (C,),
            p + "attn.c_attn.weight": (C, 3 * C), p + "attn.c_attn.bias": (3 * C,),
            p + "attn.c_proj.weight": (C, C), p + "attn.c_proj.bias": (C,),
            p + "mlp.c_fc.weight": (C, 4 * C), p + "mlp.c_fc.bias": (4 * C,),
            p + "mlp.c_proj.weight": (4 * C, C), p + "mlp.c_proj.bias": (C,),
        })
    if cfg.n_classes > 0:
        s["score.weight"] = (cfg.n_classes, C)
    return s


def _classes(hf: dict, n: int) -> List[str]:
    id2label = hf.get("id2label") or {}
    names = [str(id2label.get(str(i), id2label.get(i, f"LABEL_{i}"))) for i in range(n)]
    return names


def import_hf(hf_dir: str, allow_missing_lm_head: bool = False) -> Tuple[IGpt, dict]:
    """(our model, checkpoint fields) from a local HF ImageGPT directory."""
    cfg_path = os.path.join(hf_dir, "config.json")
    if not os.path.isfile(cfg_path):
        raise HfImportError(f"{hf_dir}: no config.json")
    with open(cfg_path) as f:
        hf = json.load(f)
    if hf.get("model_type", "imagegpt") != "imagegpt":
        raise HfImportError(f"model_type {hf.get('model_type')!r} is not imagegpt")
    palette, palette_src = load_palette(hf_dir)
    hf_sd, weights_src = load_hf_state_dict(hf_dir)
    n_classes = int(hf_sd["score.weight"].shape[0]) if "score.weight" in hf_sd else 0
    height, width = _image_size(hf_dir, int(hf.get("n_positions", 0)))
    cfg = config_from_hf(hf, len(palette), len(palette[0]), height, width, n_classes)
    sd, notes = convert_state_dict(hf_sd, cfg, allow_missing_lm_head)
    model = IGpt(cfg)
    model.load_state_dict(sd, strict=True)
    model.eval()
    name = os.path.basename(os.path.normpath(hf_dir))
    fields = dict(
        palette=palette,
        classes=_classes(hf, n_classes) if n_classes else [],
        dataset={"name": f"hf:{hf.get('_name_or_path') or name}", "path": os.path.abspath(hf_dir),
                 "height": height, "width": width, "channels": len(palette[0])},
        step=0, tokens_seen=0, wall_time_s=0.0, hardware="", metrics={}, optimizer=None,
        train_args={"command": "import-hf", "hf_dir": os.path.abspath(hf_dir), "weights": weights_src,
                    "palette": palette_src, "architectures": hf.get("architectures", []), "notes": notes},
    )
    return model, fields


def add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--hf-dir", required=True, help="local HF ImageGPT folder (config.json, weights, palette)")
    p.add_argument("--out", required=True, help="checkpoint to write (.pt)")
    p.add_argument("--allow-missing-lm-head", action="store_true",
                   help="accept a checkpoint without lm_head.weight (classification only); the head starts at zero")


def main(args) -> int:
    from .checkpoint import save_checkpoint

    try:
        model, fields = import_hf(args.hf_dir, args.allow_missing_lm_head)
    except HfImportError as e:
        print(f"import-hf: {e}")
        return 1
    save_checkpoint(args.out, model, **fields)
    c = model.config
    print(f"wrote {args.out}: {c.n_layer} layers, {c.n_embd} wide, {c.n_head} heads, "
          f"{c.height}x{c.width}x{c.channels}, palette {c.palette_size}, {model.num_params() / 1e6:.1f}M params"
          + (f", {c.n_classes} classes" if c.n_classes else "")
          + "".join(f"\n  note: {n}" for n in fields["train_args"]["notes"]))
    return 0
