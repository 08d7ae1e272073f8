using System.ComponentModel.DataAnnotations;

namespace IGpt.Inference;

/// <summary>
/// How models are loaded and run. Bound from configuration section "Inference"; validated by its attributes and
/// <see cref="Validate(ValidationContext)"/> (<see cref="SettingsValidator{TOptions}"/>), at the service's start.
/// </summary>
public sealed class InferenceOptions : IValidatableObject
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
    /// when the session cannot capture (logged). Ignored on the CPU provider. On by default: measured on a GPU, the
    /// steps stop being launch-bound and give the same outputs (benchmarks/README.md, "CUDA").
    /// </summary>
    public bool CudaGraphs { get; set; } = true;

    /// <summary>The smallest nonzero <see cref="CudaMemoryLimitBytes"/> (64 MiB): less is a unit mistake.</summary>
    public const long MinCudaMemoryLimitBytes = 64L * 1024 * 1024;

    /// <summary>
    /// Read a format 2 package's weights.data once into memory and hand the same tensors to all of its CPU sessions
    /// (shared initializers, with one pre-packed weights container): about 35 MiB less resident for the three shipped
    /// models, and a served model keeps running when its files are overwritten in place. Off: each session loads
    /// the file itself (ONNX Runtime maps it), so replace a served package's files by writing new ones and renaming,
    /// never in place. The speed of either is measured in benchmarks/README.md ("Shared weights").
    /// </summary>
    public bool ShareWeights { get; set; } = true;

    /// <summary>
    /// Threads for the picks after a decode step (each row's next pixel from its logits), used when a step's rows x
    /// palette colours reach 4,096 and one of its rows samples: 0 = on CUDA one per core up to 8, on the CPU the
    /// scheduler's thread alone; 1 = the scheduler's thread alone; more = that many threads of the model's own. The
    /// picks are the same however they are split.
    /// </summary>
    [Range(0, 64)]
    public int SamplingThreads { get; set; }

    /// <summary>ONNX Runtime intra-op threads; 0 = one per core.</summary>
    [Range(0, 1024)]
    public int IntraOpThreads { get; set; }

    /// <summary>
    /// Let ONNX Runtime's intra-op threads spin between the ops of a run; they stop spinning when the run
    /// ends (session.force_spinning_stop), so idle models and the web server are not starved between steps.
    /// The service turns it on in appsettings.json, where it pays on idle cores (benchmarks/README.md). Off here
    /// (the library default) for hosts whose cores are shared with other busy work, where spinning threads lose.
    /// </summary>
    public bool AllowSpinning { get; set; }

    /// <summary>
    /// CPU decode steps of at most this many FLOPs (per row: 2 x the decoder's matmul weights, plus attention
    /// over a full cache, 4 x layers x width x n_positions) run on a second session of the decoder with one
    /// intra-op thread, created only for models that have such steps or use row lanes (<see cref="LaneStepRows"/>).
    /// A step is about 70 ops; when they are this small, handing each to another thread costs more than it saves
    /// (the measurements behind the default are in benchmarks/README.md).
    /// The second session holds its own copy of the weights (with the defaults, at most 16 MiB of them). The library's
    /// kernel steps (<see cref="KernelStepRows"/>) use the same bound on their products alone (rows x 2 x matmul weights):
    /// such steps run on the stepping thread, the other step threads idle (fashion-mnist's one-row steps). 0 = off.
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
    /// models whose fp32 weights are at most <see cref="LaneMaxWeightBytes"/> use them. The library's kernel steps
    /// (<see cref="KernelStepRows"/>) follow the same rule: such a step's rows are split between the step threads, each running
    /// its share through every layer's products and attention, instead of every stage's columns and heads being shared out
    /// with a hand-over at each. 0 = off.
    /// </summary>
    [Range(0, 256)]
    public int LaneStepRows { get; set; } = 2;

    /// <summary>
    /// CPU decode steps of at most this many rows are computed by the library's own kernels instead of ONNX Runtime sessions:
    /// each layer's norms, products and attention, shared out between the step threads by column blocks and (request, head)
    /// pairs, reading the package's weights where they are held in memory and the KV cache as it is stored (a compressed
    /// cache in place, a request's shared prompt once). Used when the CPU has AVX-512, the head size is a multiple of 16 and
    /// the package's weights are shared (format 2, <see cref="ShareWeights"/>); a package whose weights are not named as
    /// models/README.md says keeps the sessions (logged). Larger steps, and every step with 0, run the paths the other
    /// settings describe. The speed behind the default is in benchmarks/README.md ("Kernel steps").
    /// </summary>
    [Range(0, 256)]
    public int KernelStepRows { get; set; } = 16;

    /// <summary>
    /// What the kernel steps (<see cref="KernelStepRows"/>) multiply each layer's products by: "float32" (the package's
    /// weights, copied into panels) or "int16" (each weight column as signed 13-bit integers against its largest
    /// magnitude, and each step's inputs the same per row, multiplied by AVX-512BW's vpmaddwd: twice the products per
    /// instruction and half the panels' bytes, at the cost of that rounding). The head stays fp32. The speed and the
    /// quality guard's figures behind the default are in benchmarks/README.md ("Int16 weights").
    /// </summary>
    [Required(AllowEmptyStrings = false)]
    [AllowedValues(KernelWeightTypes.Float32, KernelWeightTypes.Int16, ErrorMessage = "{0} must be \"float32\" or \"int16\".")]
    public string KernelWeightType { get; set; } = KernelWeightTypes.Default;

    /// <summary>Largest fp32 decoder weights (bytes) for which row lanes are used (see <see cref="LaneStepRows"/>).</summary>
    [Range(0, long.MaxValue)]
    public long LaneMaxWeightBytes { get; set; } = 16L * 1024 * 1024;

    /// <summary>
    /// How the CPU decoder stores its KV cache: "float32"; "float16" (half the bytes a decode step reads and half the memory
    /// per slot); or "int8" (the default, <see cref="KvCacheTypes.Default"/>: each head's key or value at a position as
    /// head_size signed bytes and one fp32 scale, its largest magnitude / 127: 36 bytes instead of 128 for a head size of
    /// 32, in blocks of 16 positions that the attention reads with int8 dot products, the query and the attention weights
    /// quantized to bytes as well). A compressed cache is read and written by the library's attention (the package's step segments,
    /// <see cref="SegmentedStepRows"/>), so with it CPU decode steps run as segments, and the prompt's prefill runs the
    /// decoder graph in fp32 and then stores its keys and values compressed. One-row steps of a model whose weights are
    /// too big for row lanes (<see cref="LaneMaxWeightBytes"/>) run the fp32 graph over an fp32 copy of the row instead.
    /// A package without step segments keeps float32 (logged). Ignored on the CUDA provider, whose fp16 graph has an
    /// fp16 cache anyway. The speed, quality and memory figures are in benchmarks/README.md ("Compressed KV cache").
    /// </summary>
    [Required(AllowEmptyStrings = false)]
    [AllowedValues(KvCacheTypes.Float32, KvCacheTypes.Float16, KvCacheTypes.Int8, ErrorMessage = "{0} must be \"float32\", \"float16\" or \"int8\".")]
    public string KvCacheType { get; set; } = KvCacheTypes.Default;

    /// <summary>KV slots per model: most images decoded together, across requests (the KV cache is sized for this many rows).</summary>
    [Range(1, 256)]
    public int MaxBatch { get; set; } = 16;

    /// <summary>Requests per model that may wait for a slot; one more is refused at once (the API answers 503).</summary>
    [Range(1, 100_000)]
    public int QueueCapacity { get; set; } = 64;

    /// <summary>Bytes of prompt KV kept by the prefix cache, shared by all models; 0 disables it.</summary>
    [Range(0, long.MaxValue)]
    public long PrefixCacheSizeLimit { get; set; } = 256L * 1024 * 1024;

    /// <summary><see cref="KvCacheType"/> parsed (after <see cref="Validate()"/>).</summary>
    internal Engine.KvElement KvElement => KvCacheTypes.Parse(KvCacheType);

    /// <summary>Throws <see cref="ArgumentException"/> naming the first bad setting (the same rules the service checks at start).</summary>
    public void Validate() => SettingsValidator<InferenceOptions>.ThrowIfInvalid(this, SectionName);

    /// <summary>The rule that spans more than one value: a memory limit is off (0) or at least 64 MiB (less is a unit mistake).</summary>
    public IEnumerable<ValidationResult> Validate(ValidationContext validationContext)
    {
        if (CudaMemoryLimitBytes is > 0 and < MinCudaMemoryLimitBytes)
            yield return new ValidationResult(
                $"{SectionName}:{nameof(CudaMemoryLimitBytes)} must be 0 (no limit) or at least {MinCudaMemoryLimitBytes} (64 MiB).", [nameof(CudaMemoryLimitBytes)]);
        // Only the library's attention reads a compressed cache; switching the segments off would leave no step path for it.
        if (KvCacheType != KvCacheTypes.Float32 && SegmentedStepRows == 0)
            yield return new ValidationResult(
                $"{SectionName}:{nameof(KvCacheType)} \"{KvCacheType}\" needs step segments: {SectionName}:{nameof(SegmentedStepRows)} must not be 0.",
                [nameof(KvCacheType), nameof(SegmentedStepRows)]);
    }
}

