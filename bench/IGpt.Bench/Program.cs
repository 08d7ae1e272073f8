// The benchmark worker for the service's decoder: the inference library's code path (IGptModel:
// CompleteAsync, ClassifyBatchAsync), plus the machine probes through the same ONNX Runtime
// (fp32 GEMM via MLAS) and a streaming-read bandwidth kernel. Driven by bench/run.py.
using System.Diagnostics;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using System.Text.Json.Nodes;
using IGpt.Bench;
using IGpt.Inference;
using Microsoft.ML.OnnxRuntime;

// --method igpt: the service's path, IGptModel.CompleteAsync (scheduler, prefill, decode, sampling).
// --method igpt-loop: the library's hot path without the scheduler: KvCacheDecoder.Prefill of one
// row, ReplicateSlot0, then Step + Sampler.Pick per token (what IGptModel.Generate did before the
// continuous-batching scheduler): the decoder's own cost, and with igpt the scheduler's overhead.
string method = args.Length >= 2 && args[0] == "--method" ? args[1] : "igpt";
if (method is not ("igpt" or "igpt-loop" or "igpt-loop-spin")) throw new ArgumentException($"unknown method {method}");
IGptModel? model = null;
var hello = new JsonObject
{
    ["ready"] = true,
    ["method"] = method,
    ["dotnet"] = Environment.Version.ToString(),
    ["onnxruntime"] = OrtEnv.Instance().GetVersionString(),
    ["cores"] = Environment.ProcessorCount,
};
return Protocol.Serve(hello, request => (string?)request["op"] switch
{
    "load" => Load(request),
    "complete" => Complete(request),
    "classify" => Classify(request),
    "gemm" => Gemm(request),
    "profile" => Profile(request),
    "proto" => Proto(request),
    "bandwidth" => Bandwidth(request),
    "attention" => Attention(request),
    "kv_quality" => KvQuality.Run(request),
    "memory" => Memory(request),
    "products" => Products(request),
    "staggered_steps" => StaggeredSteps(request),
    "attend_blocks" => AttendBlocks(request),
    var op => throw new ArgumentException($"unknown op {op}"),
});

JsonObject Load(JsonObject r)
{
    model?.Dispose();
    // The service's own thread settings (the root appsettings.json's "Inference" section), so the
    // figures are what `dotnet run --project src/IGpt.Api` serves; a request may override them.
    var service = ServiceSettings.Read();
    var options = new InferenceOptions
    {
        UseCuda = false,
        MaxBatch = (int?)r["max_batch"] ?? 16,
        IntraOpThreads = (int?)r["threads"] ?? service.IntraOpThreads,
        AllowSpinning = (bool?)r["allow_spinning"] ?? (service.AllowSpinning || method.EndsWith("-spin", StringComparison.Ordinal)),
        SingleThreadStepFlops = (long?)r["small_step_flops"] ?? service.SingleThreadStepFlops,
        SegmentedStepRows = (int?)r["segmented_rows"] ?? service.SegmentedStepRows,
        LaneStepRows = (int?)r["lane_rows"] ?? service.LaneStepRows,
        KvCacheType = (string?)r["kv_cache_type"] ?? service.KvCacheType,
        KernelStepRows = (int?)r["kernel_rows"] ?? service.KernelStepRows,
        KernelWeightType = (string?)r["kernel_weights"] ?? service.KernelWeightType,
    };
    if (r["lane_max_weight_bytes"] is { } laneWeights) options.LaneMaxWeightBytes = (long)laneWeights;
    // A/Bs: segment past the cost rule (every step of at least SegmentedStepRows rows).
    var planner = (bool?)r["always_segmented"] == true
        ? new StepPlanner(options) { SegmentCost = new SegmentCostRule(MinRows: 1, MinKvToWeights: 0, MinKvBytesPerRow: 0) }
        : new StepPlanner(options);
    var sw = Stopwatch.StartNew();
    options.Validate();
    model = IGptModel.Load(ModelManifest.Load((string)r["package"]!), planner);  // no prefix cache: every prefill is computed
    var d = model.Decoder;
    return new JsonObject
    {
        ["load_ms"] = sw.Elapsed.TotalMilliseconds,
        ["provider"] = model.ExecutionProvider,
        ["threads"] = planner.IntraOpThreads,
        ["settings"] = $"IntraOpThreads={options.IntraOpThreads}, AllowSpinning={options.AllowSpinning}, "
            + $"SingleThreadStepFlops={options.SingleThreadStepFlops}, SegmentedStepRows={options.SegmentedStepRows}, LaneStepRows={options.LaneStepRows}, "
            + $"KernelStepRows={options.KernelStepRows}{(options.KernelStepRows > 0 && !d.Plan.UsesKernels ? " (not used here)" : "")}, "
            + $"KernelWeightType={options.KernelWeightType}, "
            + $"KvCacheType={options.KvCacheType} (cache {d.CacheType}: {d.KvBytesPerPosition} bytes per cached position of a row, "
            + $"{d.KvCacheBytes / 1048576.0:F1} MiB for MaxBatch {d.MaxBatch}) ({service.Source})",
        ["small_step_rows"] = d.Plan.SmallStepRows,
        ["segmented_step_rows"] = d.Plan.SegmentedStepRows,
        ["lane_step_rows"] = d.Plan.LaneStepRows,
        ["kernel_rows"] = d.Plan.KernelStepRows,
        ["kernel_weights"] = d.Plan.KernelInt16Weights ? KernelWeightTypes.Int16 : KernelWeightTypes.Float32,
        // The roofline's KV bytes: a step reads kv_bytes_per_position for every cached position of every row.
        ["kv_cache_type"] = d.CacheType,
        ["kv_element_bytes"] = (double)d.CacheElement.EntryBytes(model.Manifest.Architecture.HeadSize) / model.Manifest.Architecture.HeadSize,
        ["kv_bytes_per_position"] = d.KvBytesPerPosition,
        ["kv_cache_bytes"] = d.KvCacheBytes,
        ["rss_mib"] = ResidentMib(),
    };
}

