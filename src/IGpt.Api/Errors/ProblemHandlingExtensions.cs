using System.Diagnostics;

namespace IGpt.Api.Errors;

public static class ProblemHandlingExtensions
{
    /// <summary>RFC 9457 problem+json for every error: handler results, status codes without a body, and exceptions.</summary>
    public static IServiceCollection AddProblemHandling(this IServiceCollection services)
    {
        services.AddProblemDetails(options => options.CustomizeProblemDetails = context =>
        {
            context.ProblemDetails.Instance ??= $"{context.HttpContext.Request.Method} {context.HttpContext.Request.Path}";
            context.ProblemDetails.Extensions.TryAdd("trace_id", Activity.Current?.Id ?? context.HttpContext.TraceIdentifier);
        });
        // After AddProblemDetails: the default writer first, this one when the default declines the request's Accept.
        services.AddSingleton<IProblemDetailsWriter, ProblemJsonFallbackWriter>();
        services.AddExceptionHandler<ApiExceptionHandler>();
        return services;
    }
}
