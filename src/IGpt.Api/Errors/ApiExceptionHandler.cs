using Microsoft.AspNetCore.Diagnostics;

namespace IGpt.Api.Errors;

/// <summary>
/// The last line of defence for exceptions outside the model routes (whose filter answers their own): one caused by
/// the request still becomes its 4xx problem, a known server fault its 5xx problem, both through
/// <see cref="RequestFailure"/>. Anything else is left to the default handler (a 500 problem without internals).
/// </summary>
public sealed class ApiExceptionHandler(IProblemDetailsService problemDetails) : IExceptionHandler
{
    public async ValueTask<bool> TryHandleAsync(HttpContext httpContext, Exception exception, CancellationToken cancellationToken)
    {
        if (RequestFailure.From(exception, httpContext) is not { Problem: var problem }) return false;
        httpContext.Response.StatusCode = problem.Status ?? StatusCodes.Status400BadRequest;
        return await problemDetails.TryWriteAsync(new ProblemDetailsContext
        {
            HttpContext = httpContext,
            ProblemDetails = problem,
            Exception = exception,
        });
    }
}
