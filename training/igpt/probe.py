"""Linear probes on every layer (Chen et al. 2020, section 3.2).

    python3 -m igpt probe --data PREPARED_DIR --ckpt CKPT [--max-train 5000] [--json probe.json] [--write-ckpt]

For each layer the feature of an image is the mean over positions of that layer's normalized
input: ln_1 of block i applied to block i's input (entry i, 0..n_layer-1; entry 0 sees the
embeddings) and the final norm's output (entry n_layer, what the classifier head sees). The input
is the generative one, [SOS, x0..x(n-2)]. On each layer a multinomial logistic regression
(features standardized with the training mean and deviation, a bias, L2 on the weights) is fitted
with full-batch L-BFGS in torch; the L2 strength is chosen on the validation split and the chosen
probe is scored on the test split. The paper finds the best features in the middle of the network.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch.nn import functional as F

from . import runtime
from .model import IGpt, shift_inputs

DEFAULT_L2 = (1e-5, 1e-4, 1e-3, 1e-2, 1e-1)


@torch.no_grad()
def layer_features(model: IGpt, tokens: np.ndarray, batch_size: int = 64,
                   device: Optional[torch.device] = None, amp: bool = False,
                   progress: bool = False) -> torch.Tensor:
    """Mean-pooled normalized features of every layer: float32 [N, n_layer + 1, n_embd] (on the CPU)."""
    device = device or next(model.parameters()).device
    model.eval()
    cfg = model.config
    blocks = model.transformer.h
    out = torch.empty(len(tokens), cfg.n_layer + 1, cfg.n_embd)
    batch_size = runtime.eval_batch_size(batch_size, cfg.n_head, tokens.shape[1], device)
    t0 = time.time()
    for s in range(0, len(tokens), batch_size):
        x = torch.from_numpy(tokens[s:s + batch_size].astype(np.int64)).to(device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            _, _, inputs = model.hidden(shift_inputs(x, cfg.sos_token_id), return_layer_inputs=True)
            feats = [blocks[i].ln_1(inputs[i]).float().mean(dim=1) for i in range(cfg.n_layer)]
            feats.append(inputs[cfg.n_layer].float().mean(dim=1))  # the final norm's output
        out[s:s + len(x)] = torch.stack(feats, dim=1).cpu()  # [B, L+1, C]
        if progress and (s // batch_size) % 20 == 0:
            done = s + len(x)
            eta = (time.time() - t0) / done * (len(tokens) - done)
            print(f"  features {done}/{len(tokens)} ({eta:.0f}s left)", flush=True)
    return out


def fit_logistic(x: torch.Tensor, y: torch.Tensor, n_classes: int, l2: float, max_iter: int = 200,
                 init: Optional[Tuple[torch.Tensor, torch.Tensor]] = None,
                 bias: bool = True) -> Tuple[torch.Tensor, torch.Tensor]:
    """Multinomial logistic regression by full-batch L-BFGS: minimizes mean cross-entropy +
    l2/2 * ||W||^2 (the bias is not penalized; bias=False fixes it at 0). Returns (W [C, K], b [K]),
    float64."""
    x = x.double()
    W = torch.zeros(x.size(1), n_classes, dtype=torch.float64) if init is None else init[0].clone()
    b = torch.zeros(n_classes, dtype=torch.float64) if init is None else init[1].clone()
    W.requires_grad_(True)
    b.requires_grad_(bias)
    opt = torch.optim.LBFGS([W, b] if bias else [W], lr=1.0, max_iter=max_iter, history_size=20, tolerance_grad=1e-7,
                            tolerance_change=1e-10, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(x @ W + b, y) + 0.5 * l2 * (W * W).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    return W.detach(), b.detach()


def _acc(x: torch.Tensor, y: torch.Tensor, W: torch.Tensor, b: torch.Tensor) -> Tuple[float, float]:
    logits = x.double() @ W + b
    return float((logits.argmax(-1) == y).double().mean()), float(F.cross_entropy(logits, y))


def probe_layer(xtr: torch.Tensor, ytr: torch.Tensor, xva: torch.Tensor, yva: torch.Tensor,
                xte: torch.Tensor, yte: torch.Tensor, n_classes: int,
                l2_grid: Sequence[float] = DEFAULT_L2, max_iter: int = 200) -> Dict[str, float]:
    """One layer's probe: standardize, fit per L2 (strongest first, warm-started), pick the best on
    validation (accuracy, then loss), score on test."""
    mean, std = xtr.mean(0), xtr.std(0).clamp_min(1e-6)
    z = lambda a: (a - mean) / std
    xtr, xva, xte = z(xtr), z(xva), z(xte)
    best, init = None, None
    for l2 in sorted(l2_grid, reverse=True):
        W, b = fit_logistic(xtr, ytr, n_classes, l2, max_iter, init)
        init = (W, b)
        va_acc, va_loss = _acc(xva, yva, W, b)
        if best is None or (va_acc, -va_loss) > (best[0], -best[1]):
            best = (va_acc, va_loss, l2, W, b)
    va_acc, va_loss, l2, W, b = best
    tr_acc, _ = _acc(xtr, ytr, W, b)
    te_acc, _ = _acc(xte, yte, W, b) if len(yte) else (float("nan"), float("nan"))
    return {"train_accuracy": round(tr_acc, 5), "val_accuracy": round(va_acc, 5),
            "test_accuracy": round(te_acc, 5), "l2": l2}


def layer_names(n_layer: int) -> List[str]:
    return [f"{i}" for i in range(n_layer)] + [f"{n_layer} (ln_f)"]


def probe_all(ftr: torch.Tensor, ytr: np.ndarray, fva: torch.Tensor, yva: np.ndarray, fte: torch.Tensor,
              yte: np.ndarray, n_classes: int, l2_grid: Sequence[float] = DEFAULT_L2,
              max_iter: int = 200, verbose: bool = False) -> List[Dict[str, object]]:
    """A probe per layer on features [N, L+1, C]: a list of rows {layer, what, accuracies, l2}."""
    n_layer = ftr.size(1) - 1
    ytr_t, yva_t, yte_t = (torch.from_numpy(np.asarray(a, dtype=np.int64)) for a in (ytr, yva, yte))
    rows = []
    for i in range(n_layer + 1):
        r = probe_layer(ftr[:, i], ytr_t, fva[:, i], yva_t, fte[:, i], yte_t, n_classes, l2_grid, max_iter)
        what = f"ln_1 of block {i} input" if i < n_layer else "ln_f output"
        rows.append({"layer": i, "what": what, **r})
        if verbose:
            print(f"  layer {i}: val {r['val_accuracy']:.4f} test {r['test_accuracy']:.4f} (l2 {r['l2']:g})", flush=True)
    return rows


def markdown_table(rows: List[Dict[str, object]]) -> str:
    lines = ["| layer | features | train acc | val acc | test acc | L2 |", "|---|---|---|---|---|---|"]
    best = max(rows, key=lambda r: r["val_accuracy"])
    for r in rows:
        mark = " **(best val)**" if r is best else ""
        lines.append(f"| {r['layer']} | {r['what']}{mark} | {r['train_accuracy']:.4f} | {r['val_accuracy']:.4f} | "
                     f"{r['test_accuracy']:.4f} | {r['l2']:g} |")
    return "\n".join(lines)


def add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True, help="prepared data dir")
    p.add_argument("--ckpt", required=True, help="checkpoint to probe")
    p.add_argument("--max-train", type=int, default=0, help="seeded subset of N training images (0: all)")
    p.add_argument("--max-val", type=int, default=0, help="first N validation images (0: all)")
    p.add_argument("--max-test", type=int, default=0, help="first N test images (0: all)")
    p.add_argument("--l2", type=float, nargs="+", default=list(DEFAULT_L2), help="L2 strengths to choose from")
    p.add_argument("--max-iter", type=int, default=200, help="L-BFGS iterations per fit")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--json", default=None, help="write the results here (default: next to the checkpoint)")
    p.add_argument("--write-ckpt", action="store_true", help="also store them in the checkpoint's metrics")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=0, help="CPU threads (0: all cores)")
    p.add_argument("--amp", action="store_true", help="bf16 autocast for the features (CUDA, or a CPU with bf16 support)")


def _split(data_dir: str, name: str, limit: int, seed: int, random_subset: bool):
    from .data import load_prepared

    try:
        x, y = load_prepared(data_dir, name)
    except FileNotFoundError:
        return None
    if 0 < limit < len(y):
        idx = (np.sort(np.random.default_rng(seed).permutation(len(y))[:limit]) if random_subset
               else np.arange(limit))
        x, y = x[idx], y[idx]
    return x, y


def main(args) -> int:
    from .checkpoint import load_checkpoint, save_checkpoint
    from .data import read_meta
    from .runtime import configure_threads, pick_device

    configure_threads(args.threads)
    device = pick_device(args.device)
    amp = bool(args.amp)
    meta = read_meta(args.data)
    model, ck = load_checkpoint(args.ckpt)
    model = model.to(device).eval()
    tr = _split(args.data, "train", args.max_train, args.seed, True)
    va = _split(args.data, "val", args.max_val, args.seed, False)
    te = _split(args.data, "test", args.max_test, args.seed, False)
    if va is None or len(va[1]) == 0:  # no validation split: hold out 20% of the training subset
        k = max(1, len(tr[1]) // 5)
        va, tr = (tr[0][:k], tr[1][:k]), (tr[0][k:], tr[1][k:])
    if tr[0].shape[1] != model.config.n_positions:
        raise SystemExit(f"data has {tr[0].shape[1]} tokens per image, the model {model.config.n_positions}")
    n_classes = int(max(tr[1].max(), va[1].max(), te[1].max() if len(te[1]) else 0)) + 1
    print(f"probing {args.ckpt}: {model.config.n_layer + 1} layers, train {len(tr[1])} / val {len(va[1])} / "
          f"test {len(te[1])} images, {n_classes} classes", flush=True)
    t0 = time.time()
    feats = [layer_features(model, s[0], args.batch_size, device, amp, progress=True) for s in (tr, va, te)]
    t_feat = time.time() - t0
    rows = probe_all(feats[0], tr[1], feats[1], va[1], feats[2], te[1], n_classes, args.l2, args.max_iter,
                     verbose=True)
    t_fit = time.time() - t0 - t_feat
    best = max(rows, key=lambda r: r["val_accuracy"])
    print("\n" + markdown_table(rows) + "\n")
    print(f"best layer by val accuracy: {best['layer']} (test {best['test_accuracy']:.4f}); "
          f"features {t_feat:.0f}s, fits {t_fit:.0f}s")
    result = {"checkpoint": os.path.abspath(args.ckpt), "data": os.path.abspath(args.data),
              "dataset": meta.get("dataset"), "splits": {"train": len(tr[1]), "val": len(va[1]), "test": len(te[1])},
              "l2_grid": list(args.l2), "layers": rows, "best_layer": best["layer"],
              "best_val_accuracy": best["val_accuracy"], "best_test_accuracy": best["test_accuracy"]}
    path = args.json or os.path.splitext(args.ckpt)[0] + ".probe.json"
    with open(path, "w") as f:
        json.dump(result, f, indent=1)
    print(f"wrote {path}")
    if args.write_ckpt:
        metrics = dict(ck.get("metrics") or {})
        metrics["linear_probe"] = {r["what"].replace("ln_1 of block ", "block ").replace(" input", ""):
                                   {"val_accuracy": r["val_accuracy"], "test_accuracy": r["test_accuracy"], "l2": r["l2"]}
                                   for r in rows}
        metrics["probe_best_layer"] = best["layer"]
        metrics["probe_best_test_accuracy"] = best["test_accuracy"]
        metrics["probe_train_images"] = len(tr[1])
        fields = {k: v for k, v in ck.items() if k not in ("config", "model")}
        fields["metrics"] = metrics
        save_checkpoint(args.ckpt, model.cpu(), **fields)
        print(f"stored the probe results in {args.ckpt} (metrics.linear_probe)")
    return 0
