#!/usr/bin/env python3
"""Parity of import-hf with HuggingFace transformers' own ImageGPT (run where transformers is installed).

    cd training && python3 scripts/hf_parity.py [--device cuda] [--onnx] [--keep DIR]

Builds random ImageGPTForCausalImageModeling and ImageGPTForImageClassification models with
transformers (norm gains and biases randomized too, so no parameter sits at an identity init),
saves each with save_pretrained as safetensors and as pytorch_model.bin plus a
preprocessor_config.json with random clusters, imports every folder with `igpt.import_hf`, and
compares our logits with transformers' on the same inputs (fp32, max |diff| <= --tol). With
--onnx it also exports the imported causal model as a package (igpt.export) and, when
onnxruntime is installed, compares decoder.onnx's prefill logits with transformers'.

Prints one line per check and exits 0 when every check passed, 1 otherwise (also when
transformers, or for --onnx onnxruntime, is missing: nothing unchecked counts as a pass).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from typing import List, Optional

import numpy as np
import torch

TRAINING = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if TRAINING not in sys.path:
    sys.path.insert(0, TRAINING)

from igpt.import_hf import import_hf  # noqa: E402


# --- parts that need no transformers (tested in tests/test_import_hf.py) ---------------------------

def randomize_(module: torch.nn.Module, seed: int = 0, scale: float = 0.2) -> None:
    """Move norm gains away from 1 and biases away from 0, in place, so a mixed-up parameter shows."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if name.endswith(".bias") or ("ln_" in name and name.endswith(".weight")):
                base = 1.0 if name.endswith(".weight") else 0.0
                p.copy_(base + scale * torch.randn(p.shape, generator=g))


def write_preprocessor_config(path: str, clusters: np.ndarray, height: int, width: int) -> None:
    """The ImageGPTImageProcessor config HF writes: clusters in [-1, 1], the image size."""
    with open(os.path.join(path, "preprocessor_config.json"), "w") as f:
        json.dump({"image_processor_type": "ImageGPTImageProcessor", "clusters": np.asarray(clusters).tolist(),
                   "do_resize": True, "size": {"height": height, "width": width}, "do_normalize": True,
                   "do_color_quantize": True, "resample": 2}, f)


def max_abs_diff(a, b) -> float:
    a = torch.as_tensor(a).detach().float().cpu()
    b = torch.as_tensor(b).detach().float().cpu()
    if a.shape != b.shape:
        return float("inf")
    return float((a - b).abs().max())


def our_logits(hf_dir: str, input_ids: torch.Tensor, classifier: bool = False, device: str = "cpu") -> torch.Tensor:
    """Import hf_dir with igpt.import_hf and run it: generative logits, or class logits."""
    model, _ = import_hf(hf_dir, allow_missing_lm_head=classifier)
    model = model.to(device).eval()
    with torch.no_grad():
        if classifier:
            return model.classify(input_ids.to(device))[0].cpu()
        return model(input_ids.to(device))[0].cpu()


def onnx_decoder_logits(package_dir: str, input_ids: torch.Tensor) -> np.ndarray:
    """decoder.onnx prefill (empty past, batch rows run one at a time) on the CPU provider; the
    palette columns (the SOS column, fixed at -1e9, dropped)."""
    import onnxruntime as ort  # noqa: PLC0415

    with open(os.path.join(package_dir, "model.json")) as f:
        manifest = json.load(f)
    arch = manifest["architecture"]
    sess = ort.InferenceSession(os.path.join(package_dir, "decoder.onnx"), providers=["CPUExecutionProvider"])
    rows = []
    for row in input_ids.numpy().astype(np.int64):
        S = row.shape[0]
        feeds = {"input_ids": row[None], "attention_mask": np.ones((1, S), np.int64),
                 "position_ids": np.arange(S, dtype=np.int64)[None]}
        for i in range(arch["n_layer"]):
            for kv in ("key", "value"):
                feeds[f"past_key_values.{i}.{kv}"] = np.zeros((1, arch["n_head"], 0, arch["head_size"]), np.float32)
        logits = sess.run(["logits"], feeds)[0]
        rows.append(logits[0, :, : manifest["palette_size"]])
    return np.stack(rows)


class Report:
    def __init__(self):
        self.failed = 0

    def check(self, what: str, diff: float, tol: float) -> None:
        ok = diff <= tol
        self.failed += not ok
        print(f"{'PASS' if ok else 'FAIL'}  {what}: max |diff| {diff:.3g} (tolerance {tol:g})", flush=True)

    def fail(self, what: str) -> None:
        self.failed += 1
        print(f"FAIL  {what}", flush=True)


# --- the check ----------------------------------------------------------------------------------

