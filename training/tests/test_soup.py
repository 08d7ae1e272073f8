"""Model soup: weight averaging of fine-tuned classifiers, greedy choice on val, a finetune-style checkpoint."""
import os
import sys

import numpy as np
import pytest
import torch

TRAINING = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, TRAINING)

from igpt.__main__ import build_parser  # noqa: E402
from igpt.checkpoint import load_checkpoint, save_checkpoint  # noqa: E402
from igpt.data import save_prepared  # noqa: E402
from igpt.classifier import with_classifier  # noqa: E402
from igpt.model import IGpt, preset  # noqa: E402
from igpt.soup import average_states, choose_alpha, interpolate_states  # noqa: E402

PALETTE = [[i * 36] for i in range(8)]


def test_average_states_is_the_elementwise_mean():
    a = {"w": torch.tensor([1.0, 2.0]), "n": torch.tensor([3])}
    b = {"w": torch.tensor([3.0, 6.0]), "n": torch.tensor([5])}
    m = average_states([a, b])
    assert torch.equal(m["w"], torch.tensor([2.0, 4.0]))
    assert torch.equal(m["n"], torch.tensor([3]))  # integer buffers come from the first
    with pytest.raises(SystemExit):
        average_states([a, {"w": torch.zeros(3), "n": torch.tensor([1])}])


def _toy(n, rng):
    y = rng.integers(0, 2, n)
    t = rng.integers(0, 3, (n, 8, 8))
    t[y == 0, :4] += 5
    t[y == 1, 4:] += 5
    return t.reshape(n, 64).astype(np.uint16), y.astype(np.int64)


def _toy_data_and_init(tmp_path, seed: int, evaluated: int) -> None:
    """tmp_path/data: 64 training and `evaluated` val and test toy images; tmp_path/init.pt: a tiny pretrained model."""
    rng = np.random.default_rng(seed)
    save_prepared(str(tmp_path / "data"), {"dataset": "toy", "palette": PALETTE, "classes": ["top", "bottom"]},
                  {"train": _toy(64, rng), "val": _toy(evaluated, rng), "test": _toy(evaluated, rng)})
    torch.manual_seed(seed)
    save_checkpoint(str(tmp_path / "init.pt"), IGpt(preset("tiny")), palette=PALETTE, step=1, tokens_seen=64)


def test_greedy_soup_keeps_the_best_and_leaves_out_a_bad_ingredient(tmp_path):
    _toy_data_and_init(tmp_path, seed=0, evaluated=96)
    # the good ingredient: a few steps of real fine-tuning
    args = build_parser("finetune").parse_args(["--data", str(tmp_path / "data"), "--init", str(tmp_path / "init.pt"),
                                                "--out", str(tmp_path / "ft"), "--max-steps", "24", "--eval-every", "24",
                                                "--batch-size", "16", "--lr", "1e-3", "--gen-weight", "0"])
    assert args._main(args) == 0
    ft, _ = load_checkpoint(str(tmp_path / "ft" / "best.pt"))
    # a bad ingredient: the same body with its head's sign flipped (predicts the other class)
    bad = with_classifier(IGpt(ft.config), 2)
    bad.load_state_dict(ft.state_dict())
    with torch.no_grad():
        bad.score.weight.mul_(-1.0)
    save_checkpoint(str(tmp_path / "bad.pt"), bad, palette=PALETTE, classes=["top", "bottom"],
                    metrics={"finetune_minutes": 1.0, "classification_accuracy": 0.0})
    out = tmp_path / "soup.pt"
    args = build_parser("soup").parse_args(["--data", str(tmp_path / "data"), "--out", str(out), "--ckpt",
                                            str(tmp_path / "bad.pt"), str(tmp_path / "ft" / "best.pt")])
    assert args._main(args) == 0
    soup, ck = load_checkpoint(str(out))
    m = ck["metrics"]
    assert m["soup_ingredients"] == 1  # averaging with the flipped head made val worse: left out
    assert m["finetune_stop"] == "the best by val of 2 fine-tuning runs (no average scored higher)"
    assert ck["train_args"]["soup"]["ingredients"] == [os.path.relpath(str(tmp_path / "ft" / "best.pt"))]
    for k, v in ft.state_dict().items():
        assert torch.equal(v, soup.state_dict()[k])
    assert m["classification_accuracy"] > 0.5 and m["test_images"] == 96
    assert np.array(m["confusion_matrix"]).sum() == 96


