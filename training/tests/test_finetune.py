"""Fine-tuning: a tiny model learns a separable toy task; checkpoint, metrics, resume, freezing."""
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

TRAINING = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, TRAINING)

from igpt.__main__ import build_parser  # noqa: E402
from igpt.checkpoint import load_checkpoint, save_checkpoint  # noqa: E402
from igpt.data import save_prepared  # noqa: E402
from igpt.classifier import confusion_table, freeze_lower, probe_head_, with_classifier  # noqa: E402
from igpt.finetune import mirror_some  # noqa: E402
from igpt.model import IGpt, preset, shift_inputs  # noqa: E402

PALETTE = [[i * 36] for i in range(8)]


def half_toy(n, rng):
    """8x8 images: class 0 has bright top rows, class 1 bright bottom rows, on noise.
    The token histograms are the same for both classes: only where the pixels are tells them apart."""
    y = rng.integers(0, 2, n)
    t = rng.integers(0, 3, (n, 8, 8))
    t[y == 0, :4] += 5
    t[y == 1, 4:] += 5
    return t.reshape(n, 64).astype(np.uint16), y.astype(np.int64)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    d = tmp_path_factory.mktemp("ft")
    rng = np.random.default_rng(0)
    save_prepared(str(d / "data"), {"dataset": "toy", "palette": PALETTE, "classes": ["top", "bottom"]},
                  {"train": half_toy(256, rng), "val": half_toy(64, rng), "test": half_toy(96, rng)})
    torch.manual_seed(0)
    save_checkpoint(str(d / "init.pt"), IGpt(preset("tiny")), palette=PALETTE, step=100, tokens_seen=6400,
                    metrics={"test_bits_per_token": 2.9})
    return d


def run_finetune(*argv):
    args = build_parser("finetune").parse_args(list(argv))
    return args._main(args)


def test_finetune_learns_a_separable_task(setup, capsys):
    d = setup
    rc = run_finetune("--data", str(d / "data"), "--init", str(d / "init.pt"), "--out", str(d / "run"),
                      "--epochs", "3", "--eval-every", "16", "--lr", "1e-3", "--head-lr", "1e-2", "--patience", "0",
                      "--threads", "1", "--head-init", "zero")
    assert rc == 0
    out = capsys.readouterr().out
    assert "| true \\ predicted | top | bottom | recall |" in out
    model, ck = load_checkpoint(str(d / "run" / "best.pt"))
    m = ck["metrics"]
    assert m["classification_accuracy"] >= 0.9
    assert m["test_images"] == 96 and np.asarray(m["confusion_matrix"]).sum() == 96
    assert np.trace(np.asarray(m["confusion_matrix"])) / 96 == pytest.approx(m["classification_accuracy"], abs=1e-4)
    assert m["pretrain_test_bits_per_token"] == 2.9 and 0 < m["test_bits_per_token"] < 4
    assert ck["classes"] == ["top", "bottom"] and ck["palette"] == PALETTE
    assert model.config.n_classes == 2 and model.score is not None
    assert ck["step"] == 100 + m["finetune_steps"] and ck["optimizer"] is None
    # the stored accuracy is the stored model's: recompute it
    from igpt.data import load_prepared
    x, y = load_prepared(str(d / "data"), "test")
    with torch.no_grad():
        c, _ = model.classify(shift_inputs(torch.from_numpy(x.astype(np.int64)), 8))
    assert float((c.argmax(-1).numpy() == y).mean()) == pytest.approx(m["classification_accuracy"], abs=1e-4)


def test_untrained_head_is_at_chance(setup):
    model, _ = load_checkpoint(str(setup / "init.pt"))
    model = with_classifier(model, 2)
    from igpt.data import load_prepared
    x, y = load_prepared(str(setup / "data"), "test")
    with torch.no_grad():
        c, _ = model.classify(shift_inputs(torch.from_numpy(x.astype(np.int64)), 8))
    assert torch.all(c == 0)  # the zero head predicts nothing before fine-tuning


def test_resume_continues_and_time_budget_stops(setup):
    d = setup
    common = ["--data", str(d / "data"), "--init", str(d / "init.pt"), "--out", str(d / "resume"),
              "--eval-every", "4", "--patience", "0", "--test-limit", "16", "--threads", "1"]
    assert run_finetune(*common, "--max-steps", "8") == 0
    _, last = load_checkpoint(str(d / "resume" / "last.pt"))
    assert last["train_args"]["finetune_state"]["step"] == 8 and last["optimizer"] is not None
    assert run_finetune(*common, "--max-steps", "12", "--resume") == 0
    _, best = load_checkpoint(str(d / "resume" / "best.pt"))
    assert best["metrics"]["finetune_steps"] == 12 and best["metrics"]["test_images"] == 16
    assert run_finetune(*common[:5], str(d / "budget"), *common[6:], "--max-minutes", "0.00001") == 0
    _, b = load_checkpoint(str(d / "budget" / "best.pt"))
    assert b["metrics"]["finetune_stop"] == "time budget" and b["metrics"]["finetune_steps"] <= 1