// Decode steps as the service runs them for clients that started at different times (bench/staggered.py): `rows` rows
// alone, row r at position 1 + r x (n_positions - 2) / rows at first (`shuffle`: those positions in a random order), each step one position on (a row past the last
// position starts again at 1; what its cache holds there does not change the work), random tokens. The ms a step over
// `steps` steps (median, mean, p10, p90, p99 and slowest), after n_positions steps of warm-up.
JsonObject StaggeredSteps(JsonObject r)
{
    var d = model!.Decoder;
    int rows = (int?)r["rows"] ?? d.MaxBatch, steps = (int?)r["steps"] ?? 200, n = model.Manifest.Architecture.NPositions;
    var rng = new Random((int?)r["seed"] ?? 1);
    var positions = Enumerable.Range(0, rows).Select(i => 1 + i * (n - 2) / rows).ToArray();
    if ((bool?)r["shuffle"] == true) rng.Shuffle(positions);   // slots in no order of their clients' start
    var tokens = new int[rows];
    for (int slot = 0; slot < rows; slot++) d.Prefill([model.Manifest.SosTokenId], 1, slot);
    var times = new List<double>();
    // Warm-up: n steps, so that every row has written every position of its cache once before the timed steps. A position
    // never written holds zeros (the cache is allocated zeroed), and the attention skips a block whose value scales are
    // all 0: the serving steps read what their clients wrote.
    for (int step = -n; step < steps; step++)
    {
        for (int i = 0; i < rows; i++) tokens[i] = rng.Next(model.Manifest.PaletteSize);
        var sw = Stopwatch.StartNew();
        d.Step(rows, tokens, positions);
        if (step >= 0) times.Add(sw.Elapsed.TotalMilliseconds);
        for (int i = 0; i < rows; i++) positions[i] = positions[i] + 1 < n ? positions[i] + 1 : 1;
    }
    double mean = times.Average();
    times.Sort();
    return new JsonObject { ["ms"] = times[times.Count / 2], ["mean_ms"] = mean, ["p10_ms"] = times[times.Count / 10], ["p90_ms"] = times[times.Count * 9 / 10],
        ["p99_ms"] = times[times.Count * 99 / 100], ["max_ms"] = times[^1], ["rows"] = rows, ["steps"] = steps, ["kernel_steps"] = d.KernelSteps };
}

