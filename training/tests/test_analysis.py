"""analysis.onnx (igpt/onnx_graph.build_analysis), its PyTorch reference (igpt/analysis.py), `igpt analysis` and the
OOD score's pieces, against models/README.md ("analysis.onnx").

The graph is evaluated by test_export's numpy interpreter of the ops (no onnxruntime in Python here) and compared with
PyTorch; the C# tests run the same graph in ONNX Runtime against parity.json's `analysis` rows."""
from __future__ import annotations

import json
import math
import os
import shutil
import sys
import zlib

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto
from torch.nn import functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from test_export import FIXTURE, ROOT, _external, _io, _json, run_graph, tiny  # noqa: E402,F401
from igpt import analysis, export, probe  # noqa: E402
import make_test_package  # noqa: E402

SHIPPED = [os.path.join(ROOT, "models", m) for m in ("fashion-mnist-28", "fashion-mnist-14", "emoji-32")]


def test_graph_io_ops_and_checker(tiny):
    model, _, pkg = tiny
    cfg = model.config
    m = onnx.load(os.path.join(pkg, "analysis.onnx"))
    onnx.checker.check_model(m, full_check=False)
    assert {(o.domain, o.version) for o in m.opset_import} == {("", 17), ("com.microsoft", 1)}
    assert _io(m.graph.input) == {"input_ids": (TensorProto.INT64, ["batch_size", "sequence_length"])}
    assert _io(m.graph.output) == {
        "features": (TensorProto.FLOAT, ["batch_size", cfg.n_layer + 1, cfg.n_embd]),
        "token_bits": (TensorProto.FLOAT, ["batch_size", "sequence_length"])}
    assert [n.op_type for n in m.graph.node].count("GroupQueryAttention") == cfg.n_layer


def test_graph_adds_nothing_to_the_weights_file(tiny):
    """Every float tensor of analysis.onnx is one of decoder.onnx's, at the same place in weights.data."""
    _, _, pkg = tiny
    mine, inline = _external(pkg, "analysis.onnx")
    decoder, _ = _external(pkg, "decoder.onnx")
    assert mine and not inline
    assert all(decoder[name] == where for name, where in mine.items())


def _check_graph_against_parity(pkg, atol=1e-4):
    p = _json(pkg, "parity.json")["analysis"]
    ids = np.array(p["input_ids"], np.int64)
    out = run_graph(onnx.load(os.path.join(pkg, "analysis.onnx")), {"input_ids": ids})
    assert out["features"].dtype == np.float32 and out["token_bits"].dtype == np.float32
    np.testing.assert_allclose(out["features"], p["features"], atol=atol, rtol=0)
    np.testing.assert_allclose(out["token_bits"], p["token_bits"], atol=atol, rtol=0)


def test_graph_math_matches_parity(tiny):
    _check_graph_against_parity(tiny[2])


def test_committed_fixture_graph_matches_its_parity():
    _check_graph_against_parity(FIXTURE)


@pytest.mark.parametrize("package", SHIPPED, ids=os.path.basename)
def test_shipped_package_graph_matches_its_parity(package):
    """The shipped packages' analysis.onnx (added from their own weights) against their parity rows."""
    _check_graph_against_parity(package)


def test_parity_rows_are_pytorch_features_and_bits(tiny):
    """parity.json's `analysis`: the probes' features (probe.layer_features) and the model's per-token bits,
    computed here independently of analysis.analyse (cross-entropy of the generative logits)."""
    model, _, pkg = tiny
    cfg = model.config
    p = _json(pkg, "parity.json")["analysis"]
    ids = np.array(p["input_ids"])
    assert ids.shape == (export.PARITY_ANALYSIS_ROWS, cfg.n_positions) and ids.max() < cfg.palette_size
    np.testing.assert_allclose(probe.layer_features(model, ids).numpy(), p["features"], atol=1e-5)
    x = torch.tensor(ids)
    with torch.no_grad():
        logits, _ = model(torch.cat([torch.full((len(x), 1), cfg.sos_token_id), x[:, :-1]], 1))
    nats = F.cross_entropy(logits.reshape(-1, cfg.palette_size), x.reshape(-1), reduction="none").reshape(x.shape)
    np.testing.assert_allclose((nats / math.log(2)).numpy(), p["token_bits"], atol=1e-5)
    want = (nats / math.log(2)).double().mean(1).numpy() - analysis.context_model_bits_per_pixel(ids, cfg.palette_size,
                                                                                                  cfg.width)
    np.testing.assert_allclose(p["ood_score"], want, atol=1e-5)


