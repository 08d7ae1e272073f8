#!/usr/bin/env python3
"""Runs on a lent GPU machine: the published service on CUDA against the same service on the CPU.

    python3 bench/gpu/gpu_driver.py KIT        # KIT holds app/ (with the stripped provider), models/, test_images.npz

For every package in KIT/models it checks and measures:
- /v1/models reports execution_provider CUDA (else the provider_reason is recorded);
- greedy completions (temperature 0) of 16 test images on CUDA (fp16) against the CPU with fp32 weights and a float32
  KV cache (the reference; the CPU's default int8 cache moves predictions itself): identical images, counted for the
  first 8 (the goal) and all 16;
- completion timings (decode_ms and prefill_ms from the response; ms per decode step = decode_ms over the steps,
  generated tokens / n) at n=1 and n=16, on the CPU, on CUDA, and on CUDA with CUDA graphs;
- classification of 200 test images where the model has a classifier: agreement between CUDA and CPU, and accuracy;
- continuous batching on the device: 12 greedy completions sent together with staggered starts against the same
  requests one at a time (CUDA graphs on).

Writes $OUT/gpu.json (and the services' logs) when OUT is set, and prints the JSON. Standard library and numpy only
(PNGs through the small codec below). A step that fails is recorded with its error and the rest still runs.
Environment: DRIVER_MODELS (comma-separated) measures only those; DRIVER_PARITY_ONLY (comma-separated) only their
greedy parity and classification agreement (variants of a package: another fp16 graph); DRIVER_CUDA_TIMING_ONLY
(comma-separated) only their CUDA timings (a variant's speed); DRIVER_STEPS (comma-separated: greedy, cuda_n1, cpu_n16,
classify, cuda_graphs_n16, cuda_graphs_greedy_n16, graphs_greedy, concurrent, ...) runs only those steps; DRIVER_DEADLINE (seconds, default 420) skips what is left once it has passed; GPU_DRIVER_DRY=1 runs
every step even where CUDA did not load (a rehearsal on a machine without a GPU). Built by bench/gpu/build_kit.sh,
run by bench/gpu/device.sh.
"""
import base64, glob, json, os, shutil, statistics, struct, subprocess, sys, time, traceback, urllib.request, zlib
import numpy as np

kit = os.path.abspath(sys.argv[1])
dry = bool(os.environ.get("GPU_DRIVER_DRY"))
out = os.environ.get("OUT")
app = os.path.join(kit, "app")
t0 = time.time()
deadline = t0 + float(os.environ.get("DRIVER_DEADLINE", "420"))


def log(msg):
    print(f"[{time.time() - t0:6.1f}s] {msg}", flush=True)


def cuda_library_path():
    dirs = []
    try:
        import nvidia  # the pip nvidia-* packages PyTorch brings (CUDA 13: nvidia/cu13/lib, nvidia/cudnn/lib, ...)
        for root in nvidia.__path__:
            dirs += sorted(glob.glob(os.path.join(root, "*", "lib")))
    except ImportError:
        pass
    return ":".join(dirs + [app, os.environ.get("LD_LIBRARY_PATH", "")])


def start(port, cuda, graphs=False):
    env = dict(os.environ, LD_LIBRARY_PATH=cuda_library_path(), DOTNET_gcServer="0",
               Inference__KvCacheType="float32",  # the CPU reference: fp32 weights and cache (CUDA ignores it)
               Inference__ModelsPath=os.path.join(kit, "models"), Inference__UseCuda=str(cuda).lower(),
               Inference__CudaGraphs=str(graphs).lower(), Api__MaxConcurrentRequestsPerClient="256",
               DOTNET_SYSTEM_GLOBALIZATION_INVARIANT="1",  # a bare machine may have no ICU
               Serilog__MinimumLevel__Default="Debug" if cuda else "Information")
    logfile = os.path.join(kit, f"service-{port}.log")
    p = subprocess.Popen([os.path.join(app, "IGpt.Api"), "--urls", f"http://127.0.0.1:{port}"], cwd=app, env=env,
                         stdout=open(logfile, "w"), stderr=subprocess.STDOUT)
    started = time.time()
    for _ in range(480):
        try:
            if get(port, "/health/ready")[0] == 200:
                log(f"service :{port} (cuda={cuda}, graphs={graphs}) ready in {time.time() - started:.1f} s")
                return p
        except OSError:
            pass
        if p.poll() is not None:
            raise RuntimeError(f"service on {port} exited: " + open(logfile).read()[-3000:])
        time.sleep(0.25)
    p.terminate()
    raise RuntimeError(f"service on {port} not ready in 120 s: " + open(logfile).read()[-3000:])


