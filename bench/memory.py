"""Resident memory of the service's models with each KV cache type.

    dotnet build bench/IGpt.Bench -c Release
    nice -n 5 /usr/bin/python3 bench/memory.py [--types float32,float16] [--package models/<id>]...

For each type, one fresh IGpt.Bench worker loads every shipped package (or each --package) as the service does (one
process, appsettings.json's Inference settings, Inference:KvCacheType = the type; bench/IGpt.Bench's "memory" op),
then completes MaxBatch images of each (every slot written). Printed: RSS before loading, after loading, after the
MaxBatch completions, the peak, and each model's KV cache bytes. The cache is allocated zeroed, so its pages are
resident from the load on; the completions add ONNX Runtime's activations and the step threads' buffers.
"""
from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from run import IGPT_DLL, ROOT, Worker  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--types", default="float32,float16")
    p.add_argument("--package", action="append", help="package folder (repeatable); default: every folder in models/")
    args = p.parse_args()
    packages = args.package or sorted(os.path.join(ROOT, "models", d) for d in os.listdir(os.path.join(ROOT, "models"))
                                      if os.path.exists(os.path.join(ROOT, "models", d, "model.json")))
    packages = [os.path.abspath(x) for x in packages]
    print("| KV cache | MaxBatch | RSS before load MiB | after load | after MaxBatch completions | peak | KV cache MiB per model |")
    print("|---|---|---|---|---|---|---|")
    for t in [t for t in args.types.split(",") if t]:
        w = Worker(f"memory-{t}", ["dotnet", IGPT_DLL, "--method", "igpt"], timeout_s=1800)
        try:
            r = w.call(op="memory", packages=packages, kv_cache_type=t)
        finally:
            w.close()
        kv = r["kv_cache_bytes"]
        print(f"| {t} | {r['max_batch']} | {r['rss_mib_before_load']:.0f} | {r['rss_mib_after_load']:.0f} | "
              f"{r['rss_mib_after_max_batch']:.0f} | {r['peak_rss_mib']:.0f} | "
              + ", ".join(f"{k} {v / 2**20:.1f}" for k, v in kv.items()) + f" (total {sum(kv.values()) / 2**20:.1f}) |",
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
