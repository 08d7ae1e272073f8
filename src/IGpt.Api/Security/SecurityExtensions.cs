namespace IGpt.Api.Security;

public static class SecurityExtensions
{
    /// <summary>Optional API keys (Api:Keys) and the per-client concurrency limit (Api:MaxConcurrentRequestsPerClient).</summary>
    public static IServiceCollection AddApiSecurity(this IServiceCollection services)
    {
        services.AddSingleton<ApiKeys>();
        services.AddClientRateLimiting();
        return services;
    }

    /// <summary>The key check first (a request without a valid key takes no client's slot), then the per-client limit.</summary>
    public static WebApplication UseApiSecurity(this WebApplication app)
    {
        app.UseMiddleware<ApiKeyMiddleware>();
        app.UseRateLimiter();
        return app;
    }
}
