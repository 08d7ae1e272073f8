"""A model package (../models/README.md) back into PyTorch: the IGpt whose weights the package's graphs hold.

What continued training, the analysis tools and parity checks use when only the package is at hand
(the shipped models come without their training checkpoints). The package stores each weight once
(format 2); the decoder graph holds the transformer and the head (lm_head as [C, V] with a zero
column for SOS), the classifier graph the classification head (score as [C, n_classes]).
"""
from __future__ import annotations

import json
import os
from typing import Dict, Tuple

import numpy as np
import torch

from .model import IGpt, IGptConfig
from .onnx_graph import load_initializers


def package_config(manifest: Dict, n_classes: int) -> IGptConfig:
    a, image = manifest["architecture"], manifest["image"]
    return IGptConfig(palette_size=int(manifest["palette_size"]), n_positions=int(a["n_positions"]),
                      n_embd=int(a["n_embd"]), n_layer=int(a["n_layer"]), n_head=int(a["n_head"]),
                      n_classes=n_classes, norm_eps=float(a.get("norm_eps", 1e-5)), height=int(image["height"]),
                      width=int(image["width"]), channels=int(image["channels"]))


def load_package_model(folder: str) -> Tuple[IGpt, Dict]:
    """(the package's model in eval mode, its manifest). The classification head is included when
    the package has a classifier graph."""
    with open(os.path.join(folder, "model.json")) as f:
        manifest = json.load(f)
    files = manifest["files"]
    decoder = load_initializers(os.path.join(folder, files["decoder"]["cpu"]["path"]))
    classifier_entry = files.get("classifier")
    score = None
    if classifier_entry:
        score = load_initializers(os.path.join(folder, classifier_entry["cpu"]["path"]))["score.weight_t"]
    cfg = package_config(manifest, 0 if score is None else score.shape[1])
    model = IGpt(cfg)
    state = {}
    for name in model.state_dict():
        if name == "lm_head.weight":  # [C, V] with SOS's zero column -> [P, C]
            array = decoder["lm_head.weight_padded"][:, :cfg.palette_size].T
        elif name == "score.weight":
            array = score.T
        else:
            array = decoder[name]
        state[name] = torch.tensor(np.asarray(array, dtype=np.float32))
    model.load_state_dict(state)
    return model.eval(), manifest
