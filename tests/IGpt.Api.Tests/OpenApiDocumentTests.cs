using System.Text.Json;
using System.Text.Json.Nodes;
using Microsoft.OpenApi;

namespace IGpt.Api.Tests;

/// <summary>
/// The OpenAPI document as generators and linters read it, through Microsoft.OpenApi's own reader: no reader errors,
/// every example of its schema's type, the streamed answers and response headers declared, and stream false by default.
/// </summary>
[Collection(ApiCollection.Name)]
public sealed class OpenApiDocumentTests(ApiFactory factory)
{
    private static readonly string[] GenerationRoutes = ["/v1/models/{model}/completions", "/v1/models/{model}/samples"];
    private static readonly string[] AnalysisRoutes = ["/v1/models/{model}/embeddings", "/v1/models/{model}/likelihoods"];
    private static readonly string[] BodyRoutes = [.. GenerationRoutes, "/v1/models/{model}/classifications", .. AnalysisRoutes];

    private async Task<OpenApiDocument> ReadAsync()
    {
        var json = await factory.CreateClient().GetStringAsync("/swagger/v1/swagger.json");
        var result = OpenApiDocument.Parse(json, "json");
        Assert.Empty(result.Diagnostic?.Errors ?? []);
        Assert.NotNull(result.Document);
        return result.Document;
    }

    private static OpenApiOperation Post(OpenApiDocument document, string route) => document.Paths[route].Operations![HttpMethod.Post];

    [Fact]
    public async Task TheReaderReadsItWithoutErrorsAndItNamesAServer()
    {
        var document = await ReadAsync();
        Assert.Equal(["/"], document.Servers!.Select(server => server.Url));
    }

    [Fact]
    public async Task EveryExampleIsOfItsSchemasTypeAndNotEmpty()
    {
        var document = await ReadAsync();
        var examples = new ExampleChecker();
        new OpenApiWalker(examples).Walk(document);
        Assert.True(examples.Checked > 20, $"only {examples.Checked} examples were found: the walk missed the request fields");
        Assert.Empty(examples.Errors);

        // The JSON bodies' examples too: each field of the schema's type.
        foreach (var route in BodyRoutes)
        {
            var json = Post(document, route).RequestBody!.Content!["application/json"];
            var schema = json.Schema!;
            foreach (var (name, value) in json.Example!.AsObject())
            {
                Assert.True(schema.Properties!.TryGetValue(name, out var field), $"{route}: the example's '{name}' is no field");
                Assert.Null(ExampleChecker.Mismatch(field!, value));
            }
        }
    }

    [Fact]
    public async Task GenerationAnswersDeclareTheEventStreamAndItsEvents()
    {
        var document = await ReadAsync();
        foreach (var route in GenerationRoutes)
        {
            var ok = Post(document, route).Responses!["200"];
            Assert.True(ok.Content!.TryGetValue("text/event-stream", out var events), $"{route} declares no text/event-stream answer");
            var data = events!.Schema!.OneOf!.Select(s => (s as OpenApiSchemaReference)?.Reference.Id ?? "(inline)").ToArray();
            Assert.Equal(["RowEvent", "HeartbeatEvent", "GenerationResponse", "ProblemDetails"], data);
            Assert.Contains("image/png", ok.Content.Keys);
            Assert.Equal("application/json", ok.Content.Keys.First());
        }
    }

    [Fact]
    public async Task ResponseHeadersAreDeclared()
    {
        var document = await ReadAsync();
        foreach (var route in GenerationRoutes)
        {
            var responses = Post(document, route).Responses!;
            Assert.Equal(["Server-Timing", "X-Cache", "X-Seed"], responses["200"].Headers!.Keys.Order(StringComparer.Ordinal));
            Assert.Equal(JsonSchemaType.Integer, responses["200"].Headers!["X-Seed"].Schema!.Type);
            Assert.Contains("Retry-After", responses["503"].Headers!.Keys);
            Assert.Contains("Retry-After", responses["429"].Headers!.Keys);
        }
        foreach (var route in (string[])["/v1/models/{model}/classifications", .. AnalysisRoutes])
        {
            Assert.Equal(["X-Cache"], Post(document, route).Responses!["200"].Headers!.Keys);
        }
    }