def get(port, path):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=300) as r:
        return r.status, json.loads(r.read())


def post(port, path, fields):
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=json.dumps(fields).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=600) as r:
            return json.loads(r.read())
    except urllib.error.HTTPError as e:
        raise RuntimeError(f"{path}: HTTP {e.code}: {e.read()[:1000]!r}") from None


def png(a):
    """An 8-bit grey PNG of a 2-D uint8 array."""
    h, w = a.shape
    raw = b"".join(b"\0" + a[y].tobytes() for y in range(h))

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def pixels(b64):
    """The pixels of an 8-bit, non-interlaced PNG (grey, RGB, RGBA or palette) as [h, w, channels] ints."""
    data = base64.b64decode(b64)
    pos, idat, plte = 8, b"", None
    while pos < len(data):
        n, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + n]
        if kind == b"IHDR":
            w, h, depth, ctype, _, _, interlace = struct.unpack(">IIBBBBB", body)
        elif kind == b"PLTE":
            plte = np.frombuffer(body, np.uint8).reshape(-1, 3)
        elif kind == b"IDAT":
            idat += body
        pos += 12 + n
    if depth != 8 or interlace:
        raise ValueError(f"PNG depth {depth}, interlace {interlace}: not decoded here")
    bpp = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}[ctype]
    raw = zlib.decompress(idat)
    stride = w * bpp
    img = np.zeros((h, stride), np.int32)
    prev = np.zeros(stride, np.int32)
    for y in range(h):
        f, line = raw[y * (stride + 1)], np.frombuffer(raw, np.uint8, stride, y * (stride + 1) + 1).astype(np.int32)
        cur = np.zeros(stride, np.int32)
        for x in range(stride):
            a = cur[x - bpp] if x >= bpp else 0
            b = prev[x]
            c = prev[x - bpp] if x >= bpp else 0
            if f == 0: pred = 0
            elif f == 1: pred = a
            elif f == 2: pred = b
            elif f == 3: pred = (a + b) // 2
            else:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                pred = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
            cur[x] = (line[x] + pred) & 255
        img[y], prev = cur, cur
    img = img.reshape(h, w, bpp)
    return plte[img[..., 0]].astype(np.int32) if ctype == 3 else img


def step(record, name, fn):
    """Runs one measurement (those DRIVER_STEPS names, when set); a failure is recorded, not fatal."""
    if only_steps and name not in only_steps:
        return
    if time.time() > deadline:
        record.setdefault("skipped", []).append(name)
        return
    try:
        fn()
    except Exception as e:  # noqa: BLE001 - every failure is a result here
        record.setdefault("errors", {})[name] = f"{type(e).__name__}: {e}"[:2000]
        log(f"{name}: {type(e).__name__}: {str(e)[:300]}")


def complete(port, mid, image, **fields):
    return post(port, f"/v1/models/{mid}/completions", dict(image=base64.b64encode(png(image)).decode(), **fields))


def timing(port, mid, n, reps, **fields):
    """Medians of decode ms per step and prefill ms over reps completions of different images (the package's sampling
    defaults unless fields say otherwise)."""
    per_step, prefill = [], []
    for k in range(reps):
        r = complete(port, mid, images[k + 20], n=n, seed=k, **fields)
        steps = r["usage"]["generated_tokens"] / n
        per_step.append(r["timings"]["decode_ms"] / steps)
        prefill.append(r["timings"]["prefill_ms"])
    return {"ms_per_step": round(statistics.median(per_step), 3), "ms_per_step_range": [round(min(per_step), 3), round(max(per_step), 3)],
            "prefill_ms": round(statistics.median(prefill), 2), "steps": int(steps), "reps": reps}


def generated_bits(port, mid, b64, prompt_rows):
    """The reference service's bits per pixel of an image's generated rows (its /likelihoods rows after the prompt)."""
    rows = post(port, f"/v1/models/{mid}/likelihoods", {"image": b64})["rows"]
    return round(float(np.mean(rows[prompt_rows:])), 4)


