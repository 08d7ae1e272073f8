"""PyTorch side of the benchmark: a worker that bench/run.py drives over stdin/stdout (JSON lines).

    /usr/bin/python3 bench/torch_bench.py --method torch-eager|torch-naive|probe

The model is rebuilt from the package itself (a package has no .pt): every weight is read from
decoder.onnx's initializers, whose names are the checkpoint's HF-style names (igpt/onnx_graph.py),
except the head, stored as `lm_head.weight_padded` [C, palette+1] (a zero SOS column), and the
classification head, `score.weight_t` [C, classes] in classifier.onnx.

Methods:
- torch-eager: training/igpt/sample.py's KV-cache sampler (prefill, then one token per step with
  the cache grown by torch.cat), timed around the same calls.
- torch-naive: sample.py's no-cache sampler (openai/image-gpt's): a full forward over the
  growing prefix for every token.
- probe: no model; the machine's torch GEMM GFLOP/s and numpy streaming-read bandwidth.

Ops (one JSON object per line in, one out): {"op": "load", "package": DIR}; {"op": "complete",
"prompt": [...], "batch": B, "new_tokens": N} -> tokens of row 0 (prompt excluded), prefill_ms,
decode_ms, total_ms, steps; {"op": "classify", "batch": B, "reps": R} -> ms per call;
{"op": "gemm", "n": N, "reps": R}; {"op": "bandwidth", "mib": M, "reps": R}; {"op": "quit"}.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "training"))

from igpt.runtime import ensure_env  # noqa: E402

if __name__ == "__main__":
    ensure_env()  # glibc malloc settings, as training and sampling use them (DEVELOPERS.md)

import numpy as np  # noqa: E402
import torch  # noqa: E402

from igpt.export import config_from_manifest  # noqa: E402
from igpt.model import IGpt  # noqa: E402
from igpt.onnx_graph import load_initializers  # noqa: E402
from igpt.runtime import configure_threads  # noqa: E402
from igpt.sample import pick_tokens  # noqa: E402


def load_package_model(package: str) -> IGpt:
    """An fp32 IGpt whose weights are the package's decoder.onnx (and classifier.onnx) initializers."""
    with open(os.path.join(package, "model.json"), encoding="utf-8") as f:
        manifest = json.load(f)
    cfg = config_from_manifest(manifest)
    model = IGpt(cfg)
    inits = load_initializers(os.path.join(package, manifest["files"]["decoder"]["cpu"]["path"]))
    state = {}
    for name in model.state_dict():
        if name == "lm_head.weight":
            padded = inits["lm_head.weight_padded"]                      # [C, palette + 1]
            state[name] = torch.from_numpy(np.ascontiguousarray(padded[:, :cfg.palette_size].T))  # [palette, C]
        elif name == "score.weight":
            cls = manifest["files"]["classifier"]["cpu"]["path"]
            score = load_initializers(os.path.join(package, cls))["score.weight_t"]  # [C, classes]
            state[name] = torch.from_numpy(np.ascontiguousarray(score.T))
        else:
            state[name] = torch.from_numpy(np.array(inits[name], dtype=np.float32))
    model.load_state_dict(state, strict=True)
    return model.float().eval()


