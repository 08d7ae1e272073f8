"""Measures candidate library changes on the prototype decode loop (bench/IGpt.Bench/ProtoDecoder.cs)
against the library's own loop (igpt-loop), interleaved, on one package.

    /usr/bin/python3 bench/proto.py [--package bench/packages/w256] [--batches 1,16] [--reps 3]

Variants: lib (KvCacheDecoder as is, spinning off), proto-full (the prototype with the library's
settings: checks the prototype matches the library), tight (mask as wide as the rows instead of
n_positions), spin (ORT threads spin), spin+stop (spin, but session.force_spinning_stop: only
inside a Run), tight+spin, 1-thread (IntraOpNumThreads 1), kv16 (fp16 KV cache: bench/make_kv16.py's
graph, needs <package>-kv16), kv16m (fp16 past/present, fp32 attention: make_kv16.py --mixed, <package>-kv16m). Writes benchmarks/raw/proto_<model>.json.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from run import RAW, ROOT, Worker, IGPT_DLL, first_loader, model_info  # noqa: E402

VARIANTS = {
    "proto-full": dict(tight_mask=False, allow_spinning=False),
    "tight": dict(tight_mask=True, allow_spinning=False),
    "spin": dict(tight_mask=False, allow_spinning=True),
    "spin+stop": dict(tight_mask=False, allow_spinning=True, spin_stop=True),  # spin inside a Run only
    "tight+spin": dict(tight_mask=True, allow_spinning=True),
    "1-thread": dict(tight_mask=False, allow_spinning=False, threads=1),
    "kv16": dict(tight_mask=False, allow_spinning=False, kv16=True, suffix="-kv16"),   # needs bench/make_kv16.py's package
    # fp16 past/present only, attention's arithmetic fp32: needs bench/make_kv16.py --mixed's package
    "kv16m": dict(tight_mask=False, allow_spinning=False, kv16=True, suffix="-kv16m"),
}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--package", default=os.path.join(ROOT, "bench/packages/w256"))
    ap.add_argument("--batches", default="1,16")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--variants", default=",".join(VARIANTS))
    args = ap.parse_args()
    pkg = os.path.abspath(args.package)
    info = model_info(pkg)
    k = info["height"] // 2 * info["width"]
    rng = random.Random(6)
    prompt = [rng.randrange(info["palette_size"]) for _ in range(k)]
    ballast = first_loader(pkg, "proto-ballast")  # no timed worker may be the first to load the model
    lib = Worker("proto-lib", ["dotnet", IGPT_DLL, "--method", "igpt-loop"])
    proto = Worker("proto", ["dotnet", IGPT_DLL, "--method", "igpt-loop"])
    # the library default, not the service's settings; the prototype decoder keeps an fp32 cache, so the library does too
    lib.call(op="load", package=pkg, allow_spinning=False, kv_cache_type="float32")
    variants = [v for v in args.variants.split(",") if v]
    out = {}
    try:
        for b in (int(x) for x in args.batches.split(",")):
            ref = lib.call(op="complete", prompt=prompt, batch=b)["tokens"]
            times = {"lib": []}
            for rep in range(args.reps):
                times["lib"].append(lib.call(op="complete", prompt=prompt, batch=b))
                for v in (variants if rep % 2 == 0 else variants[::-1]):
                    opts = dict(VARIANTS[v])
                    r = proto.call(op="proto", package=pkg + opts.pop("suffix", ""), prompt=prompt,
                                   batch=b, **opts)
                    if r["tokens"] != ref:
                        same = next((i for i, (a, c) in enumerate(zip(r["tokens"], ref)) if a != c), len(ref))
                        if not opts.get("kv16"):
                            raise SystemExit(f"FAIL: variant {v} at b{b} decodes different tokens (from {same})")
                        r["first_difference"] = same  # fp16 keys/values round: greedy may part ways
                    times.setdefault(v, []).append(r)
            row = {}
            for v, rs in times.items():
                ms = statistics.median(r["decode_ms"] / r["steps"] for r in rs)
                row[v] = {"ms_per_step": ms, "tokens_per_s": b * 1e3 / ms,
                          "prefill_ms": statistics.median(r["prefill_ms"] for r in rs),
                          "first_difference": rs[0].get("first_difference")}
            base = row["lib"]["ms_per_step"]
            print(f"{info['id']} b{b}: " + "; ".join(f"{v} {x['ms_per_step']:.2f} ms/step ({base / x['ms_per_step']:.2f}x)"
                                                   for v, x in row.items()), flush=True)
            out[f"b{b}"] = row
    finally:
        lib.close()
        proto.close()
        ballast.close()
    os.makedirs(RAW, exist_ok=True)
    with open(os.path.join(RAW, f"proto_{info['id']}.json"), "w") as f:
        json.dump(out, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