// The int8 cache's one-pass attention kernel alone (Int8Blocks.Attend on byte pairs, one head of 32), over `rows` caches of
// `blocks` blocks of 16 positions filling about `mb` MB of keys and values, each row's whole cache read: the .NET side of
// bench/native_kernels.py, the same data pattern as bench/native_kernels.c. The best of 20 passes, in ns a block.
static unsafe JsonObject AttendBlocks(JsonObject r)
{
    const int blockBytes = 16 * (4 + 32);   // 16 positions' fp32 scales and 32 bytes each (Int8Blocks' layout)
    double mb = (double)r["mb"]!;
    int blocks = (int?)r["blocks"] ?? 25;
    long rows = Math.Max(1, (long)(mb * 1e6 / (2.0 * blockBytes * blocks))), bytes = rows * blocks * blockBytes;
    var keys = (byte*)NativeMemory.AlignedAlloc((nuint)bytes, 64);
    var values = (byte*)NativeMemory.AlignedAlloc((nuint)bytes, 64);
    try
    {
        var rng = new Random(1);
        for (long i = 0; i < bytes; i++) { keys[i] = (byte)rng.Next(256); values[i] = (byte)(rng.Next(255) - 127); }
        for (long b = 0; b < rows * blocks; b++)
            for (int i = 0; i < 16; i++)
            {
                ((float*)(keys + b * blockBytes))[i] = 0.01f + 0.001f * rng.Next(10);
                ((float*)(values + b * blockBytes))[i] = 0.01f;
            }
        int* query = stackalloc int[8];
        for (int i = 0; i < 8; i++) query[i] = rng.Next() & 0x3f3f3f3f;
        float* acc = stackalloc float[32];
        float sink = 0;
        double best = double.MaxValue;
        for (int pass = 0; pass < 20; pass++)
        {
            var sw = Stopwatch.StartNew();
            for (long row = 0; row < rows; row++)
            {
                byte* k = keys + row * blocks * blockBytes, v = values + row * blocks * blockBytes;
                sink += IGpt.Inference.Engine.Cpu.Int8Blocks.Attend(k, v, 0, k, v, blocks * 16, query, 0.02f, 1000, acc, false, vnni: false);
            }
            best = Math.Min(best, sw.Elapsed.TotalSeconds);
        }
        return new JsonObject { ["ns_per_block"] = best / (rows * blocks) * 1e9, ["mb"] = 2.0 * bytes / 1e6, ["sink"] = sink };
    }
    finally
    {
        NativeMemory.AlignedFree(keys);
        NativeMemory.AlignedFree(values);
    }
}

// Resident memory of the service's models: every package in `packages` loaded as the service loads them (one
// process, the service's settings, `kv_cache_type`), the RSS after loading, then after a greedy completion of
// MaxBatch images on each (every slot written; the cache is allocated zeroed, so its pages are resident from the
// load on), and each decoder's KV cache bytes.
JsonObject Memory(JsonObject r)
{
    model?.Dispose();
    model = null;
    var service = ServiceSettings.Read();
    var options = new InferenceOptions
    {
        UseCuda = false, IntraOpThreads = service.IntraOpThreads, AllowSpinning = service.AllowSpinning,
        SingleThreadStepFlops = service.SingleThreadStepFlops, SegmentedStepRows = service.SegmentedStepRows,
        LaneStepRows = service.LaneStepRows, KvCacheType = (string?)r["kv_cache_type"] ?? service.KvCacheType, KernelStepRows = service.KernelStepRows,
        MaxBatch = (int?)r["max_batch"] ?? new InferenceOptions().MaxBatch,
    };
    double before = ResidentMib();
    var models = new List<IGptModel>();
    try
    {
        foreach (var p in r["packages"]!.AsArray()) models.Add(IGptModel.Load((string)p!, options));
        double afterLoad = ResidentMib();
        var kv = new JsonObject();
        foreach (var m in models)
        {
            int rows = m.Manifest.Height / 2 * m.Manifest.Width;
            m.CompleteAsync(new CompletionRequest(new int[rows], options.MaxBatch, SamplingOptions.Greedy, 0), CancellationToken.None)
                .GetAwaiter().GetResult();
            kv[m.Manifest.Id] = m.Decoder.KvCacheBytes;
        }
        return new JsonObject
        {
            ["kv_cache_type"] = options.KvCacheType, ["max_batch"] = options.MaxBatch,
            ["rss_mib_before_load"] = before, ["rss_mib_after_load"] = afterLoad, ["rss_mib_after_max_batch"] = ResidentMib(),
            ["peak_rss_mib"] = ResidentMib("VmHWM:"), ["kv_cache_bytes"] = kv,
        };
    }
    finally
    {
        foreach (var m in models) m.Dispose();
    }
}

