using Microsoft.Extensions.Caching.Memory;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.ML.OnnxRuntime;

namespace IGpt.Inference.Generation;

/// <summary>
/// One loaded model package: KV-cached image completion, classification and analysis (embeddings and
/// likelihoods). Completions of every request share the model's decode scheduler (continuous batching over
/// MaxBatch KV slots, a bounded queue of QueueCapacity requests; see <see cref="DecodeScheduler"/>);
/// classification and analysis run concurrently with it. The CUDA provider is tried first when enabled (fp16 decoder), else CPU (fp32).
/// </summary>
public sealed class IGptModel : IDisposable
{
    private static long s_instances;

    private readonly KvCacheDecoder _decoder;
    private readonly Classifier? _classifier;
    private readonly Analyzer? _analyzer;
    private readonly PrefixCache? _prefixCache;
    private readonly DecodeScheduler _scheduler;
    private readonly PackageWeights? _weights;  // the CPU sessions' shared initializers: freed after the sessions
    private int _disposed, _graphFailures;
    private string? _graphFailure;

    /// <summary>Generation requests (or classifier or analysis batches) in a row that a model run must fail before the model reports itself failing.</summary>
    public const int FailingAfter = 3;

    private IGptModel(ModelManifest manifest, LoadedModel loaded, IMemoryCache? prefixCache, int queueCapacity,
        int samplingThreads, IDecodeObserver? observer, StepGate? gate, ILogger logger)
    {
        Manifest = manifest;
        var decoder = _decoder = loaded.Decoder;
        _classifier = loaded.Classifier;
        _analyzer = loaded.Analyzer;
        _weights = loaded.Weights;
        ExecutionProvider = loaded.Provider;
        ProviderReason = loaded.Reason;
        ProviderSummary = loaded.Summary;
        // On CUDA a prompt's KV snapshot would cross PCIe twice (to the host cache and back), which costs more
        // than the prefill it saves (prefill is compute-bound there); the cache serves the CPU provider.
        if (prefixCache is not null && decoder.KvOnHost)
            _prefixCache = new PrefixCache(prefixCache, $"{manifest.Id}#{Interlocked.Increment(ref s_instances)}");
        QueueCapacity = queueCapacity;
        _scheduler = new DecodeScheduler(decoder, manifest, _prefixCache, queueCapacity, observer, gate, logger, samplingThreads);
    }

    public ModelManifest Manifest { get; }
    public Palette Palette => Manifest.Palette;
    /// <summary>"CUDA" or "CPU".</summary>
    public string ExecutionProvider { get; }
    /// <summary>Why this provider was chosen (e.g. why CUDA could not be used, in ONNX Runtime's words).</summary>
    public string ProviderReason { get; }
    /// <summary>
    /// <see cref="ProviderReason"/> for a per-model log line: the same, except that a CUDA provider that could not load
    /// is only named (the library logs why once per process).
    /// </summary>
    public string ProviderSummary { get; }
    public bool HasClassifier => _classifier is not null;
    /// <summary>Whether the package has the analysis graph behind <see cref="AnalyzeBatchAsync"/> (manifest "analysis").</summary>
    public bool HasAnalysis => _analyzer is not null;
    /// <summary>KV slots: sequences (images) decoded together, whatever requests they belong to.</summary>
    public int MaxBatch => _decoder.MaxBatch;
    /// <summary>Requests that may wait for a slot; one more is refused with <see cref="QueueFullException"/>.</summary>
    public int QueueCapacity { get; }
    public bool PrefixCacheEnabled => _prefixCache is not null;
    /// <summary>The decode scheduler's counters: slots in use, queue depth, steps, rows per step, tokens.</summary>
    public SchedulerStats SchedulerStats => _scheduler.Stats;
    /// <summary>Threads the picks after a step may use (Inference:SamplingThreads), and the steps that split them.</summary>
    internal (int Threads, long SplitSteps) Picks => _scheduler.Picks;

