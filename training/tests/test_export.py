"""The ONNX export (igpt/export.py, igpt/onnx_graph.py, igpt/weights_file.py) and `convert` against
models/README.md (format v2: one weights file, which the fp16 graphs cast).

ONNX Runtime has no Python build here, so the graphs are also evaluated by a small numpy
interpreter of the ops they use (GroupQueryAttention with the shared past/present buffer
semantics included) and compared with PyTorch. The C# tests run the same packages in ORT.
"""
from __future__ import annotations

import argparse
import glob
import json
import math
import os
import sys

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "training"))
sys.path.insert(0, os.path.join(ROOT, "training", "scripts"))

from igpt import convert, export, onnx_graph, weights_file  # noqa: E402
from igpt.checkpoint import save_checkpoint  # noqa: E402
from igpt.model import IGpt, preset  # noqa: E402
import make_fp16_file_fixture  # noqa: E402
import make_test_package  # noqa: E402

FIXTURE = os.path.join(ROOT, "tests", "fixtures", "tiny-package")
NP_DTYPE = {TensorProto.FLOAT: np.float32, TensorProto.FLOAT16: np.float16, TensorProto.INT32: np.int32,
            TensorProto.INT64: np.int64}


# ---------------------------------------------------------------------------------------------
# a numpy interpreter for the ops the exported graphs use


def _gqa(node, qkv, key, value, past_k, past_v, seqlens_k, total, *rest):
    """com.microsoft GroupQueryAttention as ORT documents it: packed QKV [B,S,3C], BNSH caches,
    row b holds seqlens_k[b]+1 tokens after this step; its new keys go at its own past length."""
    a = {x.name: helper.get_attribute_value(x) for x in node.attribute}
    H = a["num_heads"]
    assert a["kv_num_heads"] == H and a.get("do_rotary", 0) == 0 and key is None and value is None
    B, S, C3 = qkv.shape
    C = C3 // 3
    D = C // H
    scale = a.get("scale", 1.0 / math.sqrt(D))
    q, k, v = (qkv[:, :, i * C:(i + 1) * C].reshape(B, S, H, D).transpose(0, 2, 1, 3) for i in range(3))
    total = int(total)
    first_prompt = past_k is None or (S > 1 and S == total)
    cap = 0 if past_k is None else past_k.shape[2]
    present_len = max(cap, total)
    pk = np.zeros((B, H, present_len, D), qkv.dtype)
    pv = np.zeros_like(pk)
    if past_k is not None:
        pk[:, :, :cap], pv[:, :, :cap] = past_k, past_v
    out = np.zeros((B, S, H, D), np.float32)
    for b in range(B):
        past_len = 0 if first_prompt else int(seqlens_k[b]) + 1 - S
        pk[b, :, past_len:past_len + S] = k[b]
        pv[b, :, past_len:past_len + S] = v[b]
        for s in range(S):
            end = past_len + s + 1  # causal: keys 0 .. own position
            att = q[b, :, s:s + 1].astype(np.float32) @ pk[b, :, :end].astype(np.float32).transpose(0, 2, 1) * scale
            att = np.exp(att - att.max(-1, keepdims=True))
            att /= att.sum(-1, keepdims=True)
            out[b, s] = (att @ pv[b, :, :end].astype(np.float32))[:, 0]
    return out.reshape(B, S, C).astype(qkv.dtype), pk, pv


def _ssln(node, x, skip, gamma, bias=None):
    eps = helper.get_attribute_value(node.attribute[0])
    s = x.astype(np.float32) + skip.astype(np.float32) + (0 if bias is None else bias.astype(np.float32))
    y = s / np.sqrt((s * s).mean(-1, keepdims=True) + eps) * gamma.astype(np.float32)
    return y.astype(x.dtype), None, None, s.astype(x.dtype)


def _attrs(node):
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _slice_args(x, starts, ends, axes):
    """(axis, start, end) for every axis of x: the sliced ones from the inputs (negative ends count from the end)."""
    axes = list(range(len(starts))) if axes is None else [int(a) % x.ndim for a in axes]
    spec = {a: (int(s), int(e)) for a, s, e in zip(axes, starts, ends)}
    return [(a, *spec.get(a, (0, x.shape[a]))) for a in range(x.ndim)]


def _log_softmax(x, axis):
    m = x.max(axis, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis, keepdims=True))


OPS = {
    "Gather": lambda n, d, i: np.take(d, i, axis=_attrs(n).get("axis", 0)),
    "MatMul": lambda n, a, b: (a.astype(np.float32) @ b.astype(np.float32)).astype(a.dtype),
    "Add": lambda n, a, b: (a + b).astype(a.dtype),
    "Sub": lambda n, a, b: (a - b).astype(a.dtype),
    "Cast": lambda n, x: x.astype(NP_DTYPE[_attrs(n)["to"]]),
    "Shape": lambda n, x: np.array(x.shape, np.int64),
    "ReduceSum": lambda n, x, axes: x.sum(axis=tuple(axes), keepdims=bool(_attrs(n).get("keepdims", 1))),
    "ReduceMean": lambda n, x: x.mean(axis=tuple(_attrs(n)["axes"]), keepdims=bool(_attrs(n).get("keepdims", 1))),
    "ConstantOfShape": lambda n, shape: np.full(tuple(shape), numpy_helper.to_array(_attrs(n)["value"])[0]),
    "CumSum": lambda n, x, axis: np.cumsum(x, axis=int(axis)),
    "QuickGelu": lambda n, x: (x.astype(np.float32) / (1 + np.exp(-_attrs(n)["alpha"] * x.astype(np.float32))))
    .astype(x.dtype),
    "SkipSimplifiedLayerNormalization": _ssln,
    # analysis.onnx's shift, pooling and bits
    "Slice": lambda n, x, starts, ends, axes=None: x[tuple(slice(s, e) for _, s, e in _slice_args(x, starts, ends, axes))],
    "Concat": lambda n, *xs: np.concatenate(xs, axis=_attrs(n)["axis"]),
    "Unsqueeze": lambda n, x, axes: np.expand_dims(x, tuple(int(a) for a in axes)),
    "Squeeze": lambda n, x, axes: np.squeeze(x, tuple(int(a) for a in axes)),
    "Constant": lambda n: numpy_helper.to_array(_attrs(n)["value"]),
    "Mul": lambda n, a, b: (a * b).astype(a.dtype),
    "LogSoftmax": lambda n, x: _log_softmax(x.astype(np.float64), _attrs(n).get("axis", -1)).astype(x.dtype),
    "GatherElements": lambda n, x, i: np.take_along_axis(x, i, axis=_attrs(n).get("axis", 0)),
    "GroupQueryAttention": _gqa,
}


