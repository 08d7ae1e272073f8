"""A/B of decode steps on the library's kernels (Inference:KernelStepRows, 16 by default) against the ONNX Runtime paths they
replace (the decoder graph, row lanes or step segments, as the other settings choose; with a compressed cache, the
segments, or for one row of a model too big for lanes the graph over an fp32 row).

    /usr/bin/python3 bench/kernel_steps.py [--package w256 --package fashion-mnist-28] [--kv-cache-type int8,float32]
                                           [--batches 1,4,16] [--processes 3] [--reps 3] [--weights]

With --weights, both sides run on the kernels and differ only in Inference:KernelWeightType: int16 against float32 (the
ratio float32 / int16 above 1: int16 is faster).

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


# Each A/B's two sides: the side under test first, its baseline second, and what each loads with.
SIDES = {"kernels": {"kernels": {"kernel_rows": 16}, "sessions": {"kernel_rows": 0}},
         "weights": {"int16": {"kernel_rows": 16, "kernel_weights": "int16"}, "float32": {"kernel_rows": 16, "kernel_weights": "float32"}}}


def run(name: str, cache_type: str, batch: int, processes: int, reps: int, ab: str = "kernels") -> dict:
    path = package_path(name)
    info = model_info(path)
    k = info["height"] // 2 * info["width"]
    rng = random.Random(6)
    prompt = [rng.randrange(info["palette_size"]) for _ in range(k)]
    sides = SIDES[ab]
    test, base = list(sides)
    times: Dict[str, List[tuple]] = {s: [] for s in sides}
    agree = []
    settings = {}
    for proc in range(processes):
        ballast = first_loader(path, "kernels-ballast")
        workers = {s: Worker(f"kernels-{s}", ["dotnet", IGPT_DLL, "--method", "igpt"]) for s in sides}
        try:
            for s, w in workers.items():
                r = w.call(op="load", package=path, kv_cache_type=cache_type, **sides[s])
                planned = {key: r.get(key) for key in sides[s]}
                if planned != sides[s]:
                    raise SystemExit(f"FAIL: {name} {cache_type}: the {s} worker planned {planned}: {r.get('settings')}")
                settings[s] = r["settings"]
            tokens = {s: w.call(op="complete", prompt=prompt, batch=batch)["tokens"] for s, w in workers.items()}
            same = sum(a == b for a, b in zip(tokens[test], tokens[base]))
            agree.append(same / max(1, len(tokens[test])))
            for rep in range(reps):
                for s in ((test, base) if (rep + proc) % 2 == 0 else (base, test)):
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
    row["ratio"] = row[base]["ms_per_step"] / row[test]["ms_per_step"]
    print(f"  {name} {cache_type} b{batch}: {test} {row[test]['ms_per_step']:.3f} ms/step, {base} "
          f"{row[base]['ms_per_step']:.3f} ({row['ratio']:.2f}x); greedy tokens agree "
          f"{100 * min(agree):.0f}-{100 * max(agree):.0f}%", flush=True)
    return row


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--package", action="append", help="package name (repeatable; default w256 and fashion-mnist-28)")
    ap.add_argument("--kv-cache-type", default="int8,float32")
    ap.add_argument("--batches", default="1,4,16")
    ap.add_argument("--processes", type=int, default=3)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--weights", action="store_true", help="A/B the kernels' int16 weights against float32 instead")
    args = ap.parse_args()
    ab = "weights" if args.weights else "kernels"
    test, base = list(SIDES[ab])
    load = busy_processes()
    results = {f"{name} {t} {b}": run(name, t, int(b), args.processes, args.reps, ab)
               for name in (args.package or ["w256", "fashion-mnist-28"]) for t in args.kv_cache_type.split(",")
               for b in args.batches.split(",")}
    load += busy_processes()
    what = ("the kernels' int16 weights against float32" if args.weights else "the library's kernels against the sessions' paths")
    print(f"\nKernel steps: {what}; igpt (IGptModel.CompleteAsync), greedy, "
          f"half-image completion; {args.processes} fresh process pairs x {args.reps} repetitions, medians of process medians"
          + (f"; **under load**: {'; '.join(sorted(set(load)))}" if load else "; machine otherwise idle") + ".\n")
    print(f"| package | KV cache | batch | {test} ms/step | {base} ms/step | {base} / {test} | ranges (ms/step) | greedy tokens agree |")
    print("|---|---|---|---|---|---|---|---|")
    for key, row in results.items():
        name, t, b = key.split(" ")
        print(f"| {name} | {t} | {b} | {row[test]['ms_per_step']:.3f} | {row[base]['ms_per_step']:.3f} | {row['ratio']:.2f} | "
              f"{row[test]['range'][0]:.2f}-{row[test]['range'][1]:.2f} / "
              f"{row[base]['range'][0]:.2f}-{row[base]['range'][1]:.2f} | "
              f"{100 * min(row['greedy_agreement']):.0f}-{100 * max(row['greedy_agreement']):.0f}% |")
    os.makedirs(RAW, exist_ok=True)
    with open(os.path.join(RAW, f"{'kernel_weights' if args.weights else 'kernel_steps'}.json"), "w", encoding="utf-8") as f:
        json.dump({"load": sorted(set(load)), "processes": args.processes, "reps": args.reps, "results": results}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
