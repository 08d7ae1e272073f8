"""The library's attention kernel (src/IGpt.Inference/CachedAttention.cs) alone: GB/s of keys and values read.

    /usr/bin/python3 bench/attention.py [--seconds 1] [--types float32,float16,int8] [--in-place both]
    /usr/bin/python3 bench/attention.py --against ../other-checkout [--types int8] [--reps 3] [--length-fraction 0.5]
                                        [--head-sizes 32]

Runs the IGpt.Bench worker's "attention" op over synthetic caches (each KV cache type of --types; MB are the bytes
of that type the kernel reads) shaped like the benchmark's
models at the middle of a half-image completion (cache length 3/4 of n_positions, the prompt's half
shared by the rows or not) and prints a table. Build the worker first (bench/run.sh does). Compare
the GB/s with the DRAM read bandwidth bench/run.py measures (and with GroupQueryAttention's, from
bench/profile.py: its share of a step's time and the bytes it reads). A compressed cache's single rows are read
in place (CompressedKernels.cs); `--in-place both` also runs them converted into scratch, as before, for an A/B
in one process.

`--against CHECKOUT` is a code A/B: the same op through this checkout's worker and through CHECKOUT's (another commit,
its bench/IGpt.Bench built), alternated within each repetition (the order swapped every repetition), AVX-512 in place
only; prints each side's median ms over the repetitions with the range, and their ratio.
"""
from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from run import IGPT_DLL, Worker, ab_cells, alternated, code_ab_workers, machine_info  # noqa: E402

SHAPES = [  # (name, layers, heads, head_size, positions)
    ("fashion-mnist-28 (8 x 128)", 8, 4, 32, 784),
    ("256-wide (8 x 256)", 8, 8, 32, 784),
    ("512-wide (8 x 512)", 8, 8, 64, 1024),
]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=1.0, help="timing per configuration")
    ap.add_argument("--types", default="float32", help="KV cache types (Inference:KvCacheType values), comma-separated")
    ap.add_argument("--in-place", choices=["yes", "both"], default="yes",
                    help="compressed types: single rows read in place (yes), or that and converted into scratch (both)")
    ap.add_argument("--against", help="another checkout whose bench/IGpt.Bench is built: a code A/B")
    ap.add_argument("--reps", type=int, default=3, help="--against: repetitions per configuration")
    ap.add_argument("--length-fraction", type=float, default=0.75, help="cache length as a fraction of n_positions")
    ap.add_argument("--head-sizes", help="only the shapes of these head sizes, comma-separated (e.g. 32: the one-pass int8 kernels)")
    args = ap.parse_args()
    if args.against:
        return against(args)
    w = Worker("igpt", ["dotnet", IGPT_DLL, "--method", "igpt"])
    try:
        print(f"CPU: {machine_info()['cpu']}\n")
        print("| shape | KV cache | rows | lanes | shared prompt | kernel | single rows | MB read / step | ms / step | GB/s |")
        print("|---|---|---|---|---|---|---|---|---|---|")
        for name, layers, heads, head_size, positions in shapes(args):
            length, prompt = int(positions * args.length_fraction), positions // 2 + 1
            for rows, lanes in ((1, 1), (4, 2), (16, 1), (16, 2)):
                for shared in (0, prompt):
                    if rows == 1 and shared:
                        continue
                    runs = [(kv, v, p) for kv in args.types.split(",")
                            for v in ((True, False) if (rows, lanes, shared) == (16, 2, 0) else (True,))
                            for p in ((True, False) if args.in_place == "both" and kv != "float32" and v else (True,))]
                    for kv, vectorized, in_place in runs:
                        r = w.call(op="attention", heads=heads, head_size=head_size, positions=positions, rows=rows,
                                   length=length, layers=layers, shared=shared, lanes=lanes, seconds=args.seconds,
                                   vectorized=vectorized, kv_cache_type=kv, in_place=in_place)
                        how = "-" if r["kv_cache_type"] == "float32" or not r["vectorized"] else (
                            "in place" if r["in_place"] else "via scratch")
                        print(f"| {name} | {r['kv_cache_type']} | {rows} | {r['lanes']} | {'yes' if shared else 'no'} | "
                              f"{'AVX-512' if r['vectorized'] else 'portable'} | {how} | {r['bytes'] / 1e6:.1f} | "
                              f"{r['ms']:.2f} | {r['gbps']:.1f} |", flush=True)
    finally:
        w.close()
    return 0


def shapes(args) -> list:
    if not args.head_sizes:
        return SHAPES
    sizes = {int(h) for h in args.head_sizes.split(",")}
    return [shape for shape in SHAPES if shape[3] in sizes]


def against(args) -> int:
    workers = code_ab_workers(args.against, "bench/attention.py")
    try:
        print(f"this checkout against {args.against}: median ms / step over {args.reps} repetitions (range); "
              f"CPU: {machine_info()['cpu']}\n")
        print("| shape | KV cache | cache length | rows | lanes | shared prompt | other ms | this ms | other / this |")
        print("|---|---|---|---|---|---|---|---|---|")
        for name, layers, heads, head_size, positions in shapes(args):
            length, prompt = int(positions * args.length_fraction), min(positions // 2 + 1, int(positions * args.length_fraction))
            for rows, lanes in ((1, 1), (4, 2), (16, 1), (16, 2)):
                for shared in (0, prompt):
                    if rows == 1 and shared:
                        continue
                    for kv in args.types.split(","):
                        times = alternated(args.reps, lambda side, _: workers[side].call(
                            op="attention", heads=heads, head_size=head_size, positions=positions, rows=rows, length=length,
                            layers=layers, shared=shared, lanes=lanes, seconds=args.seconds, vectorized=True,
                            kv_cache_type=kv, in_place=True)["ms"])
                        print(f"| {name} | {kv} | {length} | {rows} | {lanes} | {'yes' if shared else 'no'} | {ab_cells(times)} |",
                              flush=True)
    finally:
        for w in workers.values():
            w.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
