using System.Net;
using System.Net.Http.Headers;
using System.Text.Json.Nodes;
using IGpt.Api.Serving;
using Microsoft.Extensions.DependencyInjection;
using SixLabors.ImageSharp;
using SixLabors.ImageSharp.PixelFormats;

namespace IGpt.Api.Tests;

/// <summary>POST /v1/models/{model}/embeddings and /likelihoods on the tiny package (8x8 grey, 2 layers of 32).</summary>
[Collection(ApiCollection.Name)]
public sealed class AnalysisTests(ApiFactory factory)
{
    private const string Embeddings = $"/v1/models/{ModelsFolder.Tiny}/embeddings";
    private const string Likelihoods = $"/v1/models/{ModelsFolder.Tiny}/likelihoods";
    private readonly HttpClient _client = factory.CreateClient();

    private static int DefaultLayer => ModelsFolder.FixtureManifest()["analysis"]!["embedding_layer"]!.GetValue<int>();

    [Fact]
    public async Task EmbeddingIsTheDefaultLayersPooledFeatures()
    {
        var image = TestImages.Png(8, 8, (x, y) => (byte)(x * 30 + y));
        var response = await _client.PostAsync(Embeddings, Http.Form(image));
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        var body = await response.ReadJsonAsync();
        Assert.Equal(ModelsFolder.Tiny, body["model"]!.GetValue<string>());
        Assert.Equal(DefaultLayer, body["layer"]!.GetValue<int>());
        Assert.Equal(32, body["dimensions"]!.GetValue<int>());
        var embedding = Floats(body["embedding"]!);
        Assert.Equal(32, embedding.Length);

        // The library's pass over the same quantized image gives the same numbers.
        var expected = await AnalyzeDirectly(image);
        Assert.Equal(expected.Layer(DefaultLayer).ToArray(), embedding);
    }

    [Fact]
    public async Task EveryLayerIsServedJsonAndFormAlike()
    {
        var image = TestImages.Png(8, 8, (x, y) => (byte)(255 - x * y * 4));
        var layers = new List<float[]>();
        for (int layer = 0; layer <= 2; layer++)
        {
            var form = await (await _client.PostAsync(Embeddings, Http.Form(image, ("layer", layer.ToString())))).ReadJsonAsync();
            var json = await (await _client.PostAsync(Embeddings, Http.Json(new { image = Convert.ToBase64String(image), layer }))).ReadJsonAsync();
            Assert.Equal(layer, form["layer"]!.GetValue<int>());
            Assert.Equal(form["embedding"]!.ToJsonString(), json["embedding"]!.ToJsonString());
            layers.Add(Floats(form["embedding"]!));
        }
        // Each layer's features are its own (a route that ignored the field would answer the same three times).
        Assert.Equal(3, layers.Select(l => string.Join(",", l)).Distinct().Count());
        Assert.All(layers, l => Assert.All(l, v => Assert.True(float.IsFinite(v))));
    }

    [Theory]
    [InlineData("3")]
    [InlineData("-1")]
    [InlineData("two")]
    public async Task LayerOutsideTheModelIs400NamingIt(string layer)
    {
        var response = await _client.PostAsync(Embeddings, Http.Form(TestImages.Png(), ("layer", layer)));
        var problem = await response.AssertProblemAsync(HttpStatusCode.BadRequest, "layer");
        Assert.Contains("0 to 2", problem["detail"]!.GetValue<string>());
    }

    [Fact]
    public async Task LikelihoodAddsUpAndTheScoreIsModelBitsMinusZlibBits()
    {
        var image = TestImages.Png(8, 8, (x, y) => (byte)((x + y) % 2 * 255));
        var body = await (await _client.PostAsync(Likelihoods, Http.Form(image))).ReadJsonAsync();
        Assert.Equal(ModelsFolder.Tiny, body["model"]!.GetValue<string>());
        var bits = body["bits_per_pixel"]!.GetValue<double>();
        var rows = body["rows"]!.AsArray().Select(r => r!.GetValue<double>()).ToArray();
        Assert.Equal(8, rows.Length);
        Assert.All(rows, r => Assert.True(r > 0));
        Assert.Equal(rows.Average(), bits, 5);

        var expected = await AnalyzeDirectly(image);
        Assert.Equal(expected.TokenBits.Average(b => (double)b), bits, 5);

        // The compressor's bits, computed here from the test's own quantization of the image.
        var compressor = ContextModelBits(Quantizer.Tokens(TestImages.ReadGrey(image).Pixels), width: 8, palette: 8);
        Assert.Equal(compressor, body["compressor_bits_per_pixel"]!.GetValue<double>(), 5);
        Assert.Equal(bits - compressor, body["ood_score"]!.GetValue<double>(), 5);
        // The fixture has no calibration (no analysis.ood): the score comes without words.
        Assert.Null(body["verdict"]);
        Assert.Null(body["calibration"]);
    }

