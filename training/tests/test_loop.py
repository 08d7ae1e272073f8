"""The shared training loop (igpt/loop.py): schedule, batches, optimizer groups, the accumulated
step, the sharded evaluation, and pinned numbers of short `train` and `finetune` runs."""
import json
import os

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from conftest import parse
from igpt import loop, train
from igpt.__main__ import build_parser
from igpt.checkpoint import load_checkpoint, save_checkpoint, torch_load
from igpt.classifier import with_classifier
from igpt.data import load_prepared, save_prepared
from igpt.model import IGpt, preset, shift_inputs
from test_finetune import half_toy
from test_train import PALETTE, stripes


def test_lr_factor_warms_up_then_follows_the_cosine_to_its_floor():
    assert loop.lr_factor(0.25, 0.0, 0.1) == 0.25  # warming up: the share done
    assert loop.lr_factor(1.0, 0.0, 0.1) == pytest.approx(1.0)
    assert loop.lr_factor(1.0, 0.5, 0.1) == pytest.approx(0.55)
    assert loop.lr_factor(1.0, 1.0, 0.1) == pytest.approx(0.1)
    assert loop.lr_factor(1.0, 3.0, 0.2) == pytest.approx(0.2) and loop.lr_factor(1.0, -1.0, 0.2) == pytest.approx(1.0)


def test_set_lr_scales_every_groups_own_peak():
    torch.manual_seed(0)
    model = with_classifier(IGpt(preset("tiny")), 3)
    opt = loop.make_optimizer(model, 1e-3, 0.01, head_lr=1e-2)
    peaks = [g["lr"] for g in opt.param_groups]
    loop.set_lr(opt, peaks, 0.5)
    assert [g["lr"] for g in opt.param_groups] == [5e-4, 5e-4, 5e-3]


def test_optimizer_groups_decay_matrices_only_and_skip_frozen_weights():
    torch.manual_seed(0)
    model = with_classifier(IGpt(preset("tiny")), 3)
    for p in model.transformer.wte.parameters():
        p.requires_grad_(False)
    decay, no_decay, head = loop.make_optimizer(model, 1e-3, 0.01, head_lr=1e-2).param_groups
    assert all(p.dim() >= 2 for p in decay["params"]) and decay["weight_decay"] == 0.01
    assert all(p.dim() < 2 for p in no_decay["params"]) and no_decay["weight_decay"] == 0.0
    assert head["params"] == [model.score.weight] and head["lr"] == 1e-2 and head["weight_decay"] == 0.01
    grouped = {id(p) for g in (decay, no_decay, head) for p in g["params"]}
    assert grouped == {id(p) for p in model.parameters() if p.requires_grad}
    assert id(model.transformer.wte.weight) not in grouped
    plain = loop.make_optimizer(model, 1e-3, 0.01).param_groups  # no head_lr: `score` is one more matrix
    assert len(plain) == 2 and any(p is model.score.weight for p in plain[0]["params"])


def test_batches_seek_lands_where_stepping_does():
    a = loop.Batches(50, 8, seed=5)
    for _ in range(13):  # 6 batches an epoch: into the third epoch
        a.next()
    b = loop.Batches(50, 8, seed=5)
    b.seek(13)
    assert b.steps_per_epoch == 6 and np.array_equal(a.next(), b.next())


def test_a_set_smaller_than_a_batch_is_every_batch_but_not_under_ddp():
    b = loop.Batches(5, 8, seed=1)
    first, second = b.next(), b.next()
    assert sorted(first.tolist()) == sorted(second.tolist()) == [0, 1, 2, 3, 4]
    assert first.tolist() != second.tolist()  # a new epoch, a new order
    with pytest.raises(ValueError, match="5 training examples < global batch 8"):
        loop.Batches(5, 4, rank=0, world=2)


def test_micro_batches_accumulate_the_whole_batch_gradient():
    x = torch.randint(0, 8, (6, 64), generator=torch.Generator().manual_seed(0))

    def loss_fn(net, xb):
        logits, _ = net(shift_inputs(xb, 8))  # [B, S, V]
        loss = F.cross_entropy(logits.reshape(-1, 8), xb.reshape(-1))
        return loss, {"loss": loss}

    grads, losses = [], []
    for micro in (0, 4, 1):  # one pass; 4 + 2; six of one
        torch.manual_seed(0)
        model = IGpt(preset("tiny"))
        opt = torch.optim.SGD(model.parameters(), lr=0.0)  # a step that changes nothing: compare the gradients
        losses.append(float(loop.train_step(model, opt, loss_fn, [x], micro=micro)["loss"]))
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
    for g, loss in zip(grads[1:], losses[1:]):
        assert torch.allclose(g, grads[0], atol=1e-6) and loss == pytest.approx(losses[0], rel=1e-6)


