using System.Net;

namespace IGpt.Api.Tests;

[Collection(ApiCollection.Name)]
public sealed class ClassificationTests(ApiFactory factory)
{
    private const string Route = $"/v1/models/{ModelsFolder.Tiny}/classifications";
    private readonly HttpClient _client = factory.CreateClient();

    [Fact]
    public async Task ReturnsSortedProbabilitiesAndCachesByImage()
    {
        // An image no other test sends, so the first answer cannot come from the cache.
        var image = TestImages.Png(8, 8, (x, y) => (byte)(200 - x * y));
        var first = await _client.PostAsync(Route, Http.Form(image));
        Assert.Equal(HttpStatusCode.OK, first.StatusCode);
        Assert.Equal("miss", first.Headers.GetValues("X-Cache").Single());
        var body = await first.ReadJsonAsync();
        Assert.Equal(ModelsFolder.Tiny, body["model"]!.GetValue<string>());
        Assert.False(body["cached"]!.GetValue<bool>());

        var predictions = body["predictions"]!.AsArray().Select(p => p!.AsObject()).ToArray();
        Assert.Equal(3, predictions.Length); // top 5 by default, the model has 3 classes
        var probabilities = predictions.Select(p => p["probability"]!.GetValue<double>()).ToArray();
        Assert.Equal(probabilities.OrderDescending(), probabilities);
        Assert.Equal(1.0, probabilities.Sum(), 3);
        Assert.Equal(ModelsFolder.FixtureClasses.Order(), predictions.Select(p => p["label"]!.GetValue<string>()).Order());
        foreach (var p in predictions)
        {
            Assert.Equal(ModelsFolder.FixtureClasses[p["index"]!.GetValue<int>()], p["label"]!.GetValue<string>());
        }

        var second = await _client.PostAsync(Route, Http.Json(new { image = Convert.ToBase64String(image) }));
        Assert.Equal("hit", second.Headers.GetValues("X-Cache").Single());
        var cached = await second.ReadJsonAsync();
        Assert.True(cached["cached"]!.GetValue<bool>());
        Assert.Equal(body["predictions"]!.ToJsonString(), cached["predictions"]!.ToJsonString());
    }

    [Fact]
    public async Task TopLimitsThePredictions()
    {
        var response = await _client.PostAsync(Route, Http.Form(TestImages.Png(), ("top", "1")));
        var body = await response.ReadJsonAsync();
        Assert.Single(body["predictions"]!.AsArray());
    }

    [Fact]
    public async Task ModelWithoutClassifierIs404()
    {
        var response = await _client.PostAsync($"/v1/models/{ModelsFolder.NoClassifier}/classifications", Http.Form(TestImages.Png()));
        var problem = await response.AssertProblemAsync(HttpStatusCode.NotFound);
        Assert.Contains("classification", problem["detail"]!.GetValue<string>());
    }

    [Fact]
    public async Task FailedModelIs503()
    {
        var response = await _client.PostAsync($"/v1/models/{ModelsFolder.Broken}/classifications", Http.Form(TestImages.Png()));
        await response.AssertProblemAsync(HttpStatusCode.ServiceUnavailable);
    }

    [Theory]
    [InlineData("0")]
    [InlineData("-1")]
    [InlineData("five")]
    public async Task BadTopIs400(string top)
    {
        var response = await _client.PostAsync(Route, Http.Form(TestImages.Png(), ("top", top)));
        await response.AssertProblemAsync(HttpStatusCode.BadRequest, "top");
    }

    [Fact]
    public async Task UnsupportedImageIs415()
    {
        var response = await _client.PostAsync(Route, Http.Form(TestImages.Gif()));
        await response.AssertProblemAsync(HttpStatusCode.UnsupportedMediaType, "image");
    }
}