    [Fact]
    public async Task AnalysisRoutesDeclareTheirFieldsAnswersAndProblems()
    {
        var document = await ReadAsync();
        var embeddings = Post(document, AnalysisRoutes[0]);
        var likelihoods = Post(document, AnalysisRoutes[1]);
        Assert.Equal(["image", "layer"], document.Components!.Schemas!["EmbeddingRequest"].Properties!.Keys);
        Assert.Equal(["image", "scale"], document.Components.Schemas["LikelihoodRequest"].Properties!.Keys);
        var layer = document.Components.Schemas["EmbeddingRequest"].Properties!["layer"];
        Assert.Equal((JsonSchemaType.Integer, "0"), (layer.Type, layer.Minimum));
        // Only the likelihoods draw a picture (the surprise map); both answer JSON first, with their own response schema.
        Assert.Equal(["application/json"], embeddings.Responses!["200"].Content!.Keys);
        Assert.Equal(["application/json", "image/png"], likelihoods.Responses!["200"].Content!.Keys);
        Assert.Equal("EmbeddingResponse", (embeddings.Responses["200"].Content!["application/json"].Schema as OpenApiSchemaReference)?.Reference.Id);
        Assert.Equal("LikelihoodResponse", (likelihoods.Responses["200"].Content!["application/json"].Schema as OpenApiSchemaReference)?.Reference.Id);
        var response = document.Components.Schemas["LikelihoodResponse"].Properties!;
        foreach (var field in new[] { "bits_per_pixel", "rows", "compressor_bits_per_pixel", "ood_score", "verdict", "calibration", "cached" })
            Assert.True(response.ContainsKey(field), $"LikelihoodResponse lacks {field}");
        foreach (var operation in new[] { embeddings, likelihoods })
        {
            Assert.Equal("Analysis", Assert.Single(operation.Tags!).Name);
            foreach (var status in new[] { "400", "404", "413", "415", "503" })
                Assert.Equal("application/problem+json", operation.Responses![status].Content!.Keys.Single());
        }
    }

    [Fact]
    public async Task RequestBodiesListJsonFirstThenMultipartAndStreamIsFalseByDefault()
    {
        var document = await ReadAsync();
        foreach (var route in BodyRoutes)
        {
            Assert.Equal(["application/json", "multipart/form-data"], Post(document, route).RequestBody!.Content!.Keys);
        }
        foreach (var route in GenerationRoutes)
        {
            foreach (var (type, media) in Post(document, route).RequestBody!.Content!)
            {
                var stream = media.Schema!.Properties!["stream"];
                Assert.Equal(JsonSchemaType.Boolean, stream.Type);
                Assert.True(stream.Default is JsonValue d && d.GetValueKind() == JsonValueKind.False, $"{route} {type}: stream's default is not false");
                Assert.True(stream.Example is JsonValue e && e.GetValueKind() == JsonValueKind.False, $"{route} {type}: stream's example is not false");
            }
        }
    }

    [Fact]
    public async Task SamplingFieldsDefaultToTheModelsSettings()
    {
        var document = await ReadAsync();
        foreach (var route in GenerationRoutes)
        {
            foreach (var (type, media) in Post(document, route).RequestBody!.Content!)
            {
                foreach (var name in new[] { "temperature", "top_k", "top_p" })
                {
                    var field = media.Schema!.Properties![name];
                    // A default or example would be filled into Swagger UI's form and sent, overriding the model's setting.
                    Assert.True(field.Default is null && field.Example is null, $"{route} {type}: {name} has a fixed default or example");
                    Assert.Contains("GET /v1/models/{model}", field.Description);
                }
            }
            Assert.False(Post(document, route).RequestBody!.Content!["application/json"].Example!.AsObject().ContainsKey("temperature"),
                $"{route}: the JSON example sends a temperature, overriding the model's");
        }
        var sampling = document.Components!.Schemas!["ModelResponse"].Properties!["sampling"];
        Assert.NotNull(sampling);
        Assert.Contains("sampling", document.Paths["/v1/models/{model}"].Operations![HttpMethod.Get].Description);
    }

    [Fact]
    public async Task SeedIsAnInt64InTheRangeEveryClientHolds()
    {
        var document = await ReadAsync();
        var seed = document.Components!.Schemas!["SampleRequest"].Properties!["seed"];
        Assert.Equal((JsonSchemaType.Integer, "int64", "0", "9007199254740991"), (seed.Type, seed.Format, seed.Minimum, seed.Maximum));
    }

    /// <summary>Every schema example: null where the schema has one of the right type and not empty, else what is wrong.</summary>
    private sealed class ExampleChecker : OpenApiVisitorBase
    {
        public List<string> Errors { get; } = [];
        public int Checked { get; private set; }

        public override void Visit(IOpenApiSchema schema)
        {
            if (schema is OpenApiSchemaReference || schema.Example is null) return;
            Checked++;
            if (Mismatch(schema, schema.Example) is { } error) Errors.Add($"{PathString}: {error}");
        }

        public static string? Mismatch(IOpenApiSchema schema, JsonNode? example)
        {
            var kind = example?.GetValueKind() ?? JsonValueKind.Null;
            var type = schema.Type ?? 0;
            bool fits = kind switch
            {
                JsonValueKind.String => type.HasFlag(JsonSchemaType.String) && example!.GetValue<string>().Length > 0,
                JsonValueKind.Number => type.HasFlag(JsonSchemaType.Number)
                    || (type.HasFlag(JsonSchemaType.Integer) && decimal.TryParse(example!.ToJsonString(), out var n) && n == decimal.Truncate(n)),
                JsonValueKind.True or JsonValueKind.False => type.HasFlag(JsonSchemaType.Boolean),
                JsonValueKind.Object => type.HasFlag(JsonSchemaType.Object),
                JsonValueKind.Array => type.HasFlag(JsonSchemaType.Array),
                _ => false,
            };
            return fits ? null : $"example {example?.ToJsonString() ?? "null"} does not fit type {type}";
        }
    }
}
