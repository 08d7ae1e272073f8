#!/usr/bin/env python3
"""A random iGPT-S-size package (24 layers, 512 wide, 8 heads, 1024 positions, 512 colours: 76.7M parameters) that
a device call can carry: the graphs and a recipe, not the 307 MB weights file.

    /usr/bin/python3 bench/gpu/igpt_s_package.py make OUT     # here: HF-layout checkpoint -> import-hf -> export
    python3 bench/gpu/igpt_s_package.py fill OUT              # anywhere with numpy: (re)writes OUT/weights.data

`make` writes a random ImageGPT checkpoint in HuggingFace's layout at iGPT-S's shape (HF's initialization: normal
0.02, the residual projections 0.02/sqrt(2 * n_layer), norm gains 1, biases 0), imports it (`igpt.import_hf`) and
exports it (`igpt.export`) as the service serves it. Then it writes `weights.recipe.json` and
`weights.kept.bin`: the 98 large matrices (token and position embeddings, every layer's four products) are redrawn
from numpy's PCG64 with a fixed seed per tensor at the exported tensor's own standard deviation, every other
tensor's bytes (norms, biases, the head, its SOS mask) are kept as exported. `fill` rebuilds weights.data from those
two files, bit for bit the same on every machine, and `make` ends by running it, so the package here and the one
rebuilt on a GPU machine are the same model. Not a trained model: for timings and CUDA-against-CPU agreement only.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import sys
import tempfile

import numpy as np

RECIPE, KEPT, WEIGHTS = "weights.recipe.json", "weights.kept.bin", "weights.data"
SEED = 20200617
REDRAWN = re.compile(r"^transformer\.(wte|wpe)\.weight$|^transformer\.h\.\d+\.(attn|mlp)\.c_\w+\.weight$")


def fill(package: str) -> str:
    """Writes package/weights.data from the recipe and the kept bytes; returns its sha256."""
    with open(os.path.join(package, RECIPE)) as f:
        recipe = json.load(f)
    kept = open(os.path.join(package, KEPT), "rb").read()
    out = bytearray(recipe["size"])
    for i, t in enumerate(recipe["tensors"]):
        if "std" in t:
            rng = np.random.default_rng([SEED, i])
            data = (rng.standard_normal(t["length"] // 4) * t["std"]).astype("<f4").tobytes()
        else:
            data = kept[t["kept"]:t["kept"] + t["length"]]
        out[t["offset"]:t["offset"] + t["length"]] = data
    with open(os.path.join(package, WEIGHTS), "wb") as f:
        f.write(out)
    digest = hashlib.sha256(out).hexdigest()
    if recipe.get("sha256") not in (None, digest):
        raise SystemExit(f"{package}: weights.data rebuilt with sha256 {digest}, the recipe says {recipe['sha256']}")
    return digest


def make(out: str) -> None:
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    sys.path.insert(0, os.path.join(root, "training"))
    sys.path.insert(0, os.path.join(root, "training", "scripts"))
    import onnx
    import torch
    import make_hf_test_package as hf

    C, L = 512, 24
    cfg = hf.hf_config(side=32, palette=512, n_embd=C, n_layer=L, n_head=8)
    rng = np.random.default_rng(SEED)

    def normal(*shape, std=0.02):
        return torch.from_numpy((rng.standard_normal(shape) * std).astype(np.float32))

    proj_std = 0.02 / (2 * L) ** 0.5
    sd = {"transformer.wte.weight": normal(513, C), "transformer.wpe.weight": normal(1024, C)}
    for i in range(L):
        p = f"transformer.h.{i}."
        sd[p + "ln_1.weight"] = torch.ones(C)
        sd[p + "attn.c_attn.weight"] = normal(C, 3 * C)
        sd[p + "attn.c_attn.bias"] = torch.zeros(3 * C)
        sd[p + "attn.c_proj.weight"] = normal(C, C, std=proj_std)
        sd[p + "attn.c_proj.bias"] = torch.zeros(C)
        sd[p + "ln_2.weight"] = torch.ones(C)
        sd[p + "mlp.c_fc.weight"] = normal(C, 4 * C)
        sd[p + "mlp.c_fc.bias"] = torch.zeros(4 * C)
        sd[p + "mlp.c_proj.weight"] = normal(4 * C, C, std=proj_std)
        sd[p + "mlp.c_proj.bias"] = torch.zeros(C)
    sd["transformer.ln_f.weight"] = torch.ones(C)
    sd["lm_head.weight"] = normal(512, C)
    with tempfile.TemporaryDirectory() as tmp:
        hf_dir = os.path.join(tmp, "imagegpt-small-random")
        os.makedirs(hf_dir)
        with open(os.path.join(hf_dir, "config.json"), "w") as f:
            json.dump(cfg, f, indent=2, sort_keys=True)
        with open(os.path.join(hf_dir, "preprocessor_config.json"), "w") as f:
            json.dump({"clusters": hf.hf_clusters(512, SEED).tolist(), "do_normalize": True, "do_resize": True,
                       "size": 32, "feature_extractor_type": "ImageGPTFeatureExtractor"}, f)
        torch.save(sd, os.path.join(hf_dir, "pytorch_model.bin"))
        description = "Random ImageGPT at iGPT-S's shape (untrained; for GPU timings and CUDA-against-CPU agreement)"
        if hf.build_package(hf_dir, out, model_id="igpt-s-random", description=description) != 0:
            raise SystemExit("export failed")

    weights = open(os.path.join(out, WEIGHTS), "rb").read()
    entries = {}
    for name in sorted(os.listdir(out)):
        if name.endswith(".onnx"):
            for t in onnx.load(os.path.join(out, name), load_external_data=False).graph.initializer:
                if t.data_location == onnx.TensorProto.EXTERNAL:
                    d = {e.key: e.value for e in t.external_data}
                    entries[int(d["offset"])] = (t.name, int(d["length"]))
    tensors, kept = [], bytearray()
    for offset, (name, length) in sorted(entries.items()):
        t = {"name": name, "offset": offset, "length": length}
        if REDRAWN.match(name):
            t["std"] = float(np.frombuffer(weights[offset:offset + length], "<f4").std())
        else:
            t["kept"] = len(kept)
            kept += weights[offset:offset + length]
        tensors.append(t)
    recipe = {"size": len(weights), "tensors": tensors}
    with open(os.path.join(out, KEPT), "wb") as f:
        f.write(kept)
    with open(os.path.join(out, RECIPE), "w") as f:
        json.dump(recipe, f, indent=1)
    recipe["sha256"] = fill(out)
    with open(os.path.join(out, RECIPE), "w") as f:
        json.dump(recipe, f, indent=1)
    print(f"{out}: {sum('std' in t for t in tensors)} tensors redrawn, {len(kept)} bytes kept, "
          f"weights.data {len(weights)} bytes, sha256 {recipe['sha256']}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("command", choices=["make", "fill"])
    ap.add_argument("package")
    args = ap.parse_args()
    if args.command == "make":
        make(args.package)
    else:
        print(f"{args.package}: weights.data sha256 {fill(args.package)}")


if __name__ == "__main__":
    main()
