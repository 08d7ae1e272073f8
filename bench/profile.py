"""Where a decode step's time goes: ONNX Runtime's profiler over the library's KvCacheDecoder.

    /usr/bin/python3 bench/profile.py [--package bench/packages/w256] [--batches 1,16] [--steps 64] [--spin]

Runs the IGpt.Bench worker's "profile" op (a session made like IGptModel's, with
SessionOptions.EnableProfiling) and sums the trace per operator type: milliseconds per step and
share. Writes benchmarks/raw/profile_<model>.json. Build the worker first (bench/run.sh does).
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import random
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from run import RAW, ROOT, Worker, IGPT_DLL, model_info  # noqa: E402


def summarize(path: str, steps: int) -> dict:
    events = json.load(open(path))
    model_runs = sorted((e["ts"], e["ts"] + e["dur"]) for e in events
                        if e.get("cat") == "Session" and e.get("name") == "model_run")
    prefill_end = model_runs[0][1]  # the first run is the prefill: left out
    runs = len(model_runs) - 1
    model_run = sum(b - a for a, b in model_runs[1:])
    per_op = collections.Counter()
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time") and e["ts"] > prefill_end:
            per_op[e["args"].get("op_name", "?")] += e["dur"]
    total = sum(per_op.values())
    return {"model_run_ms_mean": model_run / max(1, runs) / 1e3, "runs": runs,
            "kernel_ms_per_run": total / max(1, runs) / 1e3,
            "per_op_ms_per_run": {k: v / max(1, runs) / 1e3 for k, v in per_op.most_common()},
            "share": {k: v / total for k, v in per_op.most_common()}}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--package", default=os.path.join(ROOT, "bench/packages/w256"))
    ap.add_argument("--batches", default="1,16")
    ap.add_argument("--steps", type=int, default=64)
    ap.add_argument("--spin", action="store_true")
    ap.add_argument("--threads", type=int, default=0)
    args = ap.parse_args()
    info = model_info(args.package)
    k = info["height"] // 2 * info["width"]
    rng = random.Random(6)
    prompt = [rng.randrange(info["palette_size"]) for _ in range(k)]
    os.makedirs(RAW, exist_ok=True)
    w = Worker("igpt-profile", ["dotnet", IGPT_DLL, "--method", "igpt-loop"])
    out = {}
    try:
        for b in (int(x) for x in args.batches.split(",")):
            r = w.call(op="profile", package=os.path.abspath(args.package), batch=b, steps=args.steps,
                       prompt=prompt, out_dir=RAW, allow_spinning=args.spin, threads=args.threads)
            s = summarize(r["profile"], args.steps)
            s["ms_per_step_wall"] = r["ms_per_step"]
            out[f"b{b}"] = s
            print(f"{info['id']} b{b}: {r['ms_per_step']:.2f} ms/step wall; kernels {s['kernel_ms_per_run']:.2f} ms/run")
            for op, ms in list(s["per_op_ms_per_run"].items())[:8]:
                print(f"   {op:36s} {ms:7.3f} ms  {100 * s['share'][op]:5.1f}%")
            os.remove(r["profile"])
    finally:
        w.close()
    with open(os.path.join(RAW, f"profile_{info['id']}.json"), "w") as f:
        json.dump(out, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
