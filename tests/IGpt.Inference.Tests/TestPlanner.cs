namespace IGpt.Inference.Tests;

/// <summary>
/// A <see cref="StepPlanner"/> that takes paths this machine or package would not: the fp16 graphs (the CUDA ones)
/// on the CPU provider, which exercises the fp16 KV cache without a GPU, and the segments' portable attention
/// loops, also where the CPU or the head size has no AVX-512 kernel.
/// </summary>
internal sealed class TestPlanner(InferenceOptions options, bool fp16OnCpu = false, bool portableAttention = false) : StepPlanner(options)
{
    /// <summary>A cost rule under which every step of at least SegmentedStepRows rows runs as segments.</summary>
    public static SegmentCostRule AlwaysSegments { get; } = new(MinRows: 1, MinKvToWeights: 0, MinKvBytesPerRow: 0);

    public override ModelFile CpuGraph(ModelGraphFiles files) => fp16OnCpu && files.Cuda is { } fp16 ? fp16 : files.Cpu;

    public override AttentionKernel SegmentAttention(int headSize) =>
        portableAttention ? AttentionKernel.Portable : base.SegmentAttention(headSize);

    public IGptModel Load(string packageDir) =>
        IGptModel.Load(ModelManifest.Load(packageDir), this, Microsoft.Extensions.Logging.Abstractions.NullLogger.Instance);
}
