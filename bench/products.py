"""How close the kernel steps' products run to the machine's fp32 GEMM rate, one thread each.

    /usr/bin/python3 bench/products.py [--package w256 --package fashion-mnist-28] [--rows 1,4,16] [--reps 15] [--processes 3]
                                       [--weights float32,int16]

Times every product of a decode step (each layer's c_attn, c_proj, c_fc and mlp.c_proj, then the head) through the
library's own kernels (RowKernels.Multiply over PanelWeights, the code KernelStep runs) on one thread, with random
weights of the package's shapes: the `products` op of the IGpt.Bench worker; for each of --weights (Inference:KernelWeightType:
fp32 panels, or int16 ones with the inputs quantized once per product, the head fp32 either way). The GFLOP/s count the
products' multiply-adds as two flops whatever their type. Two states of the caches:
- "in cache": the weights where the previous repetition left them (L2 and L3: the whole step's weights are 25 MB for the
  256-wide package, more than L2);
- "from DRAM": 64 MiB streamed through the caches before each repetition, as a 16-row step's KV cache evicts them.
Beside them, ONNX Runtime's MLAS GEMM (bench/packages/gemm.onnx, 2048 x 2048) on one thread, the same worker: the rate
bench/run.py's compute roofline takes (with two threads). Each figure is the median over the processes of each
process's median, with the range of the processes' medians. Writes benchmarks/raw/products.json and prints a markdown
table. Run it on an otherwise idle machine; build the worker first (bench/run.sh does, or
`dotnet build bench/IGpt.Bench -c Release`).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Dict, List

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from run import IGPT_DLL, RAW, ROOT, Worker, busy_processes, med, model_info  # noqa: E402
from kernel_steps import package_path  # noqa: E402

EVICT_MIB = 64


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--package", action="append", help="package name under bench/packages or models (repeatable)")
    ap.add_argument("--rows", default="1,4,16")
    ap.add_argument("--reps", type=int, default=15)
    ap.add_argument("--processes", type=int, default=3)
    ap.add_argument("--weights", default="float32,int16", help="the kernels' weight types (Inference:KernelWeightType)")
    args = ap.parse_args()
    packages = args.package or ["w256", "fashion-mnist-28"]
    rows = [int(r) for r in args.rows.split(",")]
    types = args.weights.split(",")
    busy = busy_processes()
    if busy:
        print(f"warning: other processes are busy, the figures are under load: {busy}", file=sys.stderr)
    gemm_onnx = os.path.join(ROOT, "bench/packages/gemm.onnx")
    samples: Dict[str, List[List[float]]] = {}   # key -> per process, its repetitions
    for proc in range(args.processes):
        w = Worker("products", ["dotnet", IGPT_DLL, "--method", "igpt"])
        try:
            if os.path.exists(gemm_onnx):
                samples.setdefault("mlas", []).append(w.call(op="gemm", model=gemm_onnx, n=2048, reps=5, threads=1)["gflops"])
            for name in packages:
                info = model_info(package_path(name))
                for n in rows:
                    for t in types:
                        for state, evict in (("cache", 0), ("dram", EVICT_MIB)):
                            r = w.call(op="products", n_embd=info["n_embd"], n_layer=info["n_layer"], vocab=info["vocab_size"],
                                       rows=n, reps=args.reps, evict_mib=evict, weights=t)
                            samples.setdefault(f"{name}|{n}|{t}|{state}", []).append(r["gflops"])
        finally:
            w.proc.kill()

    def summary(key: str) -> dict:
        per_process = [med(xs) for xs in samples.get(key, [])]
        return {"median": med(per_process), "min": min(per_process, default=float("nan")),
                "max": max(per_process, default=float("nan"))}

    mlas = summary("mlas")
    out = {"mlas_one_thread": mlas, "evict_mib": EVICT_MIB, "processes": args.processes, "reps": args.reps,
           "busy": busy, "products": {}}
    print(f"\nMLAS fp32 GEMM, 2048 x 2048, one thread: {mlas['median']:.1f} GFLOP/s "
          f"({mlas['min']:.1f}-{mlas['max']:.1f} over {args.processes} processes)\n")
    print("| package | rows | weights | in cache, GFLOP/s | of MLAS | from DRAM, GFLOP/s | of MLAS |")
    print("|---|---|---|---|---|---|---|")
    for name in packages:
        for n in rows:
            for t in types:
                c, d = summary(f"{name}|{n}|{t}|cache"), summary(f"{name}|{n}|{t}|dram")
                out["products"][f"{name}/{n}/{t}"] = {"cache": c, "dram": d}
                print(f"| {name} | {n} | {t} | {c['median']:.1f} ({c['min']:.1f}-{c['max']:.1f}) | {c['median'] / mlas['median']:.2f} | "
                      f"{d['median']:.1f} ({d['min']:.1f}-{d['max']:.1f}) | {d['median'] / mlas['median']:.2f} |")
    os.makedirs(RAW, exist_ok=True)
    with open(os.path.join(RAW, "products.json"), "w", encoding="utf-8") as f:
        json.dump(out, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
