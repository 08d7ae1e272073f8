using IGpt.Api.Serving;
using Microsoft.AspNetCore.Mvc;

namespace IGpt.Api.Errors;

/// <summary>
/// How a request that threw ends: the problem the client gets and the outcome counted in igpt_requests_total.
/// <see cref="From"/> is the one mapping from an exception to both; the model routes' filter
/// (<see cref="Endpoints.ModelRouteOutcomes"/>) answers with it, a streamed answer sends it as its "error" event
/// (the status line is already sent), and <see cref="ApiExceptionHandler"/> answers with it for anything outside them.
/// </summary>
public sealed record RequestFailure(ProblemDetails Problem, RequestOutcome Outcome)
{
    /// <summary>
    /// The problem for <paramref name="exception"/>; null for an exception the API does not know (a bug), which is
    /// left to the framework's 500 problem so that nothing about it is invented here. Server faults are logged.
    /// </summary>
    public static RequestFailure? From(Exception exception, HttpContext context)
    {
        // Cancelled by the request's deadline, not by the client: which of its causes fired says the answer.
        if (exception is OperationCanceledException && !context.RequestAborted.IsCancellationRequested
            && context.Features.Get<RequestDeadline>() is { IsCancellationRequested: true } deadline)
        {
            return deadline.ShutdownReached
                ? new(Problems.Stopping(context), RequestOutcome.Cancelled)
                : new(Problems.TimedOut(context), RequestOutcome.TimedOut);
        }
        if (Problems.From(exception, context) is { } rejected)
        {
            return new(rejected, rejected.Status == Problems.ClientClosedRequest ? RequestOutcome.Cancelled : RequestOutcome.Rejected);
        }
        if (Problems.ServerFault(exception, context) is { } fault)
        {
            // A model disposed under the request is the service stopping, not a fault worth an error line.
            if (exception is not ObjectDisposedException)
            {
                context.RequestServices.GetRequiredService<ILogger<RequestFailure>>()
                    .LogError(exception, "{Method} {Path} failed: {Title}", context.Request.Method, context.Request.Path.Value, fault.Title);
            }
            return new(fault, RequestOutcome.Failed);
        }
        return null;
    }
}