def concurrent_against_alone(port, mid, clients=12, reference=None):
    """Continuous batching on the device: greedy completions of `clients` images sent together with staggered starts
    (so sequences join and leave a running batch, and its slots are compacted while others decode), against the same
    requests one at a time. Identical images, or ones that part where fp16 rounding, which moves with the batch size,
    flips a near tie: the greedy path then goes on as likely as before. A slot copy that moved the wrong entries would
    decode from another sequence's context, and the reference service (`reference`, the CPU's fp32 port) would find
    its generated rows far less likely: their bits per pixel are reported for every pair that differs."""
    import concurrent.futures
    first = complete(port, mid, images[40], n=1, temperature=0, seed=1)
    alone = [first["images"][0]] + [complete(port, mid, images[40 + k], n=1, temperature=0, seed=1)["images"][0]
                                    for k in range(1, clients)]

    def late(k):
        time.sleep(0.003 * k * k)
        return complete(port, mid, images[40 + k], n=1, temperature=0, seed=1)["images"][0]
    with concurrent.futures.ThreadPoolExecutor(clients) as pool:
        together = list(pool.map(late, range(clients)))
    differences = [np.abs(pixels(a) - pixels(b)) for a, b in zip(alone, together)]
    diffs = [float(d.mean()) for d in differences]
    result = {"clients": clients, "identical": sum(a == b for a, b in zip(alone, together)),
              "mean_abs_pixel_diff": round(statistics.mean(diffs), 3), "largest_mean_abs_pixel_diff": round(max(diffs), 3)}
    if reference is not None:
        result["differing"] = [
            {"image": 40 + k, "first_differing_row": int(np.nonzero(d.reshape(d.shape[0], -1).max(1))[0][0]),
             "generated_bits_alone": generated_bits(reference, mid, a, first["rows"]),
             "generated_bits_together": generated_bits(reference, mid, b, first["rows"])}
            for k, (a, b, d) in enumerate(zip(alone, together, differences)) if a != b]
    return result


def save_logs():
    if out:
        for f in glob.glob(os.path.join(kit, "service-*.log")):
            shutil.copy(f, out)


data = np.load(os.path.join(kit, "test_images.npz"))
images, labels = data["images"], data["labels"]
models = sorted(os.path.basename(d) for d in glob.glob(os.path.join(kit, "models", "*")))
if os.environ.get("DRIVER_MODELS"):  # a rehearsal's subset; the service still loads every package
    models = [m for m in models if m in os.environ["DRIVER_MODELS"].split(",")]
summary = {"models": {m: {} for m in models}, "driver": "bench/gpu/gpu_driver.py"}
summary["gpu"] = subprocess.run("nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader", shell=True,
                                capture_output=True, text=True).stdout.strip() or "nvidia-smi missing"
summary["cpu_cores"] = os.cpu_count()
big = {m for m in models if m.startswith("igpt-")}  # slow on the CPU: fewer reps there
parity_only = set(os.environ.get("DRIVER_PARITY_ONLY", "").split(",")) - {""}
cuda_timing_only = set(os.environ.get("DRIVER_CUDA_TIMING_ONLY", "").split(",")) - {""}
only_steps = set(os.environ.get("DRIVER_STEPS", "").split(",")) - {""}
GREEDY_IMAGES = 16  # the goal counts the first 8


def usable(mid):
    return summary["models"][mid].get("execution_provider") == "CUDA" or dry


