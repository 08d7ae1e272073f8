"""Continued training from a shipped package: the package read back into PyTorch
(igpt/package_model.py), `prepare --palette-from`, `train --init`."""
import json
import os
import shutil

import numpy as np
import pytest
import torch

from conftest import parse
from igpt import checkpoint, prepare, train
from igpt.data import load_prepared, read_meta, save_prepared
from igpt.model import shift_inputs
from igpt.package_model import load_package_model

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FIXTURE = os.path.join(ROOT, "tests", "fixtures", "tiny-package")


def with_sos_column(logits):
    return [row + [-1e9] for row in logits.tolist()]


def test_package_model_reproduces_the_packages_parity_logits():
    model, manifest = load_package_model(FIXTURE)
    parity = json.load(open(os.path.join(FIXTURE, "parity.json")))
    with torch.no_grad():
        logits, _ = model(torch.tensor([parity["prompt"]]))
        got = np.asarray(logits[0])
        want = np.asarray(parity["prefill_logits"])[:, :manifest["palette_size"]]
        assert np.abs(got - want).max() < parity["tolerance"]
        rows = torch.tensor(parity["classifier"]["input_ids"])
        class_logits, _ = model.classify(rows)
        assert np.abs(np.asarray(class_logits) - np.asarray(parity["classifier"]["logits"])).max() < 1e-4


@pytest.fixture()
def package_data(tmp_path):
    """A prepared set in the tiny package's format and palette: random tokens, two classes."""
    manifest = json.load(open(os.path.join(FIXTURE, "model.json")))
    h, w, c = (manifest["image"][k] for k in ("height", "width", "channels"))
    rng = np.random.default_rng(0)
    meta = {"dataset": "random", "path": None, "height": h, "width": w, "channels": c,
            "palette_size": manifest["palette_size"], "palette": manifest["palette"], "classes": ["a", "b"],
            "splits": {"train": 64, "val": 16, "test": 16}, "palette_psnr_db": None}

    def split(n):
        return rng.integers(0, manifest["palette_size"], (n, h * w)).astype(np.uint16), rng.integers(0, 2, n)
    save_prepared(str(tmp_path / "data"), meta, {"train": split(64), "val": split(16), "test": split(16)})
    return str(tmp_path / "data")


def args_for(data, out, *extra):
    return parse(train, ["--data", data, "--out", out, "--batch-size", 8, "--eval-interval", 100,
                         "--eval-samples", 8, "--final-eval-samples", 8, "--warmup-steps", 1, "--no-progress",
                         "--threads", 1, *extra])


def test_train_init_starts_from_the_packages_weights(package_data, tmp_path):
    out = str(tmp_path / "run")
    model = train.run(args_for(package_data, out, "--max-steps", 1, "--lr", 0, "--init", FIXTURE))
    source, _ = load_package_model(FIXTURE)
    for k, v in model.state_dict().items():
        assert torch.equal(v, source.state_dict()[k]), k   # lr 0: one step leaves the weights as loaded
    assert "score.weight" not in model.state_dict()        # pretraining: no classification head
    _, ckpt = checkpoint.load_checkpoint(os.path.join(out, "last.pt"))
    assert ckpt["step"] == 1 and ckpt["train_args"]["init"] == FIXTURE
    # the checkpoint it writes is itself a valid --init
    again = train.run(args_for(package_data, str(tmp_path / "again"), "--max-steps", 2, "--lr", 1e-3,
                               "--init", os.path.join(out, "last.pt")))
    assert again.config == model.config


def test_train_init_refuses_data_with_another_palette(package_data, tmp_path):
    other = str(tmp_path / "other")
    shutil.copytree(package_data, other)
    meta = read_meta(other)
    meta["palette"] = [[min(255, v + 1) for v in c] for c in meta["palette"]]
    save_prepared(other, meta, {s: load_prepared(package_data, s) for s in ("train", "val", "test")})
    with pytest.raises(ValueError, match="palette differs"):
        train.run(args_for(other, str(tmp_path / "run"), "--max-steps", 1, "--init", FIXTURE))


def test_prepare_palette_from_quantizes_with_the_given_palette(tmp_path):
    manifest = json.load(open(os.path.join(FIXTURE, "model.json")))
    h, w, c = (manifest["image"][k] for k in ("height", "width", "channels"))
    root = tmp_path / "images"
    rng = np.random.default_rng(1)
    from PIL import Image
    for split in ("train", "test"):
        for cls in ("a", "b"):
            (root / split / cls).mkdir(parents=True)
            for i in range(6):
                Image.fromarray(rng.integers(0, 256, (h, w), dtype=np.uint8)).save(root / split / cls / f"{i}.png")
    out = str(tmp_path / "prep")
    prepare.prepare(parse(prepare, ["--dataset", "folder", "--data", root, "--height", h, "--width", w,
                                    "--channels", c, "--val", 2, "--palette-from",
                                    os.path.join(FIXTURE, "model.json"), "--out", out]))
    meta = read_meta(out)
    assert meta["palette"] == manifest["palette"] and meta["palette_size"] == manifest["palette_size"]
    assert meta["palette_from"].endswith("model.json")
    with pytest.raises(ValueError, match="channels"):
        prepare.prepare(parse(prepare, ["--dataset", "folder", "--data", root, "--height", h, "--width", w,
                                        "--channels", 3, "--val", 2, "--palette-from", os.path.join(FIXTURE, "model.json"),
                                        "--out", str(tmp_path / "x")]))
