"""Benchmarks the service's decoder against its peers on the same model package.

    bench/run.sh [--package DIR]... [--quick] [--reps N] [--methods igpt,ort-genai,...]

Every method runs in its own worker process (so each has its own peak RSS), all started at once
and driven in turns: each repetition runs every (batch, method) pair once, the methods in a
rotated order, so a slow or noisy moment hits every method alike and the ratios hold. This VM
puts whole processes into a slow mode at random, so the workers are started afresh --processes
times (default 3); each figure is the median over the processes of each process's median over
its repetitions. Before any timing, every method's greedy tokens are checked against the
service's (igpt) on the same prompt: any difference stops the run.

Threads: every method gets the service decoder's intra-op threads (Inference:IntraOpThreads in
appsettings.json, 0 = one per core): torch.set_num_threads, and onnxruntime-genai's
intra_op_num_threads from the package's genai_config.json or, where that sets fewer or none,
genai's config overlay. A method that reports fewer threads than igpt stops the run. Each
method's settings are printed beside its numbers.

Methods (all on the same package, fp32 weights, CPU, greedy):
  igpt        the service's path: IGptModel.CompleteAsync (src/IGpt.Inference), with the service's KV cache type
  igpt-loop   the library's KvCacheDecoder driven directly (Prefill, ReplicateSlot0, Step, Sampler)
  igpt-kv16, igpt-kv8, igpt-kv32 (and igpt-loop-kv16, ...)
              the same with Inference:KvCacheType float16 / int8 / float32 whatever appsettings.json says, so that one run
              compares the cache types (each its own worker processes). A compressed cache may turn a near-tie of
              the greedy tokens the other way: its tokens are compared and the agreement printed, not required.
              MB/step and the roofline count its KV bytes at its element size (the worker reports it)
              "MB read/step" and "roofline, bytes read" (igpt methods): the same with the KV bytes the library's steps
              actually read (KvCacheDecoder.KvBytesRead: a request's shared prompt once per lane in step segments);
              the roofline goals use them
  ort-genai   onnxruntime-genai 0.18 loading the package folder (genai_config.json)
  torch-eager PyTorch with a KV cache (training/igpt/sample.py's sampler)
  torch-naive PyTorch without a cache: a full forward over the growing prefix per token

The task: complete the bottom half of an image from its top half (a fixed random prompt), with
`batch` identical rows decoded together. igpt, igpt-loop and ort-genai decode the whole half;
the PyTorch methods decode the whole half when their first steps say it takes at most
FULL_HALF_BUDGETS time budgets, else the first tokens of it that fit in one budget (their per-token
cost grows with the position, so a prefix flatters them; the ratios are then lower bounds).

Writes benchmarks/results.json, the results section of benchmarks/README.md and
benchmarks/chart.png.
"""
from __future__ import annotations

import argparse
import datetime as dt
import functools
import json
import os
import platform
import random
import select
import statistics
import subprocess
import sys
import time
from typing import Dict, List, Optional

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "benchmarks")
RAW = os.path.join(OUT, "raw")
PY = "/usr/bin/python3"
IGPT_DLL = os.path.join(ROOT, "bench/IGpt.Bench/bin/Release/net10.0/IGpt.Bench.dll")
GENAI_DLL = os.path.join(ROOT, "bench/IGpt.Bench.Genai/bin/Release/net10.0/IGpt.Bench.Genai.dll")
ALL_METHODS = ["igpt", "igpt-loop", "ort-genai", "torch-eager", "torch-naive"]
# igpt methods with a fixed Inference:KvCacheType: "<igpt or igpt-loop>-<suffix>"
KV_VARIANTS = {"kv16": "float16", "kv8": "int8", "kv32": "float32"}
BUDGETED = {"torch-eager", "torch-naive"}  # decode a prefix of the half that fits the time budget
# A budgeted method decodes the whole half, as the others do, when its probe says that takes at most this many
# budgets: its ratios then compare the same positions (a prefix has shorter caches, so it flatters the method).
FULL_HALF_BUDGETS = 3.0
FP32 = 4


class Worker:
    """One method's process, spoken to in JSON lines; it runs with the service's environment (worker_env)."""

    def __init__(self, method: str, cmd: List[str], timeout_s: float = 300):
        os.makedirs(RAW, exist_ok=True)
        self.method = method
        self.timeout_s = timeout_s
        self.kv_cache_type = "float32"   # what its KV cache holds (set at load for igpt methods)
        self.log = open(os.path.join(RAW, f"{method}.log"), "w")
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log, text=True,
                                     bufsize=1, cwd=ROOT, env=worker_env())
        self.hello = self._read()

    def _read(self) -> dict:
        ready, _, _ = select.select([self.proc.stdout], [], [], self.timeout_s)
        if not ready:
            self.proc.kill()
            raise SystemExit(f"FAIL: {self.method}: no reply in {self.timeout_s:.0f} s (hung?); see {self.log.name}")
        line = self.proc.stdout.readline()
        if not line:
            raise SystemExit(f"{self.method}: the worker exited (see {self.log.name})")
        return json.loads(line)

    def call(self, **request) -> dict:
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        reply = self._read()
        if not reply.get("ok"):
            raise SystemExit(f"{self.method}: {request['op']} failed: {reply.get('error')}")
        return reply

    def peak_rss_mib(self) -> float:
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
        return float("nan")

    def close(self) -> None:
        try:
            self.proc.stdin.write(json.dumps({"op": "quit"}) + "\n")
            self.proc.stdin.flush()
            self.proc.wait(timeout=30)
        except Exception:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


LAUNCH_SETTINGS = os.path.join(ROOT, "src/IGpt.Api/Properties/launchSettings.json")


@functools.lru_cache(maxsize=None)
def service_env() -> Dict[str, str]:
    """The environment variables `dotnet run --project src/IGpt.Api` gives the service (its launchSettings.json:
    GLIBC_TUNABLES=glibc.malloc.hugetlb=1, 2 MiB pages for malloc's memory, which holds ONNX Runtime's weights).
    Every method's worker runs with them, so that this machine-level setting is the same for all."""
    with open(LAUNCH_SETTINGS, encoding="utf-8") as f:
        profiles = json.load(f)["profiles"]
    return dict(next(iter(profiles.values())).get("environmentVariables", {}))


def worker_env() -> Dict[str, str]:
    """Every worker's environment: this process's, plus the service's (service_env)."""
    return dict(os.environ, **service_env())


