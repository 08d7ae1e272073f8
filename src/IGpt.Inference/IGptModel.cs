using System.Diagnostics;
using System.Globalization;
using Microsoft.Extensions.Caching.Memory;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;

namespace IGpt.Inference;

/// <summary>
/// One loaded model package: KV-cached image completion and classification. Completions of every
/// request share the model's decode scheduler (continuous batching over MaxBatch KV slots, a bounded
/// queue of QueueCapacity requests; see <see cref="DecodeScheduler"/>); classification runs
/// concurrently. The CUDA provider is tried first when enabled (fp16 decoder), else CPU (fp32).
/// </summary>
public sealed class IGptModel : IDisposable
{
    private static long s_instances;

    private readonly KvCacheDecoder _decoder;
    private readonly Classifier? _classifier;
    private readonly PrefixCache? _prefixCache;
    private readonly DecodeScheduler _scheduler;
    private readonly PackageWeights? _weights;  // the CPU sessions' shared initializers: freed after the sessions
    private int _disposed, _classifierFailures;
    private string? _classifierFailure;

    /// <summary>Generation requests (or classifier batches) in a row that a model run must fail before the model reports itself failing.</summary>
    public const int FailingAfter = 3;

    private IGptModel(ModelManifest manifest, KvCacheDecoder decoder, Classifier? classifier, string provider, string reason,
        IMemoryCache? prefixCache, int queueCapacity, IDecodeObserver? observer, ILogger logger, PackageWeights? weights)
    {
        Manifest = manifest;
        _weights = weights;
        _decoder = decoder;
        _classifier = classifier;
        ExecutionProvider = provider;
        ProviderReason = reason;
        // On CUDA a prompt's KV snapshot would cross PCIe twice (to the host cache and back), which costs more
        // than the prefill it saves (prefill is compute-bound there); the cache serves the CPU provider.
        if (prefixCache is not null && decoder.KvOnHost)
            _prefixCache = new PrefixCache(prefixCache, $"{manifest.Id}#{Interlocked.Increment(ref s_instances)}");
        QueueCapacity = queueCapacity;
        _scheduler = new DecodeScheduler(decoder, manifest, _prefixCache, queueCapacity, observer, logger);
    }

    public ModelManifest Manifest { get; }
    public Palette Palette => Manifest.Palette;
    /// <summary>"CUDA" or "CPU".</summary>
    public string ExecutionProvider { get; }
    /// <summary>Why this provider was chosen (e.g. why CUDA could not be used).</summary>
    public string ProviderReason { get; }
    public bool HasClassifier => _classifier is not null;
    /// <summary>KV slots: sequences (images) decoded together, whatever requests they belong to.</summary>
    public int MaxBatch => _decoder.MaxBatch;
    /// <summary>Requests that may wait for a slot; one more is refused with <see cref="QueueFullException"/>.</summary>
    public int QueueCapacity { get; }
    public bool PrefixCacheEnabled => _prefixCache is not null;
    /// <summary>The decode scheduler's counters: slots in use, queue depth, steps, rows per step, tokens.</summary>
    public SchedulerStats SchedulerStats => _scheduler.Stats;

    /// <summary>
    /// Whether the model's last <see cref="FailingAfter"/> generation requests (or classifier batches) were all failed by a
    /// model run that threw: it still takes requests (one that completes clears this), but readiness reports it as failing.
    /// </summary>
    public bool IsFailing => _scheduler.ConsecutiveFailures >= FailingAfter || Volatile.Read(ref _classifierFailures) >= FailingAfter;

    /// <summary>Why the last failed run failed (null before any failure).</summary>
    public string? LastFailure => Volatile.Read(ref _classifierFailure) is { } c && Volatile.Read(ref _classifierFailures) > 0 ? c : _scheduler.LastFailure;

    /// <summary>Whether <see cref="Dispose"/> ran: the decode thread has stopped and the ONNX Runtime sessions are released.</summary>
    public bool IsDisposed => Volatile.Read(ref _disposed) != 0;

    /// <summary>Loads the package in <paramref name="packageDir"/>; throws <see cref="ModelPackageException"/> when it cannot be served.</summary>
    public static IGptModel Load(string packageDir, InferenceOptions options, ILogger? logger = null, IMemoryCache? prefixCache = null,
        IDecodeObserver? observer = null) =>
        Load(ModelManifest.Load(packageDir), options, logger, prefixCache, observer);

