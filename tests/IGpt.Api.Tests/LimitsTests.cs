using System.Net;

namespace IGpt.Api.Tests;

/// <summary>The configurable limits: images per request (n) and pixels per image.</summary>
[Collection(GuardedApiCollection.Name)]
public sealed class LimitsTests(GuardedApiFactory factory)
{
    private const string Model = $"/v1/models/{ModelsFolder.Tiny}";
    private readonly HttpClient _client = factory.CreateClient(GuardedApiFactory.KeyOne);

    [Fact]
    public async Task NIsLimitedByApiMaxImagesPerRequest()
    {
        var response = await _client.PostAsync($"{Model}/samples", Http.RawJson($"{{\"n\": {GuardedApiFactory.MaxImages + 1}}}"));
        var problem = await response.AssertProblemAsync(HttpStatusCode.BadRequest, "n");
        Assert.Contains($"from 1 to {GuardedApiFactory.MaxImages}", problem.ToJsonString());
        response = await _client.PostAsync($"{Model}/completions", Http.Form(TestImages.Png(), ("n", "17"), ("seed", "1")));
        Assert.Equal(17, Http.Images(await response.ReadJsonAsync()).Length);
    }

    [Fact]
    public async Task APngStripTooWideForPngIs400BeforeAnythingIsDrawn()
    {
        // 600 images of 8 columns at scale 16 would be 76,800 pixels wide: refused at once, naming scale.
        var request = new HttpRequestMessage(HttpMethod.Post, $"{Model}/samples")
        {
            Content = Http.RawJson($"{{\"n\": {GuardedApiFactory.MaxImages}, \"scale\": 16}}"),
        };
        request.Headers.Accept.ParseAdd("image/png");
        var clock = System.Diagnostics.Stopwatch.StartNew();
        await (await _client.SendAsync(request)).AssertProblemAsync(HttpStatusCode.BadRequest, "scale");
        Assert.True(clock.Elapsed < TimeSpan.FromSeconds(5));
    }

    [Theory]
    [InlineData(100, 100, HttpStatusCode.OK)]
    [InlineData(101, 100, HttpStatusCode.RequestEntityTooLarge)]
    [InlineData(3, 4000, HttpStatusCode.RequestEntityTooLarge)]
    public async Task PixelsAreLimitedByImageLimitsMaxPixels(int width, int height, HttpStatusCode expected)
    {
        foreach (var route in new[] { $"{Model}/completions", $"{Model}/classifications" })
        {
            var response = await _client.PostAsync(route, Http.Form(TestImages.Png(width, height)));
            if (expected == HttpStatusCode.OK) Assert.Equal(HttpStatusCode.OK, response.StatusCode);
            else Assert.Contains("pixels", (await response.AssertProblemAsync(expected, "image")).ToJsonString());
        }
    }
}