def run_graph(model: onnx.ModelProto, feeds: dict) -> dict:
    env = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    env.update(feeds)
    for node in model.graph.node:
        outs = OPS[node.op_type](node, *[env[i] if i else None for i in node.input])
        outs = outs if isinstance(outs, tuple) else (outs,)
        for name, value in zip(node.output, outs):
            if name:
                env[name] = value
    return {o.name: env[o.name] for o in model.graph.output}


def decoder_feeds(cfg, ids, mask, positions, caches):
    feeds = {"input_ids": np.asarray(ids, np.int64), "attention_mask": np.asarray(mask, np.int64),
             "position_ids": np.asarray(positions, np.int64)}
    for i in range(cfg.n_layer):
        feeds[f"past_key_values.{i}.key"], feeds[f"past_key_values.{i}.value"] = caches[i]
    return feeds


def run_steps(graph, cfg, steps, batch, cache_len, dtype):
    """Runs (ids, mask, positions) steps with one shared cache of cache_len; returns each step's logits."""
    caches = [(np.zeros((batch, cfg.n_head, cache_len, cfg.head_size), dtype),) * 2 for _ in range(cfg.n_layer)]
    results = []
    for ids, mask, pos in steps:
        out = run_graph(graph, decoder_feeds(cfg, ids, mask, pos, caches))
        caches = [(out[f"present.{i}.key"], out[f"present.{i}.value"]) for i in range(cfg.n_layer)]
        assert caches[0][0].shape[2] == max(cache_len, np.asarray(mask).shape[1])
        results.append(out["logits"])
    return results


# ---------------------------------------------------------------------------------------------
# fixtures


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """The fixture's model and checkpoint, exported fresh through the command's entry point."""
    tmp = tmp_path_factory.mktemp("export")
    model = make_test_package.make_model()
    ckpt = make_test_package.make_checkpoint(model, ["dark", "mid", "light"])
    ckpt_path = str(tmp / "tiny.pt")
    save_checkpoint(ckpt_path, model, **{k: v for k, v in ckpt.items() if k not in ("config", "model")})
    out = str(tmp / "pkg")
    p = argparse.ArgumentParser()
    export.add_args(p)
    assert export.main(p.parse_args(["--ckpt", ckpt_path, "--out", out, "--id", "tiny-test", "--description",
                                     "Tiny random iGPT (8x8 grey, 8-level palette, untrained) for tests"])) == 0
    return model, ckpt, out


def _json(pkg, name):
    with open(os.path.join(pkg, name), encoding="utf-8") as f:
        return json.load(f)


# ---------------------------------------------------------------------------------------------
# graphs


@pytest.mark.parametrize("name", ["decoder.onnx", "decoder.fp16.onnx", "classifier.onnx", "classifier.fp16.onnx"])
def test_graphs_pass_onnx_checker(tiny, name):
    m = onnx.load(os.path.join(tiny[2], name))
    onnx.checker.check_model(m, full_check=False)
    assert {(o.domain, o.version) for o in m.opset_import} == {("", 17), ("com.microsoft", 1)}
    ops = {(n.domain or "", n.op_type) for n in m.graph.node}
    assert ("com.microsoft", "GroupQueryAttention") in ops
    assert ("com.microsoft", "SkipSimplifiedLayerNormalization") in ops
    assert ("com.microsoft", "QuickGelu") in ops


def _io(values):
    return {v.name: (v.type.tensor_type.elem_type,
                     [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]) for v in values}


@pytest.mark.parametrize("fp16", [False, True])
def test_decoder_io_matches_the_format(tiny, fp16):
    model, _, pkg = tiny
    cfg = model.config
    m = onnx.load(os.path.join(pkg, "decoder.fp16.onnx" if fp16 else "decoder.onnx"))
    kv = TensorProto.FLOAT16 if fp16 else TensorProto.FLOAT
    ins, outs = _io(m.graph.input), _io(m.graph.output)
    expected_in = {
        "input_ids": (TensorProto.INT64, ["batch_size", "sequence_length"]),
        "attention_mask": (TensorProto.INT64, ["batch_size", "total_sequence_length"]),
        "position_ids": (TensorProto.INT64, ["batch_size", "sequence_length"]),
    }
    expected_out = {"logits": (TensorProto.FLOAT, ["batch_size", "sequence_length", cfg.vocab_size])}
    for i in range(cfg.n_layer):
        for kind in ("key", "value"):
            expected_in[f"past_key_values.{i}.{kind}"] = (kv, ["batch_size", cfg.n_head, "past_sequence_length",
                                                               cfg.head_size])
            expected_out[f"present.{i}.{kind}"] = (kv, ["batch_size", cfg.n_head, "present_sequence_length",
                                                        cfg.head_size])
    assert ins == expected_in
    assert outs == expected_out
    assert [i.name for i in m.graph.input][:3] == ["input_ids", "attention_mask", "position_ids"]


def _cast_weights(m):
    """{initializer: its Cast's output} of an fp16 graph, whose float initializers are fp32 (weights.data's tensors)
    and cast to float16 by Casts at the start of the graph, which nothing else precedes."""
    floats = {t.name: t.data_type for t in m.graph.initializer if t.data_type in (TensorProto.FLOAT, TensorProto.FLOAT16)}
    assert set(floats.values()) == {TensorProto.FLOAT}
    casts = {}
    for n in m.graph.node[:len([x for x in m.graph.node if x.name.startswith("/weights/")])]:
        assert n.op_type == "Cast" and helper.get_attribute_value(n.attribute[0]) == TensorProto.FLOAT16
        casts[n.input[0]] = n.output[0]
    used = {x for n in m.graph.node if n.op_type != "Cast" or n.input[0] not in casts for x in n.input}
    assert not used & set(casts), "a weight is read before its cast"
    return floats, casts


