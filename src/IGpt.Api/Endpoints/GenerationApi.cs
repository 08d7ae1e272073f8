using IGpt.Api.Contracts;
using IGpt.Api.Hosting;
using IGpt.Api.Catalog;
using IGpt.Api.Generation;
using IGpt.Api.OpenApi;
using IGpt.Api.Requests;
using IGpt.Api.Serving;
using IGpt.Inference;
using System.Globalization;
using Microsoft.AspNetCore.Http.Json;
using Microsoft.AspNetCore.Http.HttpResults;
using Microsoft.Extensions.Options;

namespace IGpt.Api.Endpoints;

/// <summary>POST /v1/models/{model}/completions and /samples: images drawn pixel by pixel.</summary>
public static class GenerationApi
{
    /// <summary>The endpoint label of the routes' metrics.</summary>
    private const string Completions = "completions", Samples = "samples";

    public static IEndpointRouteBuilder MapGenerationApi(this IEndpointRouteBuilder app)
    {
        var group = app.MapGroup("/v1/models/{model}").WithTags("Generation");

        group.MapPost("/completions", CompleteAsync)
            .WithName("CreateCompletion")
            .WithSummary("Complete the top of an image")
            .WithDescription("Keeps the first `rows` rows of the posted image (at the model's resolution, quantized to its palette) "
                + "and lets the model draw the rest, n times. Send the image as a multipart file or as base64 in JSON. "
                + "With `Accept: image/png` the answer is one PNG of the n results side by side; with `\"stream\": true` (or "
                + "`Accept: text/event-stream`) server-sent events: a `row` event per finished image row, `heartbeat`s, then `result` or `error`.")
            .WithMetadata(new RequestBodyDocs(RequestShape.Completion, "CompletionRequest",
                $$"""{"image": "{{RequestBodyDocs.ExampleImage}}", "n": 4, "scale": 4, "stream": false}""",
                Required: true, Generates: true))
            .WithOutcomes(Completions)
            .WithProblems();

        group.MapPost("/samples", SampleAsync)
            .WithName("CreateSamples")
            .WithSummary("Draw unconditional samples")
            .WithDescription("The model draws n whole images from nothing. Same answer as completions (rows = 0); "
                + "`Accept: image/png` gives one PNG of the n samples side by side; `\"stream\": true` streams rows as server-sent events.")
            .WithMetadata(new RequestBodyDocs(RequestShape.Samples, "SampleRequest",
                """{"n": 4, "scale": 4, "stream": false}""", Required: false, Generates: true))
            .WithOutcomes(Samples)
            .WithProblems();

        return app;
    }

    /// <summary>Complete the top of an image.</summary>
    /// <param name="model">Model id (GET /v1/models lists them).</param>
    public static Task<Results<ServerSentEventsResult<string>, Ok<GenerationResponse>, FileContentHttpResult>> CompleteAsync(
        string model, HttpContext context, ModelCatalog catalog, ImageGenerator generator, ServingMetrics metrics,
        IOptions<ApiOptions> options, ShutdownDrain drain, CancellationToken cancellationToken) =>
        GenerateAsync(model, Completions, RequestShape.Completion, generator.PlanCompletion, context, catalog, generator, metrics,
            options.Value, drain, cancellationToken);

    /// <summary>Draw unconditional samples.</summary>
    /// <param name="model">Model id (GET /v1/models lists them).</param>
    public static Task<Results<ServerSentEventsResult<string>, Ok<GenerationResponse>, FileContentHttpResult>> SampleAsync(
        string model, HttpContext context, ModelCatalog catalog, ImageGenerator generator, ServingMetrics metrics,
        IOptions<ApiOptions> options, ShutdownDrain drain, CancellationToken cancellationToken) =>
        GenerateAsync(model, Samples, RequestShape.Samples, generator.PlanSamples, context, catalog, generator, metrics,
            options.Value, drain, cancellationToken);

