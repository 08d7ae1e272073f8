"""Decode steps of independent rows at staggered positions, as the service runs them for clients that started at different
times (unconditional samples: every row alone), through this checkout's IGpt.Bench worker and another checkout's, alternated.

    dotnet build bench/IGpt.Bench -c Release    (here and in CHECKOUT, which needs the worker's staggered_steps op)
    /usr/bin/python3 bench/staggered.py --against CHECKOUT [--package models/fashion-mnist-28] [--rows 16] [--reps 8]
                                        [--steps 300] [--kv-cache-type int8] [--shuffle]
    /usr/bin/python3 bench/staggered.py [--rows 16,1] [--reps 8] [--steps 300] [--shuffle] [--threads N]    (this checkout alone)

The rows' first positions are spread evenly over n_positions, in slot order (the clients started one after another and
hold the slots in that order), or with --shuffle in a random order (each repetition its own). Before its timed steps, a
repetition steps every row through all n_positions, so that each reads a cache its row wrote. Each side loads the
package with the service's settings (the worker's "load" op) in one process; every repetition runs --steps steps on each
side (the order swapped every repetition) and takes the median ms a step. Prints each side's median over the repetitions
with the range, and their ratio (above 1: this checkout is faster). Run it on an otherwise idle machine.

Without --against: this checkout alone, the distribution of its step times for each of --rows (e.g. --rows 16,1: the
16-client step against one client's), each figure's range over the repetitions after the first two (warm-up). --threads
gives the worker that many step threads instead of the service's (e.g. 1: what one core does with the same rows).
"""
from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from run import ROOT, ab_cells, alternated, code_ab_workers, machine_info, start  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--against", help="another checkout whose bench/IGpt.Bench is built (without it: this checkout's distribution)")
    ap.add_argument("--package", default="models/fashion-mnist-28")
    ap.add_argument("--rows", default="16", help="rows a step; without --against, a comma-separated list")
    ap.add_argument("--reps", type=int, default=8)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--kv-cache-type", default="int8")
    ap.add_argument("--shuffle", action="store_true", help="the staggered positions in a random slot order")
    ap.add_argument("--threads", type=int, help="without --against: step threads (default: the service's)")
    args = ap.parse_args()
    if not args.against:
        return distribution(args)
    if args.threads:
        ap.error("--threads is for this checkout's distribution (without --against)")
    args.rows = int(args.rows)
    workers = code_ab_workers(args.against, "bench/staggered.py")
    try:
        for side, w in workers.items():
            root = ROOT if side == "this" else os.path.abspath(args.against)
            w.call(op="load", package=os.path.join(root, args.package), kv_cache_type=args.kv_cache_type)
        times = alternated(args.reps, lambda side, rep: workers[side].call(
            op="staggered_steps", rows=args.rows, steps=args.steps, seed=rep, shuffle=args.shuffle)["ms"])
        order = "in a random slot order" if args.shuffle else "in slot order"
        print(f"{args.package}, {args.rows} rows alone at staggered positions {order}, {args.kv_cache_type} cache, {args.steps} steps a "
              f"repetition, {args.reps} repetitions; CPU: {machine_info()['cpu']}\n")
        print("| other ms / step | this ms / step | other / this |")
        print("|---|---|---|")
        print(f"| {ab_cells(times)} |")
        print("\nper repetition (other / this): " + ", ".join(f"{a / b:.2f}" for a, b in zip(times["other"], times["this"])))
    finally:
        for w in workers.values():
            w.close()
    return 0


def distribution(args) -> int:
    """This checkout's step times at each row count: percentiles, mean and slowest, ranges over the repetitions."""
    worker = start("igpt")
    keys = [("p10_ms", "p10"), ("ms", "median"), ("mean_ms", "mean"), ("p90_ms", "p90"), ("p99_ms", "p99"), ("max_ms", "slowest")]
    try:
        threads = {"threads": args.threads} if args.threads else {}
        loaded = worker.call(op="load", package=os.path.join(ROOT, args.package), kv_cache_type=args.kv_cache_type, **threads)
        step_threads = loaded.get("threads", args.threads or "the service's")
        print(f"{args.package}, rows alone at staggered positions{' in a random slot order' if args.shuffle else ''}, "
              f"{args.kv_cache_type} cache, {step_threads} step thread(s), {args.steps} "
              f"steps a repetition, {args.reps} repetitions after 2 of warm-up; CPU: {machine_info()['cpu']}\n")
        print("| rows | " + " | ".join(f"{label} ms" for _, label in keys) + " |")
        print("|---" * (len(keys) + 1) + "|")
        for rows in (int(x) for x in args.rows.split(",")):
            runs = [worker.call(op="staggered_steps", rows=rows, steps=args.steps, seed=rep, shuffle=args.shuffle)
                    for rep in range(args.reps + 2)][2:]
            cells = [f"{min(r[k] for r in runs):.3f}-{max(r[k] for r in runs):.3f}" for k, _ in keys]
            print(f"| {rows} | " + " | ".join(cells) + " |")
    finally:
        worker.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