def test_fp16_variant_dtypes(tiny):
    m = onnx.load(os.path.join(tiny[2], "decoder.fp16.onnx"))
    floats, casts = _cast_weights(m)
    assert "lm_head.sos_mask" not in casts  # -1e9 does not fit fp16
    assert set(casts) == set(floats) - {"lm_head.sos_mask"}
    # the cast weights are the fp32 graph's, which the fp16 ones were rounded from
    fp32 = {t.name: numpy_helper.to_array(t) for t in onnx.load(os.path.join(tiny[2], "decoder.onnx")).graph.initializer}
    for t in m.graph.initializer:
        if t.name in floats:
            np.testing.assert_array_equal(numpy_helper.to_array(t), fp32[t.name])
    last = m.graph.node[-2:]
    assert [n.op_type for n in last] == ["Cast", "Add"] and last[1].output == ["logits"]
    gqa = [n for n in m.graph.node if n.op_type == "GroupQueryAttention"]
    assert len(gqa) == tiny[0].config.n_layer


def test_sos_column_and_head_padding(tiny):
    model, _, pkg = tiny
    cfg = model.config
    inits = {t.name: numpy_helper.to_array(t) for t in onnx.load(os.path.join(pkg, "decoder.onnx")).graph.initializer}
    head = inits["lm_head.weight_padded"]
    assert head.shape == (cfg.n_embd, cfg.vocab_size)
    np.testing.assert_array_equal(head[:, :cfg.palette_size], model.lm_head.weight.detach().numpy().T)
    assert not head[:, cfg.sos_token_id].any()
    mask = inits["lm_head.sos_mask"]
    assert mask[cfg.sos_token_id] == -1e9 and not np.delete(mask, cfg.sos_token_id).any()


@pytest.mark.parametrize("name", ["classifier.onnx", "classifier.fp16.onnx"])
def test_classifier_io(tiny, name):
    model, _, pkg = tiny
    m = onnx.load(os.path.join(pkg, name))
    assert _io(m.graph.input) == {"input_ids": (TensorProto.INT64, ["batch_size", "sequence_length"])}
    assert _io(m.graph.output) == {"logits": (TensorProto.FLOAT, ["batch_size", model.config.n_classes]),
                                   "features": (TensorProto.FLOAT, ["batch_size", model.config.n_embd])}


# ---------------------------------------------------------------------------------------------
# numbers: PyTorch, parity.json, the graphs' math


def test_parity_json_shape_and_pytorch_logits(tiny):
    model, _, pkg = tiny
    cfg = model.config
    p = _json(pkg, "parity.json")
    assert p["format_version"] == 2 and p["tolerance"] == 1e-4
    prompt, decode = p["prompt"], p["decode_tokens"]
    assert prompt[0] == cfg.sos_token_id and all(0 <= t < cfg.palette_size for t in prompt[1:] + decode)
    assert np.array(p["prefill_logits"]).shape == (len(prompt), cfg.vocab_size)
    assert np.array(p["decode_logits"]).shape == (len(decode), cfg.vocab_size)
    assert len(prompt) + len(decode) <= cfg.n_positions
    with torch.no_grad():  # the whole sequence in one forward gives the same rows
        logits, _ = model(torch.tensor([prompt + decode[:-1] if decode else prompt]))
    want = np.concatenate([p["prefill_logits"], p["decode_logits"][:-1] or np.zeros((0, cfg.vocab_size))])
    np.testing.assert_allclose(logits[0].numpy(), want[:, :cfg.palette_size], atol=1e-5)
    np.testing.assert_allclose(p["decode_logits"][-1][:cfg.palette_size],
                               model(torch.tensor([prompt + decode]))[0][0, -1].detach().numpy(), atol=1e-5)
    assert all(row[cfg.sos_token_id] == -1e9 for row in p["prefill_logits"] + p["decode_logits"])
    c = p["classifier"]
    ids = np.array(c["input_ids"])
    assert ids.shape[1] == cfg.n_positions and (ids[:, 0] == cfg.sos_token_id).all()
    with torch.no_grad():
        np.testing.assert_allclose(model.classify(torch.tensor(ids))[0].numpy(), c["logits"], atol=1e-5)


def parity_steps(p):
    """parity.json's batch-1 schedule as run_steps input: the prompt in one step, then one token a step."""
    prompt, decode = p["prompt"], p["decode_tokens"]
    n = len(prompt)
    steps = [([prompt], [[1] * n], [list(range(n))])]
    return steps + [([[t]], [[1] * (n + k + 1)], [[n + k]]) for k, t in enumerate(decode)]


def test_decoder_graph_math_matches_parity(tiny):
    model, _, pkg = tiny
    cfg = model.config
    p = _json(pkg, "parity.json")
    graph = onnx.load(os.path.join(pkg, "decoder.onnx"))
    steps = parity_steps(p)
    got = run_steps(graph, cfg, steps, 1, cfg.n_positions, np.float32)
    np.testing.assert_allclose(got[0][0], p["prefill_logits"], atol=1e-4, rtol=0)
    np.testing.assert_allclose(np.concatenate([g[0] for g in got[1:]]), p["decode_logits"], atol=1e-4, rtol=0)


