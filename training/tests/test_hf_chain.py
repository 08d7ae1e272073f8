"""The HuggingFace chain end to end without the real weights: a random ImageGPT folder in the Hub's
format at iGPT's own shape (32x32 RGB, 512 clusters, 1024 positions) -> `import-hf` -> `export` -> a
package whose palette, geometry, graphs and parity logits are checked against the HF folder itself.

The logits are compared with a forward pass written here from HF ImageGPT's equations on the raw
HF state dict (independent of igpt.model), and decoder.onnx is run by test_export's numpy
interpreter of the graph's ops. The C# side (tests/IGpt.Api.Tests/HfChainTests.cs and
tools/ortcheck) serves and checks the committed package made by scripts/make_hf_test_package.py;
the last test here keeps that fixture equal to what the script makes.
"""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

HERE = os.path.dirname(os.path.abspath(__file__))
TRAINING = os.path.dirname(HERE)
ROOT = os.path.dirname(TRAINING)
sys.path.insert(0, TRAINING)
sys.path.insert(0, os.path.join(TRAINING, "scripts"))

import make_hf_test_package as mk  # noqa: E402
from igpt.import_hf import hf_clusters_to_palette  # noqa: E402
from igpt.model import IGptConfig  # noqa: E402
from test_export import run_graph, run_steps  # noqa: E402  (the numpy interpreter of the exported graphs)

FIXTURE = os.path.join(ROOT, "tests", "fixtures", "hf-tiny-package")


def hf_forward(sd, cfg, ids):
    """HF ImageGPTForCausalImageModeling's logits [B, S, vocab-1] from its equations on the raw state
    dict: ImageGPTLayerNorm x / sqrt(mean(x^2) + eps) * w, Conv1D x @ W + b, the causal mask taken
    from the `attn.bias` buffer, masked scores set to `masked_bias`, quick_gelu, untied lm_head."""
    B, S = ids.shape
    C, H, eps = cfg["n_embd"], cfg["n_head"], cfg["layer_norm_epsilon"]
    D = C // H
    ln = lambda x, w: x / torch.sqrt(torch.mean(x * x, dim=-1, keepdim=True) + eps) * w
    h = sd["transformer.wte.weight"][ids] + sd["transformer.wpe.weight"][torch.arange(S)][None]
    for i in range(cfg["n_layer"]):
        p = f"transformer.h.{i}."
        qkv = ln(h, sd[p + "ln_1.weight"]) @ sd[p + "attn.c_attn.weight"] + sd[p + "attn.c_attn.bias"]
        q, k, v = (t.reshape(B, S, H, D).permute(0, 2, 1, 3) for t in qkv.split(C, dim=2))
        w = q @ k.transpose(-1, -2) / math.sqrt(D)
        w = torch.where(sd[p + "attn.bias"][:, :, :S, :S], w, sd[p + "attn.masked_bias"])
        o = (torch.softmax(w, dim=-1) @ v).permute(0, 2, 1, 3).reshape(B, S, C)
        h = h + o @ sd[p + "attn.c_proj.weight"] + sd[p + "attn.c_proj.bias"]
        m = ln(h, sd[p + "ln_2.weight"]) @ sd[p + "mlp.c_fc.weight"] + sd[p + "mlp.c_fc.bias"]
        h = h + (m * torch.sigmoid(1.702 * m)) @ sd[p + "mlp.c_proj.weight"] + sd[p + "mlp.c_proj.bias"]
    return ln(h, sd["transformer.ln_f.weight"]) @ sd["lm_head.weight"].T


def igpt(*argv):
    r = subprocess.run([sys.executable, "-m", "igpt", *[str(a) for a in argv]], cwd=TRAINING,
                       capture_output=True, text=True, timeout=300, env={**os.environ, "IGPT_NO_REEXEC": "1"})
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout


def _json(*parts):
    with open(os.path.join(*parts), encoding="utf-8") as f:
        return json.load(f)


@pytest.fixture(scope="module")
def hf(tmp_path_factory):
    """The HF folder as the Hub has it (pytorch_model.bin with the mask buffers, `"size": 32`)."""
    d = str(tmp_path_factory.mktemp("hf") / mk.HF_NAME)
    return d, mk.write_hf_dir(d)