static double ResidentMib(string field = "VmRSS:")
{
    foreach (var line in File.ReadLines("/proc/self/status"))
        if (line.StartsWith(field, StringComparison.Ordinal))
            return long.Parse(line[field.Length..].Trim().Split(' ')[0], System.Globalization.CultureInfo.InvariantCulture) / 1024.0;
    return double.NaN;
}

JsonObject Complete(JsonObject r)
{
    var m = model ?? throw new InvalidOperationException("load first");
    if (method.StartsWith("igpt-loop", StringComparison.Ordinal)) return CompleteLoop(m, Protocol.Ints(r["prompt"]), (int)r["batch"]!);
    int[] prompt = Protocol.Ints(r["prompt"]);
    int batch = (int)r["batch"]!;
    var request = new CompletionRequest(prompt, batch, SamplingOptions.Greedy, 0);
    long allocated = GC.GetTotalAllocatedBytes(precise: true), kvRead = m.Decoder.KvBytesRead;
    var sw = Stopwatch.StartNew();
    var result = m.CompleteAsync(request, CancellationToken.None).GetAwaiter().GetResult();
    double total = sw.Elapsed.TotalMilliseconds;
    allocated = GC.GetTotalAllocatedBytes(precise: true) - allocated;
    var first = result.Images[0];
    bool agree = result.Images.All(im => im.AsSpan().SequenceEqual(first));
    return new JsonObject
    {
        ["tokens"] = Protocol.Array(first[prompt.Length..]),
        ["prefill_ms"] = result.Prefill.TotalMilliseconds,
        ["decode_ms"] = result.Decode.TotalMilliseconds,
        ["total_ms"] = total,
        ["steps"] = result.GeneratedTokens - 1,
        ["rows_agree"] = agree,
        ["managed_alloc_bytes"] = allocated,
        ["kv_bytes_read"] = m.Decoder.KvBytesRead - kvRead,   // the decode steps' cached keys and values, as the path read them
    };
}

// Greedy completion straight on the decoder (batch identical rows), timed like CompletionResult.
static JsonObject CompleteLoop(IGptModel m, int[] prompt, int batch)
{
    var decoder = m.Decoder;
    if (batch > decoder.MaxBatch) throw new ArgumentException($"batch {batch} > MaxBatch {decoder.MaxBatch}");
    int total = m.Manifest.TokensPerImage, k = prompt.Length, v = decoder.VocabSize;
    var sampler = new Sampler(m.Manifest.PaletteSize);
    var rng = new Xoshiro256StarStar(0);
    var images = new int[batch][];
    for (int r = 0; r < batch; r++)
    {
        images[r] = new int[total];
        prompt.CopyTo(images[r], 0);
    }
    var stepTokens = new int[batch];
    var stepPositions = new int[batch];
    // As the scheduler says it: the rows are one request's samples, sharing SOS + prompt.
    var groups = new int[batch];
    var shared = Enumerable.Repeat(k + 1, batch).ToArray();
    long allocated = GC.GetTotalAllocatedBytes(precise: true), kvRead = decoder.KvBytesRead;
    var sw = Stopwatch.StartNew();
    var prefillTokens = new int[k + 1];
    prefillTokens[0] = m.Manifest.SosTokenId;
    prompt.CopyTo(prefillTokens, 1);
    var last = decoder.Prefill(prefillTokens, 1).Slice(k * v, v);
    int firstToken = sampler.Pick(last, SamplingOptions.Greedy, ref rng);
    if (batch > 1) decoder.ReplicateSlot0(batch, k + 1);
    double prefillMs = sw.Elapsed.TotalMilliseconds;
    var decodeClock = Stopwatch.StartNew();
    for (int r = 0; r < batch; r++) images[r][k] = firstToken;
    for (int t = k + 1; t < total; t++)
    {
        for (int r = 0; r < batch; r++)
        {
            stepTokens[r] = images[r][t - 1];
            stepPositions[r] = t;
        }
        var logits = decoder.Step(batch, stepTokens, stepPositions, groups, shared);
        for (int r = 0; r < batch; r++)
            images[r][t] = sampler.Pick(logits.Slice(r * v, v), SamplingOptions.Greedy, ref rng);
    }
    double decodeMs = decodeClock.Elapsed.TotalMilliseconds;
    allocated = GC.GetTotalAllocatedBytes(precise: true) - allocated;
    var first = images[0];
    return new JsonObject
    {
        ["tokens"] = Protocol.Array(first[k..]),
        ["prefill_ms"] = prefillMs,
        ["decode_ms"] = decodeMs,
        ["total_ms"] = sw.Elapsed.TotalMilliseconds,
        ["steps"] = total - k - 1,
        ["rows_agree"] = images.All(im => im.AsSpan().SequenceEqual(first)),
        ["managed_alloc_bytes"] = allocated,
        ["kv_bytes_read"] = decoder.KvBytesRead - kvRead,
    };
}