    public static IGptModel Load(ModelManifest manifest, InferenceOptions options, ILogger? logger = null, IMemoryCache? prefixCache = null,
        IDecodeObserver? observer = null)
    {
        options.Validate();
        logger ??= NullLogger.Instance;
        var cuda = options.UseCuda ? TryLoadCudaDecoder(manifest, options, logger) : new CudaSetup(null, null, false, "UseCuda is off");
        if (options.UseCuda && cuda.Session is null)
            logger.LogWarning("Model {ModelId}: running on the CPU provider: {Reason}", manifest.Id, cuda.Reason);
        string provider = cuda.Session is null ? "CPU" : "CUDA", reason = cuda.Reason;
        var weights = PackageWeights.For(manifest);
        try { return Load(manifest, options, logger, prefixCache, observer, cuda, provider, reason, weights); }
        catch
        {
            weights?.Dispose();
            throw;
        }
    }

    private static IGptModel Load(ModelManifest manifest, InferenceOptions options, ILogger logger, IMemoryCache? prefixCache,
        IDecodeObserver? observer, CudaSetup cuda, string provider, string reason, PackageWeights? weights)
    {
        KvCacheDecoder decoder;
        if (cuda.Session is { } cudaSession)
        {
            var file = manifest.Files.Decoder.Cuda!;
            try { decoder = new KvCacheDecoder(cudaSession, manifest, options.MaxBatch, cuda.Memory!, KvType(file), cuda.Graphs); }
            catch (Exception e)
            {
                cuda.Memory!.Dispose();
                cudaSession.Dispose();
                // The provider loaded, so this is the package (wrong dtype) or the device (e.g. the KV cache over CudaMemoryLimitBytes).
                if (e is ModelPackageException) throw new ModelPackageException($"{file.Path}: {e.Message}", e);
                throw new ModelPackageException($"{file.Path}: cannot set up the decoder on CUDA device {options.CudaDeviceId}: {FirstLine(e.Message)}", e);
            }
        }
        else
        {
            var file = CpuDecoderFile(manifest, options);
            var session = CreatePackageSession(manifest, file.Path, options, weights);
            var memory = new HostMemory();
            int smallRows = SmallStepRows(manifest, options);
            int threads = IntraOpThreadCount(options);
            int laneRows = LaneStepRows(manifest, options);
            InferenceSession? oneThread = null;
            InferenceSession[]? segments = null;
            try
            {
                if (smallRows > 0 || laneRows > 0) oneThread = CreatePackageSession(manifest, file.Path, options, weights, intraOpThreads: 1);
                var kvType = KvType(file);
                if (UsesStepSegments(manifest, options, file, kvType))
                    segments = CreateSegmentSessions(manifest, file, options, weights);
                decoder = new KvCacheDecoder(session, manifest, options.MaxBatch, memory, kvType, cpu: new CpuSteps(
                    oneThread, smallRows, laneRows, segments, options.SegmentedStepRows, threads,
                    VectorizedAttention: !options.PortableAttention, AlwaysSegmented: options.AlwaysSegmentedSteps));
            }
            catch (Exception e)
            {
                memory.Dispose();
                session.Dispose();
                oneThread?.Dispose();
                foreach (var s in segments ?? []) s.Dispose();
                if (e is ModelPackageException) throw new ModelPackageException($"{file.Path}: {e.Message}", e);
                throw;
            }
        }

        Classifier? classifier = null;
        try
        {
            var files = manifest.Files.Classifier;
            if (files is not null)
            {
                // On CUDA the classifier's fp16 graph runs there too (falling back to the CPU graph if it cannot load).
                InferenceSession? cls = null;
                if (provider == "CUDA" && files.Cuda is not null)
                {
                    try { cls = CreateSession(manifest.ResolvePath(files.Cuda.Path), options, useCuda: true, cudaGraphs: false); }
                    catch (Exception e) when (IsProviderLoadFailure(e))
                    {
                        logger.LogWarning("Model {ModelId}: CUDA classifier {Path} failed to load, using the CPU one: {Reason}",
                            manifest.Id, files.Cuda.Path, FirstLine(e.Message));
                    }
                }
                else if (provider == "CPU" && options.Fp16OnCpu && files.Cuda is not null)
                    cls = CreatePackageSession(manifest, files.Cuda.Path, options, weights);
                cls ??= CreatePackageSession(manifest, files.Cpu.Path, options, weights);
                try { classifier = new Classifier(cls, manifest, options.MaxBatch); }
                catch
                {
                    cls.Dispose();
                    throw;
                }
            }
        }
        catch
        {
            decoder.Dispose();
            throw;
        }
        logger.LogInformation("Model {ModelId}: execution provider {Provider} ({Reason}); KV cache {KvType}; classifier {Classifier}; "
            + "CPU steps: one-thread up to {SmallRows} rows, row lanes from {LaneRows}, step segments from {SegmentedRows} (0 = none)",
            manifest.Id, provider, reason, decoder.KvType == TensorElementType.Float16 ? "float16" : "float32",
            classifier is null ? "none" : "loaded", decoder.SmallStepRows, decoder.LaneStepRows, decoder.SegmentedStepRows);
        return new IGptModel(manifest, decoder, classifier, provider, reason, prefixCache, options.QueueCapacity, observer, logger, weights);
    }

