"""import-hf against an independent forward pass written here from HF ImageGPT's equations."""
import json
import math
import os
import struct
import subprocess
import sys

import numpy as np
import pytest
import torch

TRAINING = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, TRAINING)

from igpt.checkpoint import load_checkpoint  # noqa: E402
from igpt.import_hf import HfImportError, hf_clusters_to_palette, import_hf, read_safetensors  # noqa: E402

N_EMBD, N_LAYER, N_HEAD, N_POS, PALETTE = 32, 2, 4, 16, 12  # 4x4 RGB images, 12 clusters
EPS = 1e-5


def hf_config(**over):
    cfg = {"architectures": ["ImageGPTForCausalImageModeling"], "model_type": "imagegpt",
           "vocab_size": PALETTE + 1, "n_positions": N_POS, "n_embd": N_EMBD, "n_layer": N_LAYER,
           "n_head": N_HEAD, "n_inner": None, "activation_function": "quick_gelu",
           "resid_pdrop": 0.1, "embd_pdrop": 0.1, "attn_pdrop": 0.1, "layer_norm_epsilon": EPS,
           "initializer_range": 0.02, "scale_attn_weights": True, "use_cache": True,
           "tie_word_embeddings": False, "scale_attn_by_inverse_layer_idx": False,
           "reorder_and_upcast_attn": False}
    cfg.update(over)
    return cfg


def random_hf_state_dict(seed=0, n_labels=0, lm_head=True):
    """Random weights under HF's exact key names and shapes (Conv1D weights [in, out]), with
    norm gains and biases far from their init so a mix-up shows in the numbers."""
    g = torch.Generator().manual_seed(seed)
    r = lambda *s, scale=0.2: torch.randn(*s, generator=g) * scale
    C = N_EMBD
    sd = {"transformer.wte.weight": r(PALETTE + 1, C, scale=1.0), "transformer.wpe.weight": r(N_POS, C, scale=0.5)}
    for i in range(N_LAYER):
        p = f"transformer.h.{i}."
        sd[p + "ln_1.weight"] = 1 + r(C)
        sd[p + "attn.bias"] = torch.tril(torch.ones(N_POS, N_POS, dtype=torch.bool)).view(1, 1, N_POS, N_POS)
        sd[p + "attn.masked_bias"] = torch.tensor(-1e4)
        sd[p + "attn.c_attn.weight"] = r(C, 3 * C)
        sd[p + "attn.c_attn.bias"] = r(3 * C)
        sd[p + "attn.c_proj.weight"] = r(C, C)
        sd[p + "attn.c_proj.bias"] = r(C)
        sd[p + "ln_2.weight"] = 1 + r(C)
        sd[p + "mlp.c_fc.weight"] = r(C, 4 * C)
        sd[p + "mlp.c_fc.bias"] = r(4 * C)
        sd[p + "mlp.c_proj.weight"] = r(4 * C, C)
        sd[p + "mlp.c_proj.bias"] = r(C)
    sd["transformer.ln_f.weight"] = 1 + r(C)
    if lm_head:
        sd["lm_head.weight"] = r(PALETTE, C, scale=0.5)
    if n_labels:
        sd["score.weight"] = r(n_labels, C, scale=0.5)
    return sd


# --- HF ImageGPT's forward, from its equations, on the raw HF state dict -------------------------

def hf_ln(x, w):
    return x / torch.sqrt(torch.mean(torch.square(x), dim=-1, keepdim=True) + EPS) * w