    /// <summary>
    /// Whether the model's last <see cref="FailingAfter"/> generation requests (or classifier or analysis batches) were all failed by a
    /// model run that threw: it still takes requests (one that completes clears this), but readiness reports it as failing.
    /// </summary>
    public bool IsFailing => _scheduler.ConsecutiveFailures >= FailingAfter || Volatile.Read(ref _graphFailures) >= FailingAfter;

    /// <summary>Why the last failed run failed (null before any failure).</summary>
    public string? LastFailure => Volatile.Read(ref _graphFailure) is { } c && Volatile.Read(ref _graphFailures) > 0 ? c : _scheduler.LastFailure;

    /// <summary>Whether <see cref="Dispose"/> ran: the decode thread has stopped and the ONNX Runtime sessions are released.</summary>
    public bool IsDisposed => Volatile.Read(ref _disposed) != 0;

    /// <summary>Loads the package in <paramref name="packageDir"/>; throws <see cref="ModelPackageException"/> when it cannot be served.</summary>
    /// <param name="gate">Optional: holds the model's decode loop between steps (<see cref="StepGate"/>).</param>
    public static IGptModel Load(string packageDir, InferenceOptions options, ILogger? logger = null, IMemoryCache? prefixCache = null,
        IDecodeObserver? observer = null, StepGate? gate = null) =>
        Load(ModelManifest.Load(packageDir), options, logger, prefixCache, observer, gate);

    public static IGptModel Load(ModelManifest manifest, InferenceOptions options, ILogger? logger = null, IMemoryCache? prefixCache = null,
        IDecodeObserver? observer = null, StepGate? gate = null)
    {
        options.Validate();
        return Load(manifest, new StepPlanner(options), logger, prefixCache, observer, gate);
    }

    /// <summary>Loads with a given planner: how the model's sessions are made and its steps run.</summary>
    internal static IGptModel Load(ModelManifest manifest, StepPlanner planner, ILogger? logger = null, IMemoryCache? prefixCache = null,
        IDecodeObserver? observer = null, StepGate? gate = null)
    {
        logger ??= NullLogger.Instance;
        var loaded = SessionLoader.Load(manifest, planner, logger);
        return new IGptModel(manifest, loaded, prefixCache, planner.Options.QueueCapacity, planner.Options.SamplingThreads,
            observer, gate, logger);
    }

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
        return RunGraphAsync("classifier", () => classifier.Classify(images, cancellationToken), cancellationToken);
    }

    /// <summary>
    /// One teacher-forced pass per image (height*width palette tokens): every layer's pooled features and each pixel's
    /// bits, run in batches of up to MaxBatch. Throws <see cref="InvalidOperationException"/> when <see cref="HasAnalysis"/> is false.
    /// </summary>
    public Task<ImageAnalysis[]> AnalyzeBatchAsync(IReadOnlyList<int[]> images, CancellationToken cancellationToken)
    {
        ObjectDisposedException.ThrowIf(Volatile.Read(ref _disposed) != 0, this);
        var analyzer = _analyzer ?? throw new InvalidOperationException($"model '{Manifest.Id}' has no analysis graph");
        return RunGraphAsync("analysis", () => analyzer.Analyze(images, cancellationToken), cancellationToken);
    }

    /// <summary>A run of a graph beside the decoder (classifier, analysis) off the caller's thread; its failures count towards <see cref="IsFailing"/>.</summary>
    private Task<T> RunGraphAsync<T>(string stage, Func<T> run, CancellationToken cancellationToken) =>
        Task.Run(() =>
        {
            try
            {
                var result = run();
                Volatile.Write(ref _graphFailures, 0);
                return result;
            }
            catch (OnnxRuntimeException e)
            {
                var fault = new ModelRunException(Manifest.Id, stage, e);
                Volatile.Write(ref _graphFailure, fault.Message);
                Interlocked.Increment(ref _graphFailures);
                throw fault;
            }
        }, cancellationToken);

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

    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0) return;
        _scheduler.Dispose();   // stops the loop (failing what is still queued or running) before the decoder goes
        _decoder.Dispose();
        _classifier?.Dispose();
        _analyzer?.Dispose();
        _weights?.Dispose();
    }
}
