using System.Globalization;
using System.Security.Cryptography;
using IGpt.Api.Caching;
using IGpt.Api.Catalog;
using IGpt.Api.Contracts;
using IGpt.Api.Errors;
using IGpt.Api.Generation;
using IGpt.Api.Hosting;
using IGpt.Api.OpenApi;
using IGpt.Api.Requests;
using IGpt.Api.Serving;
using Microsoft.AspNetCore.Http.HttpResults;
using Microsoft.Extensions.Options;

namespace IGpt.Api.Endpoints;

/// <summary>
/// POST /v1/models/{model}/embeddings and /likelihoods: what the model knows about a posted image, from one
/// teacher-forced pass of its analysis graph (cached and micro-batched like classification; one pass serves both).
/// </summary>
public static class AnalysisApi
{
    /// <summary>The endpoint labels of the routes' metrics.</summary>
    private const string Embeddings = "embeddings", Likelihoods = "likelihoods";

    public static IEndpointRouteBuilder MapAnalysisApi(this IEndpointRouteBuilder app)
    {
        var group = app.MapGroup("/v1/models/{model}").WithTags("Analysis");

        group.MapPost("/embeddings", EmbedAsync)
            .WithName("CreateEmbedding")
            .WithSummary("Embed an image")
            .WithDescription("Resizes the image to the model's resolution, quantizes it to the palette and returns one layer's hidden "
                + "state averaged over the image's positions: by default the layer whose features a linear probe read best "
                + "(GET /v1/models: embedding_layer), the features to train a classifier of your own on. "
                + "Cached by (model, image bytes) together with likelihoods (X-Cache). 404 for a model without an analysis graph.")
            .WithMetadata(new RequestBodyDocs(RequestShape.Embeddings, "EmbeddingRequest",
                $$"""{"image": "{{RequestBodyDocs.ExampleImage}}", "layer": 1}""", Required: true, Generates: false))
            .WithOutcomes(Embeddings)
            .WithProblems();

        group.MapPost("/likelihoods", LikelihoodAsync)
            .WithName("CreateLikelihood")
            .WithSummary("Score how likely an image is")
            .WithDescription("The model's negative log-likelihood of the quantized image in bits per pixel (overall and per row), and "
                + "an out-of-distribution score: bits_per_pixel minus a generic compressor's bits per pixel (an adaptive context model over the left and upper neighbours), higher meaning less like "
                + "the training images, with a verdict in words from the test images' quantiles. With `Accept: image/png` the answer "
                + "is the surprise map: each pixel's bits on a dark-to-bright colour ramp from 0 to log2(palette size), enlarged "
                + "`scale` times. Cached by (model, image bytes) together with embeddings (X-Cache). 404 for a model without an analysis graph.")
            .WithMetadata(new RequestBodyDocs(RequestShape.Likelihoods, "LikelihoodRequest",
                $$"""{"image": "{{RequestBodyDocs.ExampleImage}}", "scale": 8}""", Required: true, Generates: false)
            {
                PngAnswer = "The surprise map (Accept: image/png): width*scale x height*scale, each pixel's bits from dark (0) to bright (log2 of the palette size or more).",
            })
            .WithOutcomes(Likelihoods)
            .WithProblems();

        return app;
    }

    /// <summary>Embed an image.</summary>
    /// <param name="model">Model id (GET /v1/models lists them; the model must have an analysis graph).</param>
    public static async Task<Ok<EmbeddingResponse>> EmbedAsync(
        string model, HttpContext context, ModelCatalog catalog, ImageCodec codec, AnalysisCache cache, AnalysisBatcher batcher,
        ServingMetrics metrics, IOptions<ApiOptions> options, CancellationToken cancellationToken)
    {
        var loaded = GetAnalyzable(catalog, model);
        var manifest = loaded.Manifest;
        var fields = await RequestReader.ReadAsync(context.Request, RequestShape.Embeddings,
            options.Value.MaxRequestBytes, codec.Limits.MaxBytes, cancellationToken);
        var layer = fields.Int(FieldSpecs.Layer, manifest.Architecture.NLayer) ?? manifest.Analysis!.EmbeddingLayer;
        var (image, cached) = await AnalyzeAsync(model, loaded, fields.RequireImage(), codec, cache, batcher, cancellationToken);

        context.Response.Headers[ResponseHeaders.Cache] = cached ? "hit" : "miss";
        var embedding = image.Analysis.Layer(layer).ToArray();
        metrics.Request(model, Embeddings, RequestOutcome.Ok);
        return TypedResults.Ok(new EmbeddingResponse
        {
            Model = model, Layer = layer, Dimensions = embedding.Length, Embedding = embedding, Cached = cached,
        });
    }