def test_decoder_graph_math_batch_of_two_lengths(tiny):
    """Right-padded prefill of two rows of different lengths, then per-row decode in one buffer."""
    model, _, pkg = tiny
    cfg = model.config
    p = _json(pkg, "parity.json")
    graph = onnx.load(os.path.join(pkg, "decoder.onnx"))
    seq = p["prompt"] + p["decode_tokens"]
    ref = np.array(p["prefill_logits"] + p["decode_logits"])
    n0 = len(p["prompt"])
    lens = [n0, n0 - 3]
    ids = [[seq[s] if s < L else 0 for s in range(n0)] for L in lens]
    mask = [[int(s < L) for s in range(n0)] for L in lens]
    steps = [(ids, mask, [list(range(n0))] * 2)]
    for k in range(3):
        T = n0 + k + 1
        steps.append(([[seq[L + k]] for L in lens], [[int(t < L + k + 1) for t in range(T)] for L in lens],
                      [[L + k] for L in lens]))
    got = run_steps(graph, cfg, steps, 2, cfg.n_positions, np.float32)
    for r, L in enumerate(lens):
        np.testing.assert_allclose(got[0][r, :L], ref[:L], atol=1e-4, rtol=0)
        for k in range(3):
            np.testing.assert_allclose(got[k + 1][r, 0], ref[L + k], atol=1e-4, rtol=0)


def test_decoder_graph_math_growing_cache(tiny):
    """Past fed back from present with no spare room (P' = T), starting from an empty past."""
    model, _, pkg = tiny
    cfg = model.config
    p = _json(pkg, "parity.json")
    graph = onnx.load(os.path.join(pkg, "decoder.onnx"))
    steps = parity_steps(p)
    got = run_steps(graph, cfg, steps, 1, 0, np.float32)
    np.testing.assert_allclose(np.concatenate([g[0] for g in got]), p["prefill_logits"] + p["decode_logits"],
                               atol=1e-4, rtol=0)


def test_fp16_graph_math_is_close(tiny):
    model, _, pkg = tiny
    cfg = model.config
    p = _json(pkg, "parity.json")
    graph = onnx.load(os.path.join(pkg, "decoder.fp16.onnx"))
    steps = parity_steps(p)
    got = run_steps(graph, cfg, steps, 1, cfg.n_positions, np.float16)
    assert all(g.dtype == np.float32 for g in got)
    np.testing.assert_allclose(np.concatenate([g[0] for g in got]), p["prefill_logits"] + p["decode_logits"],
                               atol=5e-2, rtol=0)


def test_fp16_classifier_dtypes_and_math(tiny):
    model, _, pkg = tiny
    m = onnx.load(os.path.join(pkg, "classifier.fp16.onnx"))
    floats, casts = _cast_weights(m)
    assert set(casts) == set(floats) - {"score.weight_t"}  # the head stays fp32
    p = _json(pkg, "parity.json")["classifier"]
    out = run_graph(m, {"input_ids": np.array(p["input_ids"])})
    assert out["logits"].dtype == np.float32 and out["features"].dtype == np.float32
    np.testing.assert_allclose(out["logits"], p["logits"], atol=5e-2, rtol=0)


def test_classifier_graph_math_matches_parity(tiny):
    model, _, pkg = tiny
    p = _json(pkg, "parity.json")["classifier"]
    out = run_graph(onnx.load(os.path.join(pkg, "classifier.onnx")), {"input_ids": np.array(p["input_ids"])})
    np.testing.assert_allclose(out["logits"], p["logits"], atol=1e-4, rtol=0)
    with torch.no_grad():
        h, _ = model.hidden(torch.tensor(p["input_ids"]))
    np.testing.assert_allclose(out["features"], h.mean(1).numpy(), atol=1e-5)


# ---------------------------------------------------------------------------------------------
# manifest, genai_config, card


def test_manifest(tiny):
    model, ckpt, pkg = tiny
    cfg = model.config
    m = _json(pkg, "model.json")
    assert m["format_version"] == 2 and m["id"] == "tiny-test"
    assert m["image"] == {"height": 8, "width": 8, "channels": 1}
    assert m["palette_size"] == 8 and m["sos_token_id"] == 8 and m["vocab_size"] == 9
    assert m["palette"] == [[0], [36], [73], [109], [146], [182], [219], [255]] == ckpt["palette"]
    assert m["architecture"] == {"n_layer": 2, "n_head": 4, "n_embd": 32, "head_size": 8, "n_positions": 64,
                                 "norm_eps": 1e-5, "activation": "quick_gelu"}
    assert m["classes"] == ["dark", "mid", "light"]
    assert m["files"] == {
        "weights": [{"path": "weights.data", "dtype": "float32", "bytes": os.path.getsize(os.path.join(pkg, "weights.data"))}],
        "decoder": {"cpu": {"path": "decoder.onnx", "dtype": "float32",
                            "step_segments": ["decoder.step.0.onnx", "decoder.step.1.onnx", "decoder.step.2.onnx"]},
                    "cuda": {"path": "decoder.fp16.onnx", "dtype": "float16"}},
        "classifier": {"cpu": {"path": "classifier.onnx", "dtype": "float32"},
                       "cuda": {"path": "classifier.fp16.onnx", "dtype": "float16"}},
        "genai_config": "genai_config.json", "parity": "parity.json", "model_card": "MODEL_CARD.md"}
    for f in ("decoder.onnx", "decoder.fp16.onnx", "classifier.onnx", "classifier.fp16.onnx", "genai_config.json",
              "parity.json", "MODEL_CARD.md"):
        assert os.path.isfile(os.path.join(pkg, f))
    assert m["training"]["parameters"] == model.num_params()
    assert all(isinstance(v, (int, float, str)) for v in list(m["training"].values()) + list(m["metrics"].values()))


def test_genai_config(tiny):
    cfg = tiny[0].config
    g = _json(tiny[2], "genai_config.json")
    mdl, dec = g["model"], g["model"]["decoder"]
    assert mdl["type"] == "llama"
    assert mdl["bos_token_id"] == mdl["eos_token_id"] == mdl["pad_token_id"] == cfg.sos_token_id
    assert mdl["vocab_size"] == cfg.vocab_size and mdl["context_length"] == cfg.n_positions
    assert dec["filename"] == "decoder.onnx"
    assert (dec["num_hidden_layers"], dec["num_attention_heads"], dec["num_key_value_heads"], dec["head_size"],
            dec["hidden_size"]) == (cfg.n_layer, cfg.n_head, cfg.n_head, cfg.head_size, cfg.n_embd)
    names = {i.name for i in onnx.load(os.path.join(tiny[2], "decoder.onnx")).graph.input}
    for key in ("input_ids", "attention_mask", "position_ids"):
        assert dec["inputs"][key] in names
    assert dec["inputs"]["past_key_names"] % 1 in names and dec["inputs"]["past_value_names"] % 1 in names
    outs = {o.name for o in onnx.load(os.path.join(tiny[2], "decoder.onnx")).graph.output}
    assert dec["outputs"]["logits"] in outs and dec["outputs"]["present_key_names"] % 0 in outs
    assert g["search"]["past_present_share_buffer"] is True and g["search"]["max_length"] == cfg.n_positions


