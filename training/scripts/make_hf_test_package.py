#!/usr/bin/env python3
"""Writes tests/fixtures/hf-tiny-package: a random ImageGPT in HuggingFace's format, imported and exported.

The HF chain without the real weights. A checkpoint is written the way the Hub's
openai/imagegpt-small folder holds one (what `huggingface-cli download openai/imagegpt-small
--local-dir imagegpt-small` gives): `config.json` with ImageGPTConfig's fields as transformers
writes them, `pytorch_model.bin` (and/or `model.safetensors`) under HF's key names with
ImageGPTForCausalImageModeling's layouts (Conv1D weights [in, out], the causal-mask buffers
`attn.bias` / `attn.masked_bias`, `lm_head` [vocab_size - 1, n_embd]) and `preprocessor_config.json`
with 512 `clusters` in [-1, 1]. It is iGPT's own format (32x32 RGB, 512-colour palette, 1024
positions) at a tiny width and depth so the package stays well under 2 MB. Then
`igpt.import_hf` converts it and `igpt.export` writes the package the service serves as it is.

Everything is drawn from numpy's PCG64 with a fixed seed, so the output is the same on every run
and machine. The checkpoint's record of where the HF folder was (a temporary path) is replaced
by the folder's name so that the package does not change with the temporary path.

    /usr/bin/python3 training/scripts/make_hf_test_package.py [--out tests/fixtures/hf-tiny-package] [--keep-hf DIR]
"""
from __future__ import annotations

import argparse
import json
import os
import struct
import sys
import tempfile
from typing import Dict, Sequence

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "training"))

from igpt import export  # noqa: E402
from igpt.checkpoint import save_checkpoint  # noqa: E402
from igpt.import_hf import import_hf  # noqa: E402

MODEL_ID = "hf-tiny-test"
HF_NAME = "imagegpt-tiny-random"
SEED = 20200617  # the iGPT blog post's date
SIDE, PALETTE, N_EMBD, N_LAYER, N_HEAD = 32, 512, 32, 2, 2
DESCRIPTION = ("Random ImageGPT in HuggingFace's format (32x32 RGB, 512-colour palette, untrained), "
               "imported with import-hf: a test fixture")


def hf_config(side: int = SIDE, palette: int = PALETTE, n_embd: int = N_EMBD, n_layer: int = N_LAYER,
              n_head: int = N_HEAD) -> dict:
    """config.json as transformers' ImageGPTConfig.save_pretrained writes it (every field, sorted keys)."""
    return {
        "activation_function": "quick_gelu",
        "architectures": ["ImageGPTForCausalImageModeling"],
        "attn_pdrop": 0.1,
        "embd_pdrop": 0.1,
        "initializer_range": 0.02,
        "layer_norm_epsilon": 1e-05,
        "model_type": "imagegpt",
        "n_embd": n_embd,
        "n_head": n_head,
        "n_inner": None,
        "n_layer": n_layer,
        "n_positions": side * side,
        "reorder_and_upcast_attn": False,
        "resid_pdrop": 0.1,
        "scale_attn_by_inverse_layer_idx": False,
        "scale_attn_weights": True,
        "tie_word_embeddings": False,
        "torch_dtype": "float32",
        "transformers_version": "4.16.0.dev0",
        "use_cache": True,
        "vocab_size": palette + 1,
    }


def hf_state_dict(cfg: dict, seed: int = SEED, mask_buffers: bool = True) -> Dict[str, torch.Tensor]:
    """Random weights under ImageGPTForCausalImageModeling's key names and shapes. The spread is
    larger than an init's and norm gains / biases are far from 1 / 0, so logits are far from
    uniform and any mixed-up or transposed parameter shows in the numbers."""
    rng = np.random.default_rng(seed)
    C, L, n, V = cfg["n_embd"], cfg["n_layer"], cfg["n_positions"], cfg["vocab_size"]

    def r(*shape, scale=0.3, base=0.0):
        return torch.from_numpy((base + scale * rng.standard_normal(shape)).astype(np.float32))

    sd: Dict[str, torch.Tensor] = {"transformer.wte.weight": r(V, C, scale=1.0), "transformer.wpe.weight": r(n, C)}
    for i in range(L):
        p = f"transformer.h.{i}."
        sd[p + "ln_1.weight"] = r(C, scale=0.2, base=1.0)
        if mask_buffers:  # what the Hub's 2021 pytorch_model.bin holds; newer saves drop them
            sd[p + "attn.bias"] = torch.tril(torch.ones(n, n, dtype=torch.bool)).view(1, 1, n, n)
            sd[p + "attn.masked_bias"] = torch.tensor(-1e4)
        sd[p + "attn.c_attn.weight"] = r(C, 3 * C)   # Conv1D: [in, out]
        sd[p + "attn.c_attn.bias"] = r(3 * C, scale=0.1)
        sd[p + "attn.c_proj.weight"] = r(C, C)
        sd[p + "attn.c_proj.bias"] = r(C, scale=0.1)
        sd[p + "ln_2.weight"] = r(C, scale=0.2, base=1.0)
        sd[p + "mlp.c_fc.weight"] = r(C, 4 * C)
        sd[p + "mlp.c_fc.bias"] = r(4 * C, scale=0.1)
        sd[p + "mlp.c_proj.weight"] = r(4 * C, C, scale=0.15)
        sd[p + "mlp.c_proj.bias"] = r(C, scale=0.1)
    sd["transformer.ln_f.weight"] = r(C, scale=0.2, base=1.0)
    sd["lm_head.weight"] = r(V - 1, C)
    return sd