    /// <summary>Score how likely an image is.</summary>
    /// <param name="model">Model id (GET /v1/models lists them; the model must have an analysis graph).</param>
    public static async Task<Results<Ok<LikelihoodResponse>, FileContentHttpResult>> LikelihoodAsync(
        string model, HttpContext context, ModelCatalog catalog, ImageCodec codec, AnalysisCache cache, AnalysisBatcher batcher,
        ServingMetrics metrics, IOptions<ApiOptions> options, CancellationToken cancellationToken)
    {
        var loaded = GetAnalyzable(catalog, model);
        var manifest = loaded.Manifest;
        var fields = await RequestReader.ReadAsync(context.Request, RequestShape.Likelihoods,
            options.Value.MaxRequestBytes, codec.Limits.MaxBytes, cancellationToken);
        var scale = fields.Int(FieldSpecs.Scale) ?? FieldSpecs.DefaultScale;
        var png = ResponseFormat.WantsPng(context.Request);
        if (png && (long)Math.Max(manifest.Width, manifest.Height) * scale > ImageGenerator.MaxPngSide)
        {
            throw ApiProblemException.BadField(FieldSpecs.Scale.Name,
                $"The surprise map at scale {scale} would be {(long)Math.Max(manifest.Width, manifest.Height) * scale} pixels on a side; at most {ImageGenerator.MaxPngSide} fit.");
        }
        var (image, cached) = await AnalyzeAsync(model, loaded, fields.RequireImage(), codec, cache, batcher, cancellationToken);

        context.Response.Headers[ResponseHeaders.Cache] = cached ? "hit" : "miss";
        metrics.Request(model, Likelihoods, RequestOutcome.Ok);
        var analysis = image.Analysis;
        if (png)
        {
            var map = SurpriseMap.Draw(analysis.TokenBits, manifest.Width, manifest.PaletteSize);
            return TypedResults.File(codec.EncodePng(map, scale), "image/png");
        }

        var bits = analysis.BitsPerPixel;
        var score = OodScore.Of(bits, image.CompressorBitsPerPixel);
        var calibration = OodScore.CalibrationOf(manifest);
        return TypedResults.Ok(new LikelihoodResponse
        {
            Model = model,
            BitsPerPixel = Math.Round(bits, 6),
            Rows = [.. analysis.RowBits(manifest.Width).Select(r => Math.Round(r, 6))],
            CompressorBitsPerPixel = Math.Round(image.CompressorBitsPerPixel, 6),
            OodScore = Math.Round(score, 6),
            Verdict = calibration is null ? null : OodScore.Words(OodScore.Judge(score, calibration)),
            Calibration = calibration is null ? null : new OodCalibrationInfo
            {
                Score = calibration.Score,
                TestQuantiles = calibration.TestQuantiles.ToDictionary(q => q.Key.ToString(CultureInfo.InvariantCulture), q => q.Value),
            },
            Cached = cached,
        });
    }

    /// <summary>The loaded model <paramref name="id"/>, which must have the analysis graph: a 404 problem that says so otherwise.</summary>
    private static IGptModel GetAnalyzable(ModelCatalog catalog, string id)
    {
        var loaded = catalog.GetReady(id);
        if (!loaded.HasAnalysis)
        {
            throw new ApiProblemException(StatusCodes.Status404NotFound, "Not found",
                $"The model '{id}' has no analysis graph (analysis.onnx), so it serves no embeddings or likelihoods: its package was "
                + "exported without one. Export the package again to add it (models/README.md).");
        }
        return loaded;
    }

    /// <summary>The image's analysis pass: from the cache (same model, same bytes) or run in a batch with other requests.</summary>
    private static async Task<(AnalyzedImage Image, bool Cached)> AnalyzeAsync(string model, IGptModel loaded, byte[] bytes, ImageCodec codec,
        AnalysisCache cache, AnalysisBatcher batcher, CancellationToken cancellationToken)
    {
        var hash = Convert.ToHexString(SHA256.HashData(bytes));
        if (cache.TryGet(model, hash, out var found)) return (found!, true);
        var tokens = codec.DecodeForModel(bytes, loaded.Manifest, partial: false).ToTokens(loaded.Palette);
        var analysis = await batcher.AnalyzeAsync(model, loaded, tokens, cancellationToken);
        var image = new AnalyzedImage(analysis, OodScore.CompressorBitsPerPixel(tokens, loaded.Manifest.Width, loaded.Manifest.PaletteSize));
        cache.Set(model, hash, image);
        return (image, false);
    }
}