def test_model_card_renders_metrics(tmp_path):
    model = make_test_package.make_model()
    ckpt = make_test_package.make_checkpoint(model, ["dark", "mid", "light"])
    ckpt["metrics"] = {
        "test_bits_per_token": 1.25, "classification_accuracy": 0.75,
        "probe_accuracy": {"layer_0": 0.5, "layer_1": 0.625, "layer_2": 0.6},
        "confusion_matrix": [[5, 1, 0], [2, 3, 1], [0, 0, 6]],
        "linear_probe": {"block 0": {"val_accuracy": 0.5, "test_accuracy": 0.55, "l2": 0.01},
                         "ln_f": {"val_accuracy": 0.7, "test_accuracy": 0.65, "l2": 0.1}},
        "finetune_stop": "max steps",
    }
    ckpt["step"], ckpt["tokens_seen"], ckpt["hardware"] = 1200, 76800, "2 CPU cores"
    export.export_package(model, ckpt, str(tmp_path), model_id="card-test", fp16=False, card_extra="## Extra\n\nhi")
    card = open(tmp_path / "MODEL_CARD.md", encoding="utf-8").read()
    assert "| test_bits_per_token | 1.25 |" in card
    assert "| layer_1 | 0.625 |" in card
    assert "| true \\ predicted | dark | mid | light |" in card and "| mid | 2 | 3 | 1 |" in card
    assert "| layer | val_accuracy | test_accuracy | l2 |" in card and "| ln_f | 0.7 | 0.65 | 0.1 |" in card
    assert "| tokens seen | 76,800 |" in card and "2 CPU cores" in card
    assert card.rstrip().endswith("## Extra\n\nhi")
    m = _json(str(tmp_path), "model.json")
    assert m["metrics"] == {"test_bits_per_token": 1.25, "classification_accuracy": 0.75,
                            "probe_accuracy.layer_0": 0.5, "probe_accuracy.layer_1": 0.625,
                            "probe_accuracy.layer_2": 0.6, "finetune_stop": "max steps",
                            "linear_probe.block 0.val_accuracy": 0.5, "linear_probe.block 0.test_accuracy": 0.55,
                            "linear_probe.block 0.l2": 0.01, "linear_probe.ln_f.val_accuracy": 0.7,
                            "linear_probe.ln_f.test_accuracy": 0.65, "linear_probe.ln_f.l2": 0.1}
    assert "cuda" not in m["files"]["decoder"] and not os.path.exists(tmp_path / "decoder.fp16.onnx")
    assert "cuda" not in m["files"]["classifier"] and not os.path.exists(tmp_path / "classifier.fp16.onnx")


def test_export_without_classifier(tmp_path):
    headed = make_test_package.make_model()
    export.export_package(headed, make_test_package.make_checkpoint(headed, ["a", "b", "c"]), str(tmp_path),
                          model_id="no-head")
    model = make_test_package.make_model(n_classes=0)
    ckpt = make_test_package.make_checkpoint(model, [])
    export.export_package(model, ckpt, str(tmp_path), model_id="no-head")  # over the old package
    assert not os.path.exists(tmp_path / "classifier.fp16.onnx")
    m = _json(str(tmp_path), "model.json")
    assert m["classes"] == [] and m["files"]["classifier"] is None
    assert not os.path.exists(tmp_path / "classifier.onnx")
    p = _json(str(tmp_path), "parity.json")
    assert "classifier" not in p
    graph = onnx.load(str(tmp_path / "decoder.onnx"))
    got = run_steps(graph, model.config, [([p["prompt"]], [[1] * len(p["prompt"])], [list(range(len(p["prompt"])))])],
                    1, model.config.n_positions, np.float32)
    np.testing.assert_allclose(got[0][0], p["prefill_logits"], atol=1e-4, rtol=0)


def _external(pkg, name):
    """{initializer name: (location, offset, length)} of a graph's external data, and its inline float initializers."""
    raw = onnx.load(os.path.join(pkg, name), load_external_data=False)
    where, inline = {}, []
    for t in raw.graph.initializer:
        if t.data_location == TensorProto.EXTERNAL:
            e = {kv.key: kv.value for kv in t.external_data}
            where[t.name] = (e["location"], int(e["offset"]), int(e["length"]))
        elif t.data_type in (TensorProto.FLOAT, TensorProto.FLOAT16):
            inline.append(t.name)
    return where, inline


def test_each_weight_is_stored_once(tiny):
    """Every float weight is external data in weights.data (the fp16 graphs' too, which cast them); graphs that hold the
    same tensor point at the same bytes, and the file is no larger than its distinct tensors (plus alignment)."""
    model, _, pkg = tiny
    groups = {"weights.data": ["decoder.onnx", "decoder.step.0.onnx", "decoder.step.1.onnx", "decoder.step.2.onnx",
                               "classifier.onnx", "analysis.onnx", "decoder.fp16.onnx", "classifier.fp16.onnx"]}
    assert not os.path.exists(os.path.join(pkg, weights_file.FP16_FILE))
    for data_file, names in groups.items():
        blob = open(os.path.join(pkg, data_file), "rb").read()
        seen = {}
        for name in names:
            where, inline = _external(pkg, name)
            assert where and not inline, name
            assert os.path.getsize(os.path.join(pkg, name)) < 20_000, name
            graph = onnx.load(os.path.join(pkg, name))  # the data resolved from the folder
            for t in graph.graph.initializer:
                if t.name in where:
                    location, offset, length = where[t.name]
                    assert location == data_file and offset % weights_file.ALIGNMENT == 0
                    assert blob[offset:offset + length] == numpy_helper.from_array(numpy_helper.to_array(t)).raw_data
                    assert seen.setdefault(t.name, (offset, length)) == (offset, length), (name, t.name)
        distinct = sum(length for _, length in seen.values())
        assert distinct <= len(blob) < distinct + weights_file.ALIGNMENT * len(seen), data_file
    # the fp32 graphs hold the checkpoint's weights (the decoder's head padded with the SOS column)
    state = onnx_graph.decoder_weights(model.config, model.state_dict())
    for t in onnx.load(os.path.join(pkg, "decoder.onnx")).graph.initializer:
        if t.name in state:
            np.testing.assert_array_equal(numpy_helper.to_array(t), state[t.name])