def hf_clusters(k: int = PALETTE, seed: int = SEED) -> np.ndarray:
    """k distinct RGB colours in [-1, 1] (float32, like the Hub's k-means centres); the corners of
    the cube are among them so the 0 and 255 ends of the conversion are exercised."""
    rng = np.random.default_rng(seed + 1)
    corners = np.array([[x, y, z] for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)], dtype=np.float64)
    rest = rng.uniform(-1, 1, (k - len(corners), 3))
    return np.concatenate([corners, rest]).astype(np.float32)


def write_safetensors(path: str, tensors: Dict[str, torch.Tensor]) -> None:
    """safetensors as HF writes it: u64 header length, JSON header (8-byte aligned), raw LE data."""
    header: dict = {"__metadata__": {"format": "pt"}}
    blobs, offset = [], 0
    for name in sorted(tensors):
        t = tensors[name]
        if t.dtype == torch.bool:
            raw, dt = t.numpy().astype(np.bool_).tobytes(), "BOOL"
        else:
            raw, dt = t.numpy().astype("<f4").tobytes(), "F32"
        header[name] = {"dtype": dt, "shape": list(t.shape), "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    hj = json.dumps(header, separators=(",", ":")).encode()
    hj += b" " * ((8 - len(hj) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(hj)) + hj + b"".join(blobs))


def write_hf_dir(path: str, seed: int = SEED, weights: Sequence[str] = ("bin",), size_style: str = "hub",
                 **shape) -> dict:
    """An HF ImageGPT folder at `path`. weights: "bin" (pytorch_model.bin, with the mask buffers, as
    on the Hub) and/or "safetensors" (model.safetensors, without them, as newer transformers saves).
    size_style: "hub" (the Hub's ImageGPTFeatureExtractor config, `"size": 32`) or "processor"
    (ImageGPTImageProcessor's, `"size": {"height": 32, "width": 32}`).
    Returns {"config", "state_dict" (with the buffers), "clusters"}."""
    os.makedirs(path, exist_ok=True)
    cfg = hf_config(**shape)
    side = int(round(cfg["n_positions"] ** 0.5))
    sd = hf_state_dict(cfg, seed)
    clusters = hf_clusters(cfg["vocab_size"] - 1, seed)
    with open(os.path.join(path, "config.json"), "w") as f:
        f.write(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
    pre = {"clusters": clusters.tolist(), "do_normalize": True, "do_resize": True, "resample": 2}
    if size_style == "hub":
        pre.update({"feature_extractor_type": "ImageGPTFeatureExtractor", "size": side})
    else:
        pre.update({"do_color_quantize": True, "image_processor_type": "ImageGPTImageProcessor",
                    "size": {"height": side, "width": side}})
    with open(os.path.join(path, "preprocessor_config.json"), "w") as f:
        f.write(json.dumps(pre, indent=2, sort_keys=True) + "\n")
    if "bin" in weights:
        torch.save(sd, os.path.join(path, "pytorch_model.bin"))
    if "safetensors" in weights:
        write_safetensors(os.path.join(path, "model.safetensors"),
                          {k: v for k, v in sd.items() if not k.endswith((".attn.bias", ".attn.masked_bias"))})
    return {"config": cfg, "state_dict": sd, "clusters": clusters}


def build_package(hf_dir: str, out: str, model_id: str = MODEL_ID, fp16: bool = True,
                  description: str = DESCRIPTION) -> int:
    """import_hf -> checkpoint -> export, as `import-hf` then `export` do, with the HF folder
    recorded by name only (no temporary path in the package)."""
    model, fields = import_hf(hf_dir)
    name = os.path.basename(os.path.normpath(hf_dir))
    fields["dataset"]["path"] = name
    fields["train_args"]["hf_dir"] = name
    fields["train_args"]["script"] = "training/scripts/make_hf_test_package.py"
    fields["train_args"]["seed"] = SEED
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = os.path.join(tmp, "imported.pt")
        save_checkpoint(ckpt, model, **fields)
        ns = argparse.Namespace(ckpt=ckpt, out=out, id=model_id, no_fp16=not fp16, card_extra=None,
                                description=description)
        return export.main(ns)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=os.path.join(ROOT, "tests", "fixtures", "hf-tiny-package"))
    ap.add_argument("--keep-hf", default=None, help="also keep the HF folder here (default: a temporary folder)")
    args = ap.parse_args(argv)
    if args.keep_hf:
        hf_dir = os.path.join(args.keep_hf, HF_NAME)
        write_hf_dir(hf_dir)
        return build_package(hf_dir, args.out)
    with tempfile.TemporaryDirectory() as tmp:
        hf_dir = os.path.join(tmp, HF_NAME)
        write_hf_dir(hf_dir)
        return build_package(hf_dir, args.out)


if __name__ == "__main__":
    sys.exit(main())