    /// <summary>A decoder session on the CUDA provider with its device memory, or (Session null) why there is none.</summary>
    private sealed record CudaSetup(InferenceSession? Session, DecoderMemory? Memory, bool Graphs, string Reason);

    /// <summary>
    /// The package's CUDA decoder graph, which must be fp16 (GroupQueryAttention on CUDA runs only in fp16/bf16:
    /// an fp32 graph would put attention back on the CPU), or null with the reason.
    /// </summary>
    internal static ModelFile? CudaDecoderFile(ModelManifest manifest, out string reason)
    {
        var cuda = manifest.Files.Decoder.Cuda;
        reason = cuda switch
        {
            null => "the package has no CUDA decoder (files.decoder.cuda)",
            { Dtype: not "float16" } => $"files.decoder.cuda ({cuda.Path}) is {cuda.Dtype}; the CUDA provider needs the float16 graph",
            _ => "",
        };
        return reason.Length == 0 ? cuda : null;
    }

    /// <summary>The graph the CPU provider runs: the fp32 one (fp16 only when a test asks for it).</summary>
    internal static ModelFile CpuDecoderFile(ModelManifest manifest, InferenceOptions options) =>
        options.Fp16OnCpu && CudaDecoderFile(manifest, out _) is { } fp16 ? fp16 : manifest.Files.Decoder.Cpu;

    internal static TensorElementType KvType(ModelFile file) => file.Dtype == "float16"
        ? TensorElementType.Float16
        : TensorElementType.Float;

    private static CudaSetup TryLoadCudaDecoder(ModelManifest manifest, InferenceOptions options, ILogger logger)
    {
        if (CudaDecoderFile(manifest, out var why) is not { } file) return new CudaSetup(null, null, false, why);
        var path = manifest.ResolvePath(file.Path);
        InferenceSession? session = null;
        bool graphs = options.CudaGraphs;
        string note = "";
        try
        {
            if (graphs)
            {
                // A graph with nodes outside the CUDA provider cannot be captured; plain CUDA runs are still worth having.
                try { session = CreateSession(path, options, useCuda: true, cudaGraphs: true); }
                catch (OnnxRuntimeException e)
                {
                    graphs = false;
                    note = $"; CUDA graphs unavailable: {FirstLine(e.Message)}";
                }
            }
            session ??= CreateSession(path, options, useCuda: true, cudaGraphs: false);
            if (options.CudaGraphs && !graphs)
                logger.LogWarning("Model {ModelId}: CUDA graphs are on but the decoder cannot be captured; running without{Note}", manifest.Id, note);
            var memory = new CudaMemory(session, options.CudaDeviceId);
            string limit = options.CudaMemoryLimitBytes > 0 ? $", arena limit {options.CudaMemoryLimitBytes} bytes" : "";
            return new CudaSetup(session, memory, graphs,
                $"CUDA provider loaded on device {options.CudaDeviceId} ({file.Path}, {file.Dtype}{limit}; CUDA graphs {(graphs ? "on" : "off")}{note})");
        }
        catch (Exception e) when (IsProviderLoadFailure(e))
        {
            session?.Dispose();
            return new CudaSetup(null, null, false, $"CUDA provider unavailable, using CPU: {FirstLine(e.Message)}");
        }
    }

    /// <summary>What a missing or unusable CUDA installation throws (the provider library, its CUDA libraries, the CUDA runtime).</summary>
    private static bool IsProviderLoadFailure(Exception e) =>
        e is OnnxRuntimeException or DllNotFoundException or EntryPointNotFoundException or BadImageFormatException;

    /// <summary>
    /// Completes (or samples, with an empty prompt) Count images; see <see cref="CompletionRequest"/>.
    /// Throws <see cref="QueueFullException"/> when the model's queue is full.
    /// </summary>
    public async Task<CompletionResult> CompleteAsync(CompletionRequest request, CancellationToken cancellationToken) =>
        await StartCompletion(request, streamRows: false, cancellationToken).Result.ConfigureAwait(false);

