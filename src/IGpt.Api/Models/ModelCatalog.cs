using IGpt.Api.Contracts;
using IGpt.Api.Errors;
using IGpt.Inference;

namespace IGpt.Api.Models;

/// <summary>The API's view of the model registry: descriptions for /v1/models and the checks every model route makes.</summary>
public sealed class ModelCatalog
{
    private readonly ModelRegistry _registry;
    private readonly Dictionary<string, ModelResponse> _descriptions;

    public ModelCatalog(ModelRegistry registry)
    {
        _registry = registry;
        _descriptions = registry.Entries.ToDictionary(e => e.Id, Describe, StringComparer.Ordinal);
        Models = [.. _descriptions.Values.OrderBy(m => m.Id, StringComparer.Ordinal)];
    }

    /// <summary>Every package, sorted by id.</summary>
    public IReadOnlyList<ModelResponse> Models { get; }

    public ModelResponse? Describe(string id) => _descriptions.GetValueOrDefault(id);

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
            ExecutionProvider = model?.ExecutionProvider,
            ProviderReason = model?.ProviderReason,
            Metrics = manifest?.Metrics,
            Training = manifest?.Training,
        };
    }

    public static string StatusName(ModelStatus status) => status == ModelStatus.Ready ? "ready" : "failed";

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
