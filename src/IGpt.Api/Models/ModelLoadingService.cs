using IGpt.Inference;

namespace IGpt.Api.Models;

/// <summary>Loads every model package when the host starts (before requests are served) and logs where each one runs.</summary>
public sealed class ModelLoadingService(IServiceProvider services, ILogger<ModelLoadingService> logger) : IHostedService
{
    public Task StartAsync(CancellationToken cancellationToken)
    {
        var catalog = services.GetRequiredService<ModelCatalog>();
        foreach (var model in catalog.Models)
        {
            if (model.Status == ModelCatalog.StatusName(ModelStatus.Ready))
            {
                logger.LogInformation("Model {Model} ready on {ExecutionProvider}: {ProviderReason}",
                    model.Id, model.ExecutionProvider, model.ProviderReason);
            }
            else
            {
                logger.LogError("Model {Model} failed to load and answers 503: {Error}", model.Id, model.Error);
            }
        }
        if (catalog.Models.Count == 0) logger.LogWarning("No model packages found; /health/ready answers 503");
        return Task.CompletedTask;
    }

    public Task StopAsync(CancellationToken cancellationToken) => Task.CompletedTask;
}
