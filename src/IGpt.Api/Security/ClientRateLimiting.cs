using System.Globalization;
using System.Threading.RateLimiting;
using IGpt.Api.Errors;
using IGpt.Api.Hosting;
using Microsoft.AspNetCore.RateLimiting;
using Microsoft.Extensions.Options;

namespace IGpt.Api.Security;

public static class ClientRateLimiting
{
    /// <summary>
    /// Api:MaxConcurrentRequestsPerClient requests in flight per client on the /v1 routes (ASP.NET Core's concurrency
    /// limiter, partitioned by API key when keys are on, else by remote IP address); one more gets 429 problem+json
    /// with Retry-After (Api:RetryAfterSeconds) at once. Health, /metrics, the web page and Swagger are not limited.
    /// </summary>
    public static IServiceCollection AddClientRateLimiting(this IServiceCollection services)
    {
        services.AddRateLimiter(_ => { });
        services.AddOptions<RateLimiterOptions>().Configure<IOptions<ApiOptions>>((limiter, api) =>
        {
            var permits = api.Value.MaxConcurrentRequestsPerClient;
            var retryAfter = api.Value.RetryAfterSeconds.ToString(CultureInfo.InvariantCulture);
            limiter.RejectionStatusCode = StatusCodes.Status429TooManyRequests;
            limiter.GlobalLimiter = PartitionedRateLimiter.Create<HttpContext, string>(context =>
                permits == 0 || !context.Request.Path.StartsWithSegments("/v1", StringComparison.OrdinalIgnoreCase)
                    ? RateLimitPartition.GetNoLimiter("unlimited")
                    : RateLimitPartition.GetConcurrencyLimiter(ClientOf(context),
                        _ => new ConcurrencyLimiterOptions { PermitLimit = permits, QueueLimit = 0 }));
            limiter.OnRejected = async (rejected, cancellationToken) =>
            {
                var context = rejected.HttpContext;
                context.Response.StatusCode = StatusCodes.Status429TooManyRequests;
                context.Response.Headers.RetryAfter = retryAfter;
                var problem = Problems.Create(StatusCodes.Status429TooManyRequests, "Too many requests",
                    $"This client already has {permits} requests in flight (Api:MaxConcurrentRequestsPerClient); retry when one has finished.");
                await context.RequestServices.GetRequiredService<IProblemDetailsService>()
                    .WriteAsync(new ProblemDetailsContext { HttpContext = context, ProblemDetails = problem });
            };
        });
        return services;
    }

    // The client a request counts against: its API key's name when keys are on, else its IP address.
    private static string ClientOf(HttpContext context) =>
        ApiKeyMiddleware.Client(context) ?? "ip:" + (context.Connection.RemoteIpAddress?.ToString() ?? "unknown");
}
