using IGpt.Api.Errors;
using Microsoft.AspNetCore.Mvc;

namespace IGpt.Api.Security;

/// <summary>
/// When Api:Keys is set, a request to a guarded route (/v1/..., /metrics) without one of the keys gets 401
/// problem+json with <c>WWW-Authenticate: Bearer</c>. The accepted client's name (not its key) is kept for the
/// per-client limit. Nothing here logs a header.
/// </summary>
public sealed class ApiKeyMiddleware(RequestDelegate next, ApiKeys keys, IProblemDetailsService problems)
{
    private const string ClientItem = "igpt.client";

    public async Task InvokeAsync(HttpContext context)
    {
        if (!keys.Enabled || !ApiKeys.Guards(context.Request.Path))
        {
            await next(context);
            return;
        }
        var presented = ApiKeys.Presented(context.Request);
        var client = presented is null ? null : keys.Identify(presented);
        if (client is null)
        {
            await RejectAsync(context, presented is null
                ? $"This route needs an API key: send 'Authorization: Bearer KEY' or '{ApiKeys.HeaderName}: KEY'."
                : "The API key is not valid.", presented is null ? null : "invalid_token");
            return;
        }
        context.Items[ClientItem] = client;
        await next(context);
    }

    /// <summary>The name of the client whose key the request carried ("key-1", ...); null when keys are off.</summary>
    public static string? Client(HttpContext context) => context.Items.TryGetValue(ClientItem, out var client) ? client as string : null;

    private async Task RejectAsync(HttpContext context, string detail, string? error)
    {
        context.Response.StatusCode = StatusCodes.Status401Unauthorized;
        context.Response.Headers.WWWAuthenticate = error is null ? "Bearer" : $"Bearer error=\"{error}\"";
        ProblemDetails problem = Problems.Create(StatusCodes.Status401Unauthorized, "Unauthorized", detail);
        await problems.WriteAsync(new ProblemDetailsContext { HttpContext = context, ProblemDetails = problem });
    }
}
