using System.ComponentModel.DataAnnotations;

namespace IGpt.Inference;

/// <summary>How models are loaded and run. Bound from configuration section "Inference".</summary>
public sealed class InferenceOptions
{
    public const string SectionName = "Inference";

    /// <summary>Folder whose subfolders are model packages (each with a model.json).</summary>
    [Required(AllowEmptyStrings = false)]
    public string ModelsPath { get; set; } = "models";

    /// <summary>Try the CUDA execution provider first (falls back to CPU when it cannot load).</summary>
    public bool UseCuda { get; set; } = true;

    [Range(0, 64)]
    public int CudaDeviceId { get; set; }

    /// <summary>
    /// Most bytes each CUDA session's device arena may hold (ONNX Runtime's gpu_mem_limit): the decoder's
    /// weights, KV cache and activations, and separately the classifier's. 0 = no limit (the arena may grow
    /// to the whole GPU). Otherwise at least <see cref="MinCudaMemoryLimitBytes"/>.
    /// </summary>
    [Range(0, long.MaxValue)]
    public long CudaMemoryLimitBytes { get; set; }

    /// <summary>
    /// Capture each decode step's kernels in CUDA graphs (ONNX Runtime's enable_cuda_graph): one graph per
    /// power-of-two number of slots up to MaxBatch, replayed with one launch. Falls back to plain CUDA runs
    /// when the session cannot capture (logged). Ignored on the CPU provider.
    /// </summary>
    public bool CudaGraphs { get; set; }

    /// <summary>
    /// Tests only: run the fp16 graphs (files.*.cuda) on the CPU provider, which exercises the fp16 KV cache
    /// path without a GPU (slower than fp32 on a CPU, so never configured).
    /// </summary>
    internal bool Fp16OnCpu { get; set; }

    /// <summary>
    /// Tests only: the step segments' attention runs its portable scalar loops, also where the CPU or the head
    /// size has no AVX-512 kernel (which otherwise keeps a model on the single decoder graph).
    /// </summary>
    internal bool PortableAttention { get; set; }

    /// <summary>Tests only: steps of at least SegmentedStepRows rows run as segments even where the caches are too short to gain.</summary>
    internal bool AlwaysSegmentedSteps { get; set; }

    /// <summary>The smallest nonzero <see cref="CudaMemoryLimitBytes"/> (64 MiB): less is a unit mistake.</summary>
    public const long MinCudaMemoryLimitBytes = 64L * 1024 * 1024;

    /// <summary>ONNX Runtime intra-op threads; 0 = one per core.</summary>
    [Range(0, 1024)]
    public int IntraOpThreads { get; set; }

    /// <summary>
    /// Let ONNX Runtime's intra-op threads spin between the ops of a run; they stop spinning when the run
    /// ends (session.force_spinning_stop), so idle models and the web server are not starved between steps.
    /// The service turns it on in appsettings.json: on the idle 2-core dev VM the shipped 14x14 model went
    /// from 4.6k to 6.5k tokens/s for one client and from 10.5k to 18.6k for 16. Off here (the library
    /// default) for hosts whose cores are shared with other busy work, where spinning threads lose.
    /// </summary>
    public bool AllowSpinning { get; set; }

    /// <summary>
    /// CPU decode steps of at most this many FLOPs (per row: 2 x the decoder's matmul weights, plus attention
    /// over a full cache, 4 x layers x width x n_positions) run on a second session of the decoder with one
    /// intra-op thread, created only for models that have such steps or use row lanes (<see cref="LaneStepRows"/>).
    /// A step is about 70 ops; when they are this small, handing each to another thread costs more than it saves.
    /// The second session holds its own copy of the weights (with the defaults, at most 16 MiB of them).
    /// 0 = off. On the idle 2-core dev VM, fashion-mnist-14 at batch 1 (3.0 MFLOP) went from 0.210 to
    /// 0.164 ms a step; at batch 4 two threads stayed faster (0.25 vs 0.32 ms), and so did emoji-32 at
    /// batch 1 (5.6 MFLOP, long attention: 0.311 vs 0.323 ms).
    /// </summary>
    [Range(0, long.MaxValue)]
    public long SingleThreadStepFlops { get; set; } = 4_000_000;

