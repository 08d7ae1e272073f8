"""Decode steps of independent rows at staggered positions, as the service runs them for clients that started at different
times (unconditional samples: every row alone), through this checkout's IGpt.Bench worker and another checkout's, alternated.

    dotnet build bench/IGpt.Bench -c Release    (here and in CHECKOUT, which needs the worker's staggered_steps op)
    /usr/bin/python3 bench/staggered.py --against CHECKOUT [--package models/fashion-mnist-28] [--rows 16] [--reps 8]
                                        [--steps 300] [--kv-cache-type int8] [--shuffle]

The rows' first positions are spread evenly over n_positions, in slot order (the clients started one after another and
hold the slots in that order), or with --shuffle in a random order (each repetition its own). Each side loads the package with the service's settings (the worker's "load" op) in one process; every repetition runs
--steps steps on each side (the order swapped every repetition) and takes the median ms a step. Prints each side's median
over the repetitions with the range, and their ratio (above 1: this checkout is faster). Run it on an otherwise idle machine.
"""
from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from run import ROOT, ab_cells, alternated, code_ab_workers, machine_info  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--against", required=True, help="another checkout whose bench/IGpt.Bench is built")
    ap.add_argument("--package", default="models/fashion-mnist-28")
    ap.add_argument("--rows", type=int, default=16)
    ap.add_argument("--reps", type=int, default=8)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--kv-cache-type", default="int8")
    ap.add_argument("--shuffle", action="store_true", help="the staggered positions in a random slot order")
    args = ap.parse_args()
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


if __name__ == "__main__":
    sys.exit(main())