class Worker:
    def __init__(self, method: str):
        self.method = method
        self.model = None

    def load(self, package: str) -> dict:
        t0 = time.perf_counter()
        self.model = load_package_model(package)
        load_ms = 1e3 * (time.perf_counter() - t0)
        return {"load_ms": load_ms, "parity_max_abs_diff": self.parity(package)}

    @torch.no_grad()
    def parity(self, package: str) -> float:
        """The rebuilt model against the package's parity.json (PyTorch's logits at export); raises past tolerance."""
        with open(os.path.join(package, "parity.json"), encoding="utf-8") as f:
            parity = json.load(f)
        P = self.model.config.palette_size
        prompt = torch.tensor([parity["prompt"]])
        logits, past = self.model(prompt)
        diff = (logits[0] - torch.tensor(parity["prefill_logits"])[:, :P]).abs().max().item()
        n = len(parity["prompt"])
        for i, tok in enumerate(parity["decode_tokens"]):
            logits, past = self.model(torch.tensor([[tok]]), past=past, position_offset=n + i)
            diff = max(diff, (logits[0, -1] - torch.tensor(parity["decode_logits"][i])[:P]).abs().max().item())
        if not diff <= parity["tolerance"]:
            raise RuntimeError(f"weights rebuilt from the ONNX initializers miss parity.json by {diff:.3g}")
        return diff

    @torch.no_grad()
    def complete(self, prompt, batch: int, new_tokens: int) -> dict:
        """Greedy continuation of [SOS, prompt] by new_tokens tokens, batch identical rows."""
        model, cfg = self.model, self.model.config
        P = len(prompt)
        seq = torch.tensor([[cfg.sos_token_id] + list(prompt)] * batch, dtype=torch.long)
        out = torch.empty(batch, new_tokens, dtype=torch.long)
        t0 = time.perf_counter()
        if self.method == "torch-eager":
            # sample.py's sample_tokens, with timers around the prefill and the steps
            logits, past = model(seq)
            t1 = time.perf_counter()
            for t in range(new_tokens):
                tok = pick_tokens(logits[:, -1, :], 0.0)
                out[:, t] = tok
                if t + 1 < new_tokens:
                    logits, past = model(tok[:, None], past=past, position_offset=P + 1 + t)
        else:
            # sample.py's sample_tokens_nocache: the "prefill" is the first full forward
            logits, _ = model(seq)
            t1 = time.perf_counter()
            for t in range(new_tokens):
                tok = pick_tokens(logits[:, -1, :], 0.0)
                out[:, t] = tok
                seq = torch.cat([seq, tok[:, None]], dim=1)
                if t + 1 < new_tokens:
                    logits, _ = model(seq)
        t2 = time.perf_counter()
        return {"tokens": out[0].tolist(), "prefill_ms": 1e3 * (t1 - t0), "decode_ms": 1e3 * (t2 - t1),
                "total_ms": 1e3 * (t2 - t0), "steps": new_tokens - 1,
                "rows_agree": bool((out == out[0]).all())}

    @torch.no_grad()
    def classify(self, batch: int, reps: int, seed: int = 0) -> dict:
        cfg = self.model.config
        g = torch.Generator().manual_seed(seed)
        pixels = torch.randint(0, cfg.palette_size, (batch, cfg.n_positions), generator=g)
        idx = torch.cat([torch.full((batch, 1), cfg.sos_token_id), pixels[:, :-1]], dim=1)
        times = []
        for _ in range(reps):
            t0 = time.perf_counter()
            logits, _ = self.model.classify(idx)
            torch.softmax(logits, -1)
            times.append(1e3 * (time.perf_counter() - t0))
        return {"ms": times}


def gemm(n: int, reps: int) -> dict:
    a = torch.randn(n, n)
    b = torch.randn(n, n)
    c = torch.empty(n, n)
    torch.mm(a, b, out=c)
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        torch.mm(a, b, out=c)
        times.append(time.perf_counter() - t0)
    return {"gflops": [2 * n ** 3 / t / 1e9 for t in times]}


def bandwidth(mib: int, reps: int) -> dict:
    """numpy streaming read: sum of a float32 array much larger than the caches."""
    a = np.ones(mib * 1024 * 1024 // 4, np.float32)
    a.sum(dtype=np.float32)
    out = []
    for _ in range(reps):
        t0 = time.perf_counter()
        a.sum(dtype=np.float32)
        out.append(a.nbytes / (time.perf_counter() - t0) / 1e9)
    return {"gbps": out}


def peak_rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--method", required=True, choices=["torch-eager", "torch-naive", "probe"])
    ap.add_argument("--threads", type=int, default=0)
    args = ap.parse_args()
    threads = configure_threads(args.threads)
    worker = Worker(args.method)
    hello = {"ready": True, "method": args.method, "threads": threads, "torch": torch.__version__,
             "numpy": np.__version__, "blas": _blas()}
    print(json.dumps(hello), flush=True)
    for line in sys.stdin:
        req = json.loads(line)
        op = req["op"]
        try:
            if op == "quit":
                break
            if op == "load":
                res = worker.load(req["package"])
            elif op == "complete":
                res = worker.complete(req["prompt"], req["batch"], req["new_tokens"])
            elif op == "classify":
                res = worker.classify(req["batch"], req["reps"])
            elif op == "gemm":
                res = gemm(req.get("n", 2048), req.get("reps", 5))
            elif op == "bandwidth":
                res = bandwidth(req.get("mib", 1024), req.get("reps", 5))
            else:
                raise ValueError(f"unknown op {op}")
            res["ok"] = True
        except Exception as e:  # reported to the orchestrator, which fails loudly
            res = {"ok": False, "error": f"{type(e).__name__}: {e}"}
        res["peak_rss_mib"] = peak_rss_mib()
        print(json.dumps(res), flush=True)
    return 0


def _blas() -> str:
    """BLAS_INFO from the build (Debian's is "generic": the system libblas, e.g. OpenBLAS)."""
    import re

    m = re.search(r"BLAS_INFO=([^,\s]+)", torch.__config__.show())
    return m.group(1) if m else "unknown"


if __name__ == "__main__":
    sys.exit(main())