procs = []
try:
    gpu = start(8091, True); procs.append(gpu)
    cpu = start(8092, False); procs.append(cpu)
    summary["gpu_memory_after_load"] = subprocess.run("nvidia-smi --query-gpu=memory.used --format=csv,noheader", shell=True,
                                                      capture_output=True, text=True).stdout.strip()
    listing = {m["id"]: m for m in get(8091, "/v1/models")[1]["models"]}
    cpu_listing = {m["id"]: m for m in get(8092, "/v1/models")[1]["models"]}
    for mid in models:
        r = summary["models"][mid]
        m = listing.get(mid, {})
        r.update(execution_provider=m.get("execution_provider"), provider_reason=m.get("provider_reason"),
                 cpu_provider_reason=cpu_listing.get(mid, {}).get("provider_reason"))
        log(f"{mid}: {r['execution_provider']} ({r['provider_reason']})")
        if not usable(mid):
            continue

        def greedy(mid=mid, r=r):
            same, diffs, first_diff_rows = 0, [], []
            for i in range(GREEDY_IMAGES):
                if i == 8:
                    r["greedy_identical_of_8"] = same
                g = complete(8091, mid, images[i], n=1, temperature=0, seed=1)
                c = complete(8092, mid, images[i], n=1, temperature=0, seed=1)
                a, b = pixels(g["images"][0]), pixels(c["images"][0])
                same += int(g["images"][0] == c["images"][0])
                diffs.append(float(np.abs(a - b).mean()))
                rows = np.nonzero(np.abs(a - b).reshape(a.shape[0], -1).max(axis=1))[0]
                first_diff_rows.append(int(rows[0]) if len(rows) else None)
            r.update(greedy_images=GREEDY_IMAGES, greedy_identical=same, greedy_mean_abs_pixel_diff=round(statistics.mean(diffs), 3),
                     greedy_first_differing_row=first_diff_rows, prompt_rows=g["rows"])
            log(f"{mid}: greedy identical {r['greedy_identical_of_8']}/8, {same}/{GREEDY_IMAGES}")
        if mid not in cuda_timing_only:
            step(r, "greedy", greedy)
        for n in () if mid in parity_only else (1, 16):
            step(r, f"cuda_n{n}", lambda mid=mid, r=r, n=n: r.__setitem__(f"cuda_n{n}", timing(8091, mid, n, 5 if n == 1 else 3)))
            if mid not in cuda_timing_only:
                step(r, f"cpu_n{n}", lambda mid=mid, r=r, n=n: r.__setitem__(f"cpu_n{n}", timing(8092, mid, n, (2 if mid in big else 5) if n == 1 else 2)))
        log(f"{mid}: timings {[(k, v['ms_per_step']) for k, v in r.items() if isinstance(v, dict) and 'ms_per_step' in v]}")
        if m.get("has_classifier") and mid not in cuda_timing_only:
            def classify(mid=mid, r=r):
                route = f"/v1/models/{mid}/classifications"
                enc = [base64.b64encode(png(x)).decode() for x in images]
                started = time.time()
                pg = [post(8091, route, {"image": e, "top": 1})["predictions"][0]["index"] for e in enc]
                cuda_s = time.time() - started
                pc = [post(8092, route, {"image": e, "top": 1})["predictions"][0]["index"] for e in enc]
                r.update(classify_agreement=float(np.mean(np.array(pg) == np.array(pc))),
                         classify_accuracy_cuda=float(np.mean(np.array(pg) == labels)),
                         classify_accuracy_cpu=float(np.mean(np.array(pc) == labels)),
                         classify_cuda_ms_per_request=round(1000 * cuda_s / len(enc), 2))
                log(f"{mid}: classification agreement {r['classify_agreement']}")
            step(r, "classify", classify)
    gpu.terminate(); gpu.wait(); procs.remove(gpu)

    graphs = start(8093, True, graphs=True); procs.append(graphs)
    glisting = {m["id"]: m for m in get(8093, "/v1/models")[1]["models"]}
    for mid in models:
        r = summary["models"][mid]
        r["graphs_provider_reason"] = glisting.get(mid, {}).get("provider_reason")
        if not usable(mid) or mid in parity_only:
            continue
        for n in (1, 16):
            step(r, f"cuda_graphs_n{n}", lambda mid=mid, r=r, n=n: r.__setitem__(f"cuda_graphs_n{n}", timing(8093, mid, n, 5 if n == 1 else 3)))
        # the same 16 images greedily: the step without the sampling's share (the picks after it)
        step(r, "cuda_graphs_greedy_n16", lambda mid=mid, r=r: r.__setitem__("cuda_graphs_greedy_n16", timing(8093, mid, 16, 3, temperature=0)))
        if mid in cuda_timing_only:
            continue

        def graphs_greedy(mid=mid, r=r):
            same = 0
            for i in range(4):
                g = complete(8093, mid, images[i], n=1, temperature=0, seed=1)
                c = complete(8092, mid, images[i], n=1, temperature=0, seed=1)
                same += int(g["images"][0] == c["images"][0])
            r["graphs_greedy_identical_of_4"] = same
        step(r, "graphs_greedy", graphs_greedy)
        step(r, "concurrent", lambda mid=mid, r=r: r.__setitem__("concurrent", concurrent_against_alone(8093, mid, reference=8092)))
        log(f"{mid}: graphs {r.get('cuda_graphs_n1', {}).get('ms_per_step')} / {r.get('cuda_graphs_n16', {}).get('ms_per_step')} ms per step")
except Exception:  # noqa: BLE001
    summary["fatal"] = traceback.format_exc()[-3000:]
    log(summary["fatal"])
finally:
    for p in procs:
        p.terminate()
    for p in procs:
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()
    save_logs()

summary["seconds"] = round(time.time() - t0, 1)
text = json.dumps(summary, indent=1)
print(text)
if out:
    open(os.path.join(out, "gpu.json"), "w").write(text)
sys.exit(0 if all(r.get("execution_provider") == "CUDA" for r in summary["models"].values()) else 2)
