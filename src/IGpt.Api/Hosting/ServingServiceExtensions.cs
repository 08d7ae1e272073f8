using IGpt.Api.Catalog;
using IGpt.Api.Serving;
using IGpt.Inference;
using Microsoft.Extensions.Options;
using Prometheus;

namespace IGpt.Api.Hosting;

public static class ServingServiceExtensions
{
    /// <summary>
    /// Serving under load: Prometheus metrics (also the schedulers' step observer), classification micro-batching and the
    /// graceful shutdown (Api:ShutdownDrainSeconds; the host's ShutdownTimeout is that plus room for cancelled requests to answer).
    /// </summary>
    public static IServiceCollection AddServing(this IServiceCollection services)
    {
        services.AddSingleton<ServingMetrics>();
        services.AddSingleton<IDecodeObserver>(sp => sp.GetRequiredService<ServingMetrics>());
        services.AddSingleton<ClassificationBatcher>();
        services.AddSingleton<AnalysisBatcher>();
        services.AddSingleton<ShutdownDrain>();
        services.AddHostedService(sp => sp.GetRequiredService<ShutdownDrain>());
        services.AddOptions<HostOptions>()
            .Configure<IOptions<ApiOptions>>((host, api) =>
                host.ShutdownTimeout = api.Value.ShutdownDrain + ShutdownDrain.AbortGrace + TimeSpan.FromSeconds(5));
        return services;
    }

    /// <summary>GET /metrics: the Prometheus text format (this host's registry: scheduler gauges are read at each scrape).</summary>
    public static IEndpointRouteBuilder MapServingMetrics(this IEndpointRouteBuilder app)
    {
        var metrics = app.ServiceProvider.GetRequiredService<ServingMetrics>();
        var loader = app.ServiceProvider.GetRequiredService<ModelLoader>();
        // The models load when the host starts, after the routes are mapped: the scrape reads them then.
        metrics.Watch(() => loader.Registry.Entries.Where(e => e.Model is not null).Select(e => (e.Id, e.Model!)));
        app.MapMetrics("/metrics", metrics.Registry).ExcludeFromDescription();
        return app;
    }
}