def test_evaluate_shards_over_ranks_and_sums():
    torch.manual_seed(0)
    model = IGpt(preset("tiny"))
    tokens = np.random.default_rng(0).integers(0, 8, (7, 64)).astype(np.uint16)

    def count(m, x):
        logits, _ = m(shift_inputs(x, 8))
        return {"n": len(x), "ids": x[:, 0].sum().item(), "nats": float(F.cross_entropy(
            logits.reshape(-1, 8), x.reshape(-1), reduction="sum"))}

    whole = loop.evaluate(model, count, [tokens], batch_size=3)
    parts = [loop.evaluate(model, count, [tokens], batch_size=2, rank=r, world=2) for r in (0, 1)]
    assert whole["n"] == 7 and [p["n"] for p in parts] == [4, 3]
    assert parts[0]["ids"] + parts[1]["ids"] == whole["ids"] == int(tokens[:, 0].sum())
    assert parts[0]["nats"] + parts[1]["nats"] == pytest.approx(whole["nats"], rel=1e-6)
    assert model.training  # its mode is given back


# Pinned numbers: computed with the code at commit 32519a2 (before train and finetune shared
# igpt/loop.py), PyTorch 1.13 on a CPU, one thread. Same seeds, same data order, same schedule
# and the same loss: the same numbers (to rounding a different PyTorch may bring).
PINNED_TRAIN = {
    "ar": {"log": [[1.7479777932167053, 1.642168790102005, 0.003], [1.5505472421646118, 1.505402833223343, 0.0005578270575938211]],
           "val_loss": 1.50540292263031, "test_loss": 1.5164619088172913, "fixed": 1.516461902900556},
    "bert": {"log": [[2.034609079360962, 2.0314246030040484, 0.003]],
             "val_loss": 1.9423882961273193, "test_loss": 1.9135969877243042, "train_loss": 2.023008108139038,
             "fixed": 1.9280263731469525},
}
PINNED_FINETUNE = {
    "probe_hflip": {"history": [[1.898, 2.9876, 0.8125, 0.5938, 2.9488], [1.4646, 2.9338, 0.8542, 1.0, 2.9047]],
                    "test_bits_per_token": 2.90866, "confusion": [[14, 0], [0, 18]], "fixed_gen": 2.0138371842131466},
    "zero_frozen": {"history": [[0.6936, 2.9756, 0.5, 0.5938, 2.9083], [0.6835, 2.9077, 0.4375, 0.6562, 2.8851]],
                    "test_bits_per_token": 2.88796, "fixed_clf": 0.6679946260965566, "fixed_gen": 2.000706056992706},
}


def test_train_gives_the_pinned_numbers(tmp_path):
    rng = np.random.default_rng(0)
    meta = {"dataset": "stripes", "path": None, "height": 8, "width": 8, "channels": 1, "palette_size": 8,
            "palette": PALETTE, "classes": ["a", "b"], "splits": {"train": 256, "val": 32, "test": 32}}
    data = str(tmp_path / "data")
    save_prepared(data, meta, {"train": stripes(256, rng), "val": stripes(32, rng), "test": stripes(32, rng)})
    common = ["--data", data, "--preset", "tiny", "--batch-size", 16, "--eval-interval", 4, "--eval-samples", 32,
              "--final-eval-samples", 32, "--warmup-steps", 3, "--lr", 3e-3, "--no-progress", "--threads", 1,
              "--dropout", 0.1]
    x = torch.from_numpy(load_prepared(data, "test")[0].astype(np.int64))
    for name, extra in (("ar", ["--max-steps", 8, "--micro-batch", 8]), ("bert", ["--max-steps", 6, "--objective", "bert"])):
        want, out = PINNED_TRAIN[name], str(tmp_path / name)
        model = train.run(parse(train, common + ["--out", out] + extra))
        log = [json.loads(line) for line in open(os.path.join(out, "log.jsonl"))]
        got = [[r["train_loss"], r["val_loss"], r["lr"]] for r in log if not r.get("final")]
        assert np.allclose(got, want["log"], rtol=1e-5, atol=0), (name, got)
        m = torch_load(os.path.join(out, "last.pt"))["metrics"]
        assert m["val_loss"] == pytest.approx(want["val_loss"], rel=1e-5)
        assert m["test_loss"] == pytest.approx(want["test_loss"], rel=1e-5)
        assert m["train_loss"] == pytest.approx(want.get("train_loss", got[-1][0]), rel=1e-5)
        with torch.no_grad():
            logits, _ = model.eval()(shift_inputs(x, 8))  # without dropout
        fixed = F.cross_entropy(logits.double().reshape(-1, 8), x.reshape(-1)).item()
        assert fixed == pytest.approx(want["fixed"], rel=1e-5), name