def test_frozen_layers_get_no_gradients():
    torch.manual_seed(0)
    model = with_classifier(IGpt(preset("tiny")), 3)
    freeze_lower(model, 1)
    x = torch.randint(0, 8, (2, 64))
    c, g = model.classify(shift_inputs(x, 8))
    (c.sum() + g.sum()).backward()
    t = model.transformer
    assert t.wte.weight.grad is None and t.h[0].attn.c_attn.weight.grad is None
    assert t.h[1].attn.c_attn.weight.grad is not None and model.score.weight.grad is not None


def test_mirror_some_flips_about_half_the_images_left_right():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 8, (400, 3 * 5)).astype(np.uint16)  # 400 images of 3 rows x 5 columns
    before = x.copy()
    out = mirror_some(x, 3, 5, np.random.default_rng(1))
    assert np.array_equal(x, before)  # the caller's array is untouched
    grids, flipped = x.reshape(-1, 3, 5), out.reshape(-1, 3, 5)
    same = (flipped == grids).all(axis=(1, 2))
    mirrored = (flipped == grids[:, :, ::-1]).all(axis=(1, 2))
    assert (same | mirrored).all()  # every image is itself or its exact mirror, rows never mixed
    n_mirrored = int((mirrored & ~same).sum())
    assert 150 < n_mirrored < 250
    assert out.dtype == x.dtype and not np.shares_memory(out, x)
    again = mirror_some(x, 3, 5, np.random.default_rng(1))
    assert np.array_equal(out, again)  # seeded: a resumed run mirrors the same images


def test_finetune_hflip_runs(setup):
    d = setup
    assert run_finetune("--data", str(d / "data"), "--init", str(d / "init.pt"), "--out", str(d / "flip"),
                        "--max-steps", "3", "--eval-every", "3", "--hflip", "--head-init", "zero") == 0
    best, ck = load_checkpoint(str(d / "flip" / "best.pt"))
    assert ck["train_args"]["hflip"] is True


def test_with_classifier_keeps_the_body():
    torch.manual_seed(0)
    base = IGpt(preset("tiny"))
    m = with_classifier(base, 4)
    for k, v in base.state_dict().items():
        assert torch.equal(v, m.state_dict()[k])
    assert m.score.weight.shape == (4, 32) and with_classifier(m, 4) is m


def test_confusion_table():
    t = confusion_table(np.array([[3, 1], [0, 4]]), ["a", "b"])
    assert "| a | 3 | 1 | 0.750 |" in t and "| b | 0 | 4 | 1.000 |" in t


def test_finetune_command_line(setup):
    d = setup
    r = subprocess.run([sys.executable, "-m", "igpt", "finetune", "--data", str(d / "data"), "--init",
                        str(d / "init.pt"), "--out", str(d / "cli"), "--max-steps", "4", "--eval-every", "2",
                        "--freeze-layers", "1", "--gen-weight", "0"],
                       cwd=TRAINING, env=dict(os.environ, IGPT_NO_REEXEC="1"), capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "frozen blocks 1" in r.stdout and os.path.isfile(d / "cli" / "best.pt")


def test_bidirectional_model_keeps_its_attention_or_becomes_causal(setup, capsys):
    d = setup
    torch.manual_seed(1)
    save_checkpoint(str(d / "bert.pt"), IGpt(preset("tiny", bidirectional=True)), palette=PALETTE,
                    metrics={"test_bits_per_token": 2.0})
    common = ["--data", str(d / "data"), "--init", str(d / "bert.pt"), "--max-steps", "2", "--eval-every", "2",
              "--test-limit", "8", "--threads", "1"]
    assert run_finetune(*common, "--out", str(d / "bert_keep")) == 0
    assert "L_GEN is off" in capsys.readouterr().out
    m, ck = load_checkpoint(str(d / "bert_keep" / "best.pt"))
    assert m.config.bidirectional and ck["metrics"]["test_bits_per_token"] == 2.0  # the leaky value is not stored
    assert run_finetune(*common, "--out", str(d / "bert_causal"), "--causal") == 0
    m, ck = load_checkpoint(str(d / "bert_causal" / "best.pt"))
    assert not m.config.bidirectional and ck["metrics"]["pretrain_test_bits_per_token"] == 2.0


def test_probe_head_init_sets_score_to_the_probe(setup):
    from igpt.data import load_prepared
    model, _ = load_checkpoint(str(setup / "init.pt"))
    model = with_classifier(model, 2)
    x, y = load_prepared(str(setup / "data"), "train")
    acc = probe_head_(model, x, y, 64, torch.device("cpu"))
    assert acc > 0.6 and model.training
    with torch.no_grad():
        c, _ = model.classify(shift_inputs(torch.from_numpy(x.astype(np.int64)), 8))
    assert float((c.argmax(-1).numpy() == y).mean()) == pytest.approx(acc, abs=1e-6)
