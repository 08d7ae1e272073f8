using System.Diagnostics;
using Microsoft.Extensions.Caching.Memory;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.ML.OnnxRuntime;

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
    private int _disposed, _classifierFailures;
    private string? _classifierFailure;

    /// <summary>Generation requests (or classifier batches) in a row that a model run must fail before the model reports itself failing.</summary>
    public const int FailingAfter = 3;

    private IGptModel(ModelManifest manifest, KvCacheDecoder decoder, Classifier? classifier, string provider, string reason,
        IMemoryCache? prefixCache, int queueCapacity, IDecodeObserver? observer, ILogger logger)
    {
        Manifest = manifest;
        _decoder = decoder;
        _classifier = classifier;
        ExecutionProvider = provider;
        ProviderReason = reason;
        if (prefixCache is not null && decoder.CanCopyKv)
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
        InferenceSession? session = null;
        string provider = "CPU", reason;
        bool fp16 = false;
        var cuda = manifest.Files.Decoder.Cuda;
        if (!options.UseCuda) reason = "UseCuda is off";
        else if (cuda is null) reason = "the package has no CUDA decoder (files.decoder.cuda)";
        else
        {
            try
            {
                session = CreateSession(manifest.ResolvePath(cuda.Path), options, useCuda: true);
                provider = "CUDA";
                fp16 = cuda.Dtype == "float16";
                reason = $"CUDA provider loaded on device {options.CudaDeviceId} ({cuda.Path})";
            }
            catch (Exception e) when (e is OnnxRuntimeException or DllNotFoundException or EntryPointNotFoundException or BadImageFormatException)
            {
                reason = $"CUDA provider unavailable, using CPU: {FirstLine(e.Message)}";
            }
        }
        session ??= CreatePackageSession(manifest, manifest.Files.Decoder.Cpu.Path, options);

        KvCacheDecoder decoder;
        try { decoder = new KvCacheDecoder(session, manifest, options.MaxBatch, provider == "CUDA", options.CudaDeviceId, fp16); }
        catch
        {
            session.Dispose();
            throw;
        }
        Classifier? classifier = null;
        try
        {
            var files = manifest.Files.Classifier;
            if (files is not null)
            {
                // The fp32 classifier runs on the CPU provider; a CUDA variant is used when the decoder
                // runs on CUDA and the package has one (falling back to the CPU graph if it cannot load).
                InferenceSession? cls = null;
                if (provider == "CUDA" && files.Cuda is not null)
                {
                    try { cls = CreateSession(manifest.ResolvePath(files.Cuda.Path), options, useCuda: true); }
                    catch (OnnxRuntimeException e)
                    {
                        logger.LogWarning("Model {ModelId}: CUDA classifier {Path} failed to load, using the CPU one: {Reason}",
                            manifest.Id, files.Cuda.Path, FirstLine(e.Message));
                    }
                }
                cls ??= CreatePackageSession(manifest, files.Cpu.Path, options);
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
        logger.LogInformation("Model {ModelId}: execution provider {Provider} ({Reason}); classifier {Classifier}",
            manifest.Id, provider, reason, classifier is null ? "none" : "loaded");
        return new IGptModel(manifest, decoder, classifier, provider, reason, prefixCache, options.QueueCapacity, observer, logger);
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

    private static InferenceSession CreatePackageSession(ModelManifest manifest, string relativePath, InferenceOptions options)
    {
        try { return CreateSession(manifest.ResolvePath(relativePath), options, useCuda: false); }
        catch (OnnxRuntimeException e)
        {
            throw new ModelPackageException($"{relativePath}: cannot load: {FirstLine(e.Message)}", e);
        }
    }

    private static InferenceSession CreateSession(string path, InferenceOptions options, bool useCuda)
    {
        using var so = new SessionOptions
        {
            GraphOptimizationLevel = GraphOptimizationLevel.ORT_ENABLE_ALL,
            ExecutionMode = ExecutionMode.ORT_SEQUENTIAL,
            IntraOpNumThreads = options.IntraOpThreads > 0 ? options.IntraOpThreads : Environment.ProcessorCount,
            EnableCpuMemArena = true,
            LogSeverityLevel = OrtLoggingLevel.ORT_LOGGING_LEVEL_ERROR,
        };
        if (!options.AllowSpinning) so.AddSessionConfigEntry("session.intra_op.allow_spinning", "0");
        // Spin between the ops of one run (a decode step is many sub-millisecond ops) but stop when the run
        // ends, so idle models and the web server are not starved between steps.
        else so.AddSessionConfigEntry("session.force_spinning_stop", "1");
        if (useCuda) so.AppendExecutionProvider_CUDA(options.CudaDeviceId);
        return new InferenceSession(path, so);
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
    }
}