def hf_forward(sd, ids):
    """(final-norm hidden states [B, S, C], lm logits [B, S, PALETTE] or None)."""
    B, S = ids.shape
    H, D = N_HEAD, N_EMBD // N_HEAD
    h = sd["transformer.wte.weight"][ids] + sd["transformer.wpe.weight"][torch.arange(S)][None]
    for i in range(N_LAYER):
        p = f"transformer.h.{i}."
        a = hf_ln(h, sd[p + "ln_1.weight"])
        qkv = a @ sd[p + "attn.c_attn.weight"] + sd[p + "attn.c_attn.bias"]  # Conv1D: x @ W + b
        q, k, v = qkv.split(N_EMBD, dim=2)
        heads = lambda t: t.reshape(B, S, H, D).permute(0, 2, 1, 3)
        q, k, v = heads(q), heads(k), heads(v)
        w = q @ k.transpose(-1, -2) / math.sqrt(D)
        mask = sd[p + "attn.bias"][:, :, :S, :S]
        w = torch.where(mask, w, sd[p + "attn.masked_bias"].to(w.dtype))
        w = torch.softmax(w, dim=-1)
        o = (w @ v).permute(0, 2, 1, 3).reshape(B, S, N_EMBD)
        h = h + (o @ sd[p + "attn.c_proj.weight"] + sd[p + "attn.c_proj.bias"])
        m = hf_ln(h, sd[p + "ln_2.weight"])
        m = m @ sd[p + "mlp.c_fc.weight"] + sd[p + "mlp.c_fc.bias"]
        m = m * torch.sigmoid(1.702 * m)  # quick_gelu
        h = h + (m @ sd[p + "mlp.c_proj.weight"] + sd[p + "mlp.c_proj.bias"])
    h = hf_ln(h, sd["transformer.ln_f.weight"])
    logits = h @ sd["lm_head.weight"].T if "lm_head.weight" in sd else None
    return h, logits


# --- writing HF folders ----------------------------------------------------------------------------

