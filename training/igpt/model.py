"""The iGPT model (Chen et al. 2020), laid out exactly like HuggingFace's ImageGPT.

Module and parameter names follow HF (`wte`, `wpe`, `h.{i}.ln_1`, `attn.c_attn`, `mlp.c_fc`,
`ln_f`, `lm_head`) and the projections are HF `Conv1D`s whose weights are [in, out], so an HF
state dict loads with a key prefix change and nothing transposed.

Differences from GPT-2 that are easy to get wrong:
- the norm is x * rsqrt(mean(x^2) + eps) * g: no mean subtraction, no bias;
- the activation is quick_gelu, x * sigmoid(1.702 x);
- the output head is untied and has `palette_size` outputs; SOS (= palette_size) is input only.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import List, Optional, Tuple

import torch
import torch.nn as nn
from torch.nn import functional as F

KV = Tuple[torch.Tensor, torch.Tensor]  # (key, value), each [B, n_head, T, head_size]


@dataclass
class IGptConfig:
    palette_size: int = 16          # pixel tokens 0..palette_size-1; SOS = palette_size
    n_positions: int = 784          # height * width
    n_embd: int = 256
    n_layer: int = 8
    n_head: int = 8
    n_classes: int = 0              # 0 = no classification head
    dropout: float = 0.0
    norm_eps: float = 1e-5
    height: int = 28
    width: int = 28
    channels: int = 1
    bidirectional: bool = False     # True only for the BERT objective: no causal mask (no KV cache)

    @property
    def vocab_size(self) -> int:   # input vocabulary: the palette plus SOS
        return self.palette_size + 1

    @property
    def sos_token_id(self) -> int:
        return self.palette_size

    @property
    def head_size(self) -> int:
        return self.n_embd // self.n_head

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "IGptConfig":
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in d.items() if k in known})


# Presets. The paper's sizes (Table 1 of Chen et al.; XL's head count is not published) at the
# paper's 32x32x3 input with the 9-bit palette, the shipped models' sizes, and a tiny one for tests.
PRESETS = {
    "tiny": dict(palette_size=8, height=8, width=8, channels=1, n_positions=64,
                 n_embd=32, n_layer=2, n_head=4),
    "fashion-mnist": dict(palette_size=16, height=28, width=28, channels=1, n_positions=784,
                          n_embd=256, n_layer=8, n_head=8),
    "emoji32": dict(palette_size=512, height=32, width=32, channels=3, n_positions=1024,
                    n_embd=512, n_layer=8, n_head=8),
    "igpt-s": dict(palette_size=512, height=32, width=32, channels=3, n_positions=1024,
                   n_embd=512, n_layer=24, n_head=8),
    "igpt-m": dict(palette_size=512, height=32, width=32, channels=3, n_positions=1024,
                   n_embd=1024, n_layer=36, n_head=8),
    "igpt-l": dict(palette_size=512, height=32, width=32, channels=3, n_positions=1024,
                   n_embd=1536, n_layer=48, n_head=16),
    "igpt-xl": dict(palette_size=512, height=32, width=32, channels=3, n_positions=1024,
                    n_embd=3072, n_layer=60, n_head=24),
}


def preset(name: str, **overrides) -> IGptConfig:
    return IGptConfig(**{**PRESETS[name], **overrides})


class Conv1D(nn.Module):
    """HF's Conv1D: a linear layer whose weight is [in, out] (y = x @ W + b)."""

    def __init__(self, nf: int, nx: int):
        super().__init__()
        self.nf = nf
        self.weight = nn.Parameter(torch.empty(nx, nf))
        self.bias = nn.Parameter(torch.zeros(nf))
        nn.init.normal_(self.weight, std=0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.addmm(self.bias, x.reshape(-1, x.size(-1)), self.weight).view(*x.shape[:-1], self.nf)


def _at_least_fp32(x: torch.Tensor) -> torch.Tensor:
    """Half-precision tensors in float32 for norms and softmax; float32 and float64 as they are."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


class RMSNorm(nn.Module):
    """iGPT's 'layer norm': x * rsqrt(mean(x^2) + eps) * g, no mean subtraction, no bias."""

    def __init__(self, n: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(n))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = _at_least_fp32(x)
        y = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return (y * self.weight.to(xf.dtype)).to(x.dtype)


def quick_gelu(x: torch.Tensor) -> torch.Tensor:
    return x * torch.sigmoid(1.702 * x)


_CAUSAL_BIAS = {}


def _causal_bias(n: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    key = (n, str(device), dtype)
    if key not in _CAUSAL_BIAS:
        keep = torch.ones(n, n, dtype=torch.bool, device=device).tril()
        _CAUSAL_BIAS[key] = torch.zeros(n, n, dtype=dtype, device=device).masked_fill(~keep, torch.finfo(dtype).min)
    return _CAUSAL_BIAS[key]


def _exporting() -> bool:
    """Tracing / ONNX export keep the plain attention ops."""
    onnx_export = getattr(torch.onnx, "is_in_onnx_export", None)
    return torch.jit.is_tracing() or torch.jit.is_scripting() or bool(onnx_export and onnx_export())


class Attention(nn.Module):
    def __init__(self, cfg: IGptConfig):
        super().__init__()
        assert cfg.n_embd % cfg.n_head == 0
        self.n_head, self.n_embd = cfg.n_head, cfg.n_embd
        self.bidirectional = cfg.bidirectional
        self.c_attn = Conv1D(3 * cfg.n_embd, cfg.n_embd)
        self.c_proj = Conv1D(cfg.n_embd, cfg.n_embd)
        self.attn_dropout = nn.Dropout(cfg.dropout)
        self.resid_dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor, past: Optional[KV] = None) -> Tuple[torch.Tensor, KV]:
        B, S, C = x.shape
        hs = C // self.n_head
        q, k, v = self.c_attn(x).split(self.n_embd, dim=2)
        q = q.view(B, S, self.n_head, hs).transpose(1, 2)  # [B, nh, S, hs]
        k = k.view(B, S, self.n_head, hs).transpose(1, 2)
        v = v.view(B, S, self.n_head, hs).transpose(1, 2)
        if past is not None:
            k = torch.cat([past[0], k], dim=2)  # [B, nh, P+S, hs]
            v = torch.cat([past[1], v], dim=2)
        T = k.size(2)
        if past is None and not _exporting():
            y = self._full_attention(q, k, v)  # [B, nh, S, hs], same values, faster
        else:
            att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(hs))  # [B, nh, S, T]
            if not self.bidirectional:
                # query i sits at absolute position T-S+i and sees keys 0..T-S+i
                causal = torch.ones(S, T, dtype=torch.bool, device=x.device).tril(diagonal=T - S)
                att = att.masked_fill(~causal, torch.finfo(att.dtype).min)
            att = self.attn_dropout(F.softmax(_at_least_fp32(att), dim=-1).to(q.dtype))
            y = att @ v
        y = y.transpose(1, 2).contiguous().view(B, S, C)  # [B, S, C]
        return self.resid_dropout(self.c_proj(y)), (k, v)

    def _full_attention(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Attention over a whole sequence (no cache), for training and prefill.

        PyTorch 2's fused scaled_dot_product_attention where it exists. Otherwise causal attention
        in query blocks of about equal work, each block only against the keys it can see, with the
        scale and mask fused into one baddbmm: about 3x faster than the plain path on CPU and the
        same result up to float rounding.
        """
        B, nh, S, hs = q.shape
        p = self.attn_dropout.p if self.training else 0.0
        if hasattr(F, "scaled_dot_product_attention"):
            return F.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=not self.bidirectional)
        scale = 1.0 / math.sqrt(hs)
        q2, k2, v2 = (t.reshape(B * nh, S, hs) for t in (q, k, v))  # [B*nh, S, hs]
        if self.bidirectional:
            att = torch.bmm(q2, k2.transpose(1, 2)) * scale
            return torch.bmm(self.attn_dropout(F.softmax(_at_least_fp32(att), -1).to(q.dtype)), v2).view(B, nh, S, hs)
        bias = _causal_bias(S, q.device, q.dtype)  # [S, S]: 0 on and below the diagonal, else min
        blocks = 1 if S < 128 else 4
        edges = sorted({max(1, round(S * math.sqrt((i + 1) / blocks))) for i in range(blocks)})
        outs, r0 = [], 0
        for r1 in edges:  # queries r0..r1-1 see keys 0..r1-1
            att = torch.baddbmm(bias[r0:r1, :r1], q2[:, r0:r1], k2[:, :r1].transpose(1, 2), alpha=scale)
            att = self.attn_dropout(F.softmax(_at_least_fp32(att), -1).to(q.dtype))
            outs.append(torch.bmm(att, v2[:, :r1]))  # [B*nh, r1-r0, hs]
            r0 = r1
        return torch.cat(outs, 1).view(B, nh, S, hs)


class MLP(nn.Module):
    def __init__(self, cfg: IGptConfig):
        super().__init__()
        self.c_fc = Conv1D(4 * cfg.n_embd, cfg.n_embd)
        self.c_proj = Conv1D(cfg.n_embd, 4 * cfg.n_embd)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.c_proj(quick_gelu(self.c_fc(x))))


class Block(nn.Module):
    def __init__(self, cfg: IGptConfig):
        super().__init__()
        self.ln_1 = RMSNorm(cfg.n_embd, cfg.norm_eps)
        self.attn = Attention(cfg)
        self.ln_2 = RMSNorm(cfg.n_embd, cfg.norm_eps)
        self.mlp = MLP(cfg)

    def forward(self, x: torch.Tensor, past: Optional[KV] = None) -> Tuple[torch.Tensor, KV]:
        a, present = self.attn(self.ln_1(x), past)
        x = x + a
        x = x + self.mlp(self.ln_2(x))
        return x, present


class Transformer(nn.Module):
    """HF's ImageGPTModel: embeddings, blocks, final norm."""

    def __init__(self, cfg: IGptConfig):
        super().__init__()
        self.wte = nn.Embedding(cfg.vocab_size, cfg.n_embd)
        self.wpe = nn.Embedding(cfg.n_positions, cfg.n_embd)
        self.drop = nn.Dropout(cfg.dropout)
        self.h = nn.ModuleList([Block(cfg) for _ in range(cfg.n_layer)])
        self.ln_f = RMSNorm(cfg.n_embd, cfg.norm_eps)


class IGpt(nn.Module):
    """iGPT with its untied generative head and an optional classification head.

    forward(idx) takes [SOS, x0..x(n-2)] and its logits at position i predict x_i.
    """

    def __init__(self, cfg: IGptConfig):
        super().__init__()
        self.config = cfg
        self.transformer = Transformer(cfg)
        self.lm_head = nn.Linear(cfg.n_embd, cfg.palette_size, bias=False)  # untied, no SOS output
        # HF ImageGPTForImageClassification calls it `score`; mean-pooled ln_f states -> classes
        self.score = nn.Linear(cfg.n_embd, cfg.n_classes, bias=False) if cfg.n_classes > 0 else None
        self.apply(self._init_weights)
        for name, p in self.named_parameters():  # GPT-2's scaled init of residual projections
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * cfg.n_layer))

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, std=0.02)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, std=0.02)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def hidden(self, idx: torch.Tensor, past: Optional[List[KV]] = None, position_offset: int = 0,
               return_layer_inputs: bool = False):
        """Final-norm hidden states [B, S, C], the new KV cache, and optionally every block's input."""
        B, S = idx.shape
        assert position_offset + S <= self.config.n_positions, "sequence longer than n_positions"
        pos = torch.arange(position_offset, position_offset + S, device=idx.device)
        t = self.transformer
        x = t.drop(t.wte(idx) + t.wpe(pos)[None])  # [B, S, C]
        presents: List[KV] = []
        layer_inputs = []
        for i, block in enumerate(t.h):
            if return_layer_inputs:
                layer_inputs.append(x)
            x, present = block(x, past[i] if past is not None else None)
            presents.append(present)
        x = t.ln_f(x)
        if return_layer_inputs:
            layer_inputs.append(x)  # the last "layer input" is the final-norm output
            return x, presents, layer_inputs
        return x, presents

    def forward(self, idx: torch.Tensor, past: Optional[List[KV]] = None, position_offset: int = 0):
        """Generative logits [B, S, palette_size] and the KV cache (list of (k, v) per layer)."""
        h, presents = self.hidden(idx, past, position_offset)
        return self.lm_head(h), presents

    def classify(self, idx: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Class logits [B, n_classes] from mean-pooled final-norm states, and the generative logits."""
        assert self.score is not None, "model has no classification head"
        h, _ = self.hidden(idx)
        return self.score(h.mean(dim=1)), self.lm_head(h)


def shift_inputs(tokens: torch.Tensor, sos: int) -> torch.Tensor:
    """[x0..x(n-1)] -> [SOS, x0..x(n-2)]: the input whose position i predicts x_i."""
    sos_col = torch.full_like(tokens[:, :1], sos)
    return torch.cat([sos_col, tokens[:, :-1]], dim=1)