def first_loader(package: str, name: str = "ballast") -> Worker:
    """A throwaway worker that loads the package and stays loaded, idle, while the timed workers run; close it after.

    On this VM the first of several live processes to load a model ran every step 10-15% slower than the ones
    loaded after it (identical igpt-loop workers, w512 b1: 4.86 ms against 3.94-4.28), for as long as it lived;
    a loader that exited first did not help. With this one loading first, no timed worker is the first loader.
    """
    w = Worker(name, ["dotnet", IGPT_DLL, "--method", "igpt-loop"])
    w.call(op="load", package=package)
    return w


@functools.lru_cache(maxsize=None)
def service_threads() -> int:
    """The intra-op threads of the service's decoder: Inference:IntraOpThreads in the root appsettings.json, where 0
    (the shipped value) means one per core. Every peer is given the same number (torch.set_num_threads, genai's
    intra_op_num_threads) and a run in which a peer reports fewer stops (check_threads)."""
    with open(os.path.join(ROOT, "appsettings.json"), encoding="utf-8") as f:
        threads = int(json.load(f).get("Inference", {}).get("IntraOpThreads", 0))
    return threads if threads > 0 else (os.cpu_count() or 1)


def base_method(method: str) -> str:
    """igpt-kv16 -> igpt, igpt-loop-kv32 -> igpt-loop; any other method is its own."""
    head, _, suffix = method.rpartition("-")
    return head if head in ("igpt", "igpt-loop") and suffix in KV_VARIANTS else method


def kv_cache_type(method: str) -> Optional[str]:
    """The Inference:KvCacheType a method fixes (None: the service's, or not an igpt method)."""
    return KV_VARIANTS[method.rpartition("-")[2]] if base_method(method) != method else None


def start(method: str) -> Worker:
    if base_method(method) in ("igpt", "igpt-loop"):
        return Worker(method, ["dotnet", IGPT_DLL, "--method", base_method(method)])
    if method == "ort-genai":
        return Worker(method, ["dotnet", GENAI_DLL])
    return Worker(method, [PY, os.path.join(ROOT, "bench/torch_bench.py"), "--method", method,
                           "--threads", str(service_threads())])


def load(workers: Dict[str, Worker], package: str) -> Dict[str, dict]:
    """Loads the package in every worker; returns each method's settings, the threads it reports among them."""
    settings = {}
    for m, w in workers.items():
        kv = kv_cache_type(m)
        r = w.call(op="load", package=package, threads=service_threads(), **({"kv_cache_type": kv} if kv else {}))
        threads = r.get("threads", w.hello.get("threads"))
        settings[m] = {"threads": threads,
                       "settings": r.get("settings") or f"torch.set_num_threads({threads}), fp32, greedy",
                       # the KV cache's element size: igpt's as loaded; every peer keeps an fp32 cache
                       "kv_element_bytes": r.get("kv_element_bytes", FP32), "kv_cache_type": r.get("kv_cache_type", "float32")}
        w.kv_cache_type = settings[m]["kv_cache_type"]   # plain igpt: the service's default, as the worker loaded it
        print(f"  {m}: loaded in {r['load_ms']:.0f} ms; {settings[m]['settings']}" +
              (f"; parity vs package {r['parity_max_abs_diff']:.2g}" if "parity_max_abs_diff" in r else ""), flush=True)
    check_threads(settings)
    return settings


def check_threads(settings: Dict[str, dict]) -> None:
    """A peer on fewer threads than the service's decoder measures nothing: stop the run."""
    want = max((s["threads"] or 0 for m, s in settings.items() if m.startswith("igpt")), default=service_threads())
    for m, s in settings.items():
        if not s["threads"] or s["threads"] < want:
            raise SystemExit(f"FAIL: {m} runs with {s['threads'] or 'its default'} intra-op threads, igpt with {want}: "
                             "the comparison would not be fair")


def med(xs: List[float]) -> float:
    return float(statistics.median(xs)) if xs else float("nan")


def code_ab_workers(checkout: str, script: str) -> Dict[str, Worker]:
    """A code A/B's two IGpt.Bench workers: "this" checkout's and "other", CHECKOUT's (another commit's tree, its
    bench/IGpt.Bench built in Release); exits with what to build when it is missing."""
    other = os.path.join(os.path.abspath(checkout), os.path.relpath(IGPT_DLL, ROOT))
    if not os.path.exists(other):
        sys.exit(f"{script}: {other} is missing: build bench/IGpt.Bench in {checkout} first")
    return {"this": Worker("this", ["dotnet", IGPT_DLL, "--method", "igpt"]),
            "other": Worker("other", ["dotnet", other, "--method", "igpt"])}


def alternated(reps: int, run) -> Dict[str, List[float]]:
    """run(side) for "this" and "other" in turn, `reps` times, the order swapped every repetition: each side's figures."""
    times: Dict[str, List[float]] = {"this": [], "other": []}
    for rep in range(reps):
        for side in (("other", "this") if rep % 2 == 0 else ("this", "other")):
            times[side].append(run(side, rep))
    return times


def ab_cells(times: Dict[str, List[float]], digits: int = 3) -> str:
    """A code A/B's table cells: other's median (range) | this one's | other / this (above 1: this checkout is faster)."""
    o, t = times["other"], times["this"]
    return (f"{med(o):.{digits}f} ({min(o):.{digits}f}-{max(o):.{digits}f}) | {med(t):.{digits}f} ({min(t):.{digits}f}-"
            f"{max(t):.{digits}f}) | {med(o) / med(t):.2f}")


# ---------------------------------------------------------------------------------------------
# the model's arithmetic: FLOPs and the fewest bytes a decode step must move


def model_info(package: str) -> dict:
    with open(os.path.join(package, "model.json"), encoding="utf-8") as f:
        m = json.load(f)
    a = m["architecture"]
    L, C = a["n_layer"], a["n_embd"]
    V = m["vocab_size"]
    matmul_params = 12 * L * C * C + C * V  # c_attn 3C^2, c_proj C^2, c_fc 4C^2, mlp c_proj 4C^2; head [C, V]
    return {"id": m["id"], "package": os.path.relpath(package, ROOT), "height": m["image"]["height"],
            "width": m["image"]["width"], "channels": m["image"]["channels"], "palette_size": m["palette_size"],
            "vocab_size": V, "n_layer": L, "n_embd": C, "n_head": a["n_head"], "n_positions": a["n_positions"],
            "parameters": m.get("training", {}).get("parameters"), "matmul_params": matmul_params,
            "weight_bytes_fp32": matmul_params * FP32, "has_classifier": bool(m.get("classes"))}


