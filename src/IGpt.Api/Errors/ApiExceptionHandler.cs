using Microsoft.AspNetCore.Diagnostics;

namespace IGpt.Api.Errors;

/// <summary>
/// The last line of defence: an exception caused by the request that escaped a handler still becomes a 4xx problem,
/// a known server fault (a model run that threw, a model disposed while stopping) its 5xx problem. Anything else is
/// left to the default handler (a 500 problem without internals).
/// </summary>
public sealed class ApiExceptionHandler(IProblemDetailsService problemDetails, ILogger<ApiExceptionHandler> logger) : IExceptionHandler
{
    public async ValueTask<bool> TryHandleAsync(HttpContext httpContext, Exception exception, CancellationToken cancellationToken)
    {
        var problem = Problems.From(exception, httpContext);
        if (problem is not null)
        {
            logger.LogInformation("Request rejected with {Status}: {Detail}", problem.Status, problem.Detail);
        }
        else
        {
            problem = Problems.ServerFault(exception, httpContext);
            if (problem is null) return false;
            logger.LogError(exception, "Request failed with {Status}: {Title}", problem.Status, problem.Title);
        }
        httpContext.Response.StatusCode = problem.Status ?? StatusCodes.Status400BadRequest;
        return await problemDetails.TryWriteAsync(new ProblemDetailsContext
        {
            HttpContext = httpContext,
            ProblemDetails = problem,
            Exception = exception,
        });
    }
}
