using System.Net;

namespace IGpt.Api.Tests;

[Collection(ApiCollection.Name)]
public sealed class ModelsApiTests(ApiFactory factory)
{
    private readonly HttpClient _client = factory.CreateClient();

    [Fact]
    public async Task ListsEveryPackageWithItsStatus()
    {
        var response = await _client.GetAsync("/v1/models");
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        var models = (await response.ReadJsonAsync())["models"]!.AsArray().Select(m => m!.AsObject()).ToDictionary(m => m["id"]!.GetValue<string>());

        Assert.Equal([ModelsFolder.Broken, ModelsFolder.NoClassifier, ModelsFolder.Tiny], models.Keys.Order());
        var tiny = models[ModelsFolder.Tiny];
        Assert.Equal("ready", tiny["status"]!.GetValue<string>());
        Assert.Equal(8, tiny["height"]!.GetValue<int>());
        Assert.Equal(8, tiny["width"]!.GetValue<int>());
        Assert.Equal(1, tiny["channels"]!.GetValue<int>());
        Assert.Equal(8, tiny["palette_size"]!.GetValue<int>());
        Assert.Equal(3, ModelsFolder.FixtureClasses.Length);
        Assert.Equal(ModelsFolder.FixtureClasses, tiny["classes"]!.AsArray().Select(c => c!.GetValue<string>()));
        Assert.True(tiny["has_classifier"]!.GetValue<bool>());
        Assert.Equal("CPU", tiny["execution_provider"]!.GetValue<string>());
        Assert.Contains("UseCuda", tiny["provider_reason"]!.GetValue<string>());
        Assert.NotNull(tiny["metrics"]);
        Assert.False(string.IsNullOrEmpty(tiny["training"]!["dataset"]!.GetValue<string>()));

        Assert.False(models[ModelsFolder.NoClassifier]["has_classifier"]!.GetValue<bool>());
        Assert.Empty(models[ModelsFolder.NoClassifier]["classes"]!.AsArray());

        var broken = models[ModelsFolder.Broken];
        Assert.Equal("failed", broken["status"]!.GetValue<string>());
        Assert.Contains("decoder.onnx", broken["error"]!.GetValue<string>());
        Assert.Null(broken["execution_provider"]);
        Assert.Equal(8, broken["height"]!.GetValue<int>()); // its manifest is still readable
    }

    [Fact]
    public async Task DescribesOneModel()
    {
        var model = await (await _client.GetAsync($"/v1/models/{ModelsFolder.Tiny}")).ReadJsonAsync();
        Assert.Equal(ModelsFolder.Tiny, model["id"]!.GetValue<string>());
        Assert.Equal("ready", model["status"]!.GetValue<string>());
    }

    [Fact]
    public async Task FailedModelIsShownAsFailed()
    {
        var model = await (await _client.GetAsync($"/v1/models/{ModelsFolder.Broken}")).ReadJsonAsync();
        Assert.Equal("failed", model["status"]!.GetValue<string>());
        Assert.False(string.IsNullOrEmpty(model["error"]!.GetValue<string>()));
    }

    [Fact]
    public async Task UnknownModelIs404Problem()
    {
        var problem = await (await _client.GetAsync("/v1/models/no-such-model")).AssertProblemAsync(HttpStatusCode.NotFound);
        Assert.Contains("no-such-model", problem["detail"]!.GetValue<string>());
    }
}