def test_features_last_entry_is_the_classifier_features(tiny):
    model, _, pkg = tiny
    p = _json(pkg, "parity.json")
    ids = np.array(p["classifier"]["input_ids"])  # [SOS, x0..x(n-2)]: feed x0..x(n-2) plus any last token
    images = np.concatenate([ids[:, 1:], np.zeros((len(ids), 1), np.int64)], 1)
    out = run_graph(onnx.load(os.path.join(pkg, "analysis.onnx")), {"input_ids": images})
    cls = run_graph(onnx.load(os.path.join(pkg, "classifier.onnx")), {"input_ids": ids})
    np.testing.assert_allclose(out["features"][:, -1], cls["features"], atol=1e-5)


def test_manifest_entry_and_embedding_layer(tmp_path):
    model = make_test_package.make_model()
    ckpt = make_test_package.make_checkpoint(model, ["a", "b", "c"])
    export.export_package(model, ckpt, str(tmp_path / "mid"), fp16=False)
    m = _json(str(tmp_path / "mid"), "model.json")
    assert m["analysis"] == {"cpu": {"path": "analysis.onnx", "dtype": "float32"}, "embedding_layer": 1}
    assert list(m).index("analysis") == list(m).index("files") + 1
    ckpt["metrics"] = {"probe_best_layer": 2}
    export.export_package(model, ckpt, str(tmp_path / "probed"), fp16=False)
    assert _json(str(tmp_path / "probed"), "model.json")["analysis"]["embedding_layer"] == 2
    export.export_package(model, ckpt, str(tmp_path / "chosen"), fp16=False, embedding_layer=0)
    assert _json(str(tmp_path / "chosen"), "model.json")["analysis"]["embedding_layer"] == 0
    with pytest.raises(ValueError, match="embedding layer 3: the model has layers 0..2"):
        export.export_package(model, ckpt, str(tmp_path / "bad"), fp16=False, embedding_layer=3)
    card = open(tmp_path / "mid" / "MODEL_CARD.md", encoding="utf-8").read()
    assert "`analysis.onnx` (per-layer embeddings and per-pixel bits, fp32)" in card


def test_load_package_model_is_the_exported_model(tiny):
    model, _, pkg = tiny
    rebuilt, manifest = analysis.load_package_model(pkg)  # package_model's, which analysis uses
    assert manifest["id"] == "tiny-test"
    want = model.state_dict()
    got = rebuilt.state_dict()
    assert set(got) == set(want)
    for k in want:
        assert torch.equal(got[k], want[k]), k


def test_add_graph_gives_what_export_writes(tiny, tmp_path):
    """A package exported before analysis.onnx gets, from its own weights, the graph, parity rows, manifest entry and
    card words export writes today; weights.data and everything else stay as they were."""
    _, _, pkg = tiny
    old = tmp_path / "old"
    shutil.copytree(pkg, old)
    os.remove(old / "analysis.onnx")
    manifest = _json(str(old), "model.json")
    layer = manifest.pop("analysis")["embedding_layer"]
    export._write_json(str(old / "model.json"), manifest)
    parity = _json(str(old), "parity.json")
    del parity["analysis"]
    export._write_json(str(old / "parity.json"), parity)
    card = (old / "MODEL_CARD.md").read_text(encoding="utf-8")
    (old / "MODEL_CARD.md").write_text(card.replace(analysis.ANALYSIS_CARD_TEXT, ""), encoding="utf-8")
    weights = (old / "weights.data").read_bytes()

    assert analysis.add_graph(str(old)) == ["analysis.onnx", "parity.json", "model.json"]
    assert (old / "weights.data").read_bytes() == weights
    assert sorted(os.listdir(old)) == sorted(os.listdir(pkg))
    for name in ("analysis.onnx", "model.json", "MODEL_CARD.md", "parity.json"):
        assert (old / name).read_bytes() == open(os.path.join(pkg, name), "rb").read(), name
    assert _json(str(old), "model.json")["analysis"]["embedding_layer"] == layer