JsonObject Classify(JsonObject r)
{
    var m = model ?? throw new InvalidOperationException("load first");
    int batch = (int)r["batch"]!, reps = (int)r["reps"]!;
    var rng = new Random(0);
    var images = Enumerable.Range(0, batch)
        .Select(_ => Enumerable.Range(0, m.Manifest.TokensPerImage).Select(_ => rng.Next(m.Manifest.PaletteSize)).ToArray())
        .ToArray();
    var times = new List<double>();
    for (int i = 0; i < reps; i++)
    {
        var sw = Stopwatch.StartNew();
        m.ClassifyBatchAsync(images, CancellationToken.None).GetAwaiter().GetResult();
        times.Add(sw.Elapsed.TotalMilliseconds);
    }
    return new JsonObject { ["ms"] = Protocol.Array(times) };
}

// ONNX Runtime's profiler over the decoder as the library drives it: the session made by the library's
// StepPlanner (the service's session options) with profiling added, a KvCacheDecoder over it, a prefill of
// `prompt` then `steps` decode steps at `batch`. Returns the profile's path (a Chrome trace JSON; bench/profile.py sums it per op).
static JsonObject Profile(JsonObject r)
{
    string package = (string)r["package"]!;
    var manifest = ModelManifest.Load(package);
    int batch = (int)r["batch"]!, steps = (int)r["steps"]!, threads = (int?)r["threads"] ?? 0;
    int[] prompt = Protocol.Ints(r["prompt"]);
    var planner = new StepPlanner(new InferenceOptions
    {
        UseCuda = false, IntraOpThreads = threads, AllowSpinning = (bool?)r["allow_spinning"] ?? false, MaxBatch = Math.Max(batch, 1),
    });
    var session = planner.CreateSession(manifest.ResolvePath(manifest.Files.Decoder.Cpu.Path), useCuda: false, cudaGraphs: false, configure: so =>
    {
        so.EnableProfiling = true;
        so.ProfileOutputPathPrefix = Path.Combine((string)r["out_dir"]!, $"ort_{manifest.Id}_b{batch}");
    });
    using var decoder = new KvCacheDecoder(session, manifest, Math.Max(batch, 1), new HostMemory(), Microsoft.ML.OnnxRuntime.Tensors.TensorElementType.Float);
    var prefill = new int[prompt.Length + 1];
    prefill[0] = manifest.SosTokenId;
    prompt.CopyTo(prefill, 1);
    decoder.Prefill(prefill, 1);
    if (batch > 1) decoder.ReplicateSlot0(batch, prefill.Length);
    var tokens = new int[batch];
    var positions = new int[batch];
    var sw = Stopwatch.StartNew();
    for (int t = 0; t < steps; t++)
    {
        for (int b = 0; b < batch; b++) (tokens[b], positions[b]) = (t % manifest.PaletteSize, prefill.Length + t);
        decoder.Step(batch, tokens, positions);
    }
    double ms = sw.Elapsed.TotalMilliseconds / steps;
    string file = session.EndProfiling();
    return new JsonObject { ["profile"] = Path.GetFullPath(file), ["ms_per_step"] = ms };
}

// The prototype decode loop (ProtoDecoder) with switches, to measure library changes.
static JsonObject Proto(JsonObject r)
{
    var manifest = ModelManifest.Load((string)r["package"]!);
    var o = new ProtoDecoder.Options((bool?)r["tight_mask"] ?? false, (bool?)r["allow_spinning"] ?? false, (int?)r["threads"] ?? 0,
        (bool?)r["kv16"] ?? false, (bool?)r["clear_kv"] ?? true, (bool?)r["spin_stop"] ?? false);
    using var d = new ProtoDecoder(manifest, (int)r["batch"]!, o);
    var (tokens, prefill, decode, steps) = d.Complete(Protocol.Ints(r["prompt"]));
    return new JsonObject
    {
        ["tokens"] = Protocol.Array(tokens), ["prefill_ms"] = prefill, ["decode_ms"] = decode, ["steps"] = steps,
        ["total_ms"] = prefill + decode, ["rows_agree"] = true,
    };
}