def write_safetensors(path, tensors, dtype="F32"):
    """The safetensors layout from its spec, written independently of the reader under test."""
    header, blobs, offset = {"__metadata__": {"format": "pt"}}, [], 0
    for name in sorted(tensors):
        t = tensors[name]
        if t.dtype == torch.bool:
            raw, dt = t.numpy().astype(np.bool_).tobytes(), "BOOL"
        elif dtype == "BF16":
            raw, dt = t.float().to(torch.bfloat16).view(torch.int16).numpy().astype("<i2").tobytes(), "BF16"
        else:
            raw, dt = t.float().numpy().astype("<f4").tobytes(), "F32"
        header[name] = {"dtype": dt, "shape": list(t.shape), "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    hj = json.dumps(header).encode()
    hj += b" " * ((8 - len(hj) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(hj)) + hj + b"".join(blobs))


def make_hf_dir(path, sd, fmt="bin", palette_file="preprocessor", config=None, seed=0):
    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump(config or hf_config(), f)
    clusters = np.random.default_rng(seed).uniform(-1, 1, (PALETTE, 3))
    clusters[0] = [-1, 1, 0]
    if palette_file == "preprocessor":
        with open(os.path.join(path, "preprocessor_config.json"), "w") as f:
            json.dump({"image_processor_type": "ImageGPTImageProcessor", "clusters": clusters.tolist(),
                       "do_resize": True, "size": {"height": 4, "width": 4}, "do_normalize": True}, f)
    else:
        np.save(os.path.join(path, "kmeans_centers.npy"), clusters.astype(np.float32))
    if fmt == "bin":
        torch.save(sd, os.path.join(path, "pytorch_model.bin"))
    else:
        write_safetensors(os.path.join(path, "model.safetensors"), sd, "BF16" if fmt == "bf16" else "F32")
    return clusters


def input_ids(B=3, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, PALETTE, (B, N_POS), generator=g)
    return torch.cat([torch.full((B, 1), PALETTE), x[:, :-1]], dim=1)  # [SOS, x0..x(n-2)]


# --- tests -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("fmt", ["bin", "safetensors"])
def test_imported_logits_match_hf_equations(tmp_path, fmt):
    sd = random_hf_state_dict(seed=0)
    make_hf_dir(tmp_path / "hf", sd, fmt)
    model, fields = import_hf(str(tmp_path / "hf"))
    c = model.config
    assert (c.n_layer, c.n_head, c.n_embd, c.n_positions, c.palette_size) == (N_LAYER, N_HEAD, N_EMBD, N_POS, PALETTE)
    assert (c.height, c.width, c.channels, c.n_classes) == (4, 4, 3, 0)
    ids = input_ids()
    _, want = hf_forward(sd, ids)
    with torch.no_grad():
        got, _ = model(ids)
    assert got.shape == want.shape == (3, N_POS, PALETTE)
    assert torch.allclose(got, want, atol=1e-5), (got - want).abs().max()
    assert fields["classes"] == [] and len(fields["palette"]) == PALETTE


def test_a_transposed_square_projection_is_caught(tmp_path):
    # c_proj is square: only the numbers can tell [in, out] from [out, in]
    sd = random_hf_state_dict(seed=2)
    make_hf_dir(tmp_path / "hf", sd)
    model, _ = import_hf(str(tmp_path / "hf"))
    ids = input_ids()
    bad = dict(sd)
    bad["transformer.h.0.attn.c_proj.weight"] = sd["transformer.h.0.attn.c_proj.weight"].T.contiguous()
    _, want = hf_forward(sd, ids)
    _, wrong = hf_forward(bad, ids)
    with torch.no_grad():
        got, _ = model(ids)
    assert torch.allclose(got, want, atol=1e-5)
    assert not torch.allclose(got, wrong, atol=1e-3)


def test_bf16_safetensors_and_kmeans_centers(tmp_path):
    sd = random_hf_state_dict(seed=3)
    clusters = make_hf_dir(tmp_path / "hf", sd, "bf16", palette_file="npy")
    model, fields = import_hf(str(tmp_path / "hf"))
    rounded = {k: v.to(torch.bfloat16).float() if v.dtype != torch.bool else v for k, v in sd.items()}
    assert not torch.equal(rounded["transformer.h.0.mlp.c_fc.weight"], sd["transformer.h.0.mlp.c_fc.weight"])
    _, want = hf_forward(rounded, input_ids())
    with torch.no_grad():
        got, _ = model(input_ids())
    assert torch.allclose(got, want, atol=1e-5)
    assert fields["palette"] == hf_clusters_to_palette(clusters.astype(np.float32))
    assert fields["palette"][0] == [0, 255, 128]
    assert fields["train_args"]["palette"] == "kmeans_centers.npy"


def test_classifier_checkpoint_imports_score_and_labels(tmp_path):
    sd = random_hf_state_dict(seed=4, n_labels=3)
    cfg = hf_config(architectures=["ImageGPTForImageClassification"],
                    id2label={"0": "cat", "1": "dog", "2": "emu"}, label2id={"cat": 0, "dog": 1, "emu": 2})
    make_hf_dir(tmp_path / "hf", sd, "safetensors", config=cfg)
    model, fields = import_hf(str(tmp_path / "hf"))
    assert model.config.n_classes == 3 and fields["classes"] == ["cat", "dog", "emu"]
    ids = input_ids()
    h, lm = hf_forward(sd, ids)
    want = h.mean(dim=1) @ sd["score.weight"].T  # HF: score(hidden_states.mean(dim=1))
    with torch.no_grad():
        got, got_lm = model.classify(ids)
    assert torch.allclose(got, want, atol=1e-5)
    assert torch.allclose(got_lm, lm, atol=1e-5)


def test_classification_only_checkpoint_needs_the_flag(tmp_path):
    sd = random_hf_state_dict(seed=5, n_labels=2, lm_head=False)
    make_hf_dir(tmp_path / "hf", sd)
    with pytest.raises(HfImportError, match="lm_head"):
        import_hf(str(tmp_path / "hf"))
    model, fields = import_hf(str(tmp_path / "hf"), allow_missing_lm_head=True)
    assert float(model.lm_head.weight.abs().sum()) == 0
    assert "lm_head.weight missing" in fields["train_args"]["notes"][0]


def test_bare_imagegpt_model_keys_get_the_prefix(tmp_path):
    sd = random_hf_state_dict(seed=6)
    bare = {(k[len("transformer."):] if k.startswith("transformer.") else k): v for k, v in sd.items()}
    make_hf_dir(tmp_path / "hf", bare)
    model, _ = import_hf(str(tmp_path / "hf"))
    _, want = hf_forward(sd, input_ids())
    with torch.no_grad():
        assert torch.allclose(model(input_ids())[0], want, atol=1e-5)


@pytest.mark.parametrize("over,match", [
    ({"activation_function": "gelu"}, "quick_gelu"),
    ({"n_inner": 7}, "n_inner"),
    ({"vocab_size": PALETTE + 5}, "vocab_size"),
    ({"scale_attn_by_inverse_layer_idx": True}, "scale"),
    ({"model_type": "gpt2"}, "imagegpt"),
])
def test_unrepresentable_configs_are_refused(tmp_path, over, match):
    make_hf_dir(tmp_path / "hf", random_hf_state_dict(), config=hf_config(**over))
    with pytest.raises(HfImportError, match=match):
        import_hf(str(tmp_path / "hf"))


def test_wrong_shape_and_missing_files_are_refused(tmp_path):
    sd = random_hf_state_dict()
    sd["transformer.h.1.mlp.c_fc.weight"] = sd["transformer.h.1.mlp.c_fc.weight"].T.contiguous()  # not square
    make_hf_dir(tmp_path / "hf", sd)
    with pytest.raises(HfImportError, match="c_fc"):
        import_hf(str(tmp_path / "hf"))
    os.makedirs(tmp_path / "empty")
    with pytest.raises(HfImportError, match="config.json"):
        import_hf(str(tmp_path / "empty"))


def test_cluster_conversion():
    assert hf_clusters_to_palette([[-1, 0, 1], [-1.5, 0.999, 2]]) == [[0, 128, 255], [0, 255, 255]]


def test_safetensors_reader_rejects_bad_offsets(tmp_path):
    p = tmp_path / "x.safetensors"
    write_safetensors(p, {"a": torch.arange(6, dtype=torch.float32).reshape(2, 3)})
    assert torch.equal(read_safetensors(str(p))["a"], torch.arange(6, dtype=torch.float32).reshape(2, 3))
    hj = json.dumps({"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 8]}}).encode()
    p.write_bytes(struct.pack("<Q", len(hj)) + hj + b"\0" * 8)
    with pytest.raises(HfImportError, match="offsets"):
        read_safetensors(str(p))


def test_import_hf_command_writes_a_loadable_checkpoint(tmp_path):
    sd = random_hf_state_dict(seed=7)
    make_hf_dir(tmp_path / "hf", sd, "safetensors")
    out = tmp_path / "imported.pt"
    r = subprocess.run([sys.executable, "-m", "igpt", "import-hf", "--hf-dir", str(tmp_path / "hf"), "--out", str(out)],
                       cwd=TRAINING, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    model, ck = load_checkpoint(str(out))
    assert ck["palette"] and ck["dataset"]["height"] == 4
    _, want = hf_forward(sd, input_ids())
    with torch.no_grad():
        assert torch.allclose(model(input_ids())[0], want, atol=1e-5)
    r = subprocess.run([sys.executable, "-m", "igpt", "import-hf", "--hf-dir", str(tmp_path / "nope"), "--out", str(out)],
                       cwd=TRAINING, capture_output=True, text=True, timeout=120)
    assert r.returncode == 1 and "config.json" in r.stdout


# --- scripts/hf_parity.py: the parts that need no transformers -------------------------------------

def _hf_parity():
    import importlib.util
    spec = importlib.util.spec_from_file_location("hf_parity", os.path.join(TRAINING, "scripts", "hf_parity.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_hf_parity_helpers(tmp_path):
    hp = _hf_parity()
    sd = random_hf_state_dict(seed=8)
    make_hf_dir(tmp_path / "hf", sd, "safetensors")
    clusters = np.random.default_rng(1).uniform(-1, 1, (PALETTE, 3))
    hp.write_preprocessor_config(str(tmp_path / "hf"), clusters, 4, 4)  # replaces the one make_hf_dir wrote
    ids = input_ids()
    _, want = hf_forward(sd, ids)
    assert hp.max_abs_diff(hp.our_logits(str(tmp_path / "hf"), ids), want) < 1e-5
    assert hp.max_abs_diff(torch.zeros(2), torch.zeros(3)) == float("inf")
    _, fields = import_hf(str(tmp_path / "hf"))
    assert fields["palette"] == hf_clusters_to_palette(clusters)
    m = torch.nn.Module()
    m.ln_1 = torch.nn.LayerNorm(4)
    m.lin = torch.nn.Linear(4, 4)
    w = m.lin.weight.clone()
    hp.randomize_(m, seed=0)
    assert not torch.equal(m.ln_1.weight, torch.ones(4)) and not torch.equal(m.lin.bias, torch.zeros(4))
    assert torch.equal(m.lin.weight, w)  # only norm gains and biases move


def test_hf_parity_exits_1_without_transformers():
    try:
        import transformers  # noqa: F401
        pytest.skip("transformers is installed: run scripts/hf_parity.py itself")
    except ImportError:
        pass
    r = subprocess.run([sys.executable, os.path.join(TRAINING, "scripts", "hf_parity.py")], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 1 and "transformers" in r.stdout and "nothing was checked" in r.stdout


def test_hf_parity_float64_check_passes_the_same_model_and_traces_a_changed_one(tmp_path, capsys):
    """float64_checks against a stand-in for transformers (our own import, under transformers' module names): the same
    weights pass to 1e-9; one bias moved by 1e-3 fails, and the trace names that module first, with its input equal
    and the moved parameter. Report.fail counts too."""
    import types
    hp = _hf_parity()
    sd = random_hf_state_dict(seed=8)
    make_hf_dir(tmp_path / "hf", sd, "safetensors")
    ids = input_ids()
    theirs, _ = import_hf(str(tmp_path / "hf"))

    class StandIn(torch.nn.Module):  # transformers' layout: .transformer, .lm_head, forward(input_ids=) -> .logits
        def __init__(self, model):
            super().__init__()
            self.transformer, self.lm_head = model.transformer, model.lm_head
            self.__dict__["whole"] = model  # not a submodule: the names stay transformers'

        def forward(self, input_ids):
            return types.SimpleNamespace(logits=self.whole(input_ids)[0])

    hf = StandIn(theirs).eval()
    ours = hp.our_logits(str(tmp_path / "hf"), ids)
    with torch.no_grad():
        logits = hf(input_ids=ids).logits
    rep = hp.Report()
    hp.float64_checks(rep, hf, str(tmp_path / "hf"), ids, logits, ours)
    assert rep.failed == 0 and "PASS  ours vs transformers, both float64" in capsys.readouterr().out

    with torch.no_grad():
        theirs.transformer.h[0].attn.c_proj.bias[1] += 1e-3
        logits = hf(input_ids=ids).logits
    rep = hp.Report()
    hp.float64_checks(rep, hf, str(tmp_path / "hf"), ids, logits, ours)
    out = capsys.readouterr().out
    assert rep.failed == 1 and "FAIL  ours vs transformers, both float64" in out
    modules = [line for line in out.splitlines() if line.startswith("INFO  module ")]
    assert modules[0].startswith("INFO  module transformer.h.0.attn.c_proj: max |diff| 0.001")
    assert "INFO    its input: max |diff| 0\n" in out and "INFO    its bias (32,): max |diff| 0.001" in out
    # the probe recomputes GPT-2 attention with the stand-in's own parameters: it is that attention (the moved bias
    # included), 1e-3 from ours; without the causal mask it is neither
    probe = {line.split(":")[0].strip(): float(line.split("max |diff| ")[1].split(";")[0])
             for line in out.splitlines() if "GPT-2 attention vs" in line}
    assert probe["INFO    causal GPT-2 attention vs transformers"] < 1e-12
    assert abs(probe["INFO    causal GPT-2 attention vs ours"] - 1e-3) < 1e-6
    assert probe["INFO    not causal GPT-2 attention vs transformers"] > 1e-3
    rep.fail("something else")
    assert rep.failed == 2


def test_hf_parity_fixes_transformers_truncated_attention_scale(monkeypatch, capsys):
    """transformers' torch_float returned int() (huggingface/transformers#47468), so ImageGPT divided scores by
    int(sqrt(head size)): fix_attention_scale replaces it and says so; a float-returning one is left alone."""
    import sys
    import types
    hp = _hf_parity()
    fake = types.ModuleType("transformers.models.imagegpt.modeling_imagegpt")
    fake.torch_float = lambda x: int(x)
    for name in ("transformers", "transformers.models", "transformers.models.imagegpt"):
        monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
    monkeypatch.setattr(sys.modules["transformers.models.imagegpt"], "modeling_imagegpt", fake, raising=False)
    monkeypatch.setitem(sys.modules, "transformers.models.imagegpt.modeling_imagegpt", fake)
    said = hp.fix_attention_scale(hp.Report(), 32)
    assert fake.torch_float(5.657) == 5.657 and "head size 32 gives 1/5 for 1/5.657" in said
    assert hp.fix_attention_scale(hp.Report(), 32) is None  # already float
    assert capsys.readouterr().out.count("INFO  transformers' ImageGPT scales attention") == 1
