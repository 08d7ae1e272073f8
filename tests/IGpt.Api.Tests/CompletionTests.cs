using System.Net;
using System.Net.Http.Headers;

namespace IGpt.Api.Tests;

[Collection(ApiCollection.Name)]
public sealed class CompletionTests(ApiFactory factory)
{
    private const string Route = $"/v1/models/{ModelsFolder.Tiny}/completions";
    private readonly HttpClient _client = factory.CreateClient();

    [Fact]
    public async Task MultipartCompletionKeepsTheQuantizedRows()
    {
        var input = TestImages.Png();
        var response = await _client.PostAsync(Route, Http.Form(input, ("rows", "3"), ("n", "2"), ("seed", "42")));
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        var body = await response.ReadJsonAsync();

        Assert.Equal(ModelsFolder.Tiny, body["model"]!.GetValue<string>());
        Assert.Equal(42UL, body["seed"]!.GetValue<ulong>());
        Assert.Equal(3, body["rows"]!.GetValue<int>());
        Assert.Equal(24, body["usage"]!["prompt_tokens"]!.GetValue<int>());
        Assert.Equal(2 * 40, body["usage"]!["generated_tokens"]!.GetValue<int>());
        foreach (var key in new[] { "queue_ms", "prefill_ms", "decode_ms" })
        {
            Assert.True(body["timings"]![key]!.GetValue<double>() >= 0);
        }
        Assert.NotNull(body["prefix_cache_hit"]);
        Assert.Equal("42", response.Headers.GetValues("X-Seed").Single());
        Assert.Contains(response.Headers.GetValues("X-Cache").Single(), new[] { "hit", "miss" });

        var expected = Quantizer.Quantize(TestImages.ReadGrey(input).Pixels);
        var images = Http.Images(body);
        Assert.Equal(2, images.Length);
        foreach (var image in images)
        {
            var (width, height, pixels) = TestImages.ReadGrey(Convert.FromBase64String(image));
            Assert.Equal((8, 8), (width, height));
            Assert.Equal(expected[..24], pixels[..24]);
            Assert.All(pixels, p => Assert.Contains(p, Quantizer.Palette));
        }
    }

    [Fact]
    public async Task JsonBase64CompletionDefaultsToHalfTheRows()
    {
        var input = TestImages.Png();
        var response = await _client.PostAsync(Route, Http.Json(new { image = Convert.ToBase64String(input), seed = 1 }));
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        var body = await response.ReadJsonAsync();
        Assert.Equal(4, body["rows"]!.GetValue<int>());
        var pixels = TestImages.ReadGrey(Convert.FromBase64String(Http.Images(body).Single())).Pixels;
        Assert.Equal(Quantizer.Quantize(TestImages.ReadGrey(input).Pixels)[..32], pixels[..32]);
    }

    [Fact]
    public async Task DataUrlIsAccepted()
    {
        var url = "data:image/png;base64," + Convert.ToBase64String(TestImages.Png());
        var response = await _client.PostAsync(Route, Http.Json(new { image = url, seed = 1 }));
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
    }

    [Fact]
    public async Task JpegAndLargerImagesAreResizedToTheModel()
    {
        var response = await _client.PostAsync(Route, Http.Form(TestImages.Jpeg(32, 32), ("seed", "3")));
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        var image = TestImages.ReadGrey(Convert.FromBase64String(Http.Images(await response.ReadJsonAsync()).Single()));
        Assert.Equal((8, 8), (image.Width, image.Height));
    }

    [Fact]
    public async Task SameSeedSameImagesAndTheSeedIsEchoed()
    {
        var input = TestImages.Png();
        async Task<string[]> Complete(string seed) => Http.Images(await (await _client.PostAsync(Route,
            Http.Form(input, ("n", "3"), ("seed", seed), ("temperature", "1.5")))).ReadJsonAsync());

        var first = await Complete("1234567890123");
        Assert.Equal(first, await Complete("1234567890123"));
        Assert.NotEqual(first, await Complete("99"));
    }

    [Fact]
    public async Task TemperatureZeroIsGreedyTheSameImagesWhateverTheSeedTopKAndTopP()
    {
        var input = TestImages.Png();
        async Task<string[]> Complete(params (string, string)[] fields)
        {
            var response = await _client.PostAsync(Route, Http.Form(input, [("n", "3"), ("temperature", "0"), .. fields]));
            Assert.Equal(HttpStatusCode.OK, response.StatusCode);
            return Http.Images(await response.ReadJsonAsync());
        }

        var greedy = await Complete(("seed", "1"));
        Assert.Equal(3, greedy.Length);
        Assert.Single(greedy.Distinct());
        Assert.Equal(greedy, await Complete(("seed", "99")));
        Assert.Equal(greedy, await Complete(("seed", "9007199254740991"), ("top_k", "2"), ("top_p", "0.3")));
        var json = await _client.PostAsync(Route, Http.Json(new { image = Convert.ToBase64String(input), n = 3, temperature = 0.0, seed = 5 }));
        Assert.Equal(greedy, Http.Images(await json.ReadJsonAsync()));
    }

