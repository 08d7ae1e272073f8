using System.Net;
using System.Net.Http.Headers;

namespace IGpt.Api.Tests;

[Collection(ApiCollection.Name)]
public sealed class SampleTests(ApiFactory factory)
{
    private const string Route = $"/v1/models/{ModelsFolder.Tiny}/samples";
    private readonly HttpClient _client = factory.CreateClient();

    [Fact]
    public async Task DrawsUnconditionalSamples()
    {
        var response = await _client.PostAsync(Route, Http.Json(new { n = 4, seed = 9, temperature = 1.2, top_k = 5, top_p = 0.95, scale = 3 }));
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        var body = await response.ReadJsonAsync();
        Assert.Equal(0, body["rows"]!.GetValue<int>());
        Assert.Equal(9UL, body["seed"]!.GetValue<ulong>());
        Assert.Equal(0, body["usage"]!["prompt_tokens"]!.GetValue<int>());
        Assert.Equal(4 * 64, body["usage"]!["generated_tokens"]!.GetValue<int>());
        var images = Http.Images(body);
        Assert.Equal(4, images.Length);
        foreach (var image in images)
        {
            var grey = TestImages.ReadGrey(Convert.FromBase64String(image));
            Assert.Equal((24, 24), (grey.Width, grey.Height));
            Assert.All(grey.Pixels, p => Assert.Contains(p, Quantizer.Palette));
        }

        var again = await (await _client.PostAsync(Route, Http.Json(new { n = 4, seed = 9, temperature = 1.2, top_k = 5, top_p = 0.95, scale = 3 }))).ReadJsonAsync();
        Assert.Equal(images, Http.Images(again));
    }

    [Fact]
    public async Task TemperatureZeroDrawsTheGreedyImageWhateverTheSeed()
    {
        async Task<string[]> Sample(ulong seed)
        {
            var response = await _client.PostAsync(Route, Http.Json(new { n = 2, seed, temperature = 0 }));
            Assert.Equal(HttpStatusCode.OK, response.StatusCode);
            return Http.Images(await response.ReadJsonAsync());
        }

        var greedy = await Sample(3);
        Assert.Single(greedy.Distinct());
        Assert.Equal(greedy, await Sample(4));
        // Sampling at temperature 1 with those seeds gives other images: the seed is what greedy ignores.
        var sampled = Http.Images(await (await _client.PostAsync(Route, Http.Json(new { n = 2, seed = 3UL }))).ReadJsonAsync());
        Assert.NotEqual(greedy, sampled);
    }

    [Fact]
    public async Task EmptyBodyTakesTheDefaults()
    {
        var response = await _client.PostAsync(Route, null);
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        var body = await response.ReadJsonAsync();
        Assert.Single(Http.Images(body));
        Assert.NotNull(body["seed"]);
    }

    [Fact]
    public async Task AcceptPngReturnsOnePng()
    {
        var request = new HttpRequestMessage(HttpMethod.Post, Route) { Content = Http.Json(new { n = 5, scale = 4 }) };
        request.Headers.Accept.Add(new MediaTypeWithQualityHeaderValue("image/png"));
        var response = await _client.SendAsync(request);
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal("image/png", response.Content.Headers.ContentType?.MediaType);
        var png = TestImages.ReadGrey(await response.Content.ReadAsByteArrayAsync());
        Assert.Equal((5 * 8 * 4, 8 * 4), (png.Width, png.Height));
        Assert.True(ulong.TryParse(response.Headers.GetValues("X-Seed").Single(), out _));
    }

    [Fact]
    public async Task JsonIsPreferredWhenAskedFirst()
    {
        var request = new HttpRequestMessage(HttpMethod.Post, Route) { Content = Http.Json(new { n = 1 }) };
        request.Headers.Accept.ParseAdd("application/json, image/png;q=0.5");
        var response = await _client.SendAsync(request);
        Assert.Equal("application/json", response.Content.Headers.ContentType?.MediaType);
    }

    [Fact]
    public async Task FailedModelIs503()
    {
        var response = await _client.PostAsync($"/v1/models/{ModelsFolder.Broken}/samples", Http.Json(new { n = 1 }));
        await response.AssertProblemAsync(HttpStatusCode.ServiceUnavailable);
    }
}
