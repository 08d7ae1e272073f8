"""Hand-built ONNX graphs for iGPT (model packages, see models/README.md).

The graphs are written node by node with onnx.helper from the PyTorch weights (no torch.onnx
tracing), using the ONNX Runtime contrib ops that onnxruntime-genai's own builder emits:

- com.microsoft SkipSimplifiedLayerNormalization for every norm. It adds input + skip (+ bias)
  and RMS-normalizes the sum, returning the sum as output 3, so it also does the residual adds,
  the embedding add (token + position) and the residual projections' biases;
- MatMul (+ Add) for the projections: HF Conv1D weights are [in, out], so nothing is transposed;
- com.microsoft GroupQueryAttention with packed QKV (c_attn's output is [q | k | v], each
  head-major, which is GQA's packed layout), kv_num_heads = num_heads, no rotary. It takes
  per-row lengths from the attention mask, so one past/present buffer can be shared;
- com.microsoft QuickGelu (alpha 1.702) for iGPT's activation.

The decoder's lm_head has palette_size outputs; a zero weight column and a bias row with -1e9 at
SOS make the logits [B, S, palette_size + 1] with SOS never sampled. In the fp16 variant the
logits are cast to fp32 before the -1e9 is added (fp16 cannot hold it).
"""
from __future__ import annotations

import math
from typing import Dict, List, Optional

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from .model import IGptConfig

MS_DOMAIN = "com.microsoft"
OPSET = 17
IR_VERSION = 8           # onnx 1.12's IR; ONNX Runtime 1.x reads it
SOS_LOGIT = -1e9


class _Graph:
    """A small node/initializer accumulator with unique names."""

    def __init__(self, dtype: np.dtype):
        self.dtype = np.dtype(dtype)
        self.elem = TensorProto.FLOAT16 if self.dtype == np.float16 else TensorProto.FLOAT
        self.nodes: List[onnx.NodeProto] = []
        self.inits: List[onnx.TensorProto] = []
        self._names: set = set()

    def init(self, name: str, array: np.ndarray, cast: bool = True) -> str:
        a = np.asarray(array)
        if cast and a.dtype.kind == "f":
            a = a.astype(self.dtype)
        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(a), name))
        return name

    def node(self, op: str, inputs: List[str], outputs: List[str], name: str,
             domain: str = "", **attrs) -> List[str]:
        assert name not in self._names, name
        self._names.add(name)
        self.nodes.append(helper.make_node(op, inputs, outputs, name=name, domain=domain or None, **attrs))
        return outputs

    def one(self, op: str, inputs: List[str], name: str, domain: str = "", **attrs) -> str:
        return self.node(op, inputs, [f"{name}/out"], name, domain, **attrs)[0]


def _weights(state: Dict[str, "np.ndarray"]) -> Dict[str, np.ndarray]:
    return {k: (v.detach().cpu().float().numpy() if hasattr(v, "detach") else np.asarray(v, np.float32))
            for k, v in state.items()}


def _norm(g: _Graph, name: str, x: str, skip: str, gamma: str, bias: Optional[str], eps: float,
          sum_name: Optional[str] = None):
    """SkipSimplifiedLayerNormalization: returns (normalized, x + skip + bias)."""
    inputs = [x, skip, gamma] + ([bias] if bias else [])
    out, _, _, total = g.node("SkipSimplifiedLayerNormalization", inputs,
                              [f"{name}/out", "", "", sum_name or f"{name}/sum"], name, MS_DOMAIN, epsilon=float(eps))
    return out, total


# The decoder's pieces. A block is split at attention, so that the same pieces build the whole graph
# (attention in it: GroupQueryAttention) and the step segments (attention outside, in the service).

def _embed(g: _Graph, w: Dict[str, np.ndarray], input_ids: str, position_ids: str):
    """Token and position embeddings, [B, S, C] each; the first norm adds them."""
    wte = g.init("transformer.wte.weight", w["transformer.wte.weight"])
    wpe = g.init("transformer.wpe.weight", w["transformer.wpe.weight"])
    tok = g.one("Gather", [wte, input_ids], "/wte/Gather", axis=0)      # [B, S, C]
    pos = g.one("Gather", [wpe, position_ids], "/wpe/Gather", axis=0)   # [B, S, C]
    return tok, pos


