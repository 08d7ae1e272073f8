using System.Net;
using System.Text.Json.Nodes;

namespace IGpt.Api.Tests;

[Collection(ApiCollection.Name)]
public sealed class HealthAndDocsTests(ApiFactory factory)
{
    private readonly HttpClient _client = factory.CreateClient();

    [Fact]
    public async Task LiveAnswers()
    {
        var response = await _client.GetAsync("/health/live");
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal("live", (await response.ReadJsonAsync())["status"]!.GetValue<string>());
    }

    [Fact]
    public async Task ReadyIsDegradedWithAFailedPackageAndShowsEachModel()
    {
        var response = await _client.GetAsync("/health/ready");
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        var body = await response.ReadJsonAsync();
        Assert.Equal("degraded", body["status"]!.GetValue<string>());
        var models = body["models"]!.AsArray().ToDictionary(m => m!["id"]!.GetValue<string>(), m => m!["status"]!.GetValue<string>());
        Assert.Equal("ready", models[ModelsFolder.Tiny]);
        Assert.Equal("ready", models[ModelsFolder.NoClassifier]);
        Assert.Equal("failed", models[ModelsFolder.Broken]);
    }

    [Fact]
    public async Task SwaggerDocumentDescribesEveryRouteAndTheUpload()
    {
        var response = await _client.GetAsync("/swagger/v1/swagger.json");
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        var document = JsonNode.Parse(await response.Content.ReadAsStringAsync())!;
        var paths = document["paths"]!.AsObject();

        foreach (var path in new[] { "/v1/models", "/v1/models/{model}", "/health/live", "/health/ready" })
        {
            Assert.NotNull(paths[path]?["get"]);
        }
        foreach (var route in new[] { "completions", "samples", "classifications" })
        {
            var post = paths[$"/v1/models/{{model}}/{route}"]?["post"];
            Assert.NotNull(post);
            Assert.NotNull(post!["requestBody"]!["content"]!["application/json"]);
            Assert.NotNull(post["responses"]!["200"]);
            Assert.NotNull(post["responses"]!["400"]);
            Assert.NotNull(post["responses"]!["404"]);
            Assert.Contains(post["parameters"]!.AsArray(), p => p!["name"]!.GetValue<string>() == "model" && p["in"]!.GetValue<string>() == "path");
        }
        foreach (var route in new[] { "completions", "classifications" })
        {
            var form = paths[$"/v1/models/{{model}}/{route}"]!["post"]!["requestBody"]!["content"]!["multipart/form-data"]!["schema"]!;
            var image = form["properties"]!["image"]!;
            Assert.Equal("string", image["type"]!.GetValue<string>());
            Assert.Equal("binary", image["format"]!.GetValue<string>());
            Assert.False(string.IsNullOrWhiteSpace(image["description"]?.GetValue<string>()));
        }
        var completionForm = paths["/v1/models/{model}/completions"]!["post"]!["requestBody"]!["content"]!["multipart/form-data"]!["schema"]!["properties"]!.AsObject();
        Assert.Equal(["image", "n", "partial", "rows", "scale", "seed", "stream", "temperature", "top_k", "top_p"], completionForm.Select(p => p.Key).Order());
        Assert.All(completionForm, p => Assert.False(string.IsNullOrWhiteSpace(p.Value!["description"]?.GetValue<string>()), p.Key));
        Assert.NotNull(paths["/v1/models/{model}/completions"]!["post"]!["responses"]!["200"]!["content"]!["image/png"]);

        // Response schemas are snake_case and described.
        var schemas = document["components"]!["schemas"]!;
        var generation = schemas["GenerationResponse"]!["properties"]!.AsObject();
        Assert.Contains("prefix_cache_hit", generation.Select(p => p.Key));
        Assert.All(generation, p =>
        {
            // A nested record is a $ref: its description is on the referenced schema.
            var described = p.Value!["$ref"] is { } reference ? schemas[reference.GetValue<string>().Split('/')[^1]]! : p.Value;
            Assert.False(string.IsNullOrWhiteSpace(described["description"]?.GetValue<string>()), p.Key);
        });
    }

    [Fact]
    public async Task SwaggerUiIsServed()
    {
        var response = await _client.GetAsync("/swagger/index.html");
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Contains("swagger", await response.Content.ReadAsStringAsync(), StringComparison.OrdinalIgnoreCase);
    }
}

public sealed class BrokenOnlyTests(BrokenOnlyApiFactory factory) : IClassFixture<BrokenOnlyApiFactory>
{
    [Fact]
    public async Task ReadyIs503WhenNoModelIsReady()
    {
        var response = await factory.CreateClient().GetAsync("/health/ready");
        Assert.Equal(HttpStatusCode.ServiceUnavailable, response.StatusCode);
        var body = await response.ReadJsonAsync();
        Assert.Equal("unavailable", body["status"]!.GetValue<string>());
        Assert.Equal("failed", body["models"]![0]!["status"]!.GetValue<string>());
    }
}
