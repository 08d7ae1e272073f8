using System.Globalization;
using IGpt.Api.Hosting;
using IGpt.Inference;
using Microsoft.Extensions.Options;
using Microsoft.AspNetCore.Http.HttpResults;
using Microsoft.AspNetCore.Mvc;

namespace IGpt.Api.Errors;

/// <summary>Maps the exceptions a client's input can cause to RFC 9457 problems (never a 500).</summary>
public static class Problems
{
    /// <summary>Status 499 (client closed request): the client went away; nobody reads the answer.</summary>
    public const int ClientClosedRequest = 499;

    /// <summary>A problem for <paramref name="exception"/>, or null when it is not caused by the request (a server fault).</summary>
    public static ProblemDetails? From(Exception exception, HttpContext context) => exception switch
    {
        ApiProblemException e => Create(e.Status, e.Title, e.Detail, e.Field),
        UnsupportedImageFormatException e => Create(StatusCodes.Status415UnsupportedMediaType, "Unsupported image format", e.Message, "image"),
        ImageTooLargeException e => Create(StatusCodes.Status413PayloadTooLarge, "Image too large", e.Message, "image"),
        ImageDecodeException e => Create(StatusCodes.Status400BadRequest, "Invalid image", e.Message, "image"),
        BadHttpRequestException e => Create(e.StatusCode, e.StatusCode == StatusCodes.Status413PayloadTooLarge ? "Request too large" : "Bad request", e.Message),
        InvalidDataException e => FormProblem(e),
        QueueFullException e => QueueFull(e, context),
        OperationCanceledException when context.RequestAborted.IsCancellationRequested =>
            Create(ClientClosedRequest, "Client closed request", "The client closed the connection before the answer was ready."),
        _ => null,
    };

    /// <summary>
    /// A problem for a server fault the API knows (a model run that threw, a model disposed because the service stops),
    /// or null. Not the request's fault: 5xx.
    /// </summary>
    public static ProblemDetails? ServerFault(Exception exception, HttpContext context) => exception switch
    {
        ModelRunException e => Create(StatusCodes.Status500InternalServerError, "Model run failed",
            $"The model '{e.ModelId}' failed while running ({e.Stage}); the request was not completed. This is a fault of the service, not of the request."),
        ObjectDisposedException => Stopping(context),
        _ => null,
    };

    /// <summary>503: the service is shutting down (new work refused, or running work cancelled after Api:ShutdownDrainSeconds).</summary>
    public static ProblemDetails Stopping(HttpContext context)
    {
        var retry = context.RequestServices.GetRequiredService<IOptions<ApiOptions>>().Value.RetryAfterSeconds;
        if (!context.Response.HasStarted) context.Response.Headers.RetryAfter = retry.ToString(CultureInfo.InvariantCulture);
        return Create(StatusCodes.Status503ServiceUnavailable, "Service stopping",
            "The service is shutting down; send the request to another instance or retry later.");
    }

    /// <summary>504: the request ran past Api:RequestTimeoutSeconds (queue included).</summary>
    public static ProblemDetails TimedOut(HttpContext context)
    {
        var seconds = context.RequestServices.GetRequiredService<IOptions<ApiOptions>>().Value.RequestTimeoutSeconds;
        return Create(StatusCodes.Status504GatewayTimeout, "Request timed out",
            $"The request did not finish within the service's limit of {seconds.ToString(CultureInfo.InvariantCulture)} s (Api:RequestTimeoutSeconds).");
    }

    // 503 at once, before anything is decoded: the model's queue holds as many requests as it may.
    private static ProblemDetails QueueFull(QueueFullException e, HttpContext context)
    {
        var retry = context.RequestServices.GetRequiredService<IOptions<ApiOptions>>().Value.RetryAfterSeconds;
        if (!context.Response.HasStarted) context.Response.Headers.RetryAfter = retry.ToString(CultureInfo.InvariantCulture);
        return Create(StatusCodes.Status503ServiceUnavailable, "Queue full", e.Message);
    }

    public static ProblemHttpResult ToResult(this ProblemDetails problem) => TypedResults.Problem(problem);

    public static ProblemHttpResult NotFound(string detail) =>
        TypedResults.Problem(Create(StatusCodes.Status404NotFound, "Not found", detail));

    public static ProblemDetails Create(int status, string title, string detail, string? field = null)
    {
        var problem = field is null
            ? new ProblemDetails()
            : new HttpValidationProblemDetails(new Dictionary<string, string[]> { [field] = [detail] });
        problem.Status = status;
        problem.Title = title;
        problem.Detail = detail;
        return problem;
    }

    // The form reader throws InvalidDataException both for a body over a limit and for a malformed body.
    private static ProblemDetails FormProblem(InvalidDataException e) =>
        e.Message.Contains("limit", StringComparison.OrdinalIgnoreCase)
            ? Create(StatusCodes.Status413PayloadTooLarge, "Request too large", e.Message)
            : Create(StatusCodes.Status400BadRequest, "Malformed form body", e.Message);
}