// fp32 [n, n] x [n, n] through ONNX Runtime's CPU MatMul (MLAS), all cores.
static JsonObject Gemm(JsonObject r)
{
    int n = (int?)r["n"] ?? 2048, reps = (int?)r["reps"] ?? 5, threads = (int?)r["threads"] ?? Environment.ProcessorCount;
    using var so = new SessionOptions { IntraOpNumThreads = threads, GraphOptimizationLevel = GraphOptimizationLevel.ORT_ENABLE_ALL };
    using var session = new InferenceSession((string)r["model"]!, so);
    var rng = new Random(1);
    var a = new float[n * n];
    var b = new float[n * n];
    for (int i = 0; i < a.Length; i++) (a[i], b[i]) = ((float)rng.NextDouble(), (float)rng.NextDouble());
    var c = new float[n * n];
    using var va = OrtValue.CreateTensorValueFromMemory(a, [n, n]);
    using var vb = OrtValue.CreateTensorValueFromMemory(b, [n, n]);
    using var vc = OrtValue.CreateTensorValueFromMemory(c, [n, n]);
    using var run = new RunOptions();
    using var binding = session.CreateIoBinding();
    binding.BindInput("A", va);
    binding.BindInput("B", vb);
    binding.BindOutput("C", vc);
    session.RunWithBinding(run, binding);
    var gflops = new List<double>();
    for (int i = 0; i < reps; i++)
    {
        var sw = Stopwatch.StartNew();
        session.RunWithBinding(run, binding);
        gflops.Add(2.0 * n * n * n / sw.Elapsed.TotalSeconds / 1e9);
    }
    return new JsonObject { ["gflops"] = Protocol.Array(gflops) };
}

// The kernel steps' products alone (RowKernels.Multiply over PanelWeights, as KernelStep runs them) on one thread: every
// product of a decode step of `n_layer` layers x `n_embd` (c_attn, c_proj, c_fc of width `inner`, mlp.c_proj) and the head
// (`vocab` columns), for `rows` rows, with random weights; `weights` "int16" on int16 panels (the rows quantized once per
// product, as a step quantizes them once per stage), else fp32. `evict_mib` > 0 streams that many MiB through the caches
// before each repetition, so the weights come from DRAM as in a long step whose KV cache evicts them; 0 leaves them wherever
// the last repetition did (L2 or L3). Reports GFLOP/s per repetition.
static unsafe JsonObject Products(JsonObject r)
{
    int embd = (int)r["n_embd"]!, layers = (int)r["n_layer"]!, inner = (int?)r["inner"] ?? 4 * embd, vocab = (int)r["vocab"]!;
    int rows = (int)r["rows"]!, reps = (int?)r["reps"] ?? 15;
    long evict = ((long?)r["evict_mib"] ?? 0) << 20;
    bool int16 = (string?)r["weights"] == KernelWeightTypes.Int16;
    if (!KernelStep.Supported) throw new PlatformNotSupportedException("the kernels need AVX-512");
    var shapes = new List<(int K, int N)>();
    for (int l = 0; l < layers; l++) shapes.AddRange([(embd, 3 * embd), (embd, embd), (embd, inner), (inner, embd)]);
    shapes.Add((embd, vocab));
    var owned = new List<IntPtr>();
    float* Alloc(long floats)
    {
        var p = (float*)NativeMemory.AlignedAlloc((nuint)(floats * 4), 64);
        owned.Add((IntPtr)p);
        return p;
    }
    try
    {
        var rng = new Random(3);
        var weights = new List<(IntPtr, int, int, bool)>();
        long flops = 0;
        foreach (var (k, n) in shapes)
        {
            float* w = Alloc((long)k * n);
            for (long i = 0; i < (long)k * n; i++) w[i] = (float)(rng.NextDouble() - 0.5) * 0.1f;
            weights.Add(((IntPtr)w, k, n, int16));
            flops += 2L * rows * k * n;
        }
        using var panels = new PanelWeights(weights);
        int widest = Math.Max(3 * embd, Math.Max(inner, vocab));
        float* x = Alloc((long)rows * widest), y = Alloc((long)rows * widest), bias = Alloc(widest), scales = Alloc(rows);
        int qStride = (widest + 1) / 2;
        int* q = (int*)Alloc((long)rows * qStride);
        for (long i = 0; i < (long)rows * widest; i++) x[i] = (float)(rng.NextDouble() - 0.5);
        new Span<float>(bias, widest).Clear();
        byte* sweep = evict > 0 ? (byte*)Alloc(evict / 4) : null;
        long sink = 0;
        var gflops = new List<double>();
        for (int rep = 0; rep <= reps; rep++)
        {
            for (long i = 0; i < evict; i += 64) sink += sweep[i]++;
            var sw = Stopwatch.StartNew();
            for (int s = 0; s < shapes.Count; s++)
            {
                var (k, n) = shapes[s];
                if (!int16)
                {
                    RowKernels.Multiply(x, k, rows, panels[s], 0, n, bias, y, n, RowOutput.Store);
                    continue;
                }
                RowKernels.QuantizeRows(x, k, rows, k, q, qStride, scales);
                RowKernels.MultiplyQuantized(x, k, q, qStride, scales, rows, panels[s], 0, n, bias, y, n, RowOutput.Store);
            }
            double seconds = sw.Elapsed.TotalSeconds;
            if (rep > 0) gflops.Add(flops / seconds / 1e9);   // rep 0 warms up (and compiles)
        }
        return new JsonObject { ["gflops"] = Protocol.Array(gflops), ["flops"] = flops, ["checksum"] = sink + (long)y[0] };
    }
    finally
    {
        foreach (var p in owned) NativeMemory.AlignedFree((void*)p);
    }
}

