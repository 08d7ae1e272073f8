"""A/B of decode steps on the library's kernels (Inference:KernelStepRows, 16 by default) against the ONNX Runtime paths they
replace (the decoder graph, row lanes or step segments, as the other settings choose; with a compressed cache, the
segments, or for one row of a model too big for lanes the graph over an fp32 row).

    /usr/bin/python3 bench/kernel_steps.py [--package w256 --package fashion-mnist-28] [--kv-cache-type int8,float32]
                                           [--batches 1,4,16] [--processes 3] [--reps 3]

Both sides are `igpt` workers (IGptModel.CompleteAsync with the service's appsettings.json) differing only in
KernelStepRows (16 against 0: every batch below on the kernels), loaded in the same fresh processes' pairs after a throwaway first loader, run alternately
(the order swapped every repetition), greedy, a half-image completion with `batch` samples. Greedy tokens are compared
and the share that agrees printed (the kernels sum in another order than ONNX Runtime, so near-ties may flip; with a
compressed cache a key rounded to the next step can flip more). Each figure is the median over the processes of each
process's median ms/step; ratios are the sessions' ms/step over the kernels' (above 1: the kernels are faster). Writes
benchmarks/raw/kernel_steps.json and prints a markdown table.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import sys
from typing import Dict, List

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from run import IGPT_DLL, RAW, ROOT, Worker, busy_processes, first_loader, med, model_info  # noqa: E402


def package_path(name: str) -> str:
    for folder in ("bench/packages", "models"):
        path = os.path.join(ROOT, folder, name)
        if os.path.exists(os.path.join(path, "model.json")):
            return path
    raise SystemExit(f"no package {name} in bench/packages or models (bench/make_packages.py writes bench/packages)")


def run(name: str, cache_type: str, batch: int, processes: int, reps: int) -> dict:
    path = package_path(name)
    info = model_info(path)
    k = info["height"] // 2 * info["width"]
    rng = random.Random(6)
    prompt = [rng.randrange(info["palette_size"]) for _ in range(k)]
    sides = {"kernels": 16, "sessions": 0}
    times: Dict[str, List[tuple]] = {s: [] for s in sides}
    agree = []
    settings = {}
    for proc in range(processes):
        ballast = first_loader(path, "kernels-ballast")
        workers = {s: Worker(f"kernels-{s}", ["dotnet", IGPT_DLL, "--method", "igpt"]) for s in sides}
        try:
            for s, w in workers.items():
                r = w.call(op="load", package=path, kv_cache_type=cache_type, kernel_rows=sides[s])
                if r.get("kernel_rows") != sides[s]:
                    raise SystemExit(f"FAIL: {name} {cache_type}: the {s} worker planned kernel_rows={r.get('kernel_rows')}: "
                                     f"{r.get('settings')}")
                settings[s] = r["settings"]
            tokens = {s: w.call(op="complete", prompt=prompt, batch=batch)["tokens"] for s, w in workers.items()}
            same = sum(a == b for a, b in zip(tokens["kernels"], tokens["sessions"]))
            agree.append(same / max(1, len(tokens["kernels"])))
            for rep in range(reps):
                for s in (("kernels", "sessions") if (rep + proc) % 2 == 0 else ("sessions", "kernels")):
                    r = workers[s].call(op="complete", prompt=prompt, batch=batch)
                    times[s].append((proc, r["decode_ms"] / max(1, r["steps"])))
        finally:
            for w in workers.values():
                w.close()
            ballast.close()
    row = {"settings": settings, "greedy_agreement": agree}
    for s in sides:
        per_process = [med([ms for p, ms in times[s] if p == proc]) for proc in range(processes)]
        row[s] = {"ms_per_step": med(per_process), "process_medians": per_process,
                  "range": [min(ms for _, ms in times[s]), max(ms for _, ms in times[s])]}
    row["ratio"] = row["sessions"]["ms_per_step"] / row["kernels"]["ms_per_step"]
    print(f"  {name} {cache_type} b{batch}: kernels {row['kernels']['ms_per_step']:.3f} ms/step, sessions "
          f"{row['sessions']['ms_per_step']:.3f} ({row['ratio']:.2f}x); greedy tokens agree "
          f"{100 * min(agree):.0f}-{100 * max(agree):.0f}%", flush=True)
    return row


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--package", action="append", help="package name (repeatable; default w256 and fashion-mnist-28)")
    ap.add_argument("--kv-cache-type", default="int8,float32")
    ap.add_argument("--batches", default="1,4,16")
    ap.add_argument("--processes", type=int, default=3)
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args()
    load = busy_processes()
    results = {f"{name} {t} {b}": run(name, t, int(b), args.processes, args.reps)
               for name in (args.package or ["w256", "fashion-mnist-28"]) for t in args.kv_cache_type.split(",")
               for b in args.batches.split(",")}
    load += busy_processes()
    print(f"\nKernel steps: the library's kernels against the sessions' paths; igpt (IGptModel.CompleteAsync), greedy, "
          f"half-image completion; {args.processes} fresh process pairs x {args.reps} repetitions, medians of process medians"
          + (f"; **under load**: {'; '.join(sorted(set(load)))}" if load else "; machine otherwise idle") + ".\n")
    print("| package | KV cache | batch | kernels ms/step | sessions ms/step | sessions / kernels | ranges (ms/step) | greedy tokens agree |")
    print("|---|---|---|---|---|---|---|---|")
    for key, row in results.items():
        name, t, b = key.split(" ")
        print(f"| {name} | {t} | {b} | {row['kernels']['ms_per_step']:.3f} | {row['sessions']['ms_per_step']:.3f} | {row['ratio']:.2f} | "
              f"{row['kernels']['range'][0]:.2f}-{row['kernels']['range'][1]:.2f} / "
              f"{row['sessions']['range'][0]:.2f}-{row['sessions']['range'][1]:.2f} | "
              f"{100 * min(row['greedy_agreement']):.0f}-{100 * max(row['greedy_agreement']):.0f}% |")
    os.makedirs(RAW, exist_ok=True)
    with open(os.path.join(RAW, "kernel_steps.json"), "w", encoding="utf-8") as f:
        json.dump({"load": sorted(set(load)), "processes": args.processes, "reps": args.reps, "results": results}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
