using System.Globalization;
using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;

namespace IGpt.Inference.Engine;

/// <summary>
/// The one owner of "how is a step run": creates every ONNX Runtime session the library runs (one set of session
/// options, CPU or CUDA) and decides, once per model, which CPU step paths it gets (<see cref="CpuStepPlan"/>):
/// the thresholds from <see cref="InferenceOptions"/>, whether the model is eligible for row lanes and step
/// segments, and the segments' cost rule. The choices that depend on the machine or the package are virtual,
/// so that a test can run a path this machine would not pick (fp16 graphs or portable attention on the CPU).
/// </summary>
internal class StepPlanner(InferenceOptions options)
{
    public InferenceOptions Options { get; } = options;

    /// <summary>When segments beat the single graph; see <see cref="SegmentCostRule"/>.</summary>
    public SegmentCostRule SegmentCost { get; init; } = SegmentCostRule.Default;

    /// <summary>Says once per process why CUDA could not be used (see <see cref="ProviderFallbackLog"/>).</summary>
    public ProviderFallbackLog Fallbacks { get; init; } = ProviderFallbackLog.Process;

    /// <summary>ONNX Runtime intra-op threads per session: IntraOpThreads, or one per core when it is 0.</summary>
    public int IntraOpThreads => Options.IntraOpThreads > 0 ? Options.IntraOpThreads : Environment.ProcessorCount;

    /// <summary>The graph the CPU provider runs of a decoder or classifier: the fp32 one.</summary>
    public virtual ModelFile CpuGraph(ModelGraphFiles files) => files.Cpu;

    /// <summary>The attention kernels step segments would run with on this CPU; None keeps the model on the single graph.</summary>
    public virtual AttentionKernel SegmentAttention(int headSize) =>
        Cpu.CachedAttention.CanVectorize(headSize) ? AttentionKernel.Vectorized : AttentionKernel.None;

    /// <summary>
    /// How the CPU decoder in <paramref name="file"/> runs its steps. <paramref name="kernelWeights"/>: whether the package's
    /// weights are in memory for the library's kernels, as they name and shape them (<see cref="Cpu.KernelStep.Check"/>).
    /// When the kernels take every step up to MaxBatch, the decoder gets no other step sessions (one-thread, segments).
    /// </summary>
    public CpuStepPlan PlanCpuSteps(ModelManifest manifest, ModelFile file, TensorElementType kvType, bool kernelWeights)
    {
        var a = manifest.Architecture;
        int kernelRows = kernelWeights ? KernelStepRows(manifest, kvType) : 0;
        int kernelAlone = Math.Min(kernelRows, KernelAloneRows(manifest));
        int kernelLanes = kernelRows > 0 ? LaneStepRows(manifest) : 0;
        var compressedCache = CompressedCache(manifest, file, kvType, out _);
        bool int16Weights = kernelRows > 0 && Options.KernelWeightType == KernelWeightTypes.Int16;
        if (kernelRows >= Options.MaxBatch)
            return new CpuStepPlan(0, 0, 0, IntraOpThreads, AttentionKernel.None, SegmentCost, a.NLayer, a.NEmbd, 4L * manifest.MatmulParameters,
                compressedCache, KernelStepRows: kernelRows, KernelAloneRows: kernelAlone, KernelLaneRows: kernelLanes, KernelInt16Weights: int16Weights);
        if (compressedCache is { } compressed)
        {
            // Every step as segments, on the AVX-512 kernels where the CPU has them, else the portable loops; no
            // one-thread session or row lanes (they run the graph, which cannot read the cache). One-row steps of a
            // model too big for lanes run the graph with all the threads over the decoder's fp32 row instead.
            var kernel = SegmentAttention(a.HeadSize) is var k && k != AttentionKernel.None ? k : AttentionKernel.Portable;
            bool oneRowGraph = IntraOpThreads > 1 && !FitsLanes(manifest);
            return new CpuStepPlan(0, 0, 1, IntraOpThreads, kernel, SegmentCost, a.NLayer, a.NEmbd, 4L * manifest.MatmulParameters, compressed,
                oneRowGraph, kernelRows, kernelAlone, kernelLanes, int16Weights);
        }
        bool segments = UsesStepSegments(manifest, file, kvType);
        return new CpuStepPlan(SmallStepRows(manifest), LaneStepRows(manifest), segments ? Options.SegmentedStepRows : 0, IntraOpThreads,
            segments ? SegmentAttention(a.HeadSize) : AttentionKernel.None, SegmentCost, a.NLayer, a.NEmbd, 4L * manifest.MatmulParameters,
            KernelStepRows: kernelRows, KernelAloneRows: kernelAlone, KernelLaneRows: kernelLanes, KernelInt16Weights: int16Weights);
    }