    [Fact]
    public async Task OnePassServesBothRoutesAndTheCacheAnswersAgain()
    {
        var image = TestImages.Png(8, 8, (x, y) => (byte)(x * 17 ^ y * 29));
        var batcher = factory.Services.GetRequiredService<AnalysisBatcher>();

        var first = await _client.PostAsync(Likelihoods, Http.Form(image));
        Assert.Equal("miss", first.Headers.GetValues("X-Cache").Single());
        Assert.False((await first.ReadJsonAsync())["cached"]!.GetValue<bool>());
        var images = batcher.Stats.Images;

        var embedding = await _client.PostAsync(Embeddings, Http.Json(new { image = Convert.ToBase64String(image), layer = 0 }));
        Assert.Equal("hit", embedding.Headers.GetValues("X-Cache").Single());
        Assert.True((await embedding.ReadJsonAsync())["cached"]!.GetValue<bool>());
        var map = await _client.SendAsync(PngRequest(image, 2));
        Assert.Equal("hit", map.Headers.GetValues("X-Cache").Single());
        var again = await _client.PostAsync(Likelihoods, Http.Form(image));
        Assert.Equal("hit", again.Headers.GetValues("X-Cache").Single());
        Assert.Equal(images, batcher.Stats.Images);
    }

    [Theory]
    [InlineData(1)]
    [InlineData(5)]
    public async Task SurpriseMapIsThePixelsBitsOnTheRampEnlarged(int scale)
    {
        var image = TestImages.Png(8, 8, (x, y) => (byte)(y < 4 ? 0 : x * 32));
        var response = await _client.SendAsync(PngRequest(image, scale));
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal("image/png", response.Content.Headers.ContentType?.MediaType);
        using var png = Image.Load<Rgb24>(await response.Content.ReadAsByteArrayAsync());
        Assert.Equal((8 * scale, 8 * scale), (png.Width, png.Height));

        var expected = SurpriseMap.Draw((await AnalyzeDirectly(image)).TokenBits, 8, 8);
        for (int y = 0; y < png.Height; y++)
        for (int x = 0; x < png.Width; x++)
        {
            int i = ((y / scale) * 8 + x / scale) * 3;
            var p = png[x, y];
            Assert.True((p.R, p.G, p.B) == (expected.Pixels[i], expected.Pixels[i + 1], expected.Pixels[i + 2]), $"pixel ({x}, {y})");
        }
    }

    [Fact]
    public async Task PackageWithoutAnalysisGraphIs404SayingSo()
    {
        foreach (var route in new[] { "embeddings", "likelihoods" })
        {
            var response = await _client.PostAsync($"/v1/models/{ModelsFolder.NoClassifier}/{route}", Http.Form(TestImages.Png()));
            var problem = await response.AssertProblemAsync(HttpStatusCode.NotFound);
            Assert.Contains("no analysis graph", problem["detail"]!.GetValue<string>());
        }
        var models = (await (await _client.GetAsync("/v1/models")).ReadJsonAsync())["models"]!.AsArray();
        var tiny = models.Single(m => m!["id"]!.GetValue<string>() == ModelsFolder.Tiny)!;
        var without = models.Single(m => m!["id"]!.GetValue<string>() == ModelsFolder.NoClassifier)!;
        Assert.Equal((true, 2, DefaultLayer), (tiny["has_analysis"]!.GetValue<bool>(), tiny["max_layer"]!.GetValue<int>(), tiny["embedding_layer"]!.GetValue<int>()));
        Assert.False(without["has_analysis"]!.GetValue<bool>());
        Assert.Null(without["embedding_layer"]);
    }

