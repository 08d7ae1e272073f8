"""Compares the service's decoder at another commit with this checkout's: an A/B of the code, each side with its own
packages (what a user of either commit serves), interleaved, over fresh worker processes.

    /usr/bin/python3 bench/ab.py --base REV [--package w256 --package fashion-mnist-28] [--batches 1,4,16]
                                 [--reps 3] [--processes 2]

The base commit is checked out into a git worktree (bench/.ab-<rev>, git-ignored), its benchmark worker built and its
random packages written by its own bench/make_packages.py; a package name is bench/packages/<name> or models/<name> in
each tree. Both sides run `igpt` (IGptModel.CompleteAsync with the service's settings of their own appsettings.json).
Before any timing their greedy tokens must agree: a refactor that changes what the service returns stops the run
(`--allow-different-tokens`, for a change meant to move the numbers a little, such as a compressed cache's quantization,
prints the share of tokens that agree instead).
Each figure is the median over the processes of each process's median; ratios are base ms/step over this checkout's
(above 1: this checkout is faster). Writes benchmarks/raw/ab_<rev>.json and prints a markdown table.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
from typing import Dict, List

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from run import IGPT_DLL, PY, RAW, ROOT, Worker, busy_processes, first_loader, med, model_info  # noqa: E402


def base_tree(rev: str) -> str:
    """A worktree of `rev` with its benchmark worker built and its random packages written."""
    sha = subprocess.check_output(["git", "rev-parse", "--short", rev], cwd=ROOT, text=True).strip()
    tree = os.path.join(ROOT, "bench", f".ab-{sha}")
    if not os.path.isdir(tree):
        subprocess.check_call(["git", "worktree", "add", "--detach", tree, sha], cwd=ROOT)
    subprocess.check_call(["dotnet", "build", "bench/IGpt.Bench/IGpt.Bench.csproj", "-c", "Release", "--nologo", "-v", "q"], cwd=tree)
    subprocess.check_call([PY, "bench/make_packages.py"], cwd=tree)
    return tree


def package_in(tree: str, name: str) -> str:
    for folder in ("bench/packages", "models"):
        path = os.path.join(tree, folder, name)
        if os.path.exists(os.path.join(path, "model.json")):
            return path
    raise SystemExit(f"no package {name} in {tree}/bench/packages or {tree}/models")


def run_package(name: str, base: str, batches: List[int], reps: int, processes: int,
                kv_cache_type: str = "float32", allow_different_tokens: bool = False) -> Dict[str, dict]:
    paths = {"base": package_in(base, name), "head": package_in(ROOT, name)}
    dlls = {"base": os.path.join(base, os.path.relpath(IGPT_DLL, ROOT)), "head": IGPT_DLL}
    info = model_info(paths["head"])
    k = info["height"] // 2 * info["width"]
    rng = random.Random(6)
    prompt = [rng.randrange(info["palette_size"]) for _ in range(k)]
    times: Dict[tuple, List[tuple]] = {}
    for proc in range(processes):
        ballast = first_loader(paths["head"], "ab-ballast")  # no timed worker is the first to load a model
        workers = {side: Worker(f"ab-{side}", ["dotnet", dlls[side], "--method", "igpt"]) for side in dlls}
        try:
            for side, w in workers.items():
                # both sides with one KV cache type (float32 unless --kv-cache-type says otherwise), so that a change of
                # the default cache type is not read as a refactor that changes what the service returns
                w.call(op="load", package=paths[side], kv_cache_type=kv_cache_type)
            for b in batches:  # warm-up, and the same greedy tokens on both sides
                tokens = {side: w.call(op="complete", prompt=prompt, batch=b)["tokens"] for side, w in workers.items()}
                if tokens["base"] != tokens["head"] and allow_different_tokens:
                    same = sum(x == y for x, y in zip(tokens["base"], tokens["head"])) / max(1, len(tokens["head"]))
                    print(f"  {name} b{b}: {100 * same:.1f}% of greedy tokens agree with the base", flush=True)
                elif tokens["base"] != tokens["head"]:
                    at = next(i for i, (x, y) in enumerate(zip(tokens["base"], tokens["head"])) if x != y)
                    raise SystemExit(f"FAIL: {name} b{b}: greedy token {at} differs between the base and this checkout")
            for rep in range(reps):
                for b in batches:
                    for side in (("base", "head") if (rep + proc) % 2 == 0 else ("head", "base")):
                        r = workers[side].call(op="complete", prompt=prompt, batch=b)
                        times.setdefault((side, b), []).append((proc, r["decode_ms"] / max(1, r["steps"])))
        finally:
            for w in workers.values():
                w.close()
            ballast.close()
    out = {}
    for b in batches:
        row = {}
        for side in ("base", "head"):
            per_process = [med([ms for p, ms in times[(side, b)] if p == proc]) for proc in range(processes)]
            row[side] = {"ms_per_step": med(per_process), "process_medians": per_process,
                         "range": [min(ms for _, ms in times[(side, b)]), max(ms for _, ms in times[(side, b)])]}
        row["ratio"] = row["base"]["ms_per_step"] / row["head"]["ms_per_step"]
        out[f"b{b}"] = row
        print(f"  {name} b{b}: base {row['base']['ms_per_step']:.3f} ms/step, this checkout {row['head']['ms_per_step']:.3f} "
              f"({row['ratio']:.2f}x)", flush=True)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", required=True, help="the commit to compare with (e.g. a tag, a SHA, HEAD~3)")
    ap.add_argument("--package", action="append", help="package name (repeatable; default w256 and fashion-mnist-28)")
    ap.add_argument("--batches", default="1,4,16")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--processes", type=int, default=2)
    ap.add_argument("--kv-cache-type", default="float32", help="Inference:KvCacheType for both sides (a base before the "
                    "setting existed runs float32 whatever this says)")
    ap.add_argument("--allow-different-tokens", action="store_true",
                    help="time the sides even where their greedy tokens differ (print the share that agrees)")
    args = ap.parse_args()
    base = base_tree(args.base)
    load = busy_processes()
    batches = [int(b) for b in args.batches.split(",")]
    results = {name: run_package(name, base, batches, args.reps, args.processes, args.kv_cache_type,
                                 args.allow_different_tokens)
               for name in (args.package or ["w256", "fashion-mnist-28"])}
    load += busy_processes()
    rev = os.path.basename(base)[len(".ab-"):]
    print(f"\nA/B: base {rev} against this checkout; igpt (IGptModel.CompleteAsync), greedy, half-image completion; "
          f"{args.processes} fresh process pairs x {args.reps} repetitions, medians of process medians"
          + (f"; **under load**: {'; '.join(sorted(set(load)))}" if load else "; machine otherwise idle") + ".\n")
    print("| package | batch | base ms/step | this ms/step | base / this | ranges (ms/step) |")
    print("|---|---|---|---|---|---|")
    for name, rows in results.items():
        for b, row in rows.items():
            print(f"| {name} | {b[1:]} | {row['base']['ms_per_step']:.3f} | {row['head']['ms_per_step']:.3f} | "
                  f"{row['ratio']:.2f} | {row['base']['range'][0]:.2f}-{row['base']['range'][1]:.2f} / "
                  f"{row['head']['range'][0]:.2f}-{row['head']['range'][1]:.2f} |")
    os.makedirs(RAW, exist_ok=True)
    with open(os.path.join(RAW, f"ab_{rev}.json"), "w", encoding="utf-8") as f:
        json.dump({"base": rev, "load": sorted(set(load)), "processes": args.processes, "reps": args.reps,
                   "results": results}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
