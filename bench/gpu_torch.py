"""PyTorch decoding iGPT-S/M/L shapes on one NVIDIA GPU: the measured side of "GPU on paper".

    python3 bench/gpu_torch.py [--models igpt-s,igpt-m,igpt-l] [--batches 1,16,64] [--steps 64] [--out FILE]

Runs on a machine with a CUDA GPU and PyTorch 2.x (not part of ./test.sh; benchmarks/README.md,
"GPU on paper"). Random weights in bf16 at the paper's shapes (training/igpt/model.py presets), a
512-token prompt (the top half of a 32x32 image), then `--steps` greedy decode steps, timed with CUDA
events after warm-up steps. Two methods:

- torch-eager: the training project's KV-cache model (`IGpt.forward` with `past`; the cache grows by
  torch.cat, as in igpt/sample.py's sampler and HF generate): what a user runs without effort.
- torch-graph: the same weights through a static KV buffer ([B, H, n_positions, D] per layer, the new
  entry written in place, attention over every position with a mask), one step captured as a CUDA graph
  and replayed: the launch overhead gone, which is what the service's CUDA path does with ONNX Runtime's
  CUDA graphs. It reads the whole cache every step (n_positions, not the current length).

Prints a Markdown table and writes JSON: ms per step, tokens/s, and the step's memory roofline from the
GPU's measured copy bandwidth (bytes read + written per second), for the bf16 weights and the KV
entries the step must read. Results measured on an H100 and an H200: benchmarks/gpu/*.json.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "training"))
from igpt.model import IGpt, preset  # noqa: E402

PROMPT = 512
WARMUP = 8   # untimed steps before the timed ones
BYTES = 2  # bf16


def copy_bandwidth(device: torch.device) -> float:
    """GB/s of a device-to-device copy, counting bytes read and written (median of 10 after warm-up)."""
    n = 1 << 30  # 1 GiB each way
    a = torch.empty(n, dtype=torch.uint8, device=device)
    b = torch.empty_like(a)
    for _ in range(3):
        b.copy_(a)
    times = []
    for _ in range(10):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        b.copy_(a)
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    del a, b
    return 2 * n / statistics.median(times) / 1e9


def prefill_input(model: IGpt, batch: int, length: int, gen: torch.Generator = None) -> torch.Tensor:
    """[SOS, a random prompt of `length` pixel tokens] per row: [batch, 1 + length], on the model's device."""
    cfg = model.config
    device = next(model.parameters()).device
    prompt = torch.randint(cfg.palette_size, (batch, length), generator=gen, device=device)
    return torch.cat([torch.full((batch, 1), cfg.sos_token_id, device=device), prompt], dim=1)


