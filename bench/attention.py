"""The library's attention kernel (src/IGpt.Inference/CachedAttention.cs) alone: GB/s of keys and values read.

    /usr/bin/python3 bench/attention.py [--seconds 1] [--types float32,float16,int8] [--in-place both]

Runs the IGpt.Bench worker's "attention" op over synthetic caches (each KV cache type of --types; MB are the bytes
of that type the kernel reads) shaped like the benchmark's
models at the middle of a half-image completion (cache length 3/4 of n_positions, the prompt's half
shared by the rows or not) and prints a table. Build the worker first (bench/run.sh does). Compare
the GB/s with the DRAM read bandwidth bench/run.py measures (and with GroupQueryAttention's, from
bench/profile.py: its share of a step's time and the bytes it reads). A compressed cache's single rows are read
in place (CompressedKernels.cs); `--in-place both` also runs them converted into scratch, as before, for an A/B
in one process.
"""
from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from run import IGPT_DLL, Worker  # noqa: E402

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
    args = ap.parse_args()
    w = Worker("igpt", ["dotnet", IGPT_DLL, "--method", "igpt"])
    try:
        print("| shape | KV cache | rows | lanes | shared prompt | kernel | single rows | MB read / step | ms / step | GB/s |")
        print("|---|---|---|---|---|---|---|---|---|---|")
        for name, layers, heads, head_size, positions in SHAPES:
            length, prompt = positions * 3 // 4, positions // 2 + 1
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


if __name__ == "__main__":
    sys.exit(main())