def test_the_hf_folder_is_in_the_hubs_format(hf):
    d, made = hf
    assert sorted(os.listdir(d)) == ["config.json", "preprocessor_config.json", "pytorch_model.bin"]
    cfg = _json(d, "config.json")
    assert cfg["model_type"] == "imagegpt" and cfg["architectures"] == ["ImageGPTForCausalImageModeling"]
    assert (cfg["vocab_size"], cfg["n_positions"], cfg["activation_function"]) == (513, 1024, "quick_gelu")
    assert list(cfg) == sorted(cfg)  # transformers writes sorted keys
    pre = _json(d, "preprocessor_config.json")
    clusters = np.asarray(pre["clusters"])
    assert clusters.shape == (512, 3) and clusters.min() >= -1 and clusters.max() <= 1
    assert pre["size"] == 32
    sd = torch.load(os.path.join(d, "pytorch_model.bin"))
    assert sd["lm_head.weight"].shape == (512, cfg["n_embd"])                      # vocab_size - 1 outputs
    assert sd["transformer.h.0.mlp.c_fc.weight"].shape == (cfg["n_embd"], 4 * cfg["n_embd"])  # Conv1D [in, out]
    assert sd["transformer.h.1.attn.bias"].dtype == torch.bool and "transformer.h.1.attn.masked_bias" in sd


@pytest.mark.parametrize("weights,size_style", [("bin", "hub"), ("safetensors", "processor")])
def test_import_then_export_makes_a_package_that_matches_hf(tmp_path, weights, size_style):
    d = str(tmp_path / mk.HF_NAME)
    made = mk.write_hf_dir(d, weights=(weights,), size_style=size_style)
    cfg, sd = made["config"], made["state_dict"]
    igpt("import-hf", "--hf-dir", d, "--out", tmp_path / "imported.pt")
    out = igpt("export", "--ckpt", tmp_path / "imported.pt", "--out", tmp_path / "pkg", "--id", "hf-chain")
    pkg = str(tmp_path / "pkg")
    assert "decoder.onnx" in out

    m = _json(pkg, "model.json")
    assert m["id"] == "hf-chain" and m["image"] == {"height": 32, "width": 32, "channels": 3}
    assert (m["palette_size"], m["sos_token_id"], m["vocab_size"]) == (512, 512, 513)
    assert m["palette"] == hf_clusters_to_palette(made["clusters"])  # HF's cluster order = token ids
    assert len({tuple(c) for c in m["palette"]}) == 512
    assert [0, 0, 0] in m["palette"] and [255, 255, 255] in m["palette"]
    a = m["architecture"]
    assert (a["n_layer"], a["n_head"], a["n_embd"], a["n_positions"]) == \
        (cfg["n_layer"], cfg["n_head"], cfg["n_embd"], cfg["n_positions"])
    assert m["classes"] == [] and m["files"]["classifier"] is None
    steps = [f"decoder.step.{i}.onnx" for i in range(a["n_layer"] + 1)]
    assert sorted(os.listdir(pkg)) == sorted(["MODEL_CARD.md", "analysis.onnx", "decoder.fp16.onnx", "decoder.onnx", "genai_config.json",
                                              "model.json", "parity.json", "weights.data"] + steps)
    assert m["training"]["dataset"] == f"hf:{mk.HF_NAME}"

    # parity.json (our PyTorch) against HF's equations on the raw HF tensors
    par = _json(pkg, "parity.json")
    ids = torch.tensor([par["prompt"] + par["decode_tokens"]])
    want = hf_forward(sd, cfg, ids)[0]                                              # [S, 512]
    got = torch.tensor(par["prefill_logits"] + par["decode_logits"])                # [S, 513]
    assert got.shape == (ids.shape[1], 513) and torch.all(got[:, 512] == -1e9)
    assert float(want.std()) > 0.5  # far from uniform: the comparison means something
    assert torch.allclose(got[:, :512], want, atol=1e-4), (got[:, :512] - want).abs().max()

    # decoder.onnx (numpy interpreter of its ops): prefill then one token at a time, shared buffer
    graph = onnx.load(os.path.join(pkg, "decoder.onnx"))
    onnx.checker.check_model(graph)
    inits = {t.name: numpy_helper.to_array(t) for t in graph.graph.initializer}
    assert any(np.array_equal(v, sd["transformer.wte.weight"].numpy()) for v in inits.values())
    n_prompt = len(par["prompt"])
    steps = [([par["prompt"]], [[1] * n_prompt], [list(range(n_prompt))])]
    steps += [([[t]], [[1] * (n_prompt + j + 1)], [[n_prompt + j]]) for j, t in enumerate(par["decode_tokens"])]
    icfg = IGptConfig(palette_size=512, n_positions=1024, n_embd=cfg["n_embd"], n_layer=cfg["n_layer"],
                      n_head=cfg["n_head"], height=32, width=32, channels=3)
    outs = run_steps(graph, icfg, steps, batch=1, cache_len=1024, dtype=np.float32)
    onnx_logits = np.concatenate([o[0] for o in outs])                              # [S, 513]
    assert np.abs(onnx_logits[:, :512] - want.numpy()).max() < 1e-4
    assert np.all(onnx_logits[:, 512] == -1e9)