def test_export_removes_what_an_earlier_export_left(tmp_path):
    model = make_test_package.make_model(n_classes=0)
    for stale in ("decoder.onnx.data", "classifier.onnx", "weights.fp16.data", "decoder.step.9.onnx"):
        (tmp_path / stale).write_bytes(b"old")
    export.export_package(model, make_test_package.make_checkpoint(model, []), str(tmp_path), model_id="re", fp16=False)
    assert sorted(os.listdir(tmp_path)) == ["MODEL_CARD.md", "analysis.onnx", "decoder.onnx", "decoder.step.0.onnx", "decoder.step.1.onnx",
                                            "decoder.step.2.onnx", "genai_config.json", "model.json", "parity.json",
                                            "weights.data"]
    assert _json(str(tmp_path), "model.json")["files"]["weights"] == [
        {"path": "weights.data", "dtype": "float32", "bytes": os.path.getsize(tmp_path / "weights.data")}]


def _as_version_1(pkg, out):
    """The package as format version 1 wrote it: every graph holds its weights, the segments point into
    decoder.onnx's bytes, no files.weights."""
    import shutil
    shutil.copytree(pkg, out)
    manifest = _json(str(out), "model.json")
    files = manifest["files"]
    for entry in files.pop("weights"):
        os.remove(out / entry["path"])
    for name in ("decoder.onnx", "decoder.fp16.onnx", "classifier.onnx", "classifier.fp16.onnx"):
        graph = onnx.load(os.path.join(pkg, name))
        onnx.save_model(make_fp16_file_fixture.uncast(graph) if ".fp16." in name else graph, str(out / name))
    segments = [onnx.load(os.path.join(pkg, n)) for n in files["decoder"]["cpu"]["step_segments"]]
    onnx_graph.save_step_segments(segments, str(out / "decoder.onnx"))
    manifest["format_version"] = 1
    export._write_json(str(out / "model.json"), manifest)
    parity = (out / "parity.json").read_text(encoding="utf-8")
    (out / "parity.json").write_text(parity.replace('"format_version": 2', '"format_version": 1', 1), encoding="utf-8")
    card = (out / "MODEL_CARD.md").read_text(encoding="utf-8")
    card = card.replace("format version 2", "format version 1").replace(convert.weights_card_text(True), "")
    (out / "MODEL_CARD.md").write_text(card, encoding="utf-8")


def _as_fp16_file_layout(pkg, out):
    """The package as format 2's first exports wrote it: the fp16 graphs' weights in weights.fp16.data."""
    import shutil
    shutil.copytree(pkg, out)
    size = make_fp16_file_fixture.write(pkg, str(out))
    manifest = _json(str(out), "model.json")
    manifest["files"]["weights"].append({"path": weights_file.FP16_FILE, "dtype": "float16", "bytes": size})
    export._write_json(str(out / "model.json"), manifest)
    card = (out / "MODEL_CARD.md").read_text(encoding="utf-8")
    (out / "MODEL_CARD.md").write_text(card.replace(convert.weights_card_text(True), convert.FP16_FILE_CARD_TEXT),
                                       encoding="utf-8")


def test_convert_from_the_fp16_weights_file_writes_what_export_writes(tiny, tmp_path):
    """A format 2 package with weights.fp16.data becomes, byte for byte, what export writes: the fp16 graphs cast
    weights.data's tensors (the same values they held), weights.data is unchanged, weights.fp16.data is gone."""
    _, _, pkg = tiny
    old = tmp_path / "fp16-file"
    _as_fp16_file_layout(pkg, old)
    assert open(old / "weights.data", "rb").read() == open(os.path.join(pkg, "weights.data"), "rb").read()
    assert {loc for loc, _, _ in _external(str(old), "decoder.fp16.onnx")[0].values()} == {weights_file.FP16_FILE}
    assert "weights.fp16.data" in (old / "MODEL_CARD.md").read_text(encoding="utf-8")
    assert convert.convert_package(str(old)) == ["decoder.onnx", "decoder.step.0.onnx", "decoder.step.1.onnx",
                                                 "decoder.step.2.onnx", "classifier.onnx", "decoder.fp16.onnx",
                                                 "classifier.fp16.onnx", "weights.data", "model.json"]
    assert sorted(os.listdir(old)) == sorted(os.listdir(pkg))
    for name in os.listdir(pkg):
        assert open(old / name, "rb").read() == open(os.path.join(pkg, name), "rb").read(), name
    assert convert.convert_package(str(old)) == []


def test_cast_from_fp32_refuses_weights_that_are_not_the_fp32_ones_rounded(tiny):
    _, _, pkg = tiny
    fp32 = {t.name: t for t in onnx.load(os.path.join(pkg, "decoder.onnx")).graph.initializer}
    half = make_fp16_file_fixture.uncast(onnx.load(os.path.join(pkg, "decoder.fp16.onnx")))
    w = next(t for t in half.graph.initializer if t.name == "transformer.h.0.mlp.c_fc.weight")
    a = numpy_helper.to_array(w).copy()
    a.flat[0] = -a.flat[0] + np.float16(1)
    w.CopyFrom(numpy_helper.from_array(a, w.name))
    with pytest.raises(ValueError, match="c_fc.weight: the fp16 tensor is not the fp32 one rounded"):
        weights_file.cast_from_fp32(half, fp32)
    del fp32["transformer.wte.weight"]
    with pytest.raises(ValueError, match="wte.weight: no fp32 tensor"):
        weights_file.cast_from_fp32(make_fp16_file_fixture.uncast(onnx.load(os.path.join(pkg, "decoder.fp16.onnx"))), fp32)