    /// <summary>
    /// Queues a completion and returns at once: the request holds its queue place (or this throws
    /// <see cref="QueueFullException"/>, or <see cref="ArgumentException"/> for a bad request) before any
    /// image is decoded. With <paramref name="streamRows"/> the handle yields each image row when it is finished.
    /// Cancelling <paramref name="cancellationToken"/> frees the request's slots within one decode step.
    /// </summary>
    public CompletionHandle StartCompletion(CompletionRequest request, bool streamRows, CancellationToken cancellationToken)
    {
        ObjectDisposedException.ThrowIf(Volatile.Read(ref _disposed) != 0, this);
        Validate(request);
        return _scheduler.Submit(request, streamRows, cancellationToken);
    }

    /// <summary>Softmax class probabilities for one image of height*width palette tokens.</summary>
    public async Task<float[]> ClassifyAsync(int[] imageTokens, CancellationToken cancellationToken) =>
        (await ClassifyBatchAsync([imageTokens], cancellationToken).ConfigureAwait(false))[0];

    /// <summary>Softmax class probabilities for several images, run in batches of up to MaxBatch.</summary>
    public Task<float[][]> ClassifyBatchAsync(IReadOnlyList<int[]> images, CancellationToken cancellationToken)
    {
        ObjectDisposedException.ThrowIf(Volatile.Read(ref _disposed) != 0, this);
        var classifier = _classifier ?? throw new InvalidOperationException($"model '{Manifest.Id}' has no classifier");
        return Task.Run(() =>
        {
            try
            {
                var probabilities = classifier.Classify(images, cancellationToken);
                Volatile.Write(ref _classifierFailures, 0);
                return probabilities;
            }
            catch (OnnxRuntimeException e)
            {
                var fault = new ModelRunException(Manifest.Id, "classifier", e);
                Volatile.Write(ref _classifierFailure, fault.Message);
                Interlocked.Increment(ref _classifierFailures);
                throw fault;
            }
        }, cancellationToken);
    }

    private void Validate(CompletionRequest request)
    {
        ArgumentNullException.ThrowIfNull(request);
        var prompt = request.PromptTokens ?? throw new ArgumentException("prompt tokens are null");
        if (request.Count < 1) throw new ArgumentException($"count must be at least 1, got {request.Count}");
        (request.Sampling ?? throw new ArgumentException("sampling options are null")).Validate();
        if (prompt.Length % Manifest.Width != 0)
            throw new ArgumentException($"the prompt has {prompt.Length} tokens; it must be whole rows of {Manifest.Width}");
        if (prompt.Length > Manifest.TokensPerImage)
            throw new ArgumentException($"the prompt has {prompt.Length} tokens; the image has {Manifest.TokensPerImage}");
        for (int i = 0; i < prompt.Length; i++)
            if ((uint)prompt[i] >= (uint)Manifest.PaletteSize)
                throw new ArgumentException($"prompt token {i} = {prompt[i]} is not a palette index (0..{Manifest.PaletteSize - 1})");
    }

    /// <summary>The decoder graph over a whole sequence without the KV cache (tests' reference).</summary>
    internal float[] ForwardWithoutCache(ReadOnlySpan<int> tokens) => _decoder.ForwardWithoutCache(tokens);
    internal KvCacheDecoder Decoder => _decoder;
    internal DecodeScheduler Scheduler => _scheduler;

    /// <summary>
    /// How many slots a CPU decode step may hold and still run on a one-thread session: as many as keep the
    /// step's FLOP bound, rows x (2 x matmul weights + 4 x layers x width x n_positions of attention), within
    /// <see cref="InferenceOptions.SingleThreadStepFlops"/>. 0 = none (the option is off, or the sessions have
    /// one thread anyway).
    /// </summary>
    internal static int SmallStepRows(ModelManifest manifest, InferenceOptions options)
    {
        if (IntraOpThreadCount(options) <= 1 || options.SingleThreadStepFlops <= 0) return 0;
        var a = manifest.Architecture;
        // Attention at the longest cache: the step's bound.
        long flopsPerRow = 2L * manifest.MatmulParameters + 4L * a.NLayer * a.NEmbd * a.NPositions;
        return (int)Math.Min(options.MaxBatch, options.SingleThreadStepFlops / flopsPerRow);
    }

    /// <summary>
    /// Whether CPU decode steps may run as the package's step segments with the library's attention: the package
    /// has them, the option is on, the KV cache is fp32 and this CPU runs the AVX-512 attention kernels.
    /// </summary>
    internal static bool UsesStepSegments(ModelManifest manifest, InferenceOptions options, ModelFile file, TensorElementType kvType) =>
        options.SegmentedStepRows > 0 && file.StepSegments.Count > 0 && kvType == TensorElementType.Float
        && (CachedAttention.CanVectorize(manifest.Architecture.HeadSize) || options.PortableAttention);

