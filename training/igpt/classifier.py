"""The classification head, shared by `finetune` and `soup`: attach it, start it at a linear probe,
freeze the layers below it, and measure it (accuracy, confusion matrix, bits per token).

The classifier is the one a model package serves (models/README.md, classifier.onnx): the
generative input [SOS, x0..x(n-2)] runs through the whole model, the final-norm hidden states are
averaged over positions and a linear layer without bias (`score`, HF's name) gives class logits.
"""
from __future__ import annotations

import math
from typing import Dict, List, Tuple

import numpy as np
import torch
from torch.nn import functional as F

from . import loop
from .data import load_prepared
from .model import IGpt, IGptConfig, shift_inputs

Split = Tuple[np.ndarray, np.ndarray]  # tokens uint16 [N, H*W], labels int64 [N]


def load_splits(data_dir: str, max_train: int = 0, seed: int = 0) -> Tuple[Split, Split, Split]:
    """(train, val, test) of a prepared folder. Without a val split 10% of train is held out
    (seeded); max_train > 0 keeps a seeded subset of that many training images."""
    train = load_prepared(data_dir, "train")
    try:
        val = load_prepared(data_dir, "val")
    except FileNotFoundError:
        val = (train[0][:0], train[1][:0])
    if len(val[1]) == 0:
        perm = np.random.default_rng(seed + 17).permutation(len(train[1]))
        k = max(1, len(perm) // 10)
        val = (train[0][perm[:k]], train[1][perm[:k]])
        train = (train[0][perm[k:]], train[1][perm[k:]])
    if 0 < max_train < len(train[1]):
        idx = np.sort(np.random.default_rng(seed + 1).permutation(len(train[1]))[:max_train])
        train = (train[0][idx], train[1][idx])
    return train, val, load_prepared(data_dir, "test")


def with_classifier(model: IGpt, n_classes: int) -> IGpt:
    """The model with an n_classes `score` head: kept when it already has one of that size, else a
    new zero-initialized head (uniform predictions at the start, so early gradients are clean)."""
    if model.score is not None and model.config.n_classes == n_classes:
        return model
    cfg = IGptConfig.from_dict({**model.config.to_dict(), "n_classes": n_classes})
    new = IGpt(cfg)
    sd = {k: v for k, v in model.state_dict().items() if not k.startswith("score.")}
    missing, unexpected = new.load_state_dict(sd, strict=False)
    assert set(missing) == {"score.weight"} and not unexpected, (missing, unexpected)
    torch.nn.init.zeros_(new.score.weight)
    return new.to(next(model.parameters()).device)


def rebuild(model: IGpt, **overrides) -> IGpt:
    """The same weights under a config with some fields changed (e.g. bidirectional=False)."""
    cfg = IGptConfig.from_dict({**model.config.to_dict(), **overrides})
    new = IGpt(cfg)
    new.load_state_dict(model.state_dict())
    return new.to(next(model.parameters()).device)


def freeze_lower(model: IGpt, k: int) -> None:
    """Embeddings and blocks 0..k-1 stop needing gradients (k = 0: nothing frozen)."""
    t = model.transformer
    frozen = [t.wte, t.wpe] + list(t.h[:k]) if k > 0 else []
    for m in frozen:
        for p in m.parameters():
            p.requires_grad_(False)


@torch.no_grad()
def probe_head_(model: IGpt, tokens: np.ndarray, labels: np.ndarray, batch_size: int, device: torch.device,
                amp: bool = False, l2: float = 1e-3) -> float:
    """Start the score head at the linear probe of the final-norm features (LP-FT: a fine-tune that
    starts from a fitted head spends its first steps improving features, not undoing a random head).
    `score` has no bias, so neither has this probe. Returns the probe's training accuracy."""
    from .probe import fit_logistic, layer_features

    was_training = model.training
    f = layer_features(model, tokens, batch_size, device, amp)[:, -1].contiguous()  # [N, C]: what `score` sees
    y = torch.from_numpy(labels.astype(np.int64))
    W, _ = fit_logistic(f, y, model.config.n_classes, l2, max_iter=100, bias=False)  # W [C, K]
    model.score.weight.copy_(W.T.to(model.score.weight))
    model.train(was_training)
    return float(((f.double() @ W).argmax(-1) == y).double().mean())


def classification_sums(model: IGpt, x: torch.Tensor, y: torch.Tensor) -> Dict[str, object]:
    """A `loop.evaluate` measure: summed class and generative nats, and the confusion counts."""
    c, g = model.classify(shift_inputs(x, model.config.sos_token_id))  # [B, K] classes, [B, S, V] pixels
    k = model.config.n_classes
    confusion = np.zeros((k, k), dtype=np.int64)  # [true, predicted]
    np.add.at(confusion, (y.cpu().numpy(), c.argmax(-1).cpu().numpy()), 1)
    gen = F.cross_entropy(g.float().reshape(-1, g.size(-1)), x.reshape(-1), reduction="sum")  # over B*S pixels
    return {"clf_nats": float(F.cross_entropy(c.float(), y, reduction="sum")),
            "gen_nats": float(gen) / x.size(1), "confusion": confusion}


def classification_metrics(model: IGpt, tokens: np.ndarray, labels: np.ndarray, batch_size: int,
                           amp: bool = False) -> Dict[str, object]:
    """Accuracy, confusion matrix [true][pred], classification loss and bits per token."""
    s = loop.evaluate(model, classification_sums, [tokens, labels], batch_size, amp)
    k = model.config.n_classes
    confusion = s.get("confusion", np.zeros((k, k), dtype=np.int64))
    n = max(int(confusion.sum()), 1)
    return {"accuracy": float(np.trace(confusion)) / n, "loss": s.get("clf_nats", 0.0) / n,
            "bits_per_token": s.get("gen_nats", 0.0) / n / math.log(2.0), "confusion": confusion,
            "n": int(confusion.sum())}


def confusion_table(conf: np.ndarray, classes: List[str]) -> str:
    """A markdown confusion matrix (rows true class, columns predicted) with per-class recall."""
    names = [str(c) for c in classes] if len(classes) == len(conf) else [str(i) for i in range(len(conf))]
    head = "| true \\ predicted | " + " | ".join(names) + " | recall |"
    lines = [head, "|" + "---|" * (len(names) + 2)]
    for i, row in enumerate(conf):
        recall = row[i] / row.sum() if row.sum() else float("nan")
        lines.append(f"| {names[i]} | " + " | ".join(str(int(v)) for v in row) + f" | {recall:.3f} |")
    return "\n".join(lines)