    [Fact]
    public async Task ARandomSeedIsChosenAndEchoed()
    {
        var input = TestImages.Png();
        var body = await (await _client.PostAsync(Route, Http.Form(input, ("n", "2")))).ReadJsonAsync();
        var seed = body["seed"]!.GetValue<ulong>();
        var again = await (await _client.PostAsync(Route, Http.Form(input, ("n", "2"), ("seed", seed.ToString())))).ReadJsonAsync();
        Assert.Equal(Http.Images(body), Http.Images(again));
    }

    [Fact]
    public async Task AcceptPngReturnsTheImagesSideBySide()
    {
        var input = TestImages.Png();
        var request = new HttpRequestMessage(HttpMethod.Post, Route)
        {
            Content = Http.Form(input, ("n", "3"), ("scale", "2"), ("seed", "7"), ("rows", "5")),
        };
        request.Headers.Accept.Add(new MediaTypeWithQualityHeaderValue("image/png"));
        var response = await _client.SendAsync(request);
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal("image/png", response.Content.Headers.ContentType?.MediaType);
        Assert.Equal("7", response.Headers.GetValues("X-Seed").Single());

        var strip = TestImages.ReadGrey(await response.Content.ReadAsByteArrayAsync());
        Assert.Equal((3 * 8 * 2, 8 * 2), (strip.Width, strip.Height));

        // The strip holds the same images as the JSON answer for the same seed, enlarged 2x.
        var json = await (await _client.PostAsync(Route, Http.Form(input, ("n", "3"), ("scale", "2"), ("seed", "7"), ("rows", "5")))).ReadJsonAsync();
        var images = Http.Images(json).Select(i => TestImages.ReadGrey(Convert.FromBase64String(i))).ToArray();
        var quantized = Quantizer.Quantize(TestImages.ReadGrey(input).Pixels);
        for (int n = 0; n < 3; n++)
        {
            Assert.Equal((16, 16), (images[n].Width, images[n].Height));
            for (int y = 0; y < 16; y++)
            for (int x = 0; x < 16; x++)
            {
                var pixel = strip.Pixels[y * strip.Width + n * 16 + x];
                Assert.Equal(images[n].Pixels[y * 16 + x], pixel);
                if (y / 2 < 5) Assert.Equal(quantized[(y / 2) * 8 + x / 2], pixel);
            }
        }
    }

    [Fact]
    public async Task PartialImageKeepsAllPostedRows()
    {
        // 8 wide, 3 tall: the top of a picture; every posted row is kept.
        var input = TestImages.Png(8, 3);
        var body = await (await _client.PostAsync(Route, Http.Form(input, ("partial", "true"), ("seed", "5")))).ReadJsonAsync();
        Assert.Equal(3, body["rows"]!.GetValue<int>());
        var pixels = TestImages.ReadGrey(Convert.FromBase64String(Http.Images(body).Single())).Pixels;
        Assert.Equal(Quantizer.Quantize(TestImages.ReadGrey(input).Pixels), pixels[..24]);
    }

    [Fact]
    public async Task PartialImageRowsCannotExceedThePostedRows()
    {
        var response = await _client.PostAsync(Route, Http.Form(TestImages.Png(8, 3), ("partial", "true"), ("rows", "5")));
        await response.AssertProblemAsync(HttpStatusCode.BadRequest, "rows");
    }

    [Fact]
    public async Task SamplingFieldsAreAccepted()
    {
        var response = await _client.PostAsync(Route, Http.Json(new
        {
            image = Convert.ToBase64String(TestImages.Png()), rows = 7, n = 16, temperature = 0.7, top_k = 3, top_p = 0.9, seed = 11, scale = 16,
        }));
        var body = await response.ReadJsonAsync();
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal(16, Http.Images(body).Length);
        var first = TestImages.ReadGrey(Convert.FromBase64String(Http.Images(body)[0]));
        Assert.Equal((128, 128), (first.Width, first.Height));
    }

    [Fact]
    public async Task RepeatedPromptHitsThePrefixCacheAndGivesTheSameImages()
    {
        // A prompt no other test sends.
        var input = TestImages.Png(8, 8, (x, y) => (byte)(255 - x * 9 - y * 21));
        var first = await _client.PostAsync(Route, Http.Form(input, ("rows", "6"), ("n", "2"), ("seed", "77")));
        var second = await _client.PostAsync(Route, Http.Form(input, ("rows", "6"), ("n", "2"), ("seed", "77")));
        Assert.Equal("miss", first.Headers.GetValues("X-Cache").Single());
        Assert.Equal("hit", second.Headers.GetValues("X-Cache").Single());
        var (a, b) = (await first.ReadJsonAsync(), await second.ReadJsonAsync());
        Assert.False(a["prefix_cache_hit"]!.GetValue<bool>());
        Assert.True(b["prefix_cache_hit"]!.GetValue<bool>());
        Assert.Equal(Http.Images(a), Http.Images(b));
    }

    [Fact]
    public async Task FailedModelIs503()
    {
        var response = await _client.PostAsync($"/v1/models/{ModelsFolder.Broken}/completions", Http.Form(TestImages.Png()));
        await response.AssertProblemAsync(HttpStatusCode.ServiceUnavailable);
    }

    [Fact]
    public async Task UnknownModelIs404()
    {
        var response = await _client.PostAsync("/v1/models/nope/completions", Http.Form(TestImages.Png()));
        await response.AssertProblemAsync(HttpStatusCode.NotFound);
    }

}