def test_convert_writes_what_export_writes(tiny, tmp_path):
    """`igpt convert` on a version 1 package gives the version 2 package byte for byte: the same graphs, the same
    weights (once each), the same parity logits; a second run leaves it alone."""
    _, _, pkg = tiny
    old = tmp_path / "v1"
    _as_version_1(pkg, old)
    assert os.path.getsize(old / "decoder.onnx") > 50_000 and not os.path.exists(old / "weights.data")
    where, _ = _external(str(old), "decoder.step.1.onnx")
    assert {location for location, _, _ in where.values()} == {"decoder.onnx"}
    p = argparse.ArgumentParser()
    convert.add_args(p)
    assert convert.main(p.parse_args([str(old)])) == 0
    assert sorted(os.listdir(old)) == sorted(os.listdir(pkg))
    for name in os.listdir(pkg):
        assert open(old / name, "rb").read() == open(os.path.join(pkg, name), "rb").read(), name
    assert convert.convert_package(str(old)) == []
    manifest = _json(str(old), "model.json")
    manifest["format_version"] = 3
    export._write_json(str(old / "model.json"), manifest)
    with pytest.raises(ValueError, match="format_version 3 .convert reads versions 1 and 2"):
        convert.convert_package(str(old))


def _attention_outputs(path):
    return [list(n.output) for n in onnx.load(path, load_external_data=False).graph.node
            if n.op_type == "GroupQueryAttention"]


def test_fp16_attention_nodes_have_their_presents(tiny):
    """ONNX Runtime's CUDA GroupQueryAttention refuses to run without present outputs, even with no past:
    classifier.fp16.onnx failed on the first GPU run. The fp16 graphs (CUDA's) declare them, the past-less one naming
    them after the node and leaving them unused; the fp32 past-less graphs (the CPU's) do not, as the CPU kernel
    runs without them and a classifier pass took 1.2x as long with them."""
    model, _, pkg = tiny
    for name in ("decoder.onnx", "decoder.fp16.onnx", "classifier.fp16.onnx"):
        outs = _attention_outputs(os.path.join(pkg, name))
        assert len(outs) == model.config.n_layer and all(len(o) == 3 for o in outs), name
    assert _attention_outputs(os.path.join(pkg, "classifier.fp16.onnx"))[1] == [
        "/h.1/attn/out", "/h.1/attn/present.key", "/h.1/attn/present.value"]
    for name in ("classifier.onnx", "analysis.onnx"):
        assert _attention_outputs(os.path.join(pkg, name)) == [[f"/h.{i}/attn/out"] for i in range(model.config.n_layer)]


def test_shipped_packages_give_fp16_attention_its_presents():
    """The committed models were converted (`igpt convert`) when the export began to write the presents."""
    shipped = sorted(glob.glob(os.path.join(ROOT, "models", "*", "*.fp16.onnx")))
    assert len(shipped) >= 6
    for path in shipped:
        assert all(len(o) == 3 for o in _attention_outputs(path)), path


def test_convert_gives_past_less_fp16_attention_its_presents(tiny, tmp_path):
    """A current package whose classifier.fp16.onnx lacks the presents: convert rewrites exactly that graph, to what
    export writes byte for byte, leaves weights.data alone, and a second run does nothing."""
    import shutil
    _, _, pkg = tiny
    old = tmp_path / "no-presents"
    shutil.copytree(pkg, old)
    graph = onnx.load(str(old / "classifier.fp16.onnx"), load_external_data=False)
    for n in graph.graph.node:
        if n.op_type == "GroupQueryAttention":
            del n.output[1:]
    onnx.save(graph, str(old / "classifier.fp16.onnx"))
    assert open(old / "classifier.fp16.onnx", "rb").read() != open(os.path.join(pkg, "classifier.fp16.onnx"), "rb").read()
    assert convert.convert_package(str(old)) == ["classifier.fp16.onnx"]
    for name in os.listdir(pkg):
        assert open(old / name, "rb").read() == open(os.path.join(pkg, name), "rb").read(), name
    assert convert.convert_package(str(old)) == []


def test_bad_palette_is_rejected(tmp_path):
    model = make_test_package.make_model(n_classes=0)
    ckpt = make_test_package.make_checkpoint(model, [])
    ckpt["palette"] = ckpt["palette"][:-1]
    with pytest.raises(ValueError, match="palette"):
        export.export_package(model, ckpt, str(tmp_path / "bad"), model_id="bad")
    assert not os.path.exists(tmp_path / "bad")
    with pytest.raises(ValueError, match="model id"):
        export.export_package(model, make_test_package.make_checkpoint(model, []), str(tmp_path), model_id="../x")


def test_bidirectional_model_is_rejected(tmp_path):
    model = IGpt(preset("tiny", bidirectional=True))
    ckpt = make_test_package.make_checkpoint(model, [])
    with pytest.raises(ValueError, match="bidirectional"):
        export.export_package(model, ckpt, str(tmp_path), model_id="bert")
    assert not os.listdir(tmp_path)


# ---------------------------------------------------------------------------------------------
# the committed fixture