    /// <summary>
    /// CPU steps of at most this many rows are computed by the library's kernels (<see cref="InferenceOptions.KernelStepRows"/>,
    /// at most MaxBatch), or 0: the option is 0, the CPU does not run them (AVX-512, and a head size the attention kernels
    /// take), the graph is not fp32, or the package's weights are not held in memory for the kernels to read (format 2 with
    /// <see cref="InferenceOptions.ShareWeights"/>).
    /// </summary>
    public virtual int KernelStepRows(ModelManifest manifest, TensorElementType kvType) =>
        Options.KernelStepRows > 0 && Cpu.KernelStep.Supported && kvType == TensorElementType.Float
        && SegmentAttention(manifest.Architecture.HeadSize) == AttentionKernel.Vectorized
        && Options.ShareWeights && manifest.Files.Weights.Any(w => w.Dtype == "float32")
            ? Math.Min(Options.KernelStepRows, Options.MaxBatch) : 0;

    /// <summary>
    /// Kernel steps of at most this many rows run on the calling thread alone: as many as keep the step's products, rows x 2 x
    /// matmul weights, within <see cref="InferenceOptions.SingleThreadStepFlops"/> (attention not counted: it is shared out by
    /// heads, and the measurements that set this rule ranked the steps by their products). 0 = none (the option is off, or
    /// there is one step thread anyway).
    /// </summary>
    public int KernelAloneRows(ModelManifest manifest)
    {
        if (IntraOpThreads <= 1 || Options.SingleThreadStepFlops <= 0) return 0;
        return (int)Math.Min(Options.MaxBatch, Options.SingleThreadStepFlops / (2L * manifest.MatmulParameters));
    }

    /// <summary>
    /// How many slots a CPU decode step may hold and still run on a one-thread session: as many as keep the
    /// step's FLOP bound, rows x (2 x matmul weights + 4 x layers x width x n_positions of attention), within
    /// <see cref="InferenceOptions.SingleThreadStepFlops"/>. 0 = none (the option is off, or the sessions have
    /// one thread anyway).
    /// </summary>
    public int SmallStepRows(ModelManifest manifest)
    {
        if (IntraOpThreads <= 1 || Options.SingleThreadStepFlops <= 0) return 0;
        var a = manifest.Architecture;
        // Attention at the longest cache: the step's bound.
        long flopsPerRow = 2L * manifest.MatmulParameters + 4L * a.NLayer * a.NEmbd * a.NPositions;
        return (int)Math.Min(Options.MaxBatch, Options.SingleThreadStepFlops / flopsPerRow);
    }

    /// <summary>
    /// Steps of at least this many rows run as row lanes: <see cref="InferenceOptions.LaneStepRows"/>, when there are
    /// several threads and the model's fp32 weights are at most <see cref="InferenceOptions.LaneMaxWeightBytes"/>
    /// (every lane reads all of them); else 0.
    /// </summary>
    public int LaneStepRows(ModelManifest manifest)
    {
        if (IntraOpThreads <= 1 || Options.LaneStepRows <= 1) return 0;
        return FitsLanes(manifest) ? Options.LaneStepRows : 0;
    }

    /// <summary>Whether the model's fp32 weights are small enough for every step thread to read them all (<see cref="InferenceOptions.LaneMaxWeightBytes"/>).</summary>
    private bool FitsLanes(ModelManifest manifest) => 4L * manifest.MatmulParameters <= Options.LaneMaxWeightBytes;

    /// <summary>
    /// Whether CPU decode steps may run as the package's step segments with the library's attention: the package
    /// has them, the option is on, the KV cache is fp32 and there are attention kernels for this CPU and head size.
    /// </summary>
    public bool UsesStepSegments(ModelManifest manifest, ModelFile file, TensorElementType kvType) =>
        Options.SegmentedStepRows > 0 && file.StepSegments.Count > 0 && kvType == TensorElementType.Float
        && SegmentAttention(manifest.Architecture.HeadSize) != AttentionKernel.None;