def _attn_in(g: _Graph, cfg: IGptConfig, w: Dict[str, np.ndarray], i: int, residual: str, skip: str,
             skip_bias: Optional[str], sum_name: Optional[str] = None, qkv_name: Optional[str] = None,
             ln_1_outputs: Optional[List[str]] = None):
    """ln_1 (adding the previous block's output to the residual) and c_attn: (qkv [B, S, 3C], residual).
    ln_1_outputs, when given, receives ln_1's output [B, S, C] (the probes' features of block i)."""
    b = f"transformer.h.{i}"
    n1, residual = _norm(g, f"/h.{i}/ln_1", residual, skip, g.init(f"{b}.ln_1.weight", w[f"{b}.ln_1.weight"]),
                         skip_bias, cfg.norm_eps, sum_name)
    if ln_1_outputs is not None:
        ln_1_outputs.append(n1)
    qkv = g.one("MatMul", [n1, g.init(f"{b}.attn.c_attn.weight", w[f"{b}.attn.c_attn.weight"])],
                f"/h.{i}/attn/c_attn/MatMul")
    qkv = g.node("Add", [qkv, g.init(f"{b}.attn.c_attn.bias", w[f"{b}.attn.c_attn.bias"])],
                 [qkv_name or f"/h.{i}/attn/c_attn/Add/out"], f"/h.{i}/attn/c_attn/Add")[0]  # [B, S, 3C] packed q|k|v
    return qkv, residual


def _attn_out(g: _Graph, cfg: IGptConfig, w: Dict[str, np.ndarray], i: int, residual: str, attn: str):
    """c_proj, ln_2 and the MLP: (residual, skip, skip_bias); the next norm adds skip + skip_bias."""
    b = f"transformer.h.{i}"
    a = g.one("MatMul", [attn, g.init(f"{b}.attn.c_proj.weight", w[f"{b}.attn.c_proj.weight"])],
              f"/h.{i}/attn/c_proj/MatMul")
    n2, residual = _norm(g, f"/h.{i}/ln_2", residual, a, g.init(f"{b}.ln_2.weight", w[f"{b}.ln_2.weight"]),
                         g.init(f"{b}.attn.c_proj.bias", w[f"{b}.attn.c_proj.bias"]), cfg.norm_eps)
    h = g.one("MatMul", [n2, g.init(f"{b}.mlp.c_fc.weight", w[f"{b}.mlp.c_fc.weight"])], f"/h.{i}/mlp/c_fc/MatMul")
    h = g.one("Add", [h, g.init(f"{b}.mlp.c_fc.bias", w[f"{b}.mlp.c_fc.bias"])], f"/h.{i}/mlp/c_fc/Add")
    h = g.one("QuickGelu", [h], f"/h.{i}/mlp/QuickGelu", MS_DOMAIN, alpha=1.702)
    skip = g.one("MatMul", [h, g.init(f"{b}.mlp.c_proj.weight", w[f"{b}.mlp.c_proj.weight"])],
                 f"/h.{i}/mlp/c_proj/MatMul")
    return residual, skip, g.init(f"{b}.mlp.c_proj.bias", w[f"{b}.mlp.c_proj.bias"])


def _final(g: _Graph, cfg: IGptConfig, w: Dict[str, np.ndarray], residual: str, skip: str, skip_bias: str) -> str:
    out, _ = _norm(g, "/ln_f", residual, skip, g.init("transformer.ln_f.weight", w["transformer.ln_f.weight"]),
                   skip_bias, cfg.norm_eps)
    return out