// The library's attention kernel (CachedAttention) alone over synthetic caches (`kv_cache_type`: float32, float16 or int8;
// `in_place` false: a compressed cache converted into scratch for single rows too) of `layers` layers:
// `rows` rows at cache length `length`, the first `shared` entries common to all rows (one request's
// samples) or not, split into `lanes` lanes run concurrently as a segmented step runs them. Reports the
// bytes of keys and values it had to read per step and the resulting GB/s.
static unsafe JsonObject Attention(JsonObject r)
{
    int heads = (int)r["heads"]!, headSize = (int)r["head_size"]!, positions = (int)r["positions"]!, rows = (int)r["rows"]!;
    int length = (int)r["length"]!, layers = (int?)r["layers"] ?? 8, shared = (int?)r["shared"] ?? 0;
    int lanes = Math.Min(rows, (int?)r["lanes"] ?? Environment.ProcessorCount);
    double seconds = (double?)r["seconds"] ?? 1.0;
    bool vectorized = CachedAttention.CanVectorize(headSize) && ((bool?)r["vectorized"] ?? true);
    var element = KvCacheTypes.Parse((string?)r["kv_cache_type"] ?? KvCacheTypes.Float32);
    bool inPlace = (bool?)r["in_place"] ?? true;
    long perLayer = (long)rows * heads * positions * headSize;
    var buffers = new List<IntPtr>();
    float* Alloc(long floats)
    {
        var p = (float*)NativeMemory.AlignedAlloc((nuint)(floats * 4), 64);
        var rng = new Random(buffers.Count);
        for (long i = 0; i < floats; i++) p[i] = (float)rng.NextDouble() - 0.5f;
        buffers.Add((IntPtr)p);
        return p;
    }
    try
    {
        var keys = new IntPtr[layers];
        var values = new IntPtr[layers];
        IntPtr Cache(KvPart part)
        {
            var p = Alloc(perLayer);
            if (element == KvElement.Float32) return (IntPtr)p;
            long headBytes = element.HeadBytes(headSize, positions);
            var c = (byte*)Alloc((long)rows * heads * headBytes / 4 + 16);
            for (long h = 0; h < (long)rows * heads; h++)   // each (row, head) of a layer: its positions, as the cache stores them
                KvCodec.Encode(element, part, p + h * positions * headSize, c + h * headBytes, 0, positions, headSize);
            return (IntPtr)c;
        }
        for (int l = 0; l < layers; l++) (keys[l], values[l]) = (Cache(KvPart.Key), Cache(KvPart.Value));
        float* qkv = Alloc((long)rows * 3 * heads * headSize), output = Alloc((long)rows * heads * headSize);
        var position = Enumerable.Repeat(length - 1, rows).ToArray();  // the new entry at length-1: `length` read per row
        var groups = shared > 0 ? new int[rows] : [];
        var sharedLengths = shared > 0 ? Enumerable.Repeat(shared, rows).ToArray() : [];
        using var attention = new CachedAttention(heads, headSize, positions, rows, lanes, vectorized, element, inPlace);
        using var team = new WorkerTeam(lanes, "bench-attention");
        attention.CheckGroups(rows, position, groups, sharedLengths);
        // As a kernel step sets it: prefetch the entries when the rows read more of their own than PrefetchAboveBytes.
        attention.ChoosePrefetch((long)rows * (length - shared), layers);
        if ((bool?)r["prefetch"] is { } prefetch) attention.PrefetchEntries = prefetch;
        for (int lane = 0; lane < lanes; lane++)
        {
            var (first, count) = LaneRunner.LaneRows(rows, lanes, lane);
            attention.Plan(lane, first, count, position, groups, sharedLengths);
        }
        Action<int, int> step = (lane, _) =>
        {
            for (int l = 0; l < layers; l++) attention.Run(lane, qkv, (void*)keys[l], (void*)values[l], output);
        };
        team.Run(lanes, step);  // warm up
        var times = new List<double>();
        var total = Stopwatch.StartNew();
        while (total.Elapsed.TotalSeconds < seconds || times.Count < 3)
        {
            var sw = Stopwatch.StartNew();
            team.Run(lanes, step);
            times.Add(sw.Elapsed.TotalMilliseconds);
        }
        times.Sort();
        double ms = times[times.Count / 2];
        // Bytes read: each lane reads the shared entries once, and every row its own.
        long entries = shared > 0 ? (long)lanes * shared + (long)rows * (length - shared) : (long)rows * length;
        double bytes = 2.0 * element.EntryBytes(headSize) * layers * heads * entries;
        return new JsonObject
        {
            ["ms"] = ms, ["bytes"] = bytes, ["gbps"] = bytes / ms / 1e6, ["vectorized"] = vectorized, ["lanes"] = lanes,
            ["kv_cache_type"] = KvCacheTypes.Name(element), ["in_place"] = inPlace, ["prefetch"] = attention.PrefetchEntries,
        };
    }
    finally
    {
        foreach (var p in buffers) NativeMemory.AlignedFree((void*)p);
    }
}

