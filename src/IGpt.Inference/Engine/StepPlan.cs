namespace IGpt.Inference.Engine;

/// <summary>The ways a decode step runs (all over the same <see cref="DecoderBuffers"/>).</summary>
internal enum StepPath
{
    /// <summary>The decoder graph in one run on the decoder's session (its intra-op threads; the only path on CUDA).</summary>
    Graph,
    /// <summary>The decoder graph in one run on the one-thread session: steps too small to share out.</summary>
    OneThreadGraph,
    /// <summary>Row lanes: the rows split between the step threads, each running the one-thread session.</summary>
    Lanes,
    /// <summary>The package's step segments with the library's attention, in lanes (<see cref="Cpu.SegmentedStep"/>).</summary>
    Segments,
    /// <summary>The step computed by the library's own kernels on the step threads (<see cref="Cpu.KernelStep"/>).</summary>
    Kernels,
}

/// <summary>Which attention kernels step segments run: none (segments are not used), AVX-512, or portable loops.</summary>
internal enum AttentionKernel { None, Vectorized, Portable }

/// <summary>
/// When a step runs faster as segments than as the single graph. A segmented step splits its rows between threads
/// that each read every weight (twice the weight traffic with two threads) and runs n_layer + 1 sessions; it gains in
/// attention (no per-(row, head) calls as in GroupQueryAttention, and a request's shared prompt read once per lane).
/// So it pays with many rows, or with caches long against the weights. The thresholds come from same-process A/Bs
/// with identical greedy tokens on the 2-core dev VM; the figures are in benchmarks/README.md.
/// </summary>
/// <param name="MinRows">Steps of at least this many rows run as segments whatever their caches (4 rows or more a lane).</param>
/// <param name="MinKvToWeights">Else: the rows' whole caches must be at least this many times the fp32 weights...</param>
/// <param name="MinKvBytesPerRow">...and at least this many bytes a row.</param>
internal sealed record SegmentCostRule(int MinRows, long MinKvToWeights, long MinKvBytesPerRow)
{
    public static SegmentCostRule Default { get; } = new(8, 3, 2L << 20);

    /// <summary>Whether a step over rows at <paramref name="positions"/> of a model layers x embd with these fp32 weight bytes pays off as segments.</summary>
    public bool PaysOff(int layers, int embd, long weightBytes, ReadOnlySpan<int> positions)
    {
        if (positions.Length >= MinRows) return true;
        long entries = 0;
        foreach (int p in positions) entries += p + 1;
        long kvBytes = 2L * 4 * layers * embd * entries;   // every row's whole cache, as GroupQueryAttention reads it
        return kvBytes >= MinKvToWeights * weightBytes && kvBytes >= positions.Length * MinKvBytesPerRow;
    }
}

/// <summary>
/// How one model's decode steps run on the CPU, decided once by <see cref="StepPlanner"/>: the row thresholds of
/// each path (0 = never) and the segments' cost rule. <see cref="Choose"/> picks a step's path.
/// </summary>
/// <param name="SmallStepRows">Steps over at most this many rows run on the one-thread session.</param>
/// <param name="LaneStepRows">Steps of at least this many rows (not segmented) run as row lanes.</param>
/// <param name="SegmentedStepRows">Steps of at least this many rows run as segments when <paramref name="SegmentCost"/> says they pay.</param>
/// <param name="Threads">Step threads (the caller included) for lanes and segments.</param>
/// <param name="Attention">The segments' attention kernels (None when segments are not used).</param>
/// <param name="CompressedCache">
/// What the KV cache is stored as when that is not the decoder graph's own type (an fp32 graph with an fp16 or int8
/// cache), else null. Only the library's attention reads such a cache, so then every step runs as segments: the
/// package's decoder graph declares its past/present fp32 (ONNX Runtime 1.31's CPU GroupQueryAttention could read an
/// fp16 cache under fp32 inputs, but only in a graph that declares it so, and ran 0.41x; benchmarks/README.md, "Compressed KV cache").
/// </param>
/// <param name="OneRowGraph">
/// With a compressed cache: one-row steps run the fp32 graph on the decoder's session over an fp32 copy of the row
/// (<see cref="KvCacheDecoder"/>'s fp32 row), not as segments. A one-row segmented step runs on one thread, so a model
/// whose weights are too big for row lanes (every lane reads them all) loses more there than the smaller cache saves.
/// </param>
/// <param name="KernelStepRows">
/// Steps of at most this many rows are computed by the library's kernels (<see cref="Cpu.KernelStep"/>) over the cache as it
/// is stored, before any other path is considered (0 = never).
/// </param>
/// <param name="KernelAloneRows">
/// Kernel steps of at most this many rows run on the calling thread alone, the other step threads left idle (0 = never):
/// at these sizes a stage's hand-over between threads costs more than its share of the work (<see cref="StepPlanner.KernelAloneRows"/>).
/// </param>
/// <param name="KernelInt16Weights">The kernel steps' products multiply int16 panels (<see cref="InferenceOptions.KernelWeightType"/>).</param>
/// <param name="KernelLaneRows">
/// Kernel steps of at least this many rows (and over <paramref name="KernelAloneRows"/>) run as row lanes: each step thread
/// takes a share of the rows through the whole step, instead of every stage's columns and heads being shared out
/// (<see cref="StepPlanner.LaneStepRows"/>: small models only, since every lane reads all the weights; 0 = never).
/// </param>
internal sealed record CpuStepPlan(
    int SmallStepRows, int LaneStepRows, int SegmentedStepRows, int Threads, AttentionKernel Attention,
    SegmentCostRule SegmentCost, int Layers, int Embd, long WeightBytes, KvElement? CompressedCache = null, bool OneRowGraph = false,
    int KernelStepRows = 0, int KernelAloneRows = 0, int KernelLaneRows = 0, bool KernelInt16Weights = false)
{
    /// <summary>Every step on the decoder's session: the CUDA provider, or a CPU model with nothing else enabled.</summary>
    public static CpuStepPlan GraphOnly { get; } = new(0, 0, 0, 1, AttentionKernel.None, SegmentCostRule.Default, 0, 0, 0);

    public bool UsesLanes => LaneStepRows > 0;
    public bool UsesSegments => SegmentedStepRows > 0;
    public bool UsesOneThreadSession => SmallStepRows > 0 || LaneStepRows > 0;
    public bool UsesStepThreads => Threads > 1 && (UsesSegments || UsesLanes || UsesKernels);
    public bool UsesKernels => KernelStepRows > 0;

    /// <summary>The path of a step over rows 0..rows-1 at these positions (allocates nothing).</summary>
    public StepPath Choose(int rows, ReadOnlySpan<int> positions)
    {
        if (rows <= KernelStepRows) return StepPath.Kernels;
        if (CompressedCache is not null) return rows == 1 && OneRowGraph ? StepPath.Graph : StepPath.Segments;
        if (UsesSegments && rows >= SegmentedStepRows && SegmentCost.PaysOff(Layers, Embd, WeightBytes, positions[..rows]))
            return StepPath.Segments;
        if (UsesLanes && rows >= LaneStepRows) return StepPath.Lanes;
        return rows <= SmallStepRows ? StepPath.OneThreadGraph : StepPath.Graph;
    }
}