def test_interpolation_blends_and_chooses_the_best_accuracy_within_the_bits_budget():
    a = {"w": torch.tensor([0.0, 4.0]), "n": torch.tensor([3])}
    b = {"w": torch.tensor([2.0, 0.0]), "n": torch.tensor([5])}
    assert torch.equal(interpolate_states(a, b, 0.25)["w"], torch.tensor([0.5, 3.0]))
    assert torch.equal(interpolate_states(a, b, 0.0)["w"], a["w"]) and torch.equal(interpolate_states(a, b, 1.0)["w"], b["w"])
    assert torch.equal(interpolate_states(a, b, 0.5)["n"], torch.tensor([3]))
    rows = [{"alpha": 0.0, "accuracy": 0.70, "bits": 1.50}, {"alpha": 0.5, "accuracy": 0.80, "bits": 1.52},
            {"alpha": 0.75, "accuracy": 0.84, "bits": 1.54}, {"alpha": 1.0, "accuracy": 0.86, "bits": 1.60}]
    assert choose_alpha(rows, 0.02)["alpha"] == 0.5    # 0.75 costs 2.7% more bits: over the budget
    assert choose_alpha(rows, 0.03)["alpha"] == 0.75
    assert choose_alpha(rows, 0.10)["alpha"] == 1.0
    assert choose_alpha(rows, 0.0)["alpha"] == 0.0


def test_interpolate_mode_writes_the_chosen_blend_with_its_val_table(tmp_path):
    _toy_data_and_init(tmp_path, seed=1, evaluated=64)
    common = ["--data", str(tmp_path / "data"), "--init", str(tmp_path / "init.pt"), "--eval-every", "16", "--batch-size", "16"]
    p = build_parser("finetune")
    lp = p.parse_args(common + ["--out", str(tmp_path / "lp"), "--lr", "0", "--head-lr", "0", "--max-steps", "1",
                                "--head-init-images", "64"])
    assert lp._main(lp) == 0
    ft = p.parse_args(common + ["--out", str(tmp_path / "ft"), "--max-steps", "16", "--lr", "1e-3"])
    assert ft._main(ft) == 0
    out = tmp_path / "wise.pt"
    args = build_parser("soup").parse_args(["--mode", "interpolate", "--alphas", "0.5,1", "--max-bits-increase", "1",
                                            "--data", str(tmp_path / "data"), "--out", str(out), "--ckpt",
                                            str(tmp_path / "lp" / "best.pt"), str(tmp_path / "ft" / "best.pt")])
    assert args._main(args) == 0
    model, ck = load_checkpoint(str(out))
    m = ck["metrics"]
    assert [r["alpha"] for r in m["interpolation_val"]] == [0.0, 0.5, 1.0]
    best = max(m["interpolation_val"], key=lambda r: (r["accuracy"], -r["alpha"]))
    assert m["interpolation_alpha"] == best["alpha"] and m["val_accuracy"] == round(best["accuracy"], 5)
    start, _ = load_checkpoint(str(tmp_path / "lp" / "best.pt"))
    end, _ = load_checkpoint(str(tmp_path / "ft" / "best.pt"))
    expected = interpolate_states(start.state_dict(), end.state_dict(), best["alpha"])
    for k, v in model.state_dict().items():
        assert torch.allclose(v, expected[k])
    assert m["test_images"] == 64 and ck["train_args"]["soup"]["mode"] == "interpolate"