// Streaming read: every core sums its share of a buffer far larger than the caches (AVX2 when present).
static unsafe JsonObject Bandwidth(JsonObject r)
{
    long bytes = ((long?)r["mib"] ?? 1024) * 1024 * 1024;
    int reps = (int?)r["reps"] ?? 5, threads = Environment.ProcessorCount;
    var p = (float*)NativeMemory.AlignedAlloc((nuint)bytes, 64);
    try
    {
        long count = bytes / 4;
        new Span<float>(p, (int)Math.Min(count, int.MaxValue)).Fill(1f);
        for (long i = int.MaxValue; i < count; i++) p[i] = 1f;
        var gbps = new List<double>();
        float sink = 0;
        for (int rep = 0; rep <= reps; rep++)
        {
            var partial = new float[threads];
            var sw = Stopwatch.StartNew();
            Parallel.For(0, threads, new ParallelOptions { MaxDegreeOfParallelism = threads }, t =>
            {
                long chunk = count / threads / 32 * 32;
                float* s = p + t * chunk;
                var acc0 = Vector256<float>.Zero; var acc1 = acc0; var acc2 = acc0; var acc3 = acc0;
                for (long i = 0; i < chunk; i += 32)
                {
                    acc0 += Vector256.Load(s + i);
                    acc1 += Vector256.Load(s + i + 8);
                    acc2 += Vector256.Load(s + i + 16);
                    acc3 += Vector256.Load(s + i + 24);
                }
                partial[t] = Vector256.Sum(acc0 + acc1 + acc2 + acc3);
            });
            double seconds = sw.Elapsed.TotalSeconds;
            sink += partial.Sum();
            if (rep > 0) gbps.Add(count / threads / 32 * 32 * threads * 4.0 / seconds / 1e9);  // rep 0 warms up
        }
        return new JsonObject { ["gbps"] = Protocol.Array(gbps), ["checksum"] = sink };
    }
    finally
    {
        NativeMemory.AlignedFree(p);
    }
}