    /// <summary>
    /// Reads and checks the request, takes the model's queue place (or answers 503 at once), then either waits for
    /// the images (JSON or PNG, with Server-Timing) or streams them as server-sent events. Failures are thrown: the
    /// route's <see cref="ModelRouteOutcomes"/> filter answers them.
    /// </summary>
    private static async Task<Results<ServerSentEventsResult<string>, Ok<GenerationResponse>, FileContentHttpResult>> GenerateAsync(
        string model, string endpoint, RequestShape shape, Func<string, IGptModel, RequestFields, GenerationPlan> plan,
        HttpContext context, ModelCatalog catalog, ImageGenerator generator, ServingMetrics metrics, ApiOptions options,
        ShutdownDrain drain, CancellationToken cancellationToken)
    {
        var loaded = catalog.GetReady(model);
        var fields = await RequestReader.ReadAsync(context.Request, shape, options.MaxRequestBytes, generator.Codec.Limits.MaxBytes, cancellationToken);
        var stream = fields.Bool(FieldSpecs.Stream) ?? ResponseFormat.WantsEventStream(context.Request);
        var checkedPlan = plan(model, loaded, fields);
        if (!stream && ResponseFormat.WantsPng(context.Request)) ImageGenerator.EnsurePngStripFits(checkedPlan);

        // Ends the request at its timeout, or when shutdown's drain time is over; the filter and the stream read which.
        var deadline = new RequestDeadline(options.RequestTimeout, cancellationToken, drain.Abort);
        context.Features.Set(deadline);
        CompletionHandle handle;
        try
        {
            handle = loaded.StartCompletion(checkedPlan.Request, stream, deadline.Token);
        }
        catch
        {
            deadline.Dispose();
            throw;
        }
        context.Response.Headers[ResponseHeaders.Seed] = checkedPlan.Parameters.Seed.ToString(CultureInfo.InvariantCulture);
        if (stream)
        {
            var json = context.RequestServices.GetRequiredService<IOptions<JsonOptions>>().Value.SerializerOptions;
            var events = new GenerationEventStream(context, checkedPlan, handle, deadline, options.Heartbeat, generator, metrics, endpoint, json);
            return TypedResults.ServerSentEvents(events.ReadAllAsync(cancellationToken));
        }

        CompletionResult result;
        using (deadline)
        {
            result = await handle.Result;
        }
        metrics.Completed(model, result);
        metrics.Request(model, endpoint, RequestOutcome.Ok);
        return Respond(context, generator, ImageGenerator.Output(checkedPlan, result));
    }

    private static Results<ServerSentEventsResult<string>, Ok<GenerationResponse>, FileContentHttpResult> Respond(
        HttpContext context, ImageGenerator generator, GenerationOutput output)
    {
        var r = output.Result;
        context.Response.Headers[ResponseHeaders.Cache] = r.PrefixCacheHit ? "hit" : "miss";
        context.Response.Headers[ResponseHeaders.ServerTiming] = string.Create(CultureInfo.InvariantCulture,
            $"queue;dur={r.Queue.TotalMilliseconds:0.###}, prefill;dur={r.Prefill.TotalMilliseconds:0.###}, decode;dur={r.Decode.TotalMilliseconds:0.###}");
        if (ResponseFormat.WantsPng(context.Request))
        {
            return TypedResults.File(generator.ToPngStrip(output), "image/png");
        }
        return TypedResults.Ok(generator.ToResponse(output));
    }

    internal static RouteHandlerBuilder WithProblems(this RouteHandlerBuilder builder) => builder
        .ProducesProblem(StatusCodes.Status400BadRequest)
        .ProducesProblem(StatusCodes.Status404NotFound)
        .ProducesProblem(StatusCodes.Status413PayloadTooLarge)
        .ProducesProblem(StatusCodes.Status415UnsupportedMediaType)
        .ProducesProblem(StatusCodes.Status500InternalServerError)
        .ProducesProblem(StatusCodes.Status503ServiceUnavailable)
        .ProducesProblem(StatusCodes.Status504GatewayTimeout);
}
