using IGpt.Api.Contracts;
using IGpt.Api.Errors;
using IGpt.Api.Hosting;
using IGpt.Api.Models;
using IGpt.Api.OpenApi;
using IGpt.Api.Requests;
using Microsoft.AspNetCore.Http.HttpResults;
using Microsoft.Extensions.Options;

namespace IGpt.Api.Endpoints;

/// <summary>POST /v1/models/{model}/completions and /samples: images drawn pixel by pixel.</summary>
public static class GenerationApi
{
    public static IEndpointRouteBuilder MapGenerationApi(this IEndpointRouteBuilder app)
    {
        var group = app.MapGroup("/v1/models/{model}").WithTags("Generation");

        group.MapPost("/completions", CompleteAsync)
            .WithName("CreateCompletion")
            .WithSummary("Complete the top of an image")
            .WithDescription("Keeps the first `rows` rows of the posted image (at the model's resolution, quantized to its palette) "
                + "and lets the model draw the rest, n times. Send the image as a multipart file or as base64 in JSON. "
                + "With `Accept: image/png` the answer is one PNG of the n results side by side.")
            .WithMetadata(new RequestBodyDocs(typeof(CompletionForm), typeof(CompletionJsonRequest),
                $$"""{"image": "{{RequestBodyDocs.ExampleImage}}", "n": 4, "temperature": 1.0, "top_k": 0, "top_p": 1.0, "scale": 4}""",
                Required: true, OffersPng: true))
            .WithProblems();

        group.MapPost("/samples", SampleAsync)
            .WithName("CreateSamples")
            .WithSummary("Draw unconditional samples")
            .WithDescription("The model draws n whole images from nothing. Same answer as completions (rows = 0); "
                + "`Accept: image/png` gives one PNG of the n samples side by side.")
            .WithMetadata(new RequestBodyDocs(null, typeof(SampleRequest),
                """{"n": 4, "temperature": 1.0, "top_k": 0, "top_p": 1.0, "scale": 4}""", Required: false, OffersPng: true))
            .WithProblems();

        return app;
    }

    /// <summary>Complete the top of an image.</summary>
    /// <param name="model">Model id (GET /v1/models lists them).</param>
    public static async Task<Results<Ok<GenerationResponse>, FileContentHttpResult, ProblemHttpResult>> CompleteAsync(
        string model, HttpContext context, ModelCatalog catalog, ImageGenerator generator, IOptions<ApiOptions> options,
        CancellationToken cancellationToken)
    {
        try
        {
            var loaded = catalog.GetReady(model);
            var fields = await RequestReader.ReadAsync(context.Request, RequestShape.Completion,
                options.Value.MaxRequestBytes, generator.Codec.Limits.MaxBytes, cancellationToken);
            var output = await generator.CompleteAsync(model, loaded, fields, cancellationToken);
            return Respond(context, generator, output);
        }
        catch (Exception e) when (Problems.From(e, context) is { } problem)
        {
            return TypedResults.Problem(problem);
        }
    }

    /// <summary>Draw unconditional samples.</summary>
    /// <param name="model">Model id (GET /v1/models lists them).</param>
    public static async Task<Results<Ok<GenerationResponse>, FileContentHttpResult, ProblemHttpResult>> SampleAsync(
        string model, HttpContext context, ModelCatalog catalog, ImageGenerator generator, IOptions<ApiOptions> options,
        CancellationToken cancellationToken)
    {
        try
        {
            var loaded = catalog.GetReady(model);
            var fields = await RequestReader.ReadAsync(context.Request, RequestShape.Samples,
                options.Value.MaxRequestBytes, generator.Codec.Limits.MaxBytes, cancellationToken);
            var output = await generator.SampleAsync(model, loaded, fields, cancellationToken);
            return Respond(context, generator, output);
        }
        catch (Exception e) when (Problems.From(e, context) is { } problem)
        {
            return TypedResults.Problem(problem);
        }
    }

    private static Results<Ok<GenerationResponse>, FileContentHttpResult, ProblemHttpResult> Respond(
        HttpContext context, ImageGenerator generator, GenerationOutput output)
    {
        context.Response.Headers["X-Seed"] = output.Seed.ToString(System.Globalization.CultureInfo.InvariantCulture);
        context.Response.Headers["X-Cache"] = output.Result.PrefixCacheHit ? "hit" : "miss";
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
        .ProducesProblem(StatusCodes.Status503ServiceUnavailable);
}