/// <summary>The values of <see cref="InferenceOptions.KernelWeightType"/>, and the default (set here only).</summary>
public static class KernelWeightTypes
{
    public const string Float32 = "float32";
    public const string Int16 = "int16";

    /// <summary>
    /// The kernels' weights when a service sets none: int16, faster than float32 at every batch size measured and within the
    /// quality guard by far (test-set bits per token within 0.01% of float32's on every shipped model; benchmarks/README.md,
    /// "Int16 weights"). float32 stays a setting.
    /// </summary>
    public const string Default = Int16;
}

/// <summary>The values of <see cref="InferenceOptions.KvCacheType"/>, and the default (set here only).</summary>
public static class KvCacheTypes
{
    public const string Float32 = "float32";
    public const string Float16 = "float16";
    public const string Int8 = "int8";

    /// <summary>
    /// The cache type a service gets when it sets none: int8, the fastest type that passes the quality guard, chosen by
    /// idle-machine benchmarks against float32 and float16 once the attention read compressed entries in place
    /// (benchmarks/README.md, "Compressed KV cache"). float16 changes the predictions less and stays a setting.
    /// </summary>
    public const string Default = Int8;

    internal static Engine.KvElement Parse(string value) => value switch
    {
        Float32 => Engine.KvElement.Float32,
        Float16 => Engine.KvElement.Float16,
        Int8 => Engine.KvElement.Int8,
        _ => throw new ArgumentException($"unknown KV cache type \"{value}\"", nameof(value)),
    };

    internal static string Name(Engine.KvElement element) => element switch
    {
        Engine.KvElement.Float16 => Float16,
        Engine.KvElement.Int8 => Int8,
        _ => Float32,
    };
}
