using IGpt.Inference;
using Microsoft.Extensions.Options;

namespace IGpt.Api.Catalog;

/// <summary>
/// Loads every model package when the host starts, before the server takes requests.
/// Until then there is no <see cref="Registry"/> or <see cref="Catalog"/>: nothing that only wires the app (mapping
/// routes, building the pipeline) loads a model as a side effect of resolving a service. Owns the loaded models: they
/// are disposed with the container, after the shutdown drain has let running requests answer.
/// </summary>
public sealed class ModelLoader(
    IOptions<InferenceOptions> options, ILoggerFactory loggerFactory, IDecodeObserver observer, StepGate gate,
    ILogger<ModelLoader> logger)
    : IHostedService, IDisposable
{
    private ModelRegistry? _registry;
    private ModelCatalog? _catalog;

    /// <summary>The loaded packages (ready or failed); available once the host has started.</summary>
    public ModelRegistry Registry => _registry ?? throw NotLoaded();

    /// <summary>The API's view of the loaded packages; available once the host has started.</summary>
    public ModelCatalog Catalog => _catalog ?? throw NotLoaded();

    public Task StartAsync(CancellationToken cancellationToken)
    {
        // A package that cannot be served becomes a failed entry (its routes answer 503); loading itself never throws.
        _registry = new ModelRegistry(options, loggerFactory, observer, gate);
        _catalog = new ModelCatalog(_registry);
        // Each model's line (its provider, or why it failed) is the library's; this only adds what the API makes of none.
        if (_registry.Entries.Count == 0) logger.LogWarning("No model packages found; /health/ready answers 503");
        return Task.CompletedTask;
    }

    public Task StopAsync(CancellationToken cancellationToken) => Task.CompletedTask;

    public void Dispose() => _registry?.Dispose();

    private static InvalidOperationException NotLoaded() =>
        new("The model packages are loaded when the host starts; nothing may use them before.");
}
