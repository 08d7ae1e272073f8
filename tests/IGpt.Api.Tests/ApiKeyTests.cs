using System.Net;
using System.Net.Http.Headers;
using System.Text.Json.Nodes;

namespace IGpt.Api.Tests;

/// <summary>With Api:Keys set, every API route and /metrics needs one of the keys; health, the page and Swagger stay open.</summary>
[Collection(GuardedApiCollection.Name)]
public sealed class ApiKeyTests(GuardedApiFactory factory)
{
    private const string Model = $"/v1/models/{ModelsFolder.Tiny}";

    public static TheoryData<string, string> GuardedRoutes() => new()
    {
        { "GET", "/v1/models" },
        { "GET", Model },
        { "POST", $"{Model}/samples" },
        { "POST", $"{Model}/completions" },
        { "POST", $"{Model}/classifications" },
        { "GET", "/metrics" },
        { "GET", "/v1/no-such-route" },
    };

    [Theory]
    [MemberData(nameof(GuardedRoutes))]
    public async Task WithoutAKeyEveryGuardedRouteIs401ProblemWithWwwAuthenticate(string method, string path)
    {
        var client = factory.CreateClient(key: null);
        var response = await client.SendAsync(Request(method, path));
        var problem = await response.AssertProblemAsync(HttpStatusCode.Unauthorized);
        Assert.Equal("Bearer", response.Headers.WwwAuthenticate.Single().Scheme);
        Assert.Contains("Authorization: Bearer", problem["detail"]!.GetValue<string>());
    }

    [Theory]
    [InlineData("Bearer", "wrong-key-0000000000000")]
    [InlineData("Bearer", GuardedApiFactory.KeyOne + "x")]
    [InlineData("Bearer", "test-key-one")]
    [InlineData("Basic", GuardedApiFactory.KeyOne)]
    [InlineData("X-Api-Key", "wrong-key-0000000000000")]
    [InlineData("X-Api-Key", "")]
    public async Task AWrongKeyIs401(string scheme, string key)
    {
        var client = factory.CreateClient(key: null);
        var request = new HttpRequestMessage(HttpMethod.Get, "/v1/models");
        if (scheme == "X-Api-Key") request.Headers.TryAddWithoutValidation("X-Api-Key", key);
        else request.Headers.TryAddWithoutValidation("Authorization", $"{scheme} {key}");
        var response = await client.SendAsync(request);
        await response.AssertProblemAsync(HttpStatusCode.Unauthorized);
        Assert.StartsWith("Bearer", response.Headers.WwwAuthenticate.ToString());
    }

    [Theory]
    [InlineData("Authorization", "Bearer " + GuardedApiFactory.KeyOne)]
    [InlineData("Authorization", "bearer " + GuardedApiFactory.KeyTwo)]
    [InlineData("X-Api-Key", GuardedApiFactory.KeyOne)]
    [InlineData("X-Api-Key", GuardedApiFactory.KeyTwo)]
    public async Task EitherKeyInEitherHeaderIsServed(string header, string value)
    {
        var client = factory.CreateClient(key: null);
        foreach (var (method, path) in new[] { ("GET", "/v1/models"), ("POST", $"{Model}/samples"), ("POST", $"{Model}/classifications"), ("GET", "/metrics") })
        {
            var request = Request(method, path);
            request.Headers.TryAddWithoutValidation(header, value);
            var response = await client.SendAsync(request);
            Assert.True(response.StatusCode == HttpStatusCode.OK, $"{method} {path}: {(int)response.StatusCode} {await response.Content.ReadAsStringAsync()}");
        }
    }

    [Theory]
    [InlineData("/health/live")]
    [InlineData("/health/ready")]
    [InlineData("/")]
    [InlineData("/app.js")]
    [InlineData("/swagger/index.html")]
    [InlineData("/swagger/v1/swagger.json")]
    public async Task HealthThePageAndSwaggerNeedNoKey(string path)
    {
        var response = await factory.CreateClient(key: null).GetAsync(path);
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
    }

    [Fact]
    public async Task TheOpenApiDocumentOffersBothWaysToSendAKeyOnEveryApiOperation()
    {
        var document = JsonNode.Parse(await factory.CreateClient(key: null).GetStringAsync("/swagger/v1/swagger.json"))!;
        var schemes = document["components"]!["securitySchemes"]!;
        Assert.Equal("bearer", schemes["Bearer"]!["scheme"]!.GetValue<string>());
        Assert.Equal("X-Api-Key", schemes["ApiKey"]!["name"]!.GetValue<string>());
        Assert.Equal("header", schemes["ApiKey"]!["in"]!.GetValue<string>());
        var operations = document["paths"]!.AsObject().SelectMany(path => path.Value!.AsObject().Select(op => (Path: path.Key, Operation: op.Value!)));
        foreach (var (path, operation) in operations)
        {
            var security = operation["security"]?.AsArray();
            if (path.StartsWith("/v1/", StringComparison.Ordinal))
            {
                Assert.True(security is { Count: 2 }, $"{path} has no security requirements");
                Assert.NotNull(operation["responses"]!["401"]);
            }
            else Assert.True(security is { Count: 0 }, $"{path} does not say it is open (security: [])");
        }
    }

    [Fact]
    public async Task KeysNeverReachTheLogs()
    {
        var secretWrongKey = "wrong-but-secret-" + Guid.NewGuid().ToString("N");
        var client = factory.CreateClient(key: null);
        foreach (var (header, value) in new[]
        {
            ("Authorization", "Bearer " + GuardedApiFactory.KeyOne), ("X-Api-Key", GuardedApiFactory.KeyTwo),
            ("Authorization", "Bearer " + secretWrongKey), ("X-Api-Key", secretWrongKey),
        })
        {
            foreach (var request in new[] { Request("GET", "/v1/models"), Request("POST", $"{Model}/samples"), Request("GET", "/v1/models/missing"), Request("GET", "/health/live") })
            {
                request.Headers.TryAddWithoutValidation(header, value);
                await client.SendAsync(request);
            }
        }
        // The capture works: the request log lines of these requests are there (at Debug, with every framework event).
        Assert.True(await factory.Logs.WaitForAsync(text => text.Contains("/v1/models/missing") && text.Contains("responded 404")));
        Assert.True(await factory.Logs.WaitForAsync(text => text.Contains("/health/live") && text.Contains("responded 200")));
        var logs = factory.Logs.Texts();
        Assert.Contains(logs, text => text.Contains("responded 401"));
        foreach (var secret in new[] { GuardedApiFactory.KeyOne, GuardedApiFactory.KeyTwo, secretWrongKey })
        {
            var leak = logs.FirstOrDefault(text => text.Contains(secret, StringComparison.Ordinal));
            Assert.True(leak is null, $"a key is in the logs: {leak}");
        }
    }

    private static HttpRequestMessage Request(string method, string path)
    {
        var request = new HttpRequestMessage(new HttpMethod(method), path);
        if (method == "POST")
        {
            request.Content = path.EndsWith("/samples", StringComparison.Ordinal)
                ? Http.RawJson("{\"n\": 1, \"seed\": 1}")
                : Http.Form(TestImages.Png());
        }
        return request;
    }
}