def step_cost(info: dict, batch: int, kv_len: float, kv_element_bytes: int = FP32) -> dict:
    """One decode step of `batch` rows whose caches hold kv_len positions on average, in kv_element_bytes elements."""
    L, C = info["n_layer"], info["n_embd"]
    flops = batch * (2 * info["matmul_params"] + 4 * L * C * kv_len)   # GEMVs + QK^T and AV
    kv_bytes = batch * 2 * L * C * kv_len * kv_element_bytes            # read every cached key and value once
    return {"flops": flops, "bytes": info["weight_bytes_fp32"] + kv_bytes, "kv_bytes": kv_bytes}


def naive_step_cost(info: dict, batch: int, length: float) -> dict:
    """A full forward over `length` tokens (torch-naive's step)."""
    L, C = info["n_layer"], info["n_embd"]
    flops = batch * length * (2 * info["matmul_params"]) + batch * 2 * L * C * length * length
    return {"flops": flops, "bytes": info["weight_bytes_fp32"], "kv_bytes": 0}


# ---------------------------------------------------------------------------------------------


def machine_probe(workers: Dict[str, Worker], probe: Worker, reps: int, quick: bool) -> dict:
    gemm_onnx = os.path.join(ROOT, "bench/packages/gemm.onnx")
    n = 2048  # gemm.onnx's size
    ort, tor, bw_cs, bw_np = [], [], [], []
    dotnet = workers.get("igpt") or workers.get("igpt-loop")
    for _ in range(reps):
        if dotnet:
            ort += dotnet.call(op="gemm", model=gemm_onnx, n=n, reps=2)["gflops"]
        tor += probe.call(op="gemm", n=n, reps=2)["gflops"]
        if dotnet:
            bw_cs += dotnet.call(op="bandwidth", mib=512, reps=2)["gbps"]
        bw_np += probe.call(op="bandwidth", mib=512, reps=2)["gbps"]
    return summarize_probes({"ort_mlas": ort, "torch": tor, "csharp_avx_all_cores": bw_cs, "numpy_1_thread": bw_np})


def summarize_probes(samples: Dict[str, List[float]]) -> dict:
    """Medians of every probe so far (the machine's speed drifts on this VM: the roofline uses the run's median)."""
    gemm = {k: med(samples[k]) for k in ("ort_mlas", "torch")}
    bw = {k: med(samples[k]) for k in ("csharp_avx_all_cores", "numpy_1_thread")}
    return {"gemm_gflops": gemm, "dram_read_gbps": bw, "samples": samples,
            "gemm_gflops_peak": max(v for v in gemm.values() if v == v),
            "dram_read_gbps_peak": max(v for v in bw.values() if v == v)}


def probe_machine(methods: List[str], reps: int, quick: bool) -> dict:
    probe = start("probe")
    dotnet = start("igpt-loop") if any(m.startswith("igpt") for m in methods) else None
    try:
        return machine_probe({"igpt-loop": dotnet} if dotnet else {}, probe, reps, quick)
    finally:
        probe.close()
        if dotnet:
            dotnet.close()


def machine_info() -> dict:
    cpu, caches = "unknown", {}
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        for line in out.splitlines():
            k, _, v = line.partition(":")
            k, v = k.strip(), v.strip()
            if k == "Model name":
                cpu = v
            elif k in ("L2 cache", "L3 cache"):
                caches[k] = v
    except OSError:
        pass
    # "AMD EPYC" alone names neither the generation nor what the kernels can use: the VM's host has changed between
    # sessions (Zen 4, family 25, without AVX-VNNI; a host with it), and the int8 attention runs a different kernel on each.
    try:
        info = dict(line.split(":", 1) for line in open("/proc/cpuinfo").read().split("\n\n")[0].splitlines() if ":" in line)
        info = {k.strip(): v.strip() for k, v in info.items()}
        flags = set(info.get("flags", "").split())
        cpu += (f" (family {info.get('cpu family', '?')}, model {info.get('model', '?')}; "
                f"AVX-512: {'yes' if 'avx512bw' in flags else 'no'}, AVX-VNNI: {'yes' if 'avx_vnni' in flags else 'no'})")
    except OSError:
        pass
    mem = open("/proc/meminfo").readline().split()[1]
    return {"cpu": cpu, "cores": os.cpu_count(), "caches": caches, "memory_gib": round(int(mem) / 2 ** 20, 1),
            "os": platform.platform(), "hostname": platform.node()}


def busy_processes() -> List[str]:
    """Other heavy processes (training, builds) running now: the figures are 'under load' then."""
    out = subprocess.run(["ps", "-eo", "pid,pcpu,args", "--sort=-pcpu"], capture_output=True, text=True).stdout
    busy = []
    me = os.getpid()
    for line in out.splitlines()[1:]:
        parts = line.split(None, 2)
        if len(parts) < 3:
            continue
        pid, cpu, args = int(parts[0]), float(parts[1]), parts[2]
        if pid == me or "bench/" in args or "IGpt.Bench" in args:
            continue
        if cpu >= 20 and ("igpt train" in args or "python" in args or "dotnet" in args or "msbuild" in args.lower()):
            busy.append(f"{pid} {cpu:.0f}% {args[:80]}")
    return busy