def timed_steps(step, steps: int) -> list:
    """Milliseconds of each of `steps` calls of step(i) after WARMUP calls (CUDA events)."""
    for i in range(WARMUP):
        step(i)
    torch.cuda.synchronize()
    out = []
    for i in range(WARMUP, WARMUP + steps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        step(i)
        end.record()
        torch.cuda.synchronize()
        out.append(start.elapsed_time(end))
    return out


@torch.no_grad()
def eager(model: IGpt, batch: int, steps: int, gen: torch.Generator) -> dict:
    seq = prefill_input(model, batch, PROMPT, gen)
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    logits, past = model(seq)  # prefill
    torch.cuda.synchronize()
    prefill_ms = (time.perf_counter() - t0) * 1e3
    state = {"logits": logits, "past": past}

    def step(i: int) -> None:
        tok = state["logits"][:, -1].float().argmax(-1)  # greedy, on the GPU
        state["logits"], state["past"] = model(tok[:, None], past=state["past"], position_offset=PROMPT + 1 + i)

    ms = timed_steps(step, steps)
    return {"prefill_ms": prefill_ms, "ms": ms, "kv_positions": PROMPT + 1 + WARMUP + steps / 2}


class StaticDecoder:
    """One decode step over a preallocated KV buffer, shapes fixed so that it can be a CUDA graph."""

    def __init__(self, model: IGpt, batch: int):
        cfg = model.config
        self.model, self.cfg, self.batch = model, cfg, batch
        p = next(model.parameters())
        self.dtype, self.device = p.dtype, p.device
        H, D, P = cfg.n_head, cfg.head_size, cfg.n_positions
        self.k = [torch.zeros(batch, H, P, D, dtype=p.dtype, device=p.device) for _ in range(cfg.n_layer)]
        self.v = [torch.zeros_like(k) for k in self.k]
        self.token = torch.zeros(batch, dtype=torch.long, device=p.device)
        self.position = torch.zeros(1, dtype=torch.long, device=p.device)
        self.logits = torch.zeros(batch, cfg.palette_size, dtype=torch.float32, device=p.device)
        self.arange = torch.arange(P, device=p.device)

    def fill(self, past) -> None:
        """Copy a prefill's cache (list of (k, v), [B, H, T, D]) into the static buffers."""
        for i, (k, v) in enumerate(past):
            T = k.size(2)
            self.k[i][:, :, :T].copy_(k)
            self.v[i][:, :, :T].copy_(v)

    def step(self) -> None:
        cfg, m = self.cfg, self.model
        B, H, D, C = self.batch, cfg.n_head, cfg.head_size, cfg.n_embd
        t = m.transformer
        x = t.wte(self.token) + t.wpe(self.position)  # [B, C]
        keep = (self.arange <= self.position)[None, None, None, :]  # [1, 1, 1, P]: positions 0..pos
        for i, block in enumerate(t.h):
            a = block.attn
            q, k, v = a.c_attn(block.ln_1(x)).split(C, dim=-1)
            q = q.view(B, H, 1, D)
            self.k[i].index_copy_(2, self.position, k.view(B, H, 1, D))
            self.v[i].index_copy_(2, self.position, v.view(B, H, 1, D))
            att = (q @ self.k[i].transpose(-2, -1)) * (1.0 / math.sqrt(D))  # [B, H, 1, P]
            att = F.softmax(att.float().masked_fill(~keep, float("-inf")), dim=-1).to(q.dtype)
            y = att @ self.v[i]  # [B, H, 1, D]
            x = x + a.c_proj(y.reshape(B, C))
            x = x + block.mlp(block.ln_2(x))
        self.logits.copy_(m.lm_head(t.ln_f(x)).float())
        self.token.copy_(self.logits.argmax(-1))
        self.position.add_(1)


@torch.no_grad()
def graphed(model: IGpt, batch: int, steps: int, gen: torch.Generator) -> dict:
    cfg = model.config
    logits, past = model(prefill_input(model, batch, PROMPT, gen))
    d = StaticDecoder(model, batch)
    d.fill(past)
    del past

    def reset() -> None:
        d.token.copy_(logits[:, -1].float().argmax(-1))
        d.position.fill_(PROMPT + 1)

    reset()
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):  # warm up outside the graph (cuBLAS handles, workspaces)
        for _ in range(3):
            d.step()
    torch.cuda.current_stream().wait_stream(s)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        d.step()
    reset()
    ms = timed_steps(lambda i: graph.replay(), steps)
    return {"prefill_ms": None, "ms": ms, "kv_positions": cfg.n_positions, "kernels": kernel_count(d)}


def kernel_count(d: StaticDecoder) -> dict:
    """GPU kernels in one (eager) run of the static step and the sum of their durations (torch.profiler)."""
    from torch.profiler import ProfilerActivity, profile
    d.step()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        d.step()
        torch.cuda.synchronize()
    count, us = 0, 0.0
    for e in prof.events():
        if str(getattr(e, "device_type", "")).endswith("CUDA"):
            count += 1
            us += float(getattr(e, "device_time", None) or getattr(e, "cuda_time", 0.0) or 0.0)
    return {"count": count, "kernel_ms": us / 1e3}


