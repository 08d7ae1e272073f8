using Microsoft.Extensions.Logging;
using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;

namespace IGpt.Inference.Generation;

/// <summary>What <see cref="SessionLoader"/> set up for one package: its decoder and classifier, on which provider and why.</summary>
/// <remarks><see cref="Weights"/> (format 2 packages on the CPU) must outlive the sessions that share them.</remarks>
internal sealed record LoadedModel(KvCacheDecoder Decoder, Classifier? Classifier, Analyzer? Analyzer, string Provider, string Reason,
    string Summary, PackageWeights? Weights);

/// <summary>
/// Sets up a package's runs: the CUDA provider first when enabled (the fp16 decoder), else the CPU with the step
/// paths <see cref="StepPlanner"/> chooses; then the classifier on the same provider, and the analysis graph on the CPU.
/// Every session comes from the
/// planner; what is created is disposed again if a later part fails.
/// </summary>
internal static class SessionLoader
{
    public static LoadedModel Load(ModelManifest manifest, StepPlanner planner, ILogger logger)
    {
        var options = planner.Options;
        var cuda = options.UseCuda ? TryLoadCudaDecoder(manifest, planner, logger) : new CudaSetup(null, null, false, "UseCuda is off");
        if (options.UseCuda && cuda.Session is null && !cuda.ProviderFailed)
            logger.LogWarning("Model {ModelId}: running on the CPU provider: {Reason}", manifest.Id, cuda.Reason);
        string provider = cuda.Session is null ? "CPU" : "CUDA";
        var weights = options.ShareWeights ? PackageWeights.For(manifest) : null;
        KvCacheDecoder? decoder = null;
        Classifier? classifier = null;
        Analyzer? analyzer;
        try
        {
            decoder = cuda.Session is { } session ? CudaDecoder(manifest, options, session, cuda) : CpuDecoder(manifest, planner, weights, logger);
            classifier = LoadClassifier(manifest, planner, provider, weights, logger);
            analyzer = LoadAnalyzer(manifest, planner, weights, logger);
        }
        catch
        {
            classifier?.Dispose();
            decoder?.Dispose();
            weights?.Dispose();  // after every session that shares them
            throw;
        }
        // The provider's reason once: the fallback's full text is at Debug and in the model's ProviderReason.
        string summary = cuda.ProviderFailed ? "CUDA provider unavailable" : cuda.Reason;
        logger.LogInformation("Model {ModelId}: execution provider {Provider} ({Reason}); KV cache {KvType}; classifier {Classifier}; analysis {Analysis}; "
            + "CPU steps: the library's kernels up to {KernelRows} rows ({KernelWeights} weights; on one thread up to {KernelAloneRows}, as row lanes from {KernelLaneRows}), one-thread up to {SmallRows} rows, row lanes from {LaneRows}, step segments from {SegmentedRows} (0 = none)",
            manifest.Id, provider, summary, decoder.CacheType,
            classifier is null ? "none" : "loaded", analyzer is null ? "none" : "loaded", decoder.Plan.KernelStepRows,
            decoder.Plan.KernelInt16Weights ? KernelWeightTypes.Int16 : KernelWeightTypes.Float32, decoder.Plan.KernelAloneRows, decoder.Plan.KernelLaneRows, decoder.Plan.SmallStepRows, decoder.Plan.LaneStepRows, decoder.Plan.SegmentedStepRows);
        return new LoadedModel(decoder, classifier, analyzer, provider, cuda.Reason, summary, weights);
    }

    /// <summary>
    /// The package's CUDA decoder graph, which must be fp16 (GroupQueryAttention on CUDA runs only in fp16/bf16:
    /// an fp32 graph would put attention back on the CPU), or null with the reason.
    /// </summary>
    public static ModelFile? CudaDecoderFile(ModelManifest manifest, out string reason)
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

    internal static TensorElementType KvType(ModelFile file) => file.Dtype == "float16" ? TensorElementType.Float16 : TensorElementType.Float;