def test_committed_fixture_is_current_and_small(tiny):
    """tests/fixtures/tiny-package is what make_test_package.py writes today (regenerate it if not)."""
    _, _, pkg = tiny
    total = sum(os.path.getsize(os.path.join(FIXTURE, f)) for f in os.listdir(FIXTURE))
    assert total < 1_000_000
    assert sorted(os.listdir(FIXTURE)) == sorted(os.listdir(pkg))
    for name in ("model.json", "genai_config.json"):
        assert _json(FIXTURE, name) == _json(pkg, name)
    a, b = _json(FIXTURE, "parity.json"), _json(pkg, "parity.json")
    assert a["prompt"] == b["prompt"] and a["decode_tokens"] == b["decode_tokens"]
    np.testing.assert_allclose(a["prefill_logits"] + a["decode_logits"], b["prefill_logits"] + b["decode_logits"],
                               atol=1e-5)
    np.testing.assert_allclose(a["classifier"]["logits"], b["classifier"]["logits"], atol=1e-5)
    assert a["analysis"]["input_ids"] == b["analysis"]["input_ids"]
    for key in ("features", "token_bits"):
        np.testing.assert_allclose(a["analysis"][key], b["analysis"][key], atol=1e-5)
    for name in ("decoder.onnx", "decoder.fp16.onnx", "classifier.onnx", "classifier.fp16.onnx", "analysis.onnx"):
        x, y = onnx.load(os.path.join(FIXTURE, name)), onnx.load(os.path.join(pkg, name))
        assert ([(n.op_type, list(n.input), list(n.output)) for n in x.graph.node]
                == [(n.op_type, list(n.input), list(n.output)) for n in y.graph.node]), name
        for s, t in zip(x.graph.initializer, y.graph.initializer):
            np.testing.assert_allclose(numpy_helper.to_array(s).astype(np.float32),
                                       numpy_helper.to_array(t).astype(np.float32), atol=1e-6)


def test_committed_fp16_weights_file_fixture_is_current(tmp_path):
    """tests/fixtures/fp16-weights-file is the committed tiny package's fp16 graphs in the older layout, as
    make_fp16_file_fixture.py writes them (the service's tests check that layout against the current one)."""
    make_fp16_file_fixture.write(FIXTURE, str(tmp_path))
    committed = os.path.join(ROOT, "tests", "fixtures", "fp16-weights-file")
    assert sorted(os.listdir(committed)) == sorted(os.listdir(tmp_path))
    for name in os.listdir(tmp_path):
        assert open(os.path.join(committed, name), "rb").read() == open(tmp_path / name, "rb").read(), name


# ---------------------------------------------------------------------------------------------
# step segments (models/README.md, "Step segments")


def _segments(pkg):
    names = _json(pkg, "model.json")["files"]["decoder"]["cpu"]["step_segments"]
    return names, [onnx.load(os.path.join(pkg, n)) for n in names]  # external data resolved from the folder


def test_step_segments_are_listed_small_and_point_into_the_decoders_weights(tiny):
    model, _, pkg = tiny
    names, segments = _segments(pkg)
    assert names == [f"decoder.step.{i}.onnx" for i in range(model.config.n_layer + 1)]
    decoder = onnx.load(os.path.join(pkg, "decoder.onnx"))
    weights = {t.name: numpy_helper.to_array(t) for t in decoder.graph.initializer}
    decoder_where, _ = _external(pkg, "decoder.onnx")
    for name, seg in zip(names, segments):
        onnx.checker.check_model(seg)
        where, inline = _external(pkg, name)
        assert where and not inline, name  # the weights are not stored twice
        for tensor, place in where.items():
            assert place == decoder_where[tensor], tensor  # the decoder's own bytes in weights.data
        assert os.path.getsize(os.path.join(pkg, name)) < 20_000
        for t in seg.graph.initializer:  # loaded through the external data: the decoder's own tensors
            np.testing.assert_array_equal(numpy_helper.to_array(t), weights[t.name])


def test_step_segments_math_equals_the_decoder(tiny):
    """Segments + attention done in numpy (what the service's CachedAttention does) = the decoder's decode steps."""
    model, _, pkg = tiny
    cfg = model.config
    p = _json(pkg, "parity.json")
    _, segments = _segments(pkg)
    C, H, D, L = cfg.n_embd, cfg.n_head, cfg.head_size, cfg.n_layer
    seq = p["prompt"] + p["decode_tokens"]
    ref = np.array(p["prefill_logits"] + p["decode_logits"])
    keys = np.zeros((L, H, cfg.n_positions, D), np.float32)
    values = np.zeros_like(keys)
    for pos, token in enumerate(seq):  # one token at a time from an empty cache
        out = run_graph(segments[0], {"input_ids": np.array([[token]], np.int64),
                                      "position_ids": np.array([[pos]], np.int64)})
        for i in range(L):
            qkv = out["qkv"][0, 0]
            q, k, v = (qkv[j * C:(j + 1) * C].reshape(H, D) for j in range(3))
            keys[i, :, pos], values[i, :, pos] = k, v
            s = np.einsum("hd,htd->ht", q, keys[i, :, :pos + 1]) / math.sqrt(D)
            w = np.exp(s - s.max(-1, keepdims=True))
            w /= w.sum(-1, keepdims=True)
            attn = np.einsum("ht,htd->hd", w, values[i, :, :pos + 1]).reshape(1, 1, C)
            out = run_graph(segments[i + 1], {"hidden": out["hidden_out"], "attn": attn.astype(np.float32)})
        np.testing.assert_allclose(out["logits"][0, 0], ref[pos], atol=1e-4, rtol=0)


def test_segments_command_adds_them_to_an_older_package(tiny, tmp_path):
    """`igpt segments` on a package without them writes the same graphs export writes, and lists them."""
    import shutil
    from igpt import segments as segments_cmd
    _, _, pkg = tiny
    old = tmp_path / "old"
    shutil.copytree(pkg, old)
    manifest = _json(str(old), "model.json")
    names = manifest["files"]["decoder"]["cpu"].pop("step_segments")
    for n in names:
        os.remove(old / n)
    with open(old / "model.json", "w", encoding="utf-8") as f:
        json.dump(manifest, f)
    card = (old / "MODEL_CARD.md").read_text(encoding="utf-8")
    assert export.SEGMENTS_CARD_TEXT in card  # export lists them in the card's files
    (old / "MODEL_CARD.md").write_text(card.replace(export.SEGMENTS_CARD_TEXT, ""), encoding="utf-8")
    p = argparse.ArgumentParser()
    segments_cmd.add_args(p)
    assert segments_cmd.main(p.parse_args([str(old)])) == 0
    assert _json(str(old), "model.json")["files"]["decoder"]["cpu"]["step_segments"] == names
    assert (old / "MODEL_CARD.md").read_text(encoding="utf-8") == card  # and the command puts them back
    for n in names:
        assert open(old / n, "rb").read() == open(os.path.join(pkg, n), "rb").read(), n
