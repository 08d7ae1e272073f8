using IGpt.Api.Catalog;
using IGpt.Api.Errors;
using IGpt.Api.Serving;

namespace IGpt.Api.Endpoints;

/// <summary>
/// The endpoint filter of the model routes (completions, samples, classifications): an exception thrown by the handler
/// becomes its problem+json answer and its outcome in igpt_requests_total, through <see cref="RequestFailure"/>, so
/// that the handlers hold only their success path. An exception the API does not know is counted as failed and left
/// to the exception handler (a 500 problem). A streamed answer reports its own failures as an SSE "error" event, with
/// the same mapping, since its status line is sent before the model runs.
/// </summary>
internal sealed class ModelRouteOutcomes(string endpoint) : IEndpointFilter
{
    public async ValueTask<object?> InvokeAsync(EndpointFilterInvocationContext invocation, EndpointFilterDelegate next)
    {
        try
        {
            return await next(invocation);
        }
        catch (Exception e)
        {
            var context = invocation.HttpContext;
            var metrics = context.RequestServices.GetRequiredService<ServingMetrics>();
            var failure = RequestFailure.From(e, context);
            metrics.Request(ModelLabel(context), endpoint, failure?.Outcome ?? RequestOutcome.Failed);
            if (failure is null) throw;
            return TypedResults.Problem(failure.Problem);
        }
    }

    /// <summary>The model label of a request's metrics: its id, or "unknown" for an id that names no package (labels stay bounded).</summary>
    private static string ModelLabel(HttpContext context) =>
        context.GetRouteValue("model") is string id && context.RequestServices.GetRequiredService<ModelCatalog>().Describe(id) is not null
            ? id
            : "unknown";
}

internal static class ModelRouteOutcomesExtensions
{
    /// <summary>Answers the route's exceptions with problems and counts their outcomes under <paramref name="endpoint"/>.</summary>
    public static RouteHandlerBuilder WithOutcomes(this RouteHandlerBuilder builder, string endpoint) =>
        builder.AddEndpointFilter(new ModelRouteOutcomes(endpoint));
}