    /// <summary>A decoder session on the CUDA provider with its device memory, or (Session null) why there is none.</summary>
    private sealed record CudaSetup(InferenceSession? Session, DecoderMemory? Memory, bool Graphs, string Reason, bool ProviderFailed = false);

    private static CudaSetup TryLoadCudaDecoder(ModelManifest manifest, StepPlanner planner, ILogger logger)
    {
        var options = planner.Options;
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
                try { session = planner.CreateSession(path, useCuda: true, cudaGraphs: true); }
                catch (OnnxRuntimeException e)
                {
                    graphs = false;
                    note = $"; CUDA graphs unavailable: {StepPlanner.FirstLine(e.Message)}";
                }
            }
            session ??= planner.CreateSession(path, useCuda: true, cudaGraphs: false);
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
            planner.Fallbacks.Report(logger, manifest.Id, e.Message);
            return new CudaSetup(null, null, false, $"CUDA provider unavailable, using CPU: {StepPlanner.FirstLine(e.Message)}", ProviderFailed: true);
        }
    }

    /// <summary>What a missing or unusable CUDA installation throws (the provider library, its CUDA libraries, the CUDA runtime).</summary>
    private static bool IsProviderLoadFailure(Exception e) =>
        e is OnnxRuntimeException or DllNotFoundException or EntryPointNotFoundException or BadImageFormatException;

    private static KvCacheDecoder CudaDecoder(ModelManifest manifest, InferenceOptions options, InferenceSession session, CudaSetup cuda)
    {
        var file = manifest.Files.Decoder.Cuda!;
        try { return new KvCacheDecoder(session, manifest, options.MaxBatch, cuda.Memory!, KvType(file), cuda.Graphs); }
        catch (Exception e)
        {
            cuda.Memory!.Dispose();
            session.Dispose();
            // The provider loaded, so this is the package (wrong dtype) or the device (e.g. the KV cache over CudaMemoryLimitBytes).
            if (e is ModelPackageException) throw new ModelPackageException($"{file.Path}: {e.Message}", e);
            throw new ModelPackageException($"{file.Path}: cannot set up the decoder on CUDA device {options.CudaDeviceId}: {StepPlanner.FirstLine(e.Message)}", e);
        }
    }

    private static KvCacheDecoder CpuDecoder(ModelManifest manifest, StepPlanner planner, PackageWeights? weights, ILogger logger)
    {
        var file = planner.CpuGraph(manifest.Files.Decoder);
        var kvType = KvType(file);
        if (planner.CompressedCache(manifest, file, kvType, out var fallback) is null && fallback is not null)
            logger.LogWarning("Model {ModelId}: KV cache float32, not {KvCacheType}: {Reason}", manifest.Id, planner.Options.KvCacheType, fallback);
        var tensors = planner.KernelStepRows(manifest, kvType) > 0 ? weights?.Float32Tensors(file.Path) : null;
        if (tensors is not null && Engine.Cpu.KernelStep.Check(manifest, tensors) is { } unfit)
        {
            logger.LogWarning("Model {ModelId}: decode steps run on ONNX Runtime, not the library's kernels: {Reason}", manifest.Id, unfit);
            tensors = null;
        }
        var plan = planner.PlanCpuSteps(manifest, file, kvType, kernelWeights: tensors is not null);
        var session = planner.CreatePackageSession(manifest, file.Path, weights);
        var memory = new HostMemory();
        InferenceSession? oneThread = null;
        InferenceSession[]? segments = null;
        try
        {
            if (plan.UsesOneThreadSession) oneThread = planner.CreatePackageSession(manifest, file.Path, weights, intraOpThreads: 1);
            if (plan.UsesSegments) segments = planner.CreateSegmentSessions(manifest, file, weights);
            return new KvCacheDecoder(session, manifest, planner.Options.MaxBatch, memory, kvType, cpu: new CpuSteps(plan, oneThread, segments, tensors));
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

    /// <summary>
    /// The package's classifier: on CUDA its fp16 graph, else the graph the planner picks for the CPU. A graph other than
    /// the package's fp32 CPU one must survive a first run at load, of an image of every palette colour in turn, or the
    /// fp32 CPU graph serves instead (logged): an fp16 graph exported before its attention declared its presents loads
    /// on CUDA and fails at every run (models/README.md).
    /// </summary>
    private static Classifier? LoadClassifier(ModelManifest manifest, StepPlanner planner, string provider, PackageWeights? weights,
        ILogger logger)
    {
        if (manifest.Files.Classifier is not { } files) return null;
        var first = provider == "CUDA" ? files.Cuda : planner.CpuGraph(files);
        if (first is not null && first != files.Cpu)
        {
            InferenceSession? session = null;
            try
            {
                session = provider == "CUDA"
                    ? planner.CreateSession(manifest.ResolvePath(first.Path), useCuda: true, cudaGraphs: false)
                    : planner.CreatePackageSession(manifest, first.Path, weights);
            }
            catch (Exception e) when (IsProviderLoadFailure(e))
            {
                logger.LogWarning("Model {ModelId}: classifier {Path} failed to load, using {CpuPath}: {Reason}",
                    manifest.Id, first.Path, files.Cpu.Path, StepPlanner.FirstLine(e.Message));
            }
            if (session is not null && RunsOnce(session, manifest, planner.Options.MaxBatch, first.Path, files.Cpu.Path, logger) is { } classifier)
                return classifier;
        }
        return NewClassifier(planner.CreatePackageSession(manifest, files.Cpu.Path, weights), manifest, planner.Options.MaxBatch);
    }

    /// <summary>A classifier over <paramref name="session"/>, which is disposed if the classifier cannot take it.</summary>
    private static Classifier NewClassifier(InferenceSession session, ModelManifest manifest, int maxBatch)
    {
        try { return new Classifier(session, manifest, maxBatch); }
        catch
        {
            session.Dispose();
            throw;
        }
    }

    /// <summary>A classifier over <paramref name="session"/> once it has classified one image of every palette colour in turn; else null, the session disposed and the reason logged.</summary>
    private static Classifier? RunsOnce(InferenceSession session, ModelManifest manifest, int maxBatch, string path, string cpuPath, ILogger logger)
    {
        var classifier = NewClassifier(session, manifest, maxBatch);
        try
        {
            var everyColour = new int[manifest.TokensPerImage];
            for (int i = 0; i < everyColour.Length; i++) everyColour[i] = i % manifest.PaletteSize;
            classifier.Classify([everyColour], CancellationToken.None);
            return classifier;
        }
        catch (OnnxRuntimeException e)
        {
            classifier.Dispose();
            logger.LogWarning("Model {ModelId}: classifier {Path} failed its first run, using {CpuPath}: {Reason}",
                manifest.Id, path, cpuPath, StepPlanner.FirstLine(e.Message));
            return null;
        }
    }

    /// <summary>
    /// The analysis graph (embeddings and likelihoods), or null when the package has none. The package ships it in fp32
    /// only, so it runs on the CPU even beside a CUDA decoder, sharing the CPU sessions' weights.
    /// </summary>
    private static Analyzer? LoadAnalyzer(ModelManifest manifest, StepPlanner planner, PackageWeights? weights, ILogger logger)
    {
        if (manifest.Analysis is not { } analysis) return null;
        if (analysis.Ood is { } ood && OodScore.CalibrationOf(manifest) is null)
        {
            logger.LogWarning("Model {ModelId}: analysis.ood is calibrated for the score '{Score}', not '{Served}': likelihoods come without a verdict",
                manifest.Id, ood.Score, OodScore.Name);
        }
        var session = planner.CreatePackageSession(manifest, analysis.Cpu.Path, weights);
        try { return new Analyzer(session, manifest, planner.Options.MaxBatch); }
        catch (Exception e)
        {
            session.Dispose();
            if (e is ModelPackageException) throw new ModelPackageException($"{analysis.Cpu.Path}: {e.Message}", e);
            throw;
        }
    }
}
