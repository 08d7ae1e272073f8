using Microsoft.Extensions.Caching.Memory;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;

namespace IGpt.Inference.Packages;

public enum ModelStatus { Ready, Failed }

/// <summary>A package folder: Ready with its model, or Failed with the reason.</summary>
public sealed record ModelEntry(string Id, string Directory, ModelStatus Status, string? Error, IGptModel? Model);

/// <summary>
/// Loads every package folder (a subfolder with a model.json) under InferenceOptions.ModelsPath at
/// construction. A package that cannot be served becomes a Failed entry with the reason; loading never throws.
/// Owns the models and the prefix KV cache they share.
/// </summary>
public sealed class ModelRegistry : IDisposable
{
    private readonly MemoryCache? _prefixCache;
    private readonly Dictionary<string, ModelEntry> _byId = new(StringComparer.Ordinal);

    public ModelRegistry(IOptions<InferenceOptions> options, ILoggerFactory loggerFactory, IDecodeObserver? observer = null, StepGate? gate = null)
    {
        var o = options.Value;
        o.Validate();
        var logger = loggerFactory.CreateLogger<ModelRegistry>();
        if (o.PrefixCacheSizeLimit > 0)
            _prefixCache = new MemoryCache(new MemoryCacheOptions { SizeLimit = o.PrefixCacheSizeLimit, CompactionPercentage = 0.25 });

        var root = Path.GetFullPath(o.ModelsPath);
        var entries = new List<ModelEntry>();
        if (!System.IO.Directory.Exists(root))
        {
            logger.LogWarning("Models folder {ModelsPath} does not exist; no models are served", root);
        }
        else
        {
            foreach (var dir in System.IO.Directory.GetDirectories(root).Order(StringComparer.Ordinal))
            {
                var name = Path.GetFileName(dir);
                if (name.StartsWith('.')) continue;
                var entry = LoadOne(dir, name, o, loggerFactory, logger, observer, gate);
                entries.Add(entry);
                _byId.TryAdd(entry.Id, entry);
            }
        }
        Entries = entries;
        logger.LogInformation("Models: {Ready} ready, {Failed} failed under {ModelsPath}",
            entries.Count(e => e.Status == ModelStatus.Ready), entries.Count(e => e.Status == ModelStatus.Failed), root);
    }

    public IReadOnlyList<ModelEntry> Entries { get; }

    public ModelEntry? Find(string id) => _byId.GetValueOrDefault(id);

    private ModelEntry LoadOne(string dir, string folderName, InferenceOptions o, ILoggerFactory loggerFactory, ILogger logger, IDecodeObserver? observer,
        StepGate? gate)
    {
        string id = folderName;
        try
        {
            var manifest = ModelManifest.Load(dir);
            id = manifest.Id;
            if (_byId.ContainsKey(id))
                throw new ModelPackageException($"id '{id}' is already served from {_byId[id].Directory}");
            var model = IGptModel.Load(manifest, o, loggerFactory.CreateLogger($"IGpt.Inference.Model.{id}"), _prefixCache, observer, gate);
            return new ModelEntry(id, dir, ModelStatus.Ready, null, model);
        }
        catch (Exception e)
        {
            var reason = e is ModelPackageException ? e.Message : $"{e.GetType().Name}: {e.Message}";
            logger.LogError("Model package {Folder} failed to load: {Reason}", dir, reason);
            return new ModelEntry(id, dir, ModelStatus.Failed, reason, null);
        }
    }

    public void Dispose()
    {
        foreach (var e in Entries) e.Model?.Dispose();
        _prefixCache?.Dispose();
    }
}