def test_finetune_gives_the_pinned_numbers(tmp_path):
    rng = np.random.default_rng(0)
    data = str(tmp_path / "data")
    save_prepared(data, {"dataset": "toy", "palette": PALETTE, "classes": ["top", "bottom"]},
                  {"train": half_toy(256, rng), "val": half_toy(64, rng), "test": half_toy(96, rng)})
    torch.manual_seed(0)
    save_checkpoint(str(tmp_path / "init.pt"), IGpt(preset("tiny")), palette=PALETTE, step=100, tokens_seen=6400)
    common = ["--data", data, "--init", str(tmp_path / "init.pt"), "--batch-size", 16, "--lr", 1e-3,
              "--head-lr", 1e-2, "--eval-every", 3, "--patience", 0, "--threads", 1, "--test-limit", 32,
              "--val-limit", 32, "--seed", 3]
    x, y = (torch.from_numpy(a.astype(np.int64)) for a in load_prepared(data, "test"))
    for name, extra in (("probe_hflip", ["--max-steps", 6, "--hflip", "--head-init-images", 64, "--warmup", 0.3,
                                         "--head-lr", 1e-3]),
                        ("zero_frozen", ["--max-steps", 5, "--head-init", "zero", "--freeze-layers", 1,
                                         "--gen-weight", 0.25])):
        want, out = PINNED_FINETUNE[name], str(tmp_path / name)
        args = build_parser("finetune").parse_args([str(a) for a in common + ["--out", out] + extra])
        assert args._main(args) == 0
        history = torch_load(os.path.join(out, "last.pt"))["train_args"]["finetune_state"]["history"]
        got = [[r[k] for k in ("train_clf_loss", "train_bits_per_token", "train_accuracy", "val_accuracy",
                               "val_bits_per_token")] for r in history]
        assert np.allclose(got, want["history"], rtol=0, atol=1.5e-4), (name, got)  # rounded to 4 places
        model, best = load_checkpoint(os.path.join(out, "best.pt"))
        assert best["metrics"]["test_bits_per_token"] == pytest.approx(want["test_bits_per_token"], abs=1.5e-5)
        if "confusion" in want:
            assert best["metrics"]["confusion_matrix"] == want["confusion"]
        with torch.no_grad():
            c, g = model.classify(shift_inputs(x, 8))
        assert F.cross_entropy(g.double().reshape(-1, 8), x.reshape(-1)).item() == pytest.approx(want["fixed_gen"], rel=1e-5)
        if "fixed_clf" in want:
            assert F.cross_entropy(c.double(), y).item() == pytest.approx(want["fixed_clf"], rel=1e-5)


def test_cpu_evaluation_runs_long_sequences_in_small_micro_batches_with_the_same_results():
    from igpt import runtime
    from igpt.model import IGptConfig
    from igpt.probe import layer_features
    cpu, gpu = torch.device("cpu"), torch.device("cuda")
    # 4 heads x 1024^2 fp32 scores = 16 MiB an image: 4 fit the 64 MiB budget; short sequences keep the whole batch
    assert runtime.eval_batch_size(64, 4, 1024, cpu) == 4
    assert runtime.eval_batch_size(64, 4, 196, cpu) == 64
    assert runtime.eval_batch_size(64, 64, 4096, cpu) == 1
    assert runtime.eval_batch_size(64, 4, 1024, gpu) == 64
    torch.manual_seed(0)
    model = IGpt(IGptConfig(palette_size=8, n_positions=1024, n_embd=16, n_layer=1, n_head=4, height=32, width=32)).eval()
    tokens = np.random.default_rng(0).integers(0, 8, size=(6, 1024))
    torch.testing.assert_close(layer_features(model, tokens, 64), layer_features(model, tokens, 1))
    measure = lambda m, x: {"nats": float(F.cross_entropy(m(shift_inputs(x, 8))[0].reshape(-1, 8), x.reshape(-1), reduction="sum"))}
    assert loop.evaluate(model, measure, [tokens], 64)["nats"] == pytest.approx(loop.evaluate(model, measure, [tokens], 1)["nats"], rel=1e-5)