    [Fact]
    public async Task FailedModelIs503()
    {
        var response = await _client.PostAsync($"/v1/models/{ModelsFolder.Broken}/likelihoods", Http.Form(TestImages.Png()));
        await response.AssertProblemAsync(HttpStatusCode.ServiceUnavailable);
    }

    private static HttpRequestMessage PngRequest(byte[] image, int scale)
    {
        var request = new HttpRequestMessage(HttpMethod.Post, Likelihoods) { Content = Http.Form(image, ("scale", scale.ToString())) };
        request.Headers.Accept.Add(new MediaTypeWithQualityHeaderValue("image/png"));
        return request;
    }

    /// <summary>The library's own pass over the image as the service quantizes it.</summary>
    private async Task<ImageAnalysis> AnalyzeDirectly(byte[] image)
    {
        var model = factory.Model();
        var codec = factory.Services.GetRequiredService<ImageCodec>();
        var tokens = codec.DecodeForModel(image, model.Manifest, partial: false).ToTokens(model.Palette);
        return (await model.AnalyzeBatchAsync([tokens], CancellationToken.None))[0];
    }

    /// <summary>
    /// The score's compressor written out again (models/README.md): counts per (left, up) context, K for "none", each
    /// pixel -log2((count + 1/2) / (total + K/2)) before its count is added.
    /// </summary>
    private static double ContextModelBits(int[] tokens, int width, int palette)
    {
        var counts = new int[palette + 1, palette + 1, palette];
        var totals = new int[palette + 1, palette + 1];
        double bits = 0;
        for (int p = 0; p < tokens.Length; p++)
        {
            int left = p % width == 0 ? palette : tokens[p - 1], up = p < width ? palette : tokens[p - width];
            bits -= Math.Log2((counts[left, up, tokens[p]] + 0.5) / (totals[left, up] + 0.5 * palette));
            counts[left, up, tokens[p]]++;
            totals[left, up]++;
        }
        return bits / tokens.Length;
    }

    private static float[] Floats(JsonNode array) => [.. array.AsArray().Select(v => v!.GetValue<float>())];
}

/// <summary>The verdict: the score against the package's test quantiles, in words; quantiles of another score give none.</summary>
public sealed class AnalysisVerdictTests : IClassFixture<AnalysisVerdictTests.CalibratedApiFactory>
{
    private readonly HttpClient _client;

    public AnalysisVerdictTests(CalibratedApiFactory factory) => _client = factory.CreateClient();

    /// <summary>Copies of the tiny package whose quantiles put any score of the tiny model (a few bits) in a known band.</summary>
    public sealed class CalibratedApiFactory() : ApiFactory(Calibrated())
    {
        private static ModelsFolder Calibrated()
        {
            var folder = new ModelsFolder(tiny: false, noClassifier: false, broken: false);
            void Add(string id, string score, double q95, double q99) => ModelsFolder.EditManifest(folder.AddPackage(id), manifest =>
                manifest["analysis"]!["ood"] = new JsonObject
                {
                    ["score"] = score,
                    ["test_quantiles"] = new JsonObject { ["0.5"] = q95 - 1, ["0.95"] = q95, ["0.99"] = q99 },
                });
            Add("tiny-usual", OodScore.Name, 1000, 1001);
            Add("tiny-unusual", OodScore.Name, -1000, 1000);
            Add("tiny-unlike", OodScore.Name, -1001, -1000);
            Add("tiny-other-score", "raw_bits_per_pixel", 1000, 1001);
            return folder;
        }
    }

    [Theory]
    [InlineData("tiny-usual", "like the training images")]
    [InlineData("tiny-unusual", "unusual")]
    [InlineData("tiny-unlike", "unlike the training images")]
    [InlineData("tiny-other-score", null)]
    public async Task VerdictFollowsTheQuantiles(string model, string? verdict)
    {
        var response = await _client.PostAsync($"/v1/models/{model}/likelihoods", Http.Form(TestImages.Png()));
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        var body = await response.ReadJsonAsync();
        Assert.Equal(verdict, body["verdict"]?.GetValue<string>());
        if (verdict is null)
        {
            Assert.Null(body["calibration"]);
            return;
        }
        var calibration = body["calibration"]!;
        Assert.Equal(OodScore.Name, calibration["score"]!.GetValue<string>());
        Assert.Equal(["0.5", "0.95", "0.99"], calibration["test_quantiles"]!.AsObject().Select(q => q.Key));
    }
}