def run_package(package: str, methods: List[str], reps: int, processes: int, batches: List[int],
                budget_s: float, classify_batches: List[int]) -> dict:
    info = model_info(package)
    W, H = info["width"], info["height"]
    total = H * W
    rows = H // 2
    k = rows * W
    rng = random.Random(6)
    prompt = [rng.randrange(info["palette_size"]) for _ in range(k)]
    print(f"\n== {info['id']} ({package}): {info['n_layer']} x {info['n_embd']}, {info['n_head']} heads, "
          f"{total} positions, palette {info['palette_size']}; prompt {k} tokens, {total - k} to draw", flush=True)
    runs: Dict[tuple, List[dict]] = {}
    windows: Dict[str, Dict[int, int]] = {m: {} for m in methods}
    reference = None
    settings: Dict[str, dict] = {}
    rss: Dict[str, float] = {}
    cls_results: List[dict] = []
    for proc in range(processes):
        # Fresh worker processes each round: this VM runs whole processes in a fast or a slow mode at random, so
        # one process per method could swing a ratio by +-40%; each figure is the median over the processes.
        print(f"  worker processes {proc + 1}/{processes}", flush=True)
        ballast = first_loader(package)
        workers = {m: start(m) for m in methods}
        try:
            settings = load(workers, package)
            reference = warm_up_and_check(workers, methods, prompt, batches, budget_s, total - k, windows, reference)
            timed_repetitions(workers, methods, prompt, batches, reps, windows, reference, proc, runs)
            for m, w in workers.items():  # decoding's peak, before classification
                rss[m] = max(rss.get(m, 0.0), w.peak_rss_mib())
            if proc == processes - 1 and info["has_classifier"]:
                cls_results = classification(workers, methods, info, classify_batches, total)
        finally:
            for w in workers.values():
                w.close()
            ballast.close()
    hello = {m: {**w.hello, **settings.get(m, {})} for m, w in workers.items()}

    results = []
    for (m, b), rs in sorted(runs.items(), key=lambda kv: (kv[0][1], methods.index(kv[0][0]))):
        steps = rs[0]["steps"]
        n_tokens = len(rs[0]["tokens"])
        prefill = med_of_processes(rs, "prefill_ms")
        decode = med_of_processes(rs, "decode_ms")
        total_ms = med_of_processes(rs, "total_ms")
        ms_step = decode / max(1, steps)
        # positions fed during the decode steps: k+1 .. k+steps, so the cache holds k+1 .. k+steps
        kv_avg = k + 1 + (steps - 1) / 2
        cost = (naive_step_cost(info, b, kv_avg + 1) if m == "torch-naive"
                else step_cost(info, b, kv_avg, settings.get(m, {}).get("kv_element_bytes", FP32)))
        row = {
            "method": m, "batch": b, "prefill_ms": prefill, "ms_per_token": ms_step,
            "tokens_per_s": b * 1e3 / ms_step, "gflops": cost["flops"] / ms_step / 1e6,
            "bytes_per_step": cost["bytes"], "kv_bytes_per_step": cost["kv_bytes"],
            "achieved_gbps": cost["bytes"] / ms_step / 1e6,
            "decoded_tokens": n_tokens, "decode_steps": steps, "whole_half": n_tokens >= total - k - 1,
            "completion_ms": total_ms if n_tokens >= total - k - 1 else None,
            "runs": len(rs), "processes": len({r["process"] for r in rs}), "peak_rss_mib": rss.get(m),
            "kv_cache_type": settings.get(m, {}).get("kv_cache_type", "float32"),
            "greedy_agreement": med([r["agreement"] for r in rs]) if "agreement" in rs[0] else None,
            "process_ms_per_token": [med([r["decode_ms"] for r in rs if r["process"] == p]) / max(1, steps)
                                     for p in sorted({r["process"] for r in rs})],
            "managed_alloc_bytes_per_step": (med([r["managed_alloc_bytes"] for r in rs]) / max(1, steps)
                                             if "managed_alloc_bytes" in rs[0] else None),
            "spread_ms_per_token": [min(r["decode_ms"] for r in rs) / max(1, steps),
                                    max(r["decode_ms"] for r in rs) / max(1, steps)],
        }
        if "kv_bytes_read" in rs[0]:
            # what the library's step paths actually read (KvCacheDecoder.KvBytesRead): a request's shared prompt once
            # per lane in step segments, at the cache's element size; the weights counted once, as for every method
            row["kv_bytes_read_per_step"] = med_of_processes(rs, "kv_bytes_read") / max(1, steps)
            row["bytes_read_per_step"] = info["weight_bytes_fp32"] + row["kv_bytes_read_per_step"]
        if m == "torch-naive":
            # the whole half, estimated: a naive step costs a forward over the prefix, ~linear in its length here
            row["completion_ms_estimated"] = prefill + ms_step * sum((k + 1 + i) / (kv_avg + 1)
                                                                     for i in range(total - k - 1))
        elif m == "torch-eager" and not row["whole_half"]:
            row["completion_ms_estimated"] = prefill + ms_step * (total - k - 1)
        results.append(row)
    return {"model": info, "prompt_tokens": k, "new_tokens": total - k, "workers": hello,
            "results": results, "classification": cls_results, "peak_rss_mib": rss}


def med_of_processes(rs: List[dict], key: str) -> float:
    """The median over worker processes of each process's median over its repetitions."""
    return med([med([r[key] for r in rs if r["process"] == p]) for p in sorted({r["process"] for r in rs})])


def warm_up_and_check(workers: Dict[str, Worker], methods: List[str], prompt: List[int], batches: List[int],
                      budget_s: float, half: int, windows: Dict[str, Dict[int, int]],
                      reference: Optional[List[int]]) -> List[int]:
    """Correctness and warm-up of fresh workers: greedy tokens at batch 1 agree with the reference (the first
    method's, on the first processes), and each budgeted method's window (how many tokens it decodes) is set
    once, on the first processes, so that every process times the same work. Returns the reference tokens."""
    # the reference first: an igpt method with a float32 cache, else genai; the compressed caches after the peers
    full = [m for m in methods if m not in BUDGETED]
    fp32 = [m for m in full if workers[m].kv_cache_type == "float32" and base_method(m) in ("igpt", "igpt-loop")]
    order = (fp32 + [m for m in full if m == "ort-genai"] + [m for m in full if m not in fp32 and m != "ort-genai"]
             + [m for m in methods if m in BUDGETED])
    agreement: Dict[str, float] = {}
    for m in order:
        # full-length methods: batch 1 here (correctness + warm-up); the timed runs check every batch
        for b in batches if m in BUDGETED and m != "torch-naive" else batches[:1]:
            if b in windows[m]:
                r = workers[m].call(op="complete", prompt=prompt, batch=b,
                                    **({"new_tokens": windows[m][b]} if m in BUDGETED else {}))
            elif m in BUDGETED:
                probe_n = 4 if m == "torch-naive" else 8
                r = workers[m].call(op="complete", prompt=prompt, batch=b, new_tokens=probe_n)
                step_ms = r["decode_ms"] / max(1, r["steps"])
                windows[m][b] = window(step_ms, budget_s, half - 1, probe_n)
            else:
                r = workers[m].call(op="complete", prompt=prompt, batch=b)
                windows[m][b] = len(r["tokens"])
            check_tokens(m, b, r, reference, workers[m].kv_cache_type)
            if "agreement" in r:
                agreement[m] = r["agreement"]
            if reference is None:
                reference = r["tokens"]
    print("  greedy tokens agree: " + ", ".join(
        f"{m} ({min(windows[m].values())}+ tokens)" if m not in agreement
        else f"{m} (a compressed cache: the reference's tokens for the first {agreement[m] * 100:.0f}%)" for m in order),
        flush=True)
    return reference


# Seconds of quiet before each timed run: the idle workers of the other methods stop spinning by then (ONNX Runtime's and
# OpenMP's pools spin for a while after their own runs, and with two cores a spinning neighbour slows whatever runs next).
SETTLE_S = 0.3


