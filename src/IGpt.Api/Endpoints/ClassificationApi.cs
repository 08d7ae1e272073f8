using System.Security.Cryptography;
using IGpt.Api.Caching;
using IGpt.Api.Contracts;
using IGpt.Api.Errors;
using IGpt.Api.Hosting;
using IGpt.Api.Catalog;
using IGpt.Api.OpenApi;
using IGpt.Api.Requests;
using IGpt.Api.Serving;
using IGpt.Inference;
using Microsoft.AspNetCore.Http.HttpResults;
using Microsoft.Extensions.Options;

namespace IGpt.Api.Endpoints;

/// <summary>POST /v1/models/{model}/classifications: the model's classification head on a posted image.</summary>
public static class ClassificationApi
{
    /// <summary>The endpoint label of the route's metrics.</summary>
    private const string Classifications = "classifications";

    public static IEndpointRouteBuilder MapClassificationApi(this IEndpointRouteBuilder app)
    {
        app.MapGroup("/v1/models/{model}").WithTags("Classification")
            .MapPost("/classifications", ClassifyAsync)
            .WithName("CreateClassification")
            .WithSummary("Classify an image")
            .WithDescription("Resizes the image to the model's resolution, quantizes it to the palette and runs the classification head. "
                + "Results are cached by (model, image bytes): the X-Cache header and the `cached` field say whether the cache answered. "
                + "404 for a model without a classification head.")
            .WithMetadata(new RequestBodyDocs(RequestShape.Classification, "ClassificationRequest",
                $$"""{"image": "{{RequestBodyDocs.ExampleImage}}", "top": 5}""", Required: true, Generates: false))
            .WithOutcomes(Classifications)
            .WithProblems();
        return app;
    }

    /// <summary>Classify an image.</summary>
    /// <param name="model">Model id (GET /v1/models lists them; the model must have classes).</param>
    public static async Task<Ok<ClassificationResponse>> ClassifyAsync(
        string model, HttpContext context, ModelCatalog catalog, ImageCodec codec, ClassificationCache cache,
        ClassificationBatcher batcher, ServingMetrics metrics, IOptions<ApiOptions> options, CancellationToken cancellationToken)
    {
        var loaded = catalog.GetReady(model);
        if (!loaded.HasClassifier)
        {
            throw new ApiProblemException(StatusCodes.Status404NotFound, "Not found", $"The model '{model}' has no classification head.");
        }
        var fields = await RequestReader.ReadAsync(context.Request, RequestShape.Classification,
            options.Value.MaxRequestBytes, codec.Limits.MaxBytes, cancellationToken);
        var top = fields.Int(FieldSpecs.Top) ?? FieldSpecs.DefaultTop;
        var bytes = fields.RequireImage();

        var hash = Convert.ToHexString(SHA256.HashData(bytes));
        var cached = cache.TryGet(model, hash, out var probabilities);
        if (probabilities is null)
        {
            var image = codec.DecodeForModel(bytes, loaded.Manifest, partial: false);
            probabilities = await batcher.ClassifyAsync(model, loaded, image.ToTokens(loaded.Palette), cancellationToken);
            cache.Set(model, hash, probabilities);
        }

        context.Response.Headers[ResponseHeaders.Cache] = cached ? "hit" : "miss";
        var classes = loaded.Manifest.Classes;
        var predictions = probabilities
            .Select((probability, index) => new Prediction
            {
                Label = index < classes.Count ? classes[index] : $"class {index}",
                Index = index,
                Probability = Math.Round(probability, 6),
            })
            .OrderByDescending(p => p.Probability).ThenBy(p => p.Index)
            .Take(top)
            .ToArray();
        metrics.Request(model, Classifications, RequestOutcome.Ok);
        return TypedResults.Ok(new ClassificationResponse { Model = model, Predictions = predictions, Cached = cached });
    }
}