@torch.no_grad()
def check() -> int:
    """CPU, tiny model: the static decoder's steps give the eager model's logits (run before a GPU lease)."""
    torch.manual_seed(0)
    cfg = preset("tiny")
    model = IGpt(cfg).eval()
    length = cfg.n_positions // 2
    logits, past = model(prefill_input(model, 3, length))
    d = StaticDecoder(model, 3)
    d.fill(past)
    d.token.copy_(logits[:, -1].argmax(-1))
    d.position.fill_(length + 1)
    worst = 0.0
    for i in range(cfg.n_positions - length - 2):
        tok = logits[:, -1].argmax(-1)
        logits, past = model(tok[:, None], past=past, position_offset=length + 1 + i)
        d.step()
        worst = max(worst, float((d.logits - logits[:, -1]).abs().max()))
        assert torch.equal(d.token, logits[:, -1].argmax(-1)), f"step {i}: tokens differ"
    print(f"static decoder = eager over {cfg.n_positions - length - 2} steps (max |logit diff| {worst:.2e})")
    return 0 if worst < 1e-4 else 1


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="igpt-s,igpt-m,igpt-l")
    ap.add_argument("--batches", default="1,16,64")
    ap.add_argument("--steps", type=int, default=64)
    ap.add_argument("--out", default=None, help="JSON file (default: print only)")
    ap.add_argument("--check", action="store_true", help="CPU self-check of the static decoder against eager, then exit")
    args = ap.parse_args()
    if args.check:
        return check()
    if not torch.cuda.is_available():
        raise SystemExit("gpu_torch.py needs a CUDA GPU")
    device = torch.device("cuda")
    torch.backends.cuda.matmul.allow_tf32 = True
    gpu = torch.cuda.get_device_name(0)
    bandwidth = copy_bandwidth(device)
    report = {"gpu": gpu, "torch": torch.__version__, "cuda": torch.version.cuda, "dtype": "bfloat16",
              "copy_gbps": bandwidth, "prompt": PROMPT, "steps": args.steps, "results": []}
    print(f"{gpu}, torch {torch.__version__} (CUDA {torch.version.cuda}); copy {bandwidth:.0f} GB/s (read + write)")
    print("\n| model | method | batch | ms/step | tokens/s | MB read/step | roofline ms | x roofline | kernels/step (ms in kernels) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name in args.models.split(","):
        cfg = preset(name)
        gen = torch.Generator(device=device).manual_seed(0)
        with torch.device(device):
            model = IGpt(cfg)
        model = model.to(torch.bfloat16).eval()
        L, C = cfg.n_layer, cfg.n_embd
        weights = (12 * L * C * C + C * cfg.palette_size) * BYTES
        for batch in (int(b) for b in args.batches.split(",")):
            for method, run in (("torch-eager", eager), ("torch-graph", graphed)):
                try:
                    r = run(model, batch, args.steps, gen)
                except torch.cuda.OutOfMemoryError:
                    print(f"| {name} | {method} | {batch} | out of GPU memory | | | | | |")
                    torch.cuda.empty_cache()
                    continue
                ms = statistics.median(r["ms"])
                # the least a step must read: the weights once, and every cached key and value of every row
                kv = 2 * L * C * r["kv_positions"] * BYTES * batch
                # HBM's rate is shared by reads and writes: a copy's bytes read + written per second is what a
                # read-only stream can reach too
                roof_ms = (weights + kv) / (bandwidth * 1e9) * 1e3
                row = {"model": name, "method": method, "batch": batch, "prefill_ms": r["prefill_ms"],
                       "kernels_per_step": (r.get("kernels") or {}).get("count"),
                       "kernel_ms_per_step": (r.get("kernels") or {}).get("kernel_ms"),
                       "ms_per_step": ms, "ms_spread": [min(r["ms"]), max(r["ms"])], "tokens_per_s": batch / ms * 1e3,
                       "bytes_per_step": weights + kv, "roofline_ms": roof_ms}
                report["results"].append(row)
                k = r.get("kernels")
                kern = f"{k['count']} ({k['kernel_ms']:.3f})" if k else "–"
                print(f"| {name} | {method} | {batch} | {ms:.3f} | {batch / ms * 1e3:,.0f} | "
                      f"{(weights + kv) / 1e6:,.0f} | {roof_ms:.3f} | {ms / roof_ms:.1f} | {kern} |", flush=True)
                torch.cuda.empty_cache()
        del model
        torch.cuda.empty_cache()
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w", encoding="utf-8") as f:
            json.dump(report, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