def test_add_graph_refuses_a_package_whose_parity_is_not_its_weights(tiny, tmp_path):
    _, _, pkg = tiny
    old = tmp_path / "old"
    shutil.copytree(pkg, old)
    parity = _json(str(old), "parity.json")
    parity["prefill_logits"][0][0] += 1.0
    export._write_json(str(old / "parity.json"), parity)
    with pytest.raises(ValueError, match="differ by 1"):
        analysis.add_graph(str(old))


def test_auroc_is_the_pairwise_probability():
    rng = np.random.default_rng(3)
    a = rng.integers(0, 6, 40).astype(float)   # ties on purpose
    b = rng.integers(2, 9, 30).astype(float)
    pairs = (b[None, :] > a[:, None]).mean() + 0.5 * (b[None, :] == a[:, None]).mean()
    assert analysis.auroc(a, b) == pytest.approx(pairs, abs=1e-12)
    assert analysis.auroc(np.zeros(3), np.ones(2)) == 1.0 and analysis.auroc(np.ones(3), np.zeros(2)) == 0.0


def test_compressor_reads_the_palette_colours_in_raster_order():
    grey = [[0], [128], [255]]
    tokens = np.array([[0, 1, 2, 2], [2, 2, 2, 2]])
    np.testing.assert_array_equal(analysis.pixel_bytes(tokens, grey), [[0, 128, 255, 255], [255] * 4])
    rgb = [[1, 2, 3], [4, 5, 6]]
    np.testing.assert_array_equal(analysis.pixel_bytes(np.array([[1, 0]]), rgb), [[4, 5, 6, 1, 2, 3]])
    want = 8 * len(zlib.compress(bytes([0, 128, 255, 255]), 9)) / 4
    assert analysis.zlib_bits_per_pixel(tokens, grey)[0] == want


def test_context_model_code_length_by_hand():
    """K = 3 (3 = no neighbour). The 2 x 2 image [[0, 0], [0, 1]] visits four new contexts, (none, none), (0, none),
    (none, 0) and (0, 0): each pixel costs log2 3. The 1 x 3 image [2, 2, 2] codes 2 at 1/3 in (none, none), at 1/3
    in (2, none), then in (2, none) again at (1 + 0.5) / (1 + 1.5)."""
    np.testing.assert_allclose(analysis.context_model_bits_per_pixel(np.array([[0, 0, 0, 1]]), 3, 2), [math.log2(3)])
    want = (math.log2(3) + math.log2(3) - math.log2(1.5 / 2.5)) / 3
    np.testing.assert_allclose(analysis.context_model_bits_per_pixel(np.array([[2, 2, 2]]), 3, 3), [want])
    # a constant image is cheap, noise costs about log2 K (3 bits) plus what learning the counts costs
    flat = analysis.context_model_bits_per_pixel(np.zeros((1, 64), np.int64), 8, 8)[0]
    noise = analysis.context_model_bits_per_pixel(np.random.default_rng(0).integers(0, 8, (1, 64)), 8, 8)[0]
    assert flat < 1 and noise > 3
    bits = np.array([3.0, 1.0])
    tokens = np.array([[0, 0, 0, 1], [2, 2, 2, 2]])
    np.testing.assert_allclose(analysis.ood_score(bits, tokens, 3, 2),
                               bits - analysis.context_model_bits_per_pixel(tokens, 3, 2))


# ---------------------------------------------------------------------------------------------
# `igpt analysis` and scripts/ood_sets.py