def test_the_committed_fixture_is_what_the_script_makes(tmp_path):
    assert mk.main(["--out", str(tmp_path / "pkg")]) == 0
    new, old = str(tmp_path / "pkg"), FIXTURE
    assert sorted(os.listdir(new)) == sorted(os.listdir(old))
    total = sum(os.path.getsize(os.path.join(old, f)) for f in os.listdir(old))
    assert total < 2_000_000
    for name in ("model.json", "genai_config.json"):
        assert _json(new, name) == _json(old, name), f"{name}: rerun scripts/make_hf_test_package.py"
    with open(os.path.join(new, "MODEL_CARD.md"), encoding="utf-8") as f, \
            open(os.path.join(old, "MODEL_CARD.md"), encoding="utf-8") as g:
        assert f.read() == g.read()
    a, b = _json(new, "parity.json"), _json(old, "parity.json")
    assert (a["prompt"], a["decode_tokens"]) == (b["prompt"], b["decode_tokens"])
    for key in ("prefill_logits", "decode_logits"):
        assert np.allclose(a[key], b[key], atol=1e-5), key
    for name in ("decoder.onnx", "decoder.fp16.onnx"):
        ga, gb = onnx.load(os.path.join(new, name)).graph, onnx.load(os.path.join(old, name)).graph
        assert [n.op_type for n in ga.node] == [n.op_type for n in gb.node]
        ia = {t.name: numpy_helper.to_array(t) for t in ga.initializer}
        ib = {t.name: numpy_helper.to_array(t) for t in gb.initializer}
        assert ia.keys() == ib.keys() and all(np.array_equal(ia[k], ib[k]) for k in ia), name


# --- scripts/hf_parity.py's ONNX part, driven through test_export's numpy interpreter ----------------

class _NumpySession:
    """The part of onnxruntime.InferenceSession that hf_parity uses, over test_export's interpreter of
    the graphs' ops (no onnxruntime for Python here; ORT itself runs the package in tools/ortcheck)."""

    def __init__(self, path, providers=None):
        self.model = onnx.load(path)

    def get_inputs(self):
        names = {onnx.TensorProto.FLOAT: "tensor(float)", onnx.TensorProto.FLOAT16: "tensor(float16)",
                 onnx.TensorProto.INT64: "tensor(int64)"}
        return [SimpleNamespace(name=i.name, type=names[i.type.tensor_type.elem_type]) for i in self.model.graph.input]

    def run(self, names, feeds):
        out = run_graph(self.model, feeds)
        return [out[n] for n in names]


def test_hf_parity_onnx_checks_compare_all_three(hf, tmp_path, monkeypatch, capsys):
    import importlib.util
    spec = importlib.util.spec_from_file_location("hf_parity", os.path.join(TRAINING, "scripts", "hf_parity.py"))
    hp = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hp)
    monkeypatch.setitem(sys.modules, "onnxruntime", SimpleNamespace(InferenceSession=_NumpySession))

    d, made = hf
    pkg = hp._export(d, str(tmp_path), "hf-parity")
    g = torch.Generator().manual_seed(0)
    ids = torch.cat([torch.full((2, 1), 512), torch.randint(0, 512, (2, 23), generator=g)], dim=1)  # [SOS, 23 pixels]
    want = hf_forward(made["state_dict"], made["config"], ids)
    ours = hp.our_logits(d, ids)
    rep = hp.Report()
    hp.onnx_checks(rep, pkg, ids, want, ours, 1e-4, 5e-2)
    lines = capsys.readouterr().out.splitlines()
    assert rep.failed == 0, lines
    assert len(lines) == 4 and all(l.startswith("PASS") for l in lines)
    assert any("vs transformers" in l for l in lines) and any("vs ours" in l for l in lines)
    assert any("shared-buffer prefill 12 + 8 single steps" in l for l in lines)
    assert any("decoder.fp16.onnx" in l for l in lines)

    bad = want.clone()
    bad[0, 15, 7] += 1e-2  # one logit off, inside the decode steps
    rep = hp.Report()
    hp.onnx_checks(rep, pkg, ids, bad, ours, 1e-4, 5e-2)
    assert rep.failed == 2  # the prefill and the decode comparison with "transformers"