def _transformer(g: _Graph, cfg: IGptConfig, w: Dict[str, np.ndarray], input_ids: str, position_ids: str,
                 seqlens_k: str, total_len: str, past: Optional[List[str]], ln_1_outputs: Optional[List[str]] = None):
    """Embeddings, blocks and final norm. Returns (ln_f output [B,S,C], present names); ln_1_outputs, when given,
    receives every block's ln_1 output."""
    H = cfg.n_head
    residual, skip = _embed(g, w, input_ids, position_ids)
    skip_bias: Optional[str] = None  # the first norm adds the embeddings
    presents: List[str] = []
    for i in range(cfg.n_layer):
        qkv, residual = _attn_in(g, cfg, w, i, residual, skip, skip_bias, ln_1_outputs=ln_1_outputs)
        if past is not None:
            outs = [f"/h.{i}/attn/out", f"present.{i}.key", f"present.{i}.value"]
            ins = [qkv, "", "", past[2 * i], past[2 * i + 1], seqlens_k, total_len]
            presents += outs[1:]
        elif g.elem == TensorProto.FLOAT16:
            # CUDA's GroupQueryAttention refuses to run without its presents, even with no past: unused outputs
            # here. Only the fp16 graphs (CUDA's) declare them: the CPU kernel runs without them, and faster
            # (models/README.md).
            outs = [f"/h.{i}/attn/out", f"/h.{i}/attn/present.key", f"/h.{i}/attn/present.value"]
            ins = [qkv, "", "", "", "", seqlens_k, total_len]
        else:
            outs = [f"/h.{i}/attn/out"]
            ins = [qkv, "", "", "", "", seqlens_k, total_len]
        attn = g.node("GroupQueryAttention", ins, outs, f"/h.{i}/attn/GroupQueryAttention", MS_DOMAIN,
                      num_heads=H, kv_num_heads=H, scale=1.0 / math.sqrt(cfg.head_size), do_rotary=0)[0]
        residual, skip, skip_bias = _attn_out(g, cfg, w, i, residual, attn)
    return _final(g, cfg, w, residual, skip, skip_bias), presents


def _lengths_from_mask(g: _Graph, mask: str):
    """GQA's seqlens_k = row sum - 1 (int32 [B]) and total_sequence_length = mask width (int32 scalar)."""
    one = g.init("const_one_i64", np.array(1, np.int64))
    axes = g.init("const_axes_1", np.array([1], np.int64))
    s = g.one("ReduceSum", [mask, axes], "/mask/ReduceSum", keepdims=0)        # [B]
    s = g.one("Sub", [s, one], "/mask/Sub")
    seqlens_k = g.one("Cast", [s], "/mask/seqlens_k", to=TensorProto.INT32)
    shape = g.one("Shape", [mask], "/mask/Shape")
    idx = g.init("const_index_1", np.array(1, np.int64))
    width = g.one("Gather", [shape, idx], "/mask/width", axis=0)               # scalar
    total = g.one("Cast", [width], "/mask/total_sequence_length", to=TensorProto.INT32)
    return seqlens_k, total


def _model(g: _Graph, name: str, inputs, outputs, doc: str) -> onnx.ModelProto:
    graph = helper.make_graph(g.nodes, name, inputs, outputs, initializer=g.inits)
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET),
                                                 helper.make_opsetid(MS_DOMAIN, 1)],
                          producer_name="igpt-export", doc_string=doc)
    m.ir_version = IR_VERSION
    return m


def decoder_weights(cfg: IGptConfig, state: Dict) -> Dict[str, np.ndarray]:
    """The decoder's fp32 weights by initializer name: the checkpoint's, with lm_head as the graph holds it
    (lm_head.weight_padded [C, V]: a zero column for SOS; lm_head.sos_mask [V]: -1e9 at SOS)."""
    w = _weights(state)
    V, P = cfg.vocab_size, cfg.palette_size
    w["lm_head.weight_padded"] = np.concatenate([w.pop("lm_head.weight").T, np.zeros((cfg.n_embd, 1), np.float32)],
                                                axis=1)  # [C, V]
    sos_bias = np.zeros(V, np.float32)
    sos_bias[P] = SOS_LOGIT
    w["lm_head.sos_mask"] = sos_bias
    return w


def _lm_head(g: _Graph, w: Dict[str, np.ndarray], h: str, output: str) -> str:
    logits = g.one("MatMul", [h, g.init("lm_head.weight_padded", w["lm_head.weight_padded"])], "/lm_head/MatMul")
    if g.elem == TensorProto.FLOAT16:
        logits = g.one("Cast", [logits], "/lm_head/Cast", to=TensorProto.FLOAT)
    return g.node("Add", [logits, g.init("lm_head.sos_mask", w["lm_head.sos_mask"], cast=False)], [output],
                  "/lm_head/Add")[0]


