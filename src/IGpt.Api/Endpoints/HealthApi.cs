using IGpt.Api.Contracts;
using IGpt.Api.Catalog;
using IGpt.Api.Serving;
using Microsoft.AspNetCore.Http.HttpResults;

namespace IGpt.Api.Endpoints;

/// <summary>
/// GET /health/live (the process answers) and /health/ready. Ready means at least one model is served: a broken
/// package does not take the healthy models out of rotation (restarting would not fix it), so it makes the status
/// "degraded" (still 200) and its own routes answer 503; so does a loaded model whose last runs all failed ("failing").
/// With no model ready the answer is 503 "unavailable"; from the start of shutdown it is 503 "stopping".
/// </summary>
public static class HealthApi
{
    public static IEndpointRouteBuilder MapHealthApi(this IEndpointRouteBuilder app)
    {
        var group = app.MapGroup("/health").WithTags("Health");
        group.MapGet("/live", Live)
            .WithName("Live")
            .WithSummary("Liveness: the process answers")
            .WithDescription("200 while the process runs, with each model's status; it does not say whether a model is ready.");
        group.MapGet("/ready", Ready)
            .WithName("Ready")
            .WithSummary("Readiness: at least one model is served (200 ready or degraded), else 503 (unavailable, or stopping)")
            .WithDescription("A failed package makes the status degraded (still 200): restarting would not fix it, and the other "
                + "models still serve. 503 when no model is ready, and from the start of shutdown.")
            .Produces<HealthResponse>(StatusCodes.Status503ServiceUnavailable);
        return app;
    }

    /// <summary>Liveness.</summary>
    public static Ok<HealthResponse> Live(ModelCatalog catalog, CancellationToken cancellationToken) =>
        TypedResults.Ok(new HealthResponse { Status = "live", Models = Models(catalog) });

    /// <summary>Readiness.</summary>
    public static Results<Ok<HealthResponse>, JsonHttpResult<HealthResponse>> Ready(ModelCatalog catalog, ShutdownDrain drain,
        CancellationToken cancellationToken)
    {
        var models = Models(catalog);
        if (drain.IsStopping)
        {
            return TypedResults.Json(new HealthResponse { Status = "stopping", Models = models },
                statusCode: StatusCodes.Status503ServiceUnavailable);
        }
        var ready = models.Count(m => m.Status == ModelCatalog.Ready);
        if (ready == 0)
        {
            return TypedResults.Json(new HealthResponse { Status = "unavailable", Models = models },
                statusCode: StatusCodes.Status503ServiceUnavailable);
        }
        return TypedResults.Ok(new HealthResponse { Status = ready == models.Count ? "ready" : "degraded", Models = models });
    }

    private static IReadOnlyList<ModelHealth> Models(ModelCatalog catalog) =>
        [.. catalog.Models.Select(m => new ModelHealth { Id = m.Id, Status = m.Status, ExecutionProvider = m.ExecutionProvider, Error = m.Error })];
}
