using IGpt.Api.Contracts;
using IGpt.Api.Errors;
using IGpt.Inference;

namespace IGpt.Api.Catalog;

/// <summary>The API's view of the model registry: descriptions for /v1/models and the checks every model route makes.</summary>
public sealed class ModelCatalog
{
    private readonly ModelRegistry _registry;
    private readonly Dictionary<string, ModelResponse> _descriptions;
    private readonly ModelResponse[] _sorted;

    public ModelCatalog(ModelRegistry registry)
    {
        _registry = registry;
        // Described once from what was loaded: nothing here reads the package's files again, so a package
        // deleted or overwritten while served keeps being described (and served) from memory.
        _descriptions = registry.Entries.ToDictionary(e => e.Id, Describe, StringComparer.Ordinal);
        _sorted = [.. _descriptions.Values.OrderBy(m => m.Id, StringComparer.Ordinal)];
    }

    /// <summary>Every package, sorted by id, with its status now (a loaded model whose runs keep failing is "failing").</summary>
    public IReadOnlyList<ModelResponse> Models => [.. _sorted.Select(Current)];

    public ModelResponse? Describe(string id) => _descriptions.GetValueOrDefault(id) is { } found ? Current(found) : null;

    public const string Ready = "ready", Failed = "failed", Failing = "failing";

    private ModelResponse Current(ModelResponse description) =>
        _registry.Find(description.Id)?.Model is { IsFailing: true } model
            ? description with { Status = Failing, Error = model.LastFailure }
            : description;

    /// <summary>The loaded model <paramref name="id"/>; a 404 problem when there is no such package, 503 when it failed to load.</summary>
    public IGptModel GetReady(string id)
    {
        var entry = _registry.Find(id)
            ?? throw new ApiProblemException(StatusCodes.Status404NotFound, "Model not found",
                $"There is no model '{id}'. GET /v1/models lists the models.");
        if (entry.Status != ModelStatus.Ready || entry.Model is null)
        {
            throw new ApiProblemException(StatusCodes.Status503ServiceUnavailable, "Model unavailable",
                $"The model '{id}' failed to load: {entry.Error}");
        }
        return entry.Model;
    }

    private static ModelResponse Describe(ModelEntry entry)
    {
        var model = entry.Model;
        var manifest = model?.Manifest ?? TryLoadManifest(entry.Directory);
        return new ModelResponse
        {
            Id = entry.Id,
            Status = StatusName(entry.Status),
            Error = entry.Status == ModelStatus.Ready ? null : entry.Error,
            Description = manifest?.Description,
            Height = manifest?.Height,
            Width = manifest?.Width,
            Channels = manifest?.Channels,
            PaletteSize = manifest?.PaletteSize,
            Classes = manifest?.Classes ?? [],
            HasClassifier = model?.HasClassifier ?? false,
            HasAnalysis = model?.HasAnalysis ?? false,
            MaxLayer = model?.HasAnalysis == true ? manifest!.Architecture.NLayer : null,
            EmbeddingLayer = model?.HasAnalysis == true ? manifest!.Analysis?.EmbeddingLayer : null,
            ExecutionProvider = model?.ExecutionProvider,
            ProviderReason = model?.ProviderReason,
            Sampling = manifest is null ? null : SamplingSettings.From(manifest.Sampling),
            Metrics = manifest?.Metrics,
            Training = manifest?.Training,
        };
    }

    public static string StatusName(ModelStatus status) => status == ModelStatus.Ready ? Ready : Failed;

    // A failed package may still have a readable manifest (a broken ONNX file): show what it says.
    private static ModelManifest? TryLoadManifest(string directory)
    {
        try
        {
            return ModelManifest.Load(directory);
        }
        catch (Exception e) when (e is ModelPackageException or IOException or UnauthorizedAccessException)
        {
            return null;
        }
    }
}
