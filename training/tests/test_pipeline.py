"""The whole recipe on the tiny config: prepare -> pretrain -> fine-tune -> export, as a user runs it."""
import json
import os
import subprocess
import sys
import time

import pytest

from igpt.data import FASHION_MNIST_DIR

TRAINING = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.skipif(not os.path.isdir(FASHION_MNIST_DIR),
                    reason="needs Fashion-MNIST (apt-get install dataset-fashion-mnist)")
def test_tiny_pipeline_end_to_end(tmp_path):
    t0 = time.time()
    env = dict(os.environ, PYTHONPATH=TRAINING)
    env.pop("IGPT_NO_REEXEC", None)  # run as a user would, allocator re-exec included
    out = tmp_path / "work"
    r = subprocess.run([sys.executable, "-m", "igpt", "pipeline", "--config", "configs/tiny.json",
                        "--out", str(out)], cwd=TRAINING, env=env, capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert time.time() - t0 < 120
    pkg = out / "package"
    manifest = json.loads((pkg / "model.json").read_text())
    assert manifest["id"] == "tiny-fashion-mnist" and manifest["image"] == {"height": 8, "width": 8, "channels": 1}
    assert manifest["palette_size"] == 8 and len(manifest["classes"]) == 10
    for f in ("decoder.onnx", "classifier.onnx", "genai_config.json", "parity.json", "MODEL_CARD.md"):
        assert (pkg / f).is_file(), f
    prepared = json.loads((out / "data" / "meta.json").read_text())
    assert manifest["palette"] == prepared["palette"]
    summary = json.loads(r.stdout.rsplit("== pipeline done: ", 1)[1])
    assert summary["metrics"]["classification_accuracy"] > 0.2  # 10 classes: chance is 0.1
    # a second run finds prepare, train and finetune complete and only re-exports
    r2 = subprocess.run([sys.executable, "-m", "igpt", "pipeline", "--config", "configs/tiny.json",
                         "--out", str(out)], cwd=TRAINING, env=env, capture_output=True, text=True, timeout=120)
    assert r2.returncode == 0, r2.stdout[-3000:] + r2.stderr[-3000:]
    assert r2.stdout.count("skipped") == 3 and "== export done" in r2.stdout


def test_every_command_dispatches_to_its_module():
    from igpt.__main__ import COMMANDS, build_parser
    assert set(COMMANDS) == {"prepare", "train", "finetune", "soup", "probe", "sample", "export", "segments", "sampling",
                             "convert", "import-hf", "pipeline", "analysis"}
    for name in COMMANDS:
        p = build_parser(name)
        assert callable(p.get_default("_main")), name
    args = build_parser("prepare").parse_args(["--out", "x", "--palette-size", "4"])
    assert args.palette_size == 4 and args._main.__module__ == "igpt.prepare"


def test_config_sections_become_command_line_options():
    from igpt.pipeline import to_argv
    assert to_argv({"palette_size": 16, "amp": True, "no_fp16": False, "data": None, "l2": [0.1, 1]}) == \
        ["--palette-size", "16", "--amp", "--l2", "0.1", "1"]
    from igpt import train
    from conftest import parse
    for name in ("tiny.json", "fashion-mnist.json"):  # every key is a real option of its command
        cfg = json.load(open(os.path.join(TRAINING, "configs", name)))
        parse(train, to_argv({**cfg["train"], "data": "d", "out": "o"}))
        from igpt import prepare, finetune
        parse(prepare, to_argv({**cfg["prepare"], "out": "o"}))
        parse(finetune, to_argv({**cfg["finetune"], "data": "d", "init": "i", "out": "o"}))
