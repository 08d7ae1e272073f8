namespace IGpt.Api.Errors;

/// <summary>
/// Errors are problem+json whatever the request's Accept says. ASP.NET Core's writer declines a client that accepts
/// only, say, image/png or text/html; the status code pages would then answer text/plain, and a middleware's
/// <c>WriteAsync</c> would throw. Registered after the default writer, this one answers for it as if the client had
/// asked for problem+json.
/// </summary>
public sealed class ProblemJsonFallbackWriter : IProblemDetailsWriter
{
    public bool CanWrite(ProblemDetailsContext context) => true;

    public ValueTask WriteAsync(ProblemDetailsContext context)
    {
        context.HttpContext.Request.Headers.Accept = "application/problem+json";
        foreach (var writer in context.HttpContext.RequestServices.GetServices<IProblemDetailsWriter>())
        {
            if (writer is not ProblemJsonFallbackWriter && writer.CanWrite(context)) return writer.WriteAsync(context);
        }
        throw new InvalidOperationException("No problem details writer accepts application/problem+json.");
    }
}