    private static InferenceSession[] CreateSegmentSessions(ModelManifest manifest, ModelFile file, InferenceOptions options, PackageWeights? weights)
    {
        var sessions = new List<InferenceSession>();
        try
        {
            // One intra-op thread each: SegmentedStep runs a step's lanes on its own threads, concurrently.
            foreach (var path in file.StepSegments) sessions.Add(CreatePackageSession(manifest, path, options, weights, intraOpThreads: 1));
            return [.. sessions];
        }
        catch
        {
            foreach (var s in sessions) s.Dispose();
            throw;
        }
    }

    /// <summary>
    /// Steps of at least this many rows run as row lanes (each step thread runs its share of the rows through the one-thread
    /// session): <see cref="InferenceOptions.LaneStepRows"/>, when there are several threads and the model's fp32 weights
    /// are at most <see cref="InferenceOptions.LaneMaxWeightBytes"/> (every lane reads all of them); else 0.
    /// </summary>
    internal static int LaneStepRows(ModelManifest manifest, InferenceOptions options)
    {
        if (IntraOpThreadCount(options) <= 1 || options.LaneStepRows <= 1) return 0;
        return 4L * manifest.MatmulParameters <= options.LaneMaxWeightBytes ? options.LaneStepRows : 0;
    }

    /// <summary>ONNX Runtime intra-op threads per session: IntraOpThreads, or one per core when it is 0.</summary>
    private static int IntraOpThreadCount(InferenceOptions options) =>
        options.IntraOpThreads > 0 ? options.IntraOpThreads : Environment.ProcessorCount;

    /// <summary>A CPU session of one of the package's graphs, with the package's weights shared with its other sessions (format 2).</summary>
    private static InferenceSession CreatePackageSession(ModelManifest manifest, string relativePath, InferenceOptions options,
        PackageWeights? weights, int? intraOpThreads = null)
    {
        try
        {
            return CreateSession(manifest.ResolvePath(relativePath), options, useCuda: false, cudaGraphs: false, intraOpThreads,
                weights is null ? null : so => weights.AddTo(so, relativePath), weights?.PrePacked);
        }
        catch (OnnxRuntimeException e)
        {
            throw new ModelPackageException($"{relativePath}: cannot load: {FirstLine(e.Message)}", e);
        }
    }

    private static InferenceSession CreateSession(string path, InferenceOptions options, bool useCuda, bool cudaGraphs,
        int? intraOpThreads = null, Action<SessionOptions>? addWeights = null, PrePackedWeightsContainer? prePacked = null)
    {
        using var so = new SessionOptions
        {
            GraphOptimizationLevel = GraphOptimizationLevel.ORT_ENABLE_ALL,
            ExecutionMode = ExecutionMode.ORT_SEQUENTIAL,
            IntraOpNumThreads = intraOpThreads ?? IntraOpThreadCount(options),
            EnableCpuMemArena = true,
            LogSeverityLevel = OrtLoggingLevel.ORT_LOGGING_LEVEL_ERROR,
        };
        if (!options.AllowSpinning) so.AddSessionConfigEntry("session.intra_op.allow_spinning", "0");
        // Spin between the ops of one run (a decode step is many sub-millisecond ops) but stop when the run
        // ends, so idle models and the web server are not starved between steps.
        else so.AddSessionConfigEntry("session.force_spinning_stop", "1");
        addWeights?.Invoke(so);
        if (!useCuda) return prePacked is null ? new InferenceSession(path, so) : new InferenceSession(path, so, prePacked);
        // Throws OnnxRuntimeException when the provider or the CUDA libraries it links cannot load.
        using var cuda = new OrtCUDAProviderOptions();
        cuda.UpdateOptions(CudaProviderOptions(options, cudaGraphs));
        so.AppendExecutionProvider_CUDA(cuda);
        return new InferenceSession(path, so);
    }

    /// <summary>The CUDA provider's settings (ONNX Runtime's names and value formats).</summary>
    internal static Dictionary<string, string> CudaProviderOptions(InferenceOptions options, bool cudaGraphs)
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

    private static string FirstLine(string message)
    {
        int i = message.IndexOfAny(['\r', '\n']);
        return i < 0 ? message : message[..i];
    }

    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0) return;
        _scheduler.Dispose();   // stops the loop (failing what is still queued or running) before the decoder goes
        _decoder.Dispose();
        _classifier?.Dispose();
        _weights?.Dispose();
    }
}