    /// <summary>
    /// CPU decode steps of at least this many rows run as the package's step segments (files.decoder.cpu.step_segments),
    /// with attention computed by the library (AVX-512) instead of ONNX Runtime's GroupQueryAttention: keys and values
    /// that the samples of one prompt share are read once for all of them. Used when the package has the segments and
    /// the CPU has AVX-512; 0 = off (always the single decoder graph).
    /// </summary>
    [Range(0, 256)]
    public int SegmentedStepRows { get; set; } = 2;

    /// <summary>
    /// CPU decode steps of at least this many rows (and not run as segments) may run as row lanes: the rows are split
    /// between threads, each running its share through a one-thread session of the decoder, concurrently, so that a step
    /// hands work to another thread once instead of at each of its ~70 ops. Every lane reads all the weights, so only
    /// models whose fp32 weights are at most <see cref="LaneMaxWeightBytes"/> use them. 0 = off.
    /// </summary>
    [Range(0, 256)]
    public int LaneStepRows { get; set; } = 2;

    /// <summary>Largest fp32 decoder weights (bytes) for which row lanes are used (see <see cref="LaneStepRows"/>).</summary>
    [Range(0, long.MaxValue)]
    public long LaneMaxWeightBytes { get; set; } = 16L * 1024 * 1024;

    /// <summary>KV slots per model: most images decoded together, across requests (the KV cache is sized for this many rows).</summary>
    [Range(1, 256)]
    public int MaxBatch { get; set; } = 16;

    /// <summary>Requests per model that may wait for a slot; one more is refused at once (the API answers 503).</summary>
    [Range(1, 100_000)]
    public int QueueCapacity { get; set; } = 64;

    /// <summary>Bytes of prompt KV kept by the prefix cache, shared by all models; 0 disables it.</summary>
    [Range(0, long.MaxValue)]
    public long PrefixCacheSizeLimit { get; set; } = 256L * 1024 * 1024;

    /// <summary>Throws <see cref="ArgumentException"/> naming the first bad setting.</summary>
    public void Validate()
    {
        if (string.IsNullOrWhiteSpace(ModelsPath)) throw new ArgumentException("Inference:ModelsPath must be set.");
        if (CudaDeviceId is < 0 or > 64) throw new ArgumentException("Inference:CudaDeviceId must be 0..64.");
        if (CudaMemoryLimitBytes is < 0 or (> 0 and < MinCudaMemoryLimitBytes))
            throw new ArgumentException($"Inference:CudaMemoryLimitBytes must be 0 (no limit) or at least {MinCudaMemoryLimitBytes} (64 MiB).");
        if (IntraOpThreads is < 0 or > 1024) throw new ArgumentException("Inference:IntraOpThreads must be 0..1024 (0 = one per core).");
        if (MaxBatch is < 1 or > 256) throw new ArgumentException("Inference:MaxBatch must be between 1 and 256.");
        if (QueueCapacity is < 1 or > 100_000) throw new ArgumentException("Inference:QueueCapacity must be between 1 and 100000.");
        if (LaneStepRows is < 0 or > 256) throw new ArgumentException("Inference:LaneStepRows must be 0..256 (0 = off).");
        if (LaneMaxWeightBytes < 0) throw new ArgumentException("Inference:LaneMaxWeightBytes must be >= 0.");
        if (SegmentedStepRows is < 0 or > 256) throw new ArgumentException("Inference:SegmentedStepRows must be 0..256 (0 = off).");
        if (SingleThreadStepFlops < 0) throw new ArgumentException("Inference:SingleThreadStepFlops must be >= 0 (0 = off).");
        if (PrefixCacheSizeLimit < 0) throw new ArgumentException("Inference:PrefixCacheSizeLimit must be >= 0.");
    }
}