    /// <summary>
    /// The compressed element type the CPU decoder in <paramref name="file"/> stores its KV cache in
    /// (<see cref="InferenceOptions.KvCacheType"/>), or null: float32 asked for, the graph's own cache is not fp32 (the
    /// fp16 graph, which the CPU runs only in tests), or it cannot be done, and then <paramref name="fallback"/> says why.
    /// </summary>
    public KvElement? CompressedCache(ModelManifest manifest, ModelFile file, TensorElementType kvType, out string? fallback)
    {
        fallback = null;
        var wanted = Options.KvElement;
        if (wanted == KvElement.Float32 || kvType != TensorElementType.Float) return null;
        if (file.StepSegments.Count == 0)
        {
            fallback = $"the package has no step segments (files.decoder.cpu.step_segments), and only they read a {KvCacheTypes.Name(wanted)} cache";
            return null;
        }
        return wanted;
    }

    /// <summary>The package's step segment sessions, one intra-op thread each: a segmented step runs its lanes concurrently.</summary>
    public InferenceSession[] CreateSegmentSessions(ModelManifest manifest, ModelFile file, PackageWeights? weights)
    {
        var sessions = new List<InferenceSession>();
        try
        {
            foreach (var path in file.StepSegments) sessions.Add(CreatePackageSession(manifest, path, weights, intraOpThreads: 1));
            return [.. sessions];
        }
        catch
        {
            foreach (var s in sessions) s.Dispose();
            throw;
        }
    }

    /// <summary>
    /// A CPU session of a package file, with the package's weights shared with its other sessions (format 2; null for a
    /// format 1 package, whose graphs hold their own); a file ONNX Runtime cannot load is the package's fault.
    /// </summary>
    public InferenceSession CreatePackageSession(ModelManifest manifest, string relativePath, PackageWeights? weights,
        int? intraOpThreads = null)
    {
        try
        {
            return CreateSession(manifest.ResolvePath(relativePath), useCuda: false, cudaGraphs: false, intraOpThreads,
                weights is null ? null : so => weights.AddTo(so, relativePath), weights?.PrePacked);
        }
        catch (OnnxRuntimeException e)
        {
            throw new ModelPackageException($"{relativePath}: cannot load: {FirstLine(e.Message)}", e);
        }
    }

    /// <summary>
    /// A session with the library's options; <paramref name="configure"/> may add to them (the benchmark's profiler).
    /// With <paramref name="useCuda"/> it throws OnnxRuntimeException when the provider or the CUDA libraries it links cannot load.
    /// </summary>
    public InferenceSession CreateSession(string path, bool useCuda, bool cudaGraphs, int? intraOpThreads = null,
        Action<SessionOptions>? configure = null, PrePackedWeightsContainer? prePacked = null)
    {
        using var so = new SessionOptions
        {
            GraphOptimizationLevel = GraphOptimizationLevel.ORT_ENABLE_ALL,
            ExecutionMode = ExecutionMode.ORT_SEQUENTIAL,
            IntraOpNumThreads = intraOpThreads ?? IntraOpThreads,
            EnableCpuMemArena = true,
            LogSeverityLevel = OrtLoggingLevel.ORT_LOGGING_LEVEL_ERROR,
        };
        if (!Options.AllowSpinning) so.AddSessionConfigEntry("session.intra_op.allow_spinning", "0");
        // Spin between the ops of one run (a decode step is many sub-millisecond ops) but stop when the run
        // ends, so idle models and the web server are not starved between steps.
        else so.AddSessionConfigEntry("session.force_spinning_stop", "1");
        configure?.Invoke(so);
        if (!useCuda) return prePacked is null ? new InferenceSession(path, so) : new InferenceSession(path, so, prePacked);
        using var cuda = new OrtCUDAProviderOptions();
        cuda.UpdateOptions(CudaProviderOptions(Options, cudaGraphs));
        so.AppendExecutionProvider_CUDA(cuda);
        return new InferenceSession(path, so);
    }

    /// <summary>The CUDA provider's settings (ONNX Runtime's names and value formats).</summary>
    public static Dictionary<string, string> CudaProviderOptions(InferenceOptions options, bool cudaGraphs)
    {
        var o = new Dictionary<string, string>
        {
            ["device_id"] = options.CudaDeviceId.ToString(CultureInfo.InvariantCulture),
            // Grow the arena by what is asked for, not the next power of two: the KV cache is one large request
            // per layer, and power-of-two growth would reserve up to twice it.
            ["arena_extend_strategy"] = "kSameAsRequested",
            ["do_copy_in_default_stream"] = "1",
            ["enable_cuda_graph"] = cudaGraphs ? "1" : "0",
        };
        if (options.CudaMemoryLimitBytes > 0) o["gpu_mem_limit"] = options.CudaMemoryLimitBytes.ToString(CultureInfo.InvariantCulture);
        return o;
    }

    public static string FirstLine(string message)
    {
        int i = message.IndexOfAny(['\r', '\n']);
        return i < 0 ? message : message[..i];
    }
}