def timed_repetitions(workers: Dict[str, Worker], methods: List[str], prompt: List[int], batches: List[int],
                      reps: int, windows: Dict[str, Dict[int, int]], reference: List[int], proc: int,
                      runs: Dict[tuple, List[dict]]) -> None:
    """Each repetition runs every (batch, method) pair once, the methods in a rotated order."""
    for rep in range(reps):
        for b in batches:
            ms = [m for m in methods if not (m == "torch-naive" and b != batches[0])]
            ms = ms[rep % len(ms):] + ms[:rep % len(ms)]
            for m in ms:
                req = dict(op="complete", prompt=prompt, batch=b)
                if m in BUDGETED:
                    req["new_tokens"] = windows[m][b]
                time.sleep(SETTLE_S)
                r = workers[m].call(**req)
                check_tokens(m, b, r, reference, workers[m].kv_cache_type)
                runs.setdefault((m, b), []).append(dict(r, process=proc))
        print(f"  repetition {rep + 1}/{reps} done", flush=True)


def classification(workers: Dict[str, Worker], methods: List[str], info: dict, classify_batches: List[int],
                   total: int) -> List[dict]:
    """igpt's classifier.onnx against torch's classify, images/s."""
    ours = next((m for m in ("igpt", "igpt-loop") if m in methods), None)  # both: IGptModel.ClassifyBatchAsync
    cls_methods = [m for m in (ours, "torch-eager") if m in methods]
    cls_reps = {b: (3 if b == 1 else 1) for b in classify_batches}
    times: Dict[tuple, List[float]] = {}
    for m in cls_methods:
        workers[m].call(op="classify", batch=1, reps=1)  # warm-up
    for b in classify_batches:
        for rep in range(cls_reps[b]):
            for m in (cls_methods if rep % 2 == 0 else cls_methods[::-1]):
                times.setdefault((m, b), []).extend(workers[m].call(op="classify", batch=b, reps=1)["ms"])
    results = []
    for (m, b), ts in times.items():
        ms = med(ts)
        flops = b * total * 2 * (info["matmul_params"] - info["n_embd"] * info["vocab_size"]) \
            + b * 2 * info["n_layer"] * info["n_embd"] * total * total
        results.append({"method": m, "batch": b, "ms": ms, "images_per_s": b / ms * 1e3,
                        "gflops": flops / ms / 1e6, "runs": len(ts), "peak_rss_mib": workers[m].peak_rss_mib()})
    print("  classification: " + ", ".join(f"{c['method']} b{c['batch']} {c['images_per_s']:.1f} img/s"
                                          for c in results), flush=True)
    return results


def window(step_ms: float, budget_s: float, half: int, least: int) -> int:
    """Tokens a budgeted method decodes after its first: the whole half (half) when the probe's step time says
    that takes at most FULL_HALF_BUDGETS budgets, else as many as fit in one budget (at least `least`)."""
    step_ms = max(step_ms, 1e-3)
    if half * step_ms <= FULL_HALF_BUDGETS * budget_s * 1000:
        return half
    return max(least, min(half, int(budget_s * 1000 / step_ms)))


def check_tokens(method: str, batch: int, r: dict, reference: Optional[List[int]], cache_type: str) -> None:
    if not r.get("rows_agree", True):
        raise SystemExit(f"FAIL: {method} at batch {batch}: identical rows decoded to different tokens")
    if reference is None:
        return
    got = r["tokens"]
    n = min(len(got), len(reference))
    if cache_type != "float32":
        # a compressed cache: the same model to within its quality bound (bench/kv_quality.py), so a near-tie may go
        # the other way and the rest of the image follow it; the share of tokens up to the first difference is kept
        first = next((i for i in range(n) if got[i] != reference[i]), n)
        r["agreement"] = first / max(1, n)
        return
    for i in range(n):
        if got[i] != reference[i]:
            raise SystemExit(f"FAIL: {method} at batch {batch}: greedy token {i} after the prompt is {got[i]}, "
                             f"the reference (first method) has {reference[i]}: the methods do not compute the same model")


# ---------------------------------------------------------------------------------------------
# report


def roofline(row: dict, machine: dict) -> None:
    bw = machine["dram_read_gbps_peak"]
    gf = machine["gemm_gflops_peak"]
    mem_ms = row["bytes_per_step"] / bw / 1e6
    cmp_ms = row["gflops"] * row["ms_per_token"] / gf  # flops / peak
    bound = max(mem_ms, cmp_ms)
    row["roofline_ms_per_step"] = bound
    row["roofline_bound"] = "memory" if mem_ms >= cmp_ms else "compute"
    row["roofline_fraction"] = bound / row["ms_per_token"]  # 1.0 = at the roofline
    row["memory_roofline_ms"] = mem_ms
    row["compute_roofline_ms"] = cmp_ms
    if row.get("bytes_read_per_step"):
        # the same with the bytes the method's steps actually read (igpt's: fewer where it reads a shared prompt once)
        read_ms = max(row["bytes_read_per_step"] / bw / 1e6, cmp_ms)
        row["roofline_read_ms_per_step"] = read_ms
        row["roofline_read_fraction"] = read_ms / row["ms_per_token"]


def versions(hellos: Dict[str, dict]) -> dict:
    v = {}
    for m, h in hellos.items():
        if base_method(m) in ("igpt", "igpt-loop"):
            v["dotnet"] = h.get("dotnet")
            v["onnxruntime"] = h.get("onnxruntime")
        if m.startswith("torch"):
            v["torch"] = h.get("torch")
            v["numpy"] = h.get("numpy")
            v["torch_blas"] = h.get("blas")
            v["torch_threads"] = h.get("threads")
    v["onnxruntime_genai"] = "0.18.0 (NuGet Microsoft.ML.OnnxRuntimeGenAI, with Microsoft.ML.OnnxRuntime 1.31.0)"
    return v


def fmt(x, nd=1):
    if x is None or x != x:
        return "–"
    if abs(x) >= 100:
        return f"{x:,.0f}"
    return f"{x:.{nd}f}"


def probe_range(report: dict) -> str:
    """'; medians of N probes through the run (C# DRAM a-b GB/s, ...)' when the run kept its samples."""
    s = report.get("probe_samples")
    if not s or not s.get("csharp_avx_all_cores"):
        return ""
    bw, g = s["csharp_avx_all_cores"], s.get("ort_mlas") or [float("nan")]
    return (f"; medians of {len(bw)} probes spread through the run (before and after each package; "
            f"C# DRAM read {fmt(min(bw))}-{fmt(max(bw))} GB/s, ORT GEMM {fmt(min(g))}-{fmt(max(g))} GFLOP/s)")


