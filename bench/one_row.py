"""One-row decode steps with a compressed KV cache, each way the library can run them, in one run: an A/B of the paths.

    /usr/bin/python3 bench/one_row.py [--package bench/packages/w256 --package models/fashion-mnist-28]
                                      [--types float16,int8] [--modes one_lane,graph,all_threads] [--reps 3] [--processes 2]

Modes (`StepPlanner.OneRowSteps`, the worker's `one_row`): `one_lane`, the step segments on one thread; `graph`, the fp32
decoder graph on all the intra-op threads over the fp32 row that mirrors the slot; `all_threads`, the segments on sessions
with all the intra-op threads and each layer's attention split between the step threads by heads. Each (type, mode) runs
in its own worker (igpt: IGptModel.CompleteAsync, the service's settings otherwise), all loaded after a throwaway first
loader, batch 1, a half-image completion from a fixed random prompt, the workers interleaved in rotated order; fresh
workers `--processes` times. Prints ms per step (median over processes of each process's median) and each mode against
`graph`, and writes benchmarks/raw/one_row.json. Run on an otherwise idle machine.
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


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--package", action="append", help="package folder (repeatable; default w256 and fashion-mnist-28)")
    ap.add_argument("--types", default="float16,int8", help="compressed KV cache types")
    ap.add_argument("--modes", default="one_lane,graph,all_threads")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--processes", type=int, default=2)
    args = ap.parse_args()
    packages = args.package or [os.path.join(ROOT, "bench/packages/w256"), os.path.join(ROOT, "models/fashion-mnist-28")]
    variants = [(t, m) for t in args.types.split(",") for m in args.modes.split(",")]
    load = busy_processes()
    results: Dict[str, Dict[str, dict]] = {}
    for package in packages:
        info = model_info(package)
        rng = random.Random(6)
        prompt = [rng.randrange(info["palette_size"]) for _ in range(info["height"] // 2 * info["width"])]
        times: Dict[tuple, List[tuple]] = {}
        for proc in range(args.processes):
            ballast = first_loader(package, "one-row-ballast")
            workers = {v: Worker(f"one-row-{v[0]}-{v[1]}", ["dotnet", IGPT_DLL, "--method", "igpt"]) for v in variants}
            try:
                for (kv, mode), w in workers.items():
                    r = w.call(op="load", package=package, kv_cache_type=kv, one_row=mode)
                    if r.get("one_row") != mode:
                        raise SystemExit(f"FAIL: {package} {kv} asked for one-row mode {mode}, the worker runs {r.get('one_row')}")
                    w.call(op="complete", prompt=prompt, batch=1)  # warm-up
                for rep in range(args.reps):
                    shift = (rep + proc) % len(variants)
                    for v in variants[shift:] + variants[:shift]:
                        r = workers[v].call(op="complete", prompt=prompt, batch=1)
                        times.setdefault(v, []).append((proc, r["decode_ms"] / max(1, r["steps"])))
            finally:
                for w in workers.values():
                    w.close()
                ballast.close()
        name = os.path.basename(os.path.normpath(package))
        results[name] = {}
        for v in variants:
            per_process = [med([ms for p, ms in times[v] if p == proc]) for proc in range(args.processes)]
            results[name][f"{v[0]}/{v[1]}"] = {"ms_per_step": med(per_process), "process_medians": per_process,
                                               "range": [min(ms for _, ms in times[v]), max(ms for _, ms in times[v])]}
    load += busy_processes()
    print(f"\nOne-row steps, batch 1, half-image completion; {args.processes} fresh process sets x {args.reps} repetitions, "
          "medians of process medians" + (f"; **under load**: {'; '.join(sorted(set(load)))}" if load else
                                          "; machine otherwise idle") + ".\n")
    print("| package | KV cache | one-row steps | ms/step | against graph | range (ms/step) |")
    print("|---|---|---|---|---|---|")
    for name, rows in results.items():
        for key, row in rows.items():
            kv, mode = key.split("/")
            graph = rows.get(f"{kv}/graph")
            against = f"{graph['ms_per_step'] / row['ms_per_step']:.2f}x" if graph else "-"
            print(f"| {name} | {kv} | {mode} | {row['ms_per_step']:.3f} | {against} | "
                  f"{row['range'][0]:.3f}-{row['range'][1]:.3f} |")
    os.makedirs(RAW, exist_ok=True)
    with open(os.path.join(RAW, "one_row.json"), "w", encoding="utf-8") as f:
        json.dump({"load": sorted(set(load)), "processes": args.processes, "reps": args.reps, "results": results}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