def _prepared(tmp_path, cfg):
    from igpt.data import save_prepared

    rng = np.random.default_rng(5)
    # three classes of images a probe can tell apart: dark, mid and light tokens
    def split(n):
        labels = rng.integers(0, 3, n)
        lo = labels * (cfg.palette_size // 3)
        return (lo[:, None] + rng.integers(0, cfg.palette_size // 3 + 1, (n, cfg.n_positions))).clip(0, cfg.palette_size - 1), labels
    save_prepared(str(tmp_path / "data"), {"dataset": "test"}, {"train": split(90), "val": split(30), "test": split(40)})
    ood = tmp_path / "ood"
    ood.mkdir()
    np.savez(ood / "flat.npz", images=np.full((12, cfg.height, cfg.width, 1), 255, np.uint8))
    return str(tmp_path / "data"), str(ood)


def test_analysis_command_measures_the_package_and_writes_manifest_and_card(tiny, tmp_path):
    from igpt import __main__ as cli
    from igpt.data import load_prepared

    model, _, pkg = tiny
    cfg = model.config
    package = tmp_path / "pkg"
    shutil.copytree(pkg, package)
    data, ood = _prepared(tmp_path, cfg)
    args = [str(package), "--data", data, "--ood-sets", ood, "--cache", str(tmp_path / "cache"), "--max-test", "40"]
    assert cli.main(["analysis"] + args) == 0
    m = _json(str(package), "model.json")
    report = json.load(open(tmp_path / "cache" / "tiny-test" / "report.json"))
    best = max(report["probe"], key=lambda r: r["val_accuracy"])
    assert m["analysis"]["embedding_layer"] == best["layer"] == report["embedding_layer"]
    # the quantiles are the OOD score's over the test images, computed here from the definition
    tokens, _ = load_prepared(data, "test")
    with torch.no_grad():
        _, bits = analysis.analyse(model, tokens.astype(np.int64))
    bpp = bits.double().mean(1).numpy()
    score = bpp - analysis.context_model_bits_per_pixel(tokens, cfg.palette_size, cfg.width)
    assert m["analysis"]["ood"]["score"] == "bits_per_pixel_minus_context_model"
    for q, v in m["analysis"]["ood"]["test_quantiles"].items():
        assert v == pytest.approx(np.quantile(score, float(q)), abs=1e-4)
    assert report["mean_bits_per_pixel"] == pytest.approx(bpp.mean(), abs=1e-5)
    assert set(report["auroc"]) == {"flat"} and report["auroc"]["flat"]["images"] == 12
    card = (package / "MODEL_CARD.md").read_text(encoding="utf-8")
    assert card.count(analysis.CARD_SECTION) == 1 and f"default embedding layer is {best['layer']}" in card
    # a second run (from the cache) replaces the section and keeps the rest of the card
    assert cli.main(["analysis"] + args + ["--embedding-layer", "0"]) == 0
    again = (package / "MODEL_CARD.md").read_text(encoding="utf-8")
    assert again.count(analysis.CARD_SECTION) == 1 and "default embedding layer is 0" in again
    assert again.split(analysis.CARD_SECTION)[0] == card.split(analysis.CARD_SECTION)[0]
    assert _json(str(package), "model.json")["analysis"]["embedding_layer"] == 0


def test_ood_sets_are_the_model_size_and_deterministic():
    sys.path.insert(0, os.path.join(ROOT, "scripts"))
    import ood_sets

    digits = ood_sets.render_digits(20, seed=1)
    assert digits.shape == (20, 28, 28) and digits.dtype == np.uint8
    assert (digits[:, 0, :] < 40).all() and (digits.max(axis=(1, 2)) > 200).all()  # white on a black frame
    assert 0.05 < (digits > 127).mean() < 0.4
    np.testing.assert_array_equal(digits, ood_sets.render_digits(20, seed=1))
    manifest = _json(FIXTURE, "model.json")
    sets = ood_sets.make_sets(manifest, 10, 3, "/nonexistent", which=("digits", "noise"))
    assert sets["digits"].shape == sets["noise"].shape == (10, 8, 8, 1)
    palette_values = {v[0] for v in manifest["palette"]}
    assert set(np.unique(sets["noise"])) <= palette_values