def markdown(report: dict) -> str:
    m = report["machine"]
    lines = [f"**Not run**: {m}: {why}" for m, why in report.get("skipped_methods", {}).items()] + [
        f"Run {report['date']} ({'quick' if report['quick'] else 'full'}; {report.get('processes', 1)} fresh worker "
        f"process(es) per method, each running {report['reps']} repetitions; every figure is the median over the "
        f"processes of each process's median; every method on {report.get('threads', '?')} intra-op threads; "
        f"{'**under load**: ' + '; '.join(report['load']) if report['load'] else 'machine otherwise idle'}).",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB, caches {m['caches']}; "
        f"fp32 GEMM {fmt(report['gemm_gflops']['ort_mlas'])} GFLOP/s via ORT (MLAS), "
        f"{fmt(report['gemm_gflops']['torch'])} via torch; DRAM read {fmt(report['dram_read_gbps']['csharp_avx_all_cores'])} GB/s "
        f"(C#, all cores), {fmt(report['dram_read_gbps']['numpy_1_thread'])} (numpy, 1 thread)"
        + probe_range(report) + ".",
        "",
        f"Rooflines use {fmt(report['roofline_peaks']['gemm_gflops'])} GFLOP/s and "
        f"{fmt(report['roofline_peaks']['dram_read_gbps'])} GB/s ({report['roofline_peaks'].get('note', 'measured')}).",
        "",
        "Versions: " + ", ".join(f"{k} {v}" for k, v in report["versions"].items()) + ".",
        "",
    ]
    if report.get("worker_env"):
        lines[-1:-1] = ["Every method's worker ran with the service's launchSettings.json environment: "
                        + ", ".join(f"{k}={v}" for k, v in report["worker_env"].items()) + ".", ""]
    for pkg in report["packages"]:
        info = pkg["model"]
        lines += [
            f"### {info['id']}: {info['n_layer']} layers x {info['n_embd']}, {info['n_head']} heads, "
            f"{info['n_positions']} positions, palette {info['palette_size']} ({info['height']}x{info['width']}x{info['channels']})",
            "",
            f"Prompt: the top {pkg['prompt_tokens']} tokens; {pkg['new_tokens']} to draw. fp32 weights "
            f"{info['weight_bytes_fp32'] / 1e6:.1f} MB per step."
            + "".join(f" {m} ran with {w['settings']}." for m, w in pkg.get("workers", {}).items() if "settings" in w),
            "",
            "| method | batch | prefill ms | ms/step | tokens/s | x torch-eager | x ort-genai | half-image ms | GFLOP/s | MB/step | roofline | MB read/step | roofline, bytes read | peak RSS MiB |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        by = {(r["method"], r["batch"]): r for r in pkg["results"]}
        for r in pkg["results"]:
            te = by.get(("torch-eager", r["batch"]))
            ge = by.get(("ort-genai", r["batch"]))
            half = r.get("completion_ms")
            half_s = fmt(half) if half else (f"~{fmt(r['completion_ms_estimated'])} (est.)" if r.get("completion_ms_estimated") else "–")
            note = "" if r["whole_half"] else f" ({r['decoded_tokens']} tok)"
            lines.append(
                f"| {r['method']}{kv_note(r)}{note} | {r['batch']} | {fmt(r['prefill_ms'])} | {fmt(r['ms_per_token'], 2)} | "
                f"{fmt(r['tokens_per_s'])} | {fmt(r['tokens_per_s'] / te['tokens_per_s'], 2) if te else '–'} | "
                f"{fmt(r['tokens_per_s'] / ge['tokens_per_s'], 2) if ge else '–'} | {half_s} | {fmt(r['gflops'])} | "
                f"{fmt(r['bytes_per_step'] / 1e6)} | {r['roofline_fraction']:.2f} ({r['roofline_bound'][0]}) | "
                f"{fmt(r['bytes_read_per_step'] / 1e6) if r.get('bytes_read_per_step') else '–'} | "
                f"{fmt(r['roofline_read_fraction'], 2) if r.get('roofline_read_fraction') else '–'} | {fmt(r['peak_rss_mib'])} |")
        if pkg["classification"]:
            lines += ["", "Classification (classifier.onnx / torch classify, random images):", "",
                      "| method | batch | ms | images/s | GFLOP/s | peak RSS MiB (process, after) |", "|---|---|---|---|---|---|"]
            for c in sorted(pkg["classification"], key=lambda c: (c["batch"], c["method"])):
                lines.append(f"| {c['method']} | {c['batch']} | {fmt(c['ms'])} | {fmt(c['images_per_s'])} | {fmt(c['gflops'])} | "
                             f"{fmt(c.get('peak_rss_mib'))} |")
        goals = pkg.get("goals")
        if goals:
            lines += ["", "Goals (ratios in this run; in brackets, the range the repetitions' fastest and slowest steps "
                      "give): " + "; ".join(
                f"{g['goal']}: {fmt(g['value'], 2)}{goal_range(g)} {'met' if g['met'] else '**missed**'}" for g in goals) + "."]
        lines.append("")
    return "\n".join(lines)


def kv_note(r: dict) -> str:
    """The KV cache type beside an igpt method's name, and how far a compressed cache's greedy tokens followed fp32's."""
    if not r["method"].startswith("igpt"):
        return ""
    a = r.get("greedy_agreement")
    return f" ({r.get('kv_cache_type', 'float32')} KV" + (f"; same tokens as fp32 for {a * 100:.0f}%" if a is not None and a < 1 else "") + ")"


def goal_range(g: dict) -> str:
    lo, hi = g.get("range") or (None, None)
    return f" [{fmt(lo, 2)}-{fmt(hi, 2)}]" if lo is not None and hi is not None else ""


def goals(pkg: dict) -> List[dict]:
    """The issue's goals as ratios of medians, each with the range that the repetitions' fastest and slowest
    steps give (this VM's run-to-run noise: a verdict whose range straddles the bar is within it)."""
    by = {(r["method"], r["batch"]): r for r in pkg["results"]}
    out = []

    def tps(m, b):
        r = by.get((m, b))
        return r["tokens_per_s"] if r else None

    def spread(m, b):
        r = by.get((m, b))
        s = r.get("spread_ms_per_token") if r else None
        return (s[0], s[1]) if s and s[0] and s[1] else None

    def speedup_range(m, other, b):
        # tokens/s ratio = other's ms/step over mine: slowest of mine against fastest of theirs, and back
        a, o = spread(m, b), spread(other, b)
        return [o[0] / a[1], o[1] / a[0]] if a and o else None

    # the service's path; the library's decoder loop stands in when igpt was not run; each fixed KV cache type too
    mine = ["igpt" if any(m == "igpt" for m, _ in by) else "igpt-loop"] + sorted({m for m, _ in by if kv_cache_type(m)})
    for me in mine:
        out += method_goals(pkg, me, tps, spread, speedup_range, by)
    return out


def method_goals(pkg: dict, me: str, tps, spread, speedup_range, by) -> List[dict]:
    out = []
    if tps(me, 1) and tps("torch-eager", 1):
        v = tps(me, 1) / tps("torch-eager", 1)
        out.append({"goal": f"{me} >= 4x torch-eager tokens/s at b1", "value": v, "met": v >= 4,
                    "range": speedup_range(me, "torch-eager", 1)})
    for b, need in ((1, 1.1), (4, 1.0), (16, 1.3)):
        if tps(me, b) and tps("ort-genai", b):
            v = tps(me, b) / tps("ort-genai", b)
            out.append({"goal": f"{me} >= {need}x ort-genai at b{b}", "value": v, "met": v >= need,
                        "range": speedup_range(me, "ort-genai", b)})
    for b in sorted({r["batch"] for r in pkg["results"]}):
        r = by.get((me, b))
        if r:
            # against the roofline of the bytes the step actually read, where the worker reports them
            roof, what = ((r["roofline_read_ms_per_step"], "of the bytes it read") if r.get("roofline_read_ms_per_step")
                          else (r["roofline_ms_per_step"], ""))
            v = r["ms_per_token"] / roof
            s = spread(me, b)
            out.append({"goal": f"{me} step within 1.25x of its roofline{' ' + what if what else ''} at b{b}", "value": v,
                        "met": v <= 1.25, "range": [s[0] / roof, s[1] / roof] if s else None})
    return out


def chart(report: dict, path: str) -> None:
    """Grouped bars: decode tokens/s per method and batch, one panel per model (PIL drawing)."""
    from PIL import Image, ImageDraw, ImageFont

    pkgs = report["packages"]
    colours = {"igpt": (31, 119, 180), "igpt-loop": (120, 170, 220), "igpt-kv16": (23, 190, 207), "igpt-kv8": (148, 103, 189),
               "igpt-loop-kv16": (158, 218, 229), "igpt-kv32": (57, 59, 121), "igpt-loop-kv32": (107, 110, 207),
               "ort-genai": (255, 127, 14), "torch-eager": (44, 160, 44), "torch-naive": (214, 39, 40)}
    pw, ph, margin = 560, 360, 60
    img = Image.new("RGB", (pw * len(pkgs), ph + 70), "white")
    d = ImageDraw.Draw(img)
    try:
        font = ImageFont.truetype("DejaVuSans.ttf", 12)
        big = ImageFont.truetype("DejaVuSans-Bold.ttf", 13)
    except OSError:
        font = big = ImageFont.load_default()
    import math
    for pi, pkg in enumerate(pkgs):
        x0 = pi * pw
        info = pkg["model"]
        d.text((x0 + margin, 8), f"{info['id']}: {info['n_layer']}x{info['n_embd']}, {info['n_positions']} pos — "
               "decode tokens/s (log)", fill="black", font=big)
        res = pkg["results"]
        methods = [m for m in colours if any(r["method"] == m for r in res)]
        colours.update({r["method"]: (127, 127, 127) for r in res if r["method"] not in colours})
        methods += [m for m in dict.fromkeys(r["method"] for r in res) if m not in methods]
        batches = sorted({r["batch"] for r in res})
        vals = [r["tokens_per_s"] for r in res]
        lo = 10 ** math.floor(math.log10(max(min(vals), 1e-3)))
        hi = 10 ** math.ceil(math.log10(max(vals)))
        top, bottom = 40, ph - 10
        def y(v):
            return bottom - (math.log10(max(v, lo)) - math.log10(lo)) / (math.log10(hi) - math.log10(lo)) * (bottom - top)
        e = lo
        while e <= hi * 1.0001:
            yy = y(e)
            d.line([(x0 + margin, yy), (x0 + pw - 10, yy)], fill=(225, 225, 225))
            d.text((x0 + 5, yy - 7), f"{e:g}", fill="black", font=font)
            e *= 10
        gw = (pw - margin - 20) / len(batches)
        bw = gw * 0.8 / len(methods)
        for bi, b in enumerate(batches):
            gx = x0 + margin + bi * gw + gw * 0.1
            for mi, m in enumerate(methods):
                r = next((r for r in res if r["method"] == m and r["batch"] == b), None)
                if not r:
                    continue
                bx = gx + mi * bw
                d.rectangle([bx, y(r["tokens_per_s"]), bx + bw - 2, bottom], fill=colours[m])
                d.text((bx, y(r["tokens_per_s"]) - 13), fmt(r["tokens_per_s"], 0), fill="black", font=font)
            d.text((gx + gw * 0.3, bottom + 4), f"batch {b}", fill="black", font=font)
        lx = x0 + margin
        for m in methods:
            d.rectangle([lx, ph + 30, lx + 10, ph + 40], fill=colours[m])
            d.text((lx + 14, ph + 28), m, fill="black", font=font)
            lx += 20 + 7 * len(m) + 10
    d.text((5, ph + 50), f"{report['date']}, {report['machine']['cpu']} {report['machine']['cores']} cores, fp32, greedy"
           + (" — UNDER LOAD" if report["load"] else ""), fill=(90, 90, 90), font=font)
    img.save(path)


def write_readme_section(text: str, path: str) -> None:
    begin, end = "<!-- results:begin -->", "<!-- results:end -->"
    doc = open(path, encoding="utf-8").read() if os.path.exists(path) else f"# Benchmarks\n\n{begin}\n{end}\n"
    if begin not in doc:
        doc += f"\n{begin}\n{end}\n"
    head, rest = doc.split(begin, 1)
    _, tail = rest.split(end, 1)
    with open(path, "w", encoding="utf-8") as f:
        f.write(head + begin + "\n" + text + "\n" + end + tail)


def rerender(args) -> int:
    path = os.path.join(args.out, "results.json")
    with open(path, encoding="utf-8") as f:
        report = json.load(f)
    peaks = report["roofline_peaks"]
    peaks["gemm_gflops"] = args.peak_gflops or peaks["gemm_gflops"]
    peaks["dram_read_gbps"] = args.peak_gbps or peaks["dram_read_gbps"]
    peaks["note"] = "given on the command line" if (args.peak_gflops or args.peak_gbps) else "measured"
    machine = {"gemm_gflops_peak": peaks["gemm_gflops"], "dram_read_gbps_peak": peaks["dram_read_gbps"]}
    for p in report["packages"]:
        for r in p["results"]:
            roofline(r, machine)
        p["goals"] = goals(p)
    report["results"] = [dict(r, model=p["model"]["id"]) for p in report["packages"] for r in p["results"]]
    report["goals"] = {p["model"]["id"]: p["goals"] for p in report["packages"]}
    with open(path, "w", encoding="utf-8") as f:
        json.dump(report, f, indent=1)
    text = markdown(report)
    write_readme_section(text, os.path.join(args.out, "README.md"))
    chart(report, os.path.join(args.out, "chart.png"))
    print(text)
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--package", action="append", help="model package folder (repeatable); default: "
                    "bench/packages/w256, bench/packages/w512, models/fashion-mnist-14 and models/fashion-mnist-28 when present")
    ap.add_argument("--quick", action="store_true", help="1 repetition, smaller budgets (a smoke run)")
    ap.add_argument("--reps", type=int, default=None, help="repetitions (default 3, quick 1)")
    ap.add_argument("--processes", type=int, default=None, help="fresh worker processes per method and package, "
                    "each running every repetition (default 3, quick 1); figures are medians over the processes")
    ap.add_argument("--methods", default=",".join(ALL_METHODS))
    ap.add_argument("--batches", default="1,4,16")
    ap.add_argument("--budget-s", type=float, default=None, help="time budget per PyTorch run (default 4 s, quick 1 s)")
    ap.add_argument("--out", default=OUT)
    ap.add_argument("--peak-gflops", type=float, help="roofline compute peak instead of the measured GEMM rate "
                    "(e.g. the idle machine's, when the run is under load)")
    ap.add_argument("--peak-gbps", type=float, help="roofline DRAM bandwidth instead of the measured one")
    ap.add_argument("--rerender", action="store_true", help="recompute rooflines and goals from OUT/results.json "
                    "(with --peak-*) and rewrite the README section and chart; runs nothing")
    args = ap.parse_args()
    if args.rerender:
        return rerender(args)
    methods = [m for m in args.methods.split(",") if m]
    for m in methods:
        if base_method(m) not in ALL_METHODS:
            raise SystemExit(f"unknown method {m}; choose from {ALL_METHODS}, or igpt / igpt-loop with -kv16, -kv8 or -kv32")
    packages = args.package or [p for p in (os.path.join(ROOT, "bench/packages/w256"),
                                            os.path.join(ROOT, "bench/packages/w512"),
                                            os.path.join(ROOT, "models/fashion-mnist-14"),
                                            os.path.join(ROOT, "models/fashion-mnist-28"))
                                if os.path.exists(os.path.join(p, "model.json"))]
    reps = args.reps or (1 if args.quick else 3)
    processes = args.processes or (1 if args.quick else 3)
    budget = args.budget_s or (1.0 if args.quick else 4.0)
    batches = [int(b) for b in args.batches.split(",")]
    load_before = busy_processes()
    t0 = time.time()
    skipped = {}
    if "igpt" in methods:
        # the service's path must answer on the tiny test package first; a broken build would hang the run
        tiny = os.path.join(ROOT, "tests/fixtures/tiny-package")
        w = Worker("igpt-preflight", ["dotnet", IGPT_DLL, "--method", "igpt"], timeout_s=120)
        try:
            w.call(op="load", package=tiny)
            w.call(op="complete", prompt=[0] * 32, batch=2)
        except SystemExit as e:
            print(f"WARNING: igpt (IGptModel.CompleteAsync) failed on {tiny}: {e}; running without it", flush=True)
            skipped["igpt"] = str(e)
            methods = [m for m in methods if m != "igpt"]
        finally:
            w.close()

    machine = probe_machine(methods, 1 if args.quick else 3, args.quick)
    print(f"machine: GEMM {machine['gemm_gflops']} GFLOP/s, DRAM read {machine['dram_read_gbps']} GB/s", flush=True)

    pkgs, hellos = [], {}
    for p in packages:
        res = run_package(os.path.abspath(p), methods, reps, processes, batches, budget,
                          [1] if args.quick else [1, 64])
        hellos.update(res["workers"])
        pkgs.append(res)
        # Probe again after each package: the roofline uses the median of every probe of the run.
        again = probe_machine(methods, 1, args.quick)["samples"]
        machine = summarize_probes({k: v + again[k] for k, v in machine["samples"].items()})
        print(f"machine (after {res['model']['id']}): DRAM read {machine['dram_read_gbps']} GB/s", flush=True)
    machine["gemm_gflops_peak"] = args.peak_gflops or machine["gemm_gflops_peak"]
    machine["dram_read_gbps_peak"] = args.peak_gbps or machine["dram_read_gbps_peak"]
    for res in pkgs:
        for r in res["results"]:
            roofline(r, machine)
        res["goals"] = goals(res)
    load_after = busy_processes()
    report = {
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "quick": args.quick, "reps": reps, "processes": processes, "threads": service_threads(), "wall_s": round(time.time() - t0, 1),
        "load": sorted(set(load_before + load_after)),
        "skipped_methods": skipped,
        "machine": machine_info(), "versions": versions(hellos), "worker_env": service_env(),
        "gemm_gflops": machine["gemm_gflops"], "dram_read_gbps": machine["dram_read_gbps"],
        "probe_samples": machine["samples"],
        "roofline_peaks": {"gemm_gflops": machine["gemm_gflops_peak"], "dram_read_gbps": machine["dram_read_gbps_peak"]},
        "model": [p["model"] for p in pkgs],
        "results": [dict(r, model=p["model"]["id"]) for p in pkgs for r in p["results"]],
        "classification": [dict(c, model=p["model"]["id"]) for p in pkgs for c in p["classification"]],
        "goals": {p["model"]["id"]: p["goals"] for p in pkgs},
        "packages": pkgs,
    }
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "results.json"), "w", encoding="utf-8") as f:
        json.dump(report, f, indent=1)
    text = markdown(report)
    write_readme_section(text, os.path.join(args.out, "README.md"))
    chart(report, os.path.join(args.out, "chart.png"))
    print("\n" + text)
    print(f"wrote {args.out}/results.json, README.md, chart.png in {report['wall_s']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
