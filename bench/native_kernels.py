"""What native kernels would buy: the int8 cache's one-pass attention kernel as the service runs it (.NET, the worker's
attend_blocks op), the same kernel compiled by gcc, and gcc's with AVX-512 VNNI (which .NET 10 does not expose); and the
int16 products' four-row loop in gcc with and without VNNI. benchmarks/README.md, "What is left in a 16-client step"
("Native code and AVX-512 VNNI").

    dotnet build bench/IGpt.Bench -c Release
    /usr/bin/python3 bench/native_kernels.py

Needs gcc and a CPU with AVX-512BW; the VNNI column is empty on a CPU without AVX-512 VNNI. Prints one markdown table.
Run it on an otherwise idle machine.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from run import ROOT, machine_info, start  # noqa: E402


def main() -> int:
    if shutil.which("gcc") is None:
        sys.exit("bench/native_kernels.py: needs gcc")
    with tempfile.TemporaryDirectory() as tmp:
        exe = os.path.join(tmp, "native_kernels")
        subprocess.run(["gcc", "-O2", "-march=native", "-o", exe, os.path.join(ROOT, "bench/native_kernels.c"), "-lm"], check=True)
        run = subprocess.run([exe], capture_output=True, text=True)
        if run.returncode != 0:
            sys.exit(run.stderr.strip() or f"bench/native_kernels.c exited with {run.returncode}")
        lines = run.stdout.split()
    # kernel, MB, variant, ns: four words a measurement
    native: dict = {}
    for kernel, mb, variant, ns in zip(*[iter(lines)] * 4):
        native.setdefault((kernel, mb), {})[variant] = float(ns)
    worker = start("igpt")
    try:
        worker.call(op="attend_blocks", mb=0.6)   # warm-up: the op's own loop is compiled in tiers
        managed = {mb: worker.call(op="attend_blocks", mb=float(mb))["ns_per_block"] for kernel, mb in native if kernel == "attention"}
    finally:
        worker.close()
    print(f"CPU: {machine_info()['cpu']}; gcc -O2 -march=native; the best of repeated passes, one thread\n")
    print("| kernel | working set MB | unit | .NET (the service's kernel) | gcc, the same instructions | gcc, AVX-512 VNNI | gain from VNNI |")
    print("|---|---|---|---|---|---|---|")
    for (kernel, mb), v in native.items():
        if kernel == "attention":
            ours, same, vnni = managed[mb], v["byte-pairs"], v.get("vnni")
            unit = "ns a block of 16 positions, one head"
        else:
            ours, same, vnni = None, v["int16-pairs"], v.get("vnni")
            unit = "ns a 512-bit product (32 int16 pairs)"
        cell = lambda x: "–" if x is None else f"{x:.2f}"  # noqa: E731
        base = ours if ours is not None else same
        gain = "–" if vnni is None else f"{base / vnni:.2f}"
        print(f"| {kernel} | {mb} | {unit} | {cell(ours)} | {cell(same)} | {cell(vnni)} | {gain} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