def build_decoder(cfg: IGptConfig, state: Dict, fp16: bool = False) -> onnx.ModelProto:
    """The onnxruntime-genai style decoder with KV cache (models/README.md, `decoder.onnx`)."""
    g = _Graph(np.float16 if fp16 else np.float32)
    w = decoder_weights(cfg, state)
    H, D, V, P = cfg.n_head, cfg.head_size, cfg.vocab_size, cfg.palette_size
    kv_shape = ["batch_size", H, "past_sequence_length", D]
    inputs = [
        helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch_size", "sequence_length"]),
        helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch_size", "total_sequence_length"]),
        helper.make_tensor_value_info("position_ids", TensorProto.INT64, ["batch_size", "sequence_length"]),
    ]
    past = []
    for i in range(cfg.n_layer):
        for kind in ("key", "value"):
            past.append(f"past_key_values.{i}.{kind}")
            inputs.append(helper.make_tensor_value_info(past[-1], g.elem, kv_shape))
    seqlens_k, total = _lengths_from_mask(g, "attention_mask")
    h, presents = _transformer(g, cfg, w, "input_ids", "position_ids", seqlens_k, total, past)
    _lm_head(g, w, h, "logits")

    outputs = [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch_size", "sequence_length", V])]
    for name in presents:
        outputs.append(helper.make_tensor_value_info(name, g.elem, ["batch_size", H, "present_sequence_length", D]))
    doc = (f"iGPT decoder ({'fp16' if fp16 else 'fp32'}), {cfg.n_layer} layers, {cfg.n_embd} wide, "
           f"{cfg.n_head} heads, palette {P} (+SOS {P}), {cfg.height}x{cfg.width}x{cfg.channels}")
    return _model(g, "igpt_decoder", inputs, outputs, doc)


def step_segment_names(n_layer: int) -> List[str]:
    """File names of the decoder's step segments (models/README.md, "Step segments")."""
    return [f"decoder.step.{i}.onnx" for i in range(n_layer + 1)]


def build_step_segments(cfg: IGptConfig, w: Dict[str, np.ndarray]) -> List[onnx.ModelProto]:
    """The fp32 decoder cut at attention, for a decode step whose attention runs outside ONNX Runtime.

    n_layer + 1 graphs over [B, 1] steps; w: decoder_weights() (or decoder.onnx's initializers).
    - 0: input_ids, position_ids [B, 1] -> hidden [B, 1, C] (the residual stream), qkv [B, 1, 3C] (layer 0's)
    - i = 1..n_layer-1: hidden, attn [B, 1, C] (layer i-1's attention, heads concatenated) -> hidden, qkv (layer i's)
    - n_layer: hidden, attn -> logits [B, 1, V]
    The nodes are the decoder's own, by the same names; only GroupQueryAttention is left out.
    """
    C, L, V = cfg.n_embd, cfg.n_layer, cfg.vocab_size
    f32 = TensorProto.FLOAT
    segments = []
    for i in range(L + 1):
        g = _Graph(np.float32)
        if i == 0:
            inputs = [helper.make_tensor_value_info(n, TensorProto.INT64, ["batch_size", 1])
                      for n in ("input_ids", "position_ids")]
            residual, skip = _embed(g, w, "input_ids", "position_ids")
            skip_bias = None
        else:
            inputs = [helper.make_tensor_value_info(n, f32, ["batch_size", 1, C]) for n in ("hidden", "attn")]
            residual, skip, skip_bias = _attn_out(g, cfg, w, i - 1, "hidden", "attn")
        if i < L:
            _attn_in(g, cfg, w, i, residual, skip, skip_bias, sum_name="hidden_out", qkv_name="qkv")
            outputs = [helper.make_tensor_value_info("hidden_out", f32, ["batch_size", 1, C]),
                       helper.make_tensor_value_info("qkv", f32, ["batch_size", 1, 3 * C])]
        else:
            _lm_head(g, w, _final(g, cfg, w, residual, skip, skip_bias), "logits")
            outputs = [helper.make_tensor_value_info("logits", f32, ["batch_size", 1, V])]
        doc = f"iGPT decoder step segment {i} of {L + 1} (fp32): see models/README.md"
        segments.append(_model(g, f"igpt_decoder_step_{i}", inputs, outputs, doc))
    return segments


def save_step_segments(segments: List[onnx.ModelProto], decoder_path: str) -> List[str]:
    """Write the segments beside decoder.onnx, their weights as external data pointing at the decoder's own bytes
    (the same tensors, so nothing is stored twice): where decoder.onnx's external data puts them (weights.data), or,
    for a graph holding its weights (format version 1), inside decoder.onnx. Returns the file names written."""
    import os
    folder = os.path.dirname(os.path.abspath(decoder_path))
    decoder = onnx.load(decoder_path, load_external_data=False)
    with open(decoder_path, "rb") as f:
        blob = f.read()
    where: Dict[str, tuple] = {}  # name -> (file, offset, length); tensors under 1 KB stay inline
    for t in decoder.graph.initializer:
        if t.data_location == TensorProto.EXTERNAL:  # a decoder past 2 GB: its own `.data` file
            e = {kv.key: kv.value for kv in t.external_data}
            where[t.name] = (e["location"], int(e.get("offset", 0)), int(e["length"]))
        elif len(t.raw_data) >= 1024:
            offset = blob.find(t.raw_data)  # raw_data is stored verbatim in the protobuf
            assert offset >= 0, t.name
            where[t.name] = (os.path.basename(decoder_path), offset, len(t.raw_data))
    names = step_segment_names(len(segments) - 1)
    for model, name in zip(segments, names):
        for t in model.graph.initializer:
            if t.name in where:
                location, offset, length = where[t.name]
                assert len(t.raw_data) == length, t.name
                t.ClearField("raw_data")
                t.data_location = TensorProto.EXTERNAL
                del t.external_data[:]
                for k, v in (("location", location), ("offset", str(offset)), ("length", str(length))):
                    entry = t.external_data.add()
                    entry.key, entry.value = k, v
        onnx.save_model(model, os.path.join(folder, name))
    return names


def _full_rows(g: _Graph, ids: str):
    """GQA's lengths and the positions 0..n-1 for rows that are all full length (no cache, no padding):
    a mask of ones gives the lengths, its running sum the positions. Returns (seqlens_k, total, positions)."""
    ones = g.one("ConstantOfShape", [g.one("Shape", [ids], "/ids/Shape")], "/mask/ones",
                 value=helper.make_tensor("one", TensorProto.INT64, [1], [1]))          # [B, n]
    seqlens_k, total = _lengths_from_mask(g, ones)
    positions = g.one("CumSum", [ones, g.init("const_axis_1", np.array(1, np.int64))], "/positions/CumSum")
    positions = g.one("Sub", [positions, g.init("const_one_pos", np.array(1, np.int64))], "/positions/Sub")
    return seqlens_k, total, positions


def build_classifier(cfg: IGptConfig, state: Dict, fp16: bool = False) -> onnx.ModelProto:
    """input_ids [B, n] -> logits [B, n_classes] (and features [B, C], the pooled ln_f states).

    fp16: the transformer in fp16 (for CUDA, where GQA needs it); pooling and head stay fp32."""
    assert cfg.n_classes > 0 and "score.weight" in state, "model has no classification head"
    g = _Graph(np.float16 if fp16 else np.float32)
    w = _weights(state)
    ids = "input_ids"
    seqlens_k, total, positions = _full_rows(g, ids)
    h, _ = _transformer(g, cfg, w, ids, positions, seqlens_k, total, past=None)
    if fp16:
        h = g.one("Cast", [h], "/ln_f/Cast", to=TensorProto.FLOAT)
    pooled = g.node("ReduceMean", [h], ["features"], "/pool/ReduceMean", axes=[1], keepdims=0)[0]  # [B, C]
    g.node("MatMul", [pooled, g.init("score.weight_t", w["score.weight"].T, cast=False)], ["logits"],
           "/score/MatMul")
    inputs = [helper.make_tensor_value_info(ids, TensorProto.INT64, ["batch_size", "sequence_length"])]
    outputs = [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch_size", cfg.n_classes]),
               helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch_size", cfg.n_embd])]
    doc = f"iGPT classifier ({'fp16' if fp16 else 'fp32'}), {cfg.n_classes} classes, mean-pooled final-norm states of {cfg.n_layer} layers"
    return _model(g, "igpt_classifier", inputs, outputs, doc)


def build_analysis(cfg: IGptConfig, state: Dict) -> onnx.ModelProto:
    """The analysis graph (models/README.md, `analysis.onnx`), fp32: one teacher-forced pass over an image's tokens.

    input_ids [B, n]: the image's tokens x0..x(n-1) (no SOS: the graph builds [SOS, x0..x(n-2)] itself)
    -> features [B, n_layer + 1, C]: entry i < n_layer the mean over positions of ln_1 of block i (applied to
       block i's input), entry n_layer the mean of the final norm's output (probe.layer_features exactly);
    -> token_bits [B, n]: -log2 p(x_i | SOS, x0..x(i-1)).
    Its weights are the decoder's (decoder_weights: the same names and bytes, the head with its SOS column),
    so it adds no tensor to weights.data; its float constant is a Constant node for the same reason."""
    g = _Graph(np.float32)
    w = decoder_weights(cfg, state)
    ids = "input_ids"
    # [SOS, x0 .. x(n-2)]: a [B, 1] column of SOS before the tokens less the last
    batch = g.one("Slice", [g.one("Shape", [ids], "/sos/Shape"), g.init("const_zero_1d", np.array([0], np.int64)),
                            g.init("const_one_1d", np.array([1], np.int64))], "/sos/batch")          # [1] = [B]
    column = g.one("Concat", [batch, "const_one_1d"], "/sos/shape", axis=0)                       # [2] = [B, 1]
    sos = g.one("ConstantOfShape", [column], "/sos/column",
                value=helper.make_tensor("sos", TensorProto.INT64, [1], [cfg.sos_token_id]))    # [B, 1]
    previous = g.one("Slice", [ids, "const_zero_1d", g.init("const_minus_one_1d", np.array([-1], np.int64)),
                               "const_one_1d"], "/shift/Slice")                                   # [B, n-1]
    inputs = g.one("Concat", [sos, previous], "/shift/Concat", axis=1)                           # [B, n]
    seqlens_k, total, positions = _full_rows(g, ids)
    taps: List[str] = []
    h, _ = _transformer(g, cfg, w, inputs, positions, seqlens_k, total, past=None, ln_1_outputs=taps)
    pooled = [g.one("ReduceMean", [t], f"/features/{i}/ReduceMean", axes=[1], keepdims=1)         # [B, 1, C] each
              for i, t in enumerate(taps + [h])]
    g.node("Concat", pooled, ["features"], "/features/Concat", axis=1)                           # [B, L+1, C]
    logits = _lm_head(g, w, h, "/lm_head/logits")                                                # [B, n, V]
    log_p = g.one("LogSoftmax", [logits], "/bits/LogSoftmax", axis=-1)                          # SOS column: -1e9, p 0
    index = g.one("Unsqueeze", [ids, g.init("const_axes_2", np.array([2], np.int64))], "/bits/index")  # [B, n, 1]
    picked = g.one("GatherElements", [log_p, index], "/bits/GatherElements", axis=2)            # [B, n, 1] ln p(x_i)
    picked = g.one("Squeeze", [picked, "const_axes_2"], "/bits/Squeeze")                        # [B, n]
    to_bits = g.one("Constant", [], "/bits/minus_log2_e",
                    value=helper.make_tensor("minus_log2_e", TensorProto.FLOAT, [], [-1.0 / math.log(2.0)]))
    g.node("Mul", [picked, to_bits], ["token_bits"], "/bits/Mul")
    n_in = helper.make_tensor_value_info(ids, TensorProto.INT64, ["batch_size", "sequence_length"])
    outputs = [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch_size", cfg.n_layer + 1, cfg.n_embd]),
               helper.make_tensor_value_info("token_bits", TensorProto.FLOAT, ["batch_size", "sequence_length"])]
    doc = (f"iGPT analysis (fp32): per-layer mean-pooled features [B, {cfg.n_layer + 1}, {cfg.n_embd}] and per-token "
           f"bits of an image's tokens (input without SOS), {cfg.n_layer} layers")
    return _model(g, "igpt_analysis", [n_in], outputs, doc)


def load_initializers(path: str) -> Dict[str, np.ndarray]:
    """A saved graph's weights by name (external data resolved from the graph's folder)."""
    return {t.name: numpy_helper.to_array(t) for t in onnx.load(path).graph.initializer}
