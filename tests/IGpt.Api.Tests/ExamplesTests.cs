using System.Net;
using System.Text.Json.Nodes;
using System.Text.RegularExpressions;
using IGpt.Api.Catalog;
using IGpt.Inference;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Options;

namespace IGpt.Api.Tests;

/// <summary>GET /v1/models/{model}/examples: the PNGs of a package's examples/ folder, and the shipped models' examples.</summary>
public sealed class ExamplesTests
{
    private static readonly byte[] Small = TestImages.Png();
    private static readonly byte[] Larger = TestImages.Png(16, 12);

    [Fact]
    public async Task ExamplesAreTheFolderPngsByNameLeavingOutUnreadableOnes()
    {
        var folder = new ModelsFolder();
        var tiny = Directory.CreateDirectory(Path.Combine(folder.Path, ModelsFolder.Tiny, ModelExamples.FolderName)).FullName;
        File.WriteAllBytes(Path.Combine(tiny, "2-mid.png"), Small);
        File.WriteAllBytes(Path.Combine(tiny, "1-dark.png"), Larger);
        File.WriteAllBytes(Path.Combine(tiny, "3-text.png"), "not a PNG"u8.ToArray());
        File.WriteAllBytes(Path.Combine(tiny, "4-truncated.png"), TestImages.TruncatedPng());
        File.WriteAllBytes(Path.Combine(tiny, "5-huge.png"), [.. Small, .. new byte[ModelExamples.MaxBytes]]);
        File.WriteAllText(Path.Combine(tiny, "notes.txt"), "not an example");
        var broken = Directory.CreateDirectory(Path.Combine(folder.Path, ModelsFolder.Broken, ModelExamples.FolderName)).FullName;
        File.WriteAllBytes(Path.Combine(broken, "1-light.png"), Small);
        using var factory = new ConfiguredApiFactory(folder, new Dictionary<string, string?>());
        var client = factory.CreateClient();

        var response = await client.GetAsync($"/v1/models/{ModelsFolder.Tiny}/examples");
        Assert.True(response.IsSuccessStatusCode, await response.Content.ReadAsStringAsync());
        var body = await response.ReadJsonAsync();
        Assert.Equal(ModelsFolder.Tiny, body["model"]!.GetValue<string>());
        var examples = body["examples"]!.AsArray().Select(e => e!.AsObject()).ToArray();
        Assert.Equal(["1-dark", "2-mid"], examples.Select(e => e["name"]!.GetValue<string>()));
        Assert.Equal([(16, 12), (8, 8)], examples.Select(e => (e["width"]!.GetValue<int>(), e["height"]!.GetValue<int>())));
        Assert.Equal(Larger, Convert.FromBase64String(examples[0]["image"]!.GetValue<string>()));
        Assert.Equal(Small, Convert.FromBase64String(examples[1]["image"]!.GetValue<string>()));

        // An example is posted as it is.
        var completion = await client.PostAsync($"/v1/models/{ModelsFolder.Tiny}/completions",
            Http.Json(new { image = examples[0]["image"]!.GetValue<string>(), seed = 1 }));
        Assert.Equal(HttpStatusCode.OK, completion.StatusCode);

        // A package without examples has none; a failed package's examples are still listed; no package is a 404.
        Assert.Empty((await (await client.GetAsync($"/v1/models/{ModelsFolder.NoClassifier}/examples")).ReadJsonAsync())["examples"]!.AsArray());
        Assert.Single((await (await client.GetAsync($"/v1/models/{ModelsFolder.Broken}/examples")).ReadJsonAsync())["examples"]!.AsArray());
        var missing = await client.GetAsync("/v1/models/no-such-model/examples");
        var problem = await missing.AssertProblemAsync(HttpStatusCode.NotFound);
        Assert.Contains("no-such-model", problem["detail"]!.GetValue<string>());
    }

    /// <summary>
    /// Every shipped package has a few examples, each a small PNG at the model's resolution named
    /// <c>&lt;n&gt;-&lt;class&gt;</c> after one of its classes (scripts/make_examples.py writes them from the test split).
    /// </summary>
    [Fact]
    public void ShippedModelsHaveSmallExamplesOfTheirOwnClasses()
    {
        var codec = new ImageCodec(Options.Create(new ImageLimits()));
        var models = Path.Combine(ModelsFolder.RepoRoot, "models");
        var packages = Directory.GetDirectories(models).Where(d => File.Exists(Path.Combine(d, "model.json"))).ToArray();
        Assert.NotEmpty(packages);
        foreach (var package in packages)
        {
            var manifest = ModelManifest.Load(package);
            var examples = ModelExamples.Load(package, codec, NullLogger.Instance);
            Assert.InRange(examples.Count, 4, 8);
            var slugs = manifest.Classes.Select(c => Regex.Replace(c.ToLowerInvariant(), "[^a-z0-9]+", "-").Trim('-')).ToArray();
            foreach (var example in examples)
            {
                Assert.Equal((manifest.Width, manifest.Height), (example.Width, example.Height));
                Assert.InRange(Convert.FromBase64String(example.Image).Length, 1, 4096);
                var match = Regex.Match(example.Name, "^[0-9]+-(.+)$");
                Assert.True(match.Success, example.Name);
                Assert.Contains(match.Groups[1].Value, slugs);
            }
            Assert.Equal(examples.Count, Directory.GetFiles(Path.Combine(package, ModelExamples.FolderName)).Length);
        }
    }
}

/// <summary>The examples route in the OpenAPI document.</summary>
[Collection(ApiCollection.Name)]
public sealed class ExamplesDocumentTests(ApiFactory factory)
{
    [Fact]
    public async Task TheOpenApiDocumentDeclaresTheRoute()
    {
        var document = JsonNode.Parse(await factory.CreateClient().GetStringAsync("/swagger/v1/swagger.json"))!;
        var get = document["paths"]!["/v1/models/{model}/examples"]!["get"]!;
        Assert.Equal("ListModelExamples", get["operationId"]!.GetValue<string>());
        Assert.NotNull(get["responses"]!["200"]!["content"]!["application/json"]);
        Assert.NotNull(get["responses"]!["404"]!["content"]!["application/problem+json"]);
        var example = document["components"]!["schemas"]!["ExampleImage"]!["properties"]!.AsObject();
        Assert.Equal(["height", "image", "name", "width"], example.Select(p => p.Key).Order());
    }
}