def _save(model, path: str, safe: bool) -> None:
    try:
        model.save_pretrained(path, safe_serialization=safe)
    except TypeError:  # an old transformers without safe_serialization: .bin only
        if safe:
            raise
        model.save_pretrained(path)


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--palette", type=int, default=512)
    p.add_argument("--side", type=int, default=8, help="image side (n_positions = side^2)")
    p.add_argument("--n-embd", type=int, default=128)
    p.add_argument("--n-layer", type=int, default=3)
    p.add_argument("--n-head", type=int, default=4)
    p.add_argument("--batch", type=int, default=3)
    p.add_argument("--tol", type=float, default=1e-4)
    p.add_argument("--device", default="cpu")
    p.add_argument("--onnx", action="store_true", help="also export and compare decoder.onnx (needs onnxruntime)")
    p.add_argument("--keep", default=None, help="write the folders here instead of a temporary dir")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    try:
        import transformers  # noqa: PLC0415
        from transformers import (ImageGPTConfig, ImageGPTForCausalImageModeling,  # noqa: PLC0415
                                  ImageGPTForImageClassification)
    except ImportError as e:
        print(f"hf_parity: cannot run: transformers with ImageGPT is not installed ({e}); nothing was checked")
        return 1
    print(f"transformers {transformers.__version__}, torch {torch.__version__}, device {a.device}")
    torch.manual_seed(a.seed)
    n_pos = a.side * a.side
    cfg = ImageGPTConfig(vocab_size=a.palette + 1, n_positions=n_pos, n_embd=a.n_embd, n_layer=a.n_layer,
                         n_head=a.n_head, activation_function="quick_gelu")
    causal = ImageGPTForCausalImageModeling(cfg).eval()
    randomize_(causal, a.seed)
    cls_cfg = ImageGPTConfig(**{**cfg.to_dict(), "num_labels": 3, "id2label": {0: "a", 1: "b", 2: "c"},
                                "label2id": {"a": 0, "b": 1, "c": 2}})
    classifier = ImageGPTForImageClassification(cls_cfg).eval()
    randomize_(classifier, a.seed + 1)
    clusters = np.random.default_rng(a.seed).uniform(-1, 1, (a.palette, 3))
    g = torch.Generator().manual_seed(a.seed + 2)
    pixels = torch.randint(0, a.palette, (a.batch, n_pos), generator=g)
    ids = torch.cat([torch.full((a.batch, 1), a.palette), pixels[:, :-1]], dim=1)  # [SOS, x0..x(n-2)]
    with torch.no_grad():
        hf_logits = causal(input_ids=ids).logits.float()  # [B, S, palette]
        hf_class = classifier(input_ids=ids).logits.float()  # [B, 3]

    rep = Report()
    root = a.keep or tempfile.mkdtemp(prefix="hf_parity_")
    for name, model, safe in (("causal-safetensors", causal, True), ("causal-bin", causal, False),
                              ("classifier-safetensors", classifier, True)):
        d = os.path.join(root, name)
        try:
            _save(model, d, safe)
            write_preprocessor_config(d, clusters, a.side, a.side)
            files = sorted(os.listdir(d))
            ours = our_logits(d, ids, classifier=name.startswith("classifier"), device=a.device)
            want = hf_class if name.startswith("classifier") else hf_logits
            rep.check(f"{name} ({', '.join(f for f in files if 'model' in f)}) logits", max_abs_diff(ours, want), a.tol)
        except Exception as e:  # noqa: BLE001 - report and go on with the other checks
            rep.fail(f"{name}: {type(e).__name__}: {e}")

    if a.onnx:
        try:
            import onnxruntime  # noqa: F401,PLC0415
        except ImportError:
            rep.fail("--onnx: onnxruntime is not installed")
        else:
            try:
                from igpt.checkpoint import save_checkpoint  # noqa: PLC0415
                from igpt.export import export_package, load  # noqa: PLC0415

                model, fields = import_hf(os.path.join(root, "causal-safetensors"))
                ck = os.path.join(root, "imported.pt")
                save_checkpoint(ck, model, **fields)
                m, ckpt = load(ck)
                pkg = os.path.join(root, "package")
                export_package(m, ckpt, pkg, model_id="hf-parity", fp16=False)
                rep.check("decoder.onnx prefill logits vs transformers", max_abs_diff(onnx_decoder_logits(pkg, ids), hf_logits),
                          a.tol)
            except Exception as e:  # noqa: BLE001
                rep.fail(f"onnx: {type(e).__name__}: {e}")

    print(f"{'all checks passed' if rep.failed == 0 else f'{rep.failed} check(s) failed'} (folders in {root})")
    return 0 if rep.failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
