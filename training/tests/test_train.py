"""Pretraining on a tiny prepared set: the loss falls, resume is exact, budgets stop cleanly."""
import json
import os

import numpy as np
import pytest
import torch

from conftest import parse
from igpt import checkpoint, loop, train
from igpt.data import load_prepared, save_prepared
from igpt.model import shift_inputs

PALETTE = [[i * 36] for i in range(8)]


def stripes(n, rng):
    """8x8 images of horizontal stripes with a random phase and colour pair: learnable structure."""
    rows = np.arange(8)[None, :, None]
    phase = rng.integers(0, 2, (n, 1, 1))
    a, b = rng.integers(0, 8, (n, 1, 1)), rng.integers(0, 8, (n, 1, 1))
    img = np.where((rows + phase) % 2 == 0, a, b) * np.ones((1, 1, 8), np.int64)
    return img.reshape(n, 64).astype(np.uint16), rng.integers(0, 2, n).astype(np.int64)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    d = tmp_path_factory.mktemp("prep")
    rng = np.random.default_rng(0)
    meta = {"dataset": "stripes", "path": None, "height": 8, "width": 8, "channels": 1, "palette_size": 8,
            "palette": PALETTE, "classes": ["a", "b"], "splits": {"train": 256, "val": 32, "test": 32},
            "palette_psnr_db": 40.0}
    save_prepared(str(d), meta, {"train": stripes(256, rng), "val": stripes(32, rng), "test": stripes(32, rng)})
    return str(d)


def args_for(data, out, *extra):
    return parse(train, ["--data", data, "--out", out, "--preset", "tiny", "--batch-size", 16,
                         "--eval-interval", 10, "--eval-samples", 32, "--warmup-steps", 5, "--lr", 3e-3,
                         "--no-progress", "--threads", 1, *extra])


def fixed_batch_loss(model, data):
    x = torch.from_numpy(load_prepared(data, "val")[0].astype(np.int64))
    with torch.no_grad():
        logits, _ = model(shift_inputs(x, 8))
    return torch.nn.functional.cross_entropy(logits.reshape(-1, 8), x.reshape(-1)).item()


def test_training_reduces_loss_and_writes_a_checkpoint(prepared, tmp_path):
    out = str(tmp_path / "run")
    model = train.run(args_for(prepared, out, "--max-steps", 60, "--micro-batch", 8))
    m, ckpt = checkpoint.load_checkpoint(os.path.join(out, "last.pt"))
    assert ckpt["step"] == 60 and ckpt["tokens_seen"] == 60 * 16 * 64
    assert ckpt["palette"] == PALETTE and ckpt["classes"] == ["a", "b"]
    assert ckpt["dataset"]["height"] == 8 and ckpt["optimizer"] is not None
    assert set(ckpt["metrics"]) >= {"val_bits_per_token", "test_bits_per_token", "train_loss"}
    for k, v in model.state_dict().items():
        assert torch.equal(v, m.state_dict()[k])
    torch.manual_seed(1337)
    fresh = train.IGpt(m.config)
    assert fixed_batch_loss(m, prepared) < fixed_batch_loss(fresh, prepared) - 0.3
    assert ckpt["metrics"]["test_bits_per_token"] < 2.7  # uniform over 8 colours is 3 bits
    assert os.path.exists(os.path.join(out, "best.pt"))
    log = [json.loads(l) for l in open(os.path.join(out, "log.jsonl"))]
    assert [r["step"] for r in log if not r.get("final")] == [10, 20, 30, 40, 50, 60]


def test_resume_continues_exactly_where_it_stopped(prepared, tmp_path):
    straight = train.run(args_for(prepared, str(tmp_path / "a"), "--max-steps", 30, "--dropout", 0.1))
    out = str(tmp_path / "b")
    train.run(args_for(prepared, out, "--max-steps", 30, "--steps-this-run", 17, "--dropout", 0.1))
    assert checkpoint.torch_load(os.path.join(out, "last.pt"))["step"] == 17
    resumed = train.run(args_for(prepared, out, "--max-steps", 30, "--dropout", 0.1, "--resume"))
    ckpt = checkpoint.torch_load(os.path.join(out, "last.pt"))
    assert ckpt["step"] == 30 and ckpt["tokens_seen"] == 30 * 16 * 64
    # same data order, dropout masks, optimizer state and schedule: the same weights
    for k, v in straight.state_dict().items():
        assert torch.allclose(v, resumed.state_dict()[k], atol=1e-6), k


def test_time_budget_stops_cleanly_with_a_checkpoint(prepared, tmp_path):
    out = str(tmp_path / "t")
    train.run(args_for(prepared, out, "--max-steps", 10 ** 6, "--max-minutes", 0.02))
    ckpt = checkpoint.torch_load(os.path.join(out, "last.pt"))
    assert 0 < ckpt["step"] < 10 ** 6 and ckpt["wall_time_s"] < 30
    assert "test_bits_per_token" in ckpt["metrics"]


def test_bert_objective_learns_masked_pixels(prepared, tmp_path):
    out = str(tmp_path / "bert")
    train.run(args_for(prepared, out, "--max-steps", 60, "--objective", "bert", "--mask-prob", 0.15))
    m, ckpt = checkpoint.load_checkpoint(os.path.join(out, "last.pt"))
    assert m.config.bidirectional and ckpt["objective"] == "bert"
    assert ckpt["metrics"]["val_bits_per_token"] < 2.5


def test_batches_cover_an_epoch_and_restore():
    b = loop.Batches(50, 8, rank=0, world=1, seed=3, sort=True)
    seen = np.concatenate([b.next() for _ in range(6)])
    assert len(set(seen.tolist())) == 48
    state = b.state_dict()
    nxt = b.next()
    c = loop.Batches(50, 8, rank=0, world=1, seed=3, sort=True)
    c.load_state_dict(state)
    assert np.array_equal(c.next(), nxt)
    r0, r1 = loop.Batches(50, 4, 0, 2, 3), loop.Batches(50, 4, 1, 2, 3)
    assert not set(r0.next().tolist()) & set(r1.next().tolist())


def test_too_few_examples_for_the_global_batch_is_a_clear_error(prepared, tmp_path):
    with pytest.raises(ValueError, match="256 training examples < global batch 300"):
        train.run(args_for(prepared, str(tmp_path / "big"), "--max-steps", 1, "--batch-size", 300))


def test_plain_cuda_device_gets_an_index_for_set_device(monkeypatch):
    """`--device cuda` (or auto on a GPU machine): PyTorch 2.x's set_device rejects a device
    without an index, so a single process takes the current device's."""
    from igpt import runtime
    from igpt.loop import Dist

    chosen = []
    monkeypatch.setattr(runtime, "pick_device", lambda name: torch.device("cuda"))
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "set_device", lambda d: chosen.append(d))
    for k in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "LOCAL_WORLD_SIZE"):
        monkeypatch.delenv(k, raising=False)
    d = Dist("cuda")
    assert d.device == torch.device("cuda", 0)
    assert chosen == [torch.device("cuda", 0)]
