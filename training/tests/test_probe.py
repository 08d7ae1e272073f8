"""Linear probes: the L-BFGS logistic regression, per-layer features and the probe command."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

TRAINING = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, TRAINING)

from igpt.checkpoint import load_checkpoint, save_checkpoint  # noqa: E402
from igpt.data import save_prepared  # noqa: E402
from igpt.model import IGpt, preset, shift_inputs  # noqa: E402
from igpt.probe import fit_logistic, layer_features, markdown_table, probe_all  # noqa: E402


def histogram_toy(n, rng):
    """8x8 images whose class is which half of the 8-colour palette most pixels use."""
    y = rng.integers(0, 2, n)
    t = rng.integers(0, 4, (n, 64)) + 4 * y[:, None]
    flip = rng.random((n, 64)) < 0.3  # 30% of pixels from the other half
    t = np.where(flip, rng.integers(0, 8, (n, 64)), t)
    return t.astype(np.uint16), y.astype(np.int64)


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return IGpt(preset("tiny")).eval()


def test_logistic_regression_separates_blobs_and_l2_shrinks():
    g = torch.Generator().manual_seed(0)
    centers = torch.tensor([[3.0, 0.0], [-3.0, 0.0], [0.0, 3.0]])
    y = torch.arange(300) % 3
    x = centers[y] + torch.randn(300, 2, generator=g)
    W, b = fit_logistic(x, y, 3, l2=1e-4)
    acc = float(((x.double() @ W + b).argmax(-1) == y).double().mean())
    assert acc > 0.95
    W_big, _ = fit_logistic(x, y, 3, l2=10.0)
    assert float(W_big.norm()) < 0.5 * float(W.norm())
    # the optimum: the gradient of the penalized loss vanishes
    Wr = W.clone().requires_grad_(True)
    br = b.clone().requires_grad_(True)
    loss = torch.nn.functional.cross_entropy(x.double() @ Wr + br, y) + 0.5e-4 * (Wr * Wr).sum()
    loss.backward()
    assert float(Wr.grad.abs().max()) < 1e-4 and float(br.grad.abs().max()) < 1e-4


def test_layer_features_are_mean_pooled_normalized_inputs(tiny):
    rng = np.random.default_rng(0)
    toks = rng.integers(0, 8, (5, 64)).astype(np.uint16)
    f = layer_features(tiny, toks, batch_size=2)
    assert f.shape == (5, tiny.config.n_layer + 1, tiny.config.n_embd)
    x = shift_inputs(torch.from_numpy(toks.astype(np.int64)), tiny.config.sos_token_id)
    with torch.no_grad():
        t = tiny.transformer
        h = t.wte(x) + t.wpe(torch.arange(64))[None]
        want0 = t.h[0].ln_1(h).mean(1)
        h1, _ = t.h[0](h)
        want1 = t.h[1].ln_1(h1).mean(1)
        hfin, _ = tiny.hidden(x)
    assert torch.allclose(f[:, 0], want0, atol=1e-5)
    assert torch.allclose(f[:, 1], want1, atol=1e-5)
    assert torch.allclose(f[:, 2], hfin.mean(1), atol=1e-5)  # the last entry: ln_f output, the classifier's input


def test_probe_table_shape_and_accuracy(tiny):
    rng = np.random.default_rng(1)
    (xtr, ytr), (xva, yva), (xte, yte) = (histogram_toy(n, rng) for n in (300, 100, 100))
    feats = [layer_features(tiny, x) for x in (xtr, xva, xte)]
    rows = probe_all(feats[0], ytr, feats[1], yva, feats[2], yte, 2, l2_grid=(1e-3, 1e-1))
    assert [r["layer"] for r in rows] == [0, 1, 2]
    assert rows[-1]["what"] == "ln_f output"
    for r in rows:
        assert r["test_accuracy"] > 0.9 and r["l2"] in (1e-3, 1e-1)
    # labels unrelated to the images: the probe cannot generalize
    shuffled = probe_all(feats[0], rng.permutation(ytr), feats[1], rng.permutation(yva), feats[2],
                         rng.permutation(yte), 2, l2_grid=(1e-3,))
    assert max(r["test_accuracy"] for r in shuffled) < 0.7
    table = markdown_table(rows)
    assert table.count("\n") == 2 + 3 - 1 and "(best val)" in table


def test_probe_command_writes_json_and_checkpoint_metrics(tmp_path, tiny):
    rng = np.random.default_rng(2)
    save_prepared(str(tmp_path / "data"), {"dataset": "toy", "classes": ["low", "high"]},
                  {"train": histogram_toy(200, rng), "val": histogram_toy(60, rng), "test": histogram_toy(60, rng)})
    ckpt = tmp_path / "tiny.pt"
    save_checkpoint(str(ckpt), tiny, palette=[[i * 36] for i in range(8)], metrics={"test_bits_per_token": 2.5})
    r = subprocess.run([sys.executable, "-m", "igpt", "probe", "--data", str(tmp_path / "data"), "--ckpt", str(ckpt),
                        "--max-train", "150", "--l2", "1e-3", "1e-2", "--json", str(tmp_path / "p.json"), "--write-ckpt"],
                       cwd=TRAINING, env=dict(os.environ, IGPT_NO_REEXEC="1"), capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "| layer |" in r.stdout
    res = json.load(open(tmp_path / "p.json"))
    assert len(res["layers"]) == 3 and res["splits"] == {"train": 150, "val": 60, "test": 60}
    assert res["best_test_accuracy"] > 0.9
    _, ck = load_checkpoint(str(ckpt))
    m = ck["metrics"]
    assert m["test_bits_per_token"] == 2.5  # kept
    assert set(m["linear_probe"]) == {"block 0", "block 1", "ln_f output"}
    assert m["probe_best_test_accuracy"] == res["best_test_accuracy"]
