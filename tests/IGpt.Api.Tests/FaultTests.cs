using static IGpt.Tests.Shared.Poll;
using System.Diagnostics;
using System.Net;
using System.Net.ServerSentEvents;
using System.Text.Json.Nodes;
using IGpt.Api.Serving;
using IGpt.Inference;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;

namespace IGpt.Api.Tests;

/// <summary>A service whose host a test can stop (graceful shutdown).</summary>
public sealed class StoppableApiFactory(ModelsFolder models, IReadOnlyDictionary<string, string?> overrides) : ApiFactory(models, overrides)
{
    public IHost Host { get; private set; } = null!;

    protected override IHost CreateHost(IHostBuilder builder)
    {
        Host = base.CreateHost(builder);
        return Host;
    }
}

/// <summary>
/// Faults while serving: package files deleted or overwritten under a loaded model, a corrupt package at start, an ONNX
/// Runtime run that really throws (tests/fixtures/faults, made by training/scripts/make_fault_fixtures.py: a decoder whose
/// Gather fails at positions of 40 and more, a classifier that fails on light pixels), and graceful shutdown. Each test
/// has its own service.
/// </summary>
public sealed class FaultTests
{
    private const string Faulty = "tiny-faulty";
    private const string Samples = $"/v1/models/{ModelsFolder.Tiny}/samples";

    private static string FailingDecoder => Path.Combine(ModelsFolder.RepoRoot, "tests", "fixtures", "faults", "decoder-fails-past-40.onnx");
    private static string FailingClassifier => Path.Combine(ModelsFolder.RepoRoot, "tests", "fixtures", "faults", "classifier-fails-on-light-pixels.onnx");

    private static HttpRequestMessage Post(string route, HttpContent content) => new(HttpMethod.Post, route) { Content = content };

    private static async Task<List<SseItem<string>>> EventsAsync(HttpResponseMessage response)
    {
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal("text/event-stream", response.Content.Headers.ContentType?.MediaType);
        var events = new List<SseItem<string>>();
        await using var stream = await response.Content.ReadAsStreamAsync();
        await foreach (var item in SseParser.Create(stream).EnumerateAsync()) events.Add(item);
        return events;
    }

    private static async Task<JsonObject> ReadyAsync(HttpClient client, HttpStatusCode expected)
    {
        var response = await client.GetAsync("/health/ready");
        Assert.Equal(expected, response.StatusCode);
        return await response.ReadJsonAsync();
    }

    private static string? StatusOf(JsonObject health, string id) =>
        health["models"]!.AsArray().Single(m => m!["id"]!.GetValue<string>() == id)!["status"]!.GetValue<string>();

    [Fact]
    public async Task PackageFilesDeletedOrOverwrittenWhileServedDoNotStopTheModel()
    {
        var folder = new ModelsFolder(tiny: true, noClassifier: false, broken: false);
        using var factory = new ConfiguredApiFactory(folder, new Dictionary<string, string?>());
        var client = factory.CreateClient();
        Assert.Equal(HttpStatusCode.OK, (await client.PostAsync(Samples, Http.Json(new { n = 1 }))).StatusCode);

        // Graphs and weights files overwritten in place with garbage (ONNX Runtime would have mapped the weights: a mapped
        // page of a file truncated under it faults), everything else deleted: the weights and the palette are in memory.
        var dir = Path.Combine(folder.Path, ModelsFolder.Tiny);
        foreach (var file in Directory.GetFiles(dir))
        {
            if (file.EndsWith(".onnx", StringComparison.Ordinal) || file.EndsWith(".data", StringComparison.Ordinal))
                File.WriteAllBytes(file, "garbage"u8.ToArray());
            else File.Delete(file);
        }
        await AssertServedAsync();
        Directory.Delete(dir, recursive: true);
        await AssertServedAsync();

        async Task AssertServedAsync()
        {
            var sample = await client.PostAsync(Samples, Http.Json(new { n = 2, seed = 1 }));
            Assert.Equal(HttpStatusCode.OK, sample.StatusCode);
            Assert.Equal(2, Http.Images(await sample.ReadJsonAsync()).Length);
            var completion = await client.PostAsync($"/v1/models/{ModelsFolder.Tiny}/completions", Http.Form(TestImages.Png(), ("rows", "3")));
            Assert.Equal(HttpStatusCode.OK, completion.StatusCode);
            var classification = await client.PostAsync($"/v1/models/{ModelsFolder.Tiny}/classifications", Http.Form(TestImages.Png(8, 8, (x, y) => (byte)(x * 9 + y))));
            Assert.Equal(HttpStatusCode.OK, classification.StatusCode);
            var events = await EventsAsync(await client.SendAsync(Post(Samples, Http.Json(new { n = 1, stream = true })), HttpCompletionOption.ResponseHeadersRead));
            Assert.Equal("result", events[^1].EventType);
            var described = await (await client.GetAsync($"/v1/models/{ModelsFolder.Tiny}")).ReadJsonAsync();
            Assert.Equal("ready", described["status"]!.GetValue<string>());
            Assert.Equal("ready", (await ReadyAsync(client, HttpStatusCode.OK))["status"]!.GetValue<string>());
        }
    }

    [Fact]
    public async Task ACorruptPackageAtStartIsFailedItsRoutesAnswer503AndTheOthersServe()
    {
        var folder = new ModelsFolder(tiny: true, noClassifier: false, broken: true);
        var garbage = folder.AddPackage("tiny-garbage");
        File.WriteAllText(Path.Combine(garbage, "model.json"), "{ this is not json");
        using var factory = new ConfiguredApiFactory(folder, new Dictionary<string, string?>());
        var client = factory.CreateClient();

        var health = await ReadyAsync(client, HttpStatusCode.OK);
        Assert.Equal("degraded", health["status"]!.GetValue<string>());
        Assert.Equal("failed", StatusOf(health, "tiny-garbage"));
        Assert.Equal("failed", StatusOf(health, ModelsFolder.Broken));
        Assert.Equal("ready", StatusOf(health, ModelsFolder.Tiny));
        foreach (var id in new[] { "tiny-garbage", ModelsFolder.Broken })
        {
            var problem = await (await client.PostAsync($"/v1/models/{id}/samples", Http.Json(new { n = 1 }))).AssertProblemAsync(HttpStatusCode.ServiceUnavailable);
            Assert.Equal("Model unavailable", problem["title"]!.GetValue<string>());
            Assert.Contains("failed to load", problem["detail"]!.GetValue<string>());
            await (await client.PostAsync($"/v1/models/{id}/classifications", Http.Form(TestImages.Png()))).AssertProblemAsync(HttpStatusCode.ServiceUnavailable);
        }
        Assert.Equal(HttpStatusCode.OK, (await client.PostAsync(Samples, Http.Json(new { n = 1 }))).StatusCode);
    }

    [Fact]
    public async Task AnOrtRunThatThrowsFailsItsRequestsWith500AndTheModelIsReportedFailing()
    {
        var folder = new ModelsFolder(tiny: true, noClassifier: false, broken: false);
        folder.AddPackage(Faulty, FailingDecoder);
        // The fault is in decoder.onnx, which decode steps run only with a float32 cache (a compressed one runs the step segments).
        using var factory = new ConfiguredApiFactory(folder, new Dictionary<string, string?>
        {
            ["Inference:MaxBatch"] = "4",
            ["Inference:KvCacheType"] = "float32",
        });
        var client = factory.CreateClient();
        var faulty = factory.Model(Faulty);

        // A sample decodes rows 0..4 (positions up to 39), then the decode step at position 40 throws.
        var problem = await (await client.PostAsync($"/v1/models/{Faulty}/samples", Http.Json(new { n = 2 }))).AssertProblemAsync(HttpStatusCode.InternalServerError);
        Assert.Equal("Model run failed", problem["title"]!.GetValue<string>());
        Assert.Contains(Faulty, problem["detail"]!.GetValue<string>());
        Assert.Equal(0, faulty.SchedulerStats.ActiveSequences);
        var health = await ReadyAsync(client, HttpStatusCode.OK);
        Assert.Equal("ready", health["status"]!.GetValue<string>());   // one failed run is not yet a failing model

        // A stream gets the rows drawn before the fault, then an error event.
        var events = await EventsAsync(await client.SendAsync(Post($"/v1/models/{Faulty}/samples", Http.Json(new { n = 1, stream = true })),
            HttpCompletionOption.ResponseHeadersRead));
        Assert.Equal(5, events.Count(e => e.EventType == "row"));
        Assert.Equal("error", events[^1].EventType);
        var error = JsonNode.Parse(events[^1].Data)!.AsObject();
        Assert.Equal(500, error["status"]!.GetValue<int>());
        Assert.Equal("Model run failed", error["title"]!.GetValue<string>());

        // A completion of 6 rows fails in its prefill (positions 0..48).
        await (await client.PostAsync($"/v1/models/{Faulty}/completions", Http.Form(TestImages.Png(), ("rows", "6")))).AssertProblemAsync(HttpStatusCode.InternalServerError);

        // Three runs in a row failed: readiness says so; the other model and the faulty model's classifier still serve.
        health = await ReadyAsync(client, HttpStatusCode.OK);
        Assert.Equal("degraded", health["status"]!.GetValue<string>());
        Assert.Equal("failing", StatusOf(health, Faulty));
        Assert.Equal("ready", StatusOf(health, ModelsFolder.Tiny));
        var described = await (await client.GetAsync($"/v1/models/{Faulty}")).ReadJsonAsync();
        Assert.Equal("failing", described["status"]!.GetValue<string>());
        Assert.Contains("run failed", described["error"]!.GetValue<string>());
        Assert.Equal(HttpStatusCode.OK, (await client.PostAsync(Samples, Http.Json(new { n = 2 }))).StatusCode);
        Assert.Equal(HttpStatusCode.OK, (await client.PostAsync($"/v1/models/{Faulty}/classifications", Http.Form(TestImages.Png()))).StatusCode);

        var stats = faulty.SchedulerStats;
        Assert.Equal(0, stats.ActiveSequences);
        Assert.Equal(3, stats.FailedRequests);
        var metrics = await client.GetStringAsync("/metrics");
        Assert.Contains($"igpt_requests_total{{model=\"{Faulty}\",endpoint=\"samples\",outcome=\"failed\"}} 2", metrics);
        Assert.Contains($"igpt_requests_total{{model=\"{Faulty}\",endpoint=\"completions\",outcome=\"failed\"}} 1", metrics);
    }

    [Fact]
    public async Task AClassifierRunThatThrowsIs500ForThatImageOnlyAndTheModelRecovers()
    {
        var folder = new ModelsFolder(tiny: true, noClassifier: false, broken: false);
        var dir = folder.AddPackage(Faulty);
        File.Copy(FailingClassifier, Path.Combine(dir, "classifier.onnx"), overwrite: true);
        using var factory = new ConfiguredApiFactory(folder, new Dictionary<string, string?> { ["Api:ClassificationCacheEntries"] = "0" });
        var client = factory.CreateClient();
        var route = $"/v1/models/{Faulty}/classifications";
        var dark = TestImages.Png(8, 8, (x, y) => (byte)(x * 8));   // palette tokens 0..2: the classifier runs
        var light = TestImages.Png(8, 8, (x, y) => 255);              // token 7: the classifier's run throws

        Assert.Equal(HttpStatusCode.OK, (await client.PostAsync(route, Http.Form(dark))).StatusCode);
        for (int i = 0; i < IGptModel.FailingAfter; i++)
        {
            var problem = await (await client.PostAsync(route, Http.Form(light))).AssertProblemAsync(HttpStatusCode.InternalServerError);
            Assert.Equal("Model run failed", problem["title"]!.GetValue<string>());
            Assert.Contains("classifier", problem["detail"]!.GetValue<string>());
        }
        var health = await ReadyAsync(client, HttpStatusCode.OK);
        Assert.Equal("failing", StatusOf(health, Faulty));
        Assert.Equal(HttpStatusCode.OK, (await client.PostAsync($"/v1/models/{Faulty}/samples", Http.Json(new { n = 1 }))).StatusCode);

        // A classification that runs makes the model ready again.
        Assert.Equal(HttpStatusCode.OK, (await client.PostAsync(route, Http.Form(dark))).StatusCode);
        health = await ReadyAsync(client, HttpStatusCode.OK);
        Assert.Equal("ready", health["status"]!.GetValue<string>());
        Assert.Equal("ready", StatusOf(health, Faulty));
        var metrics = await client.GetStringAsync("/metrics");
        Assert.Contains($"igpt_requests_total{{model=\"{Faulty}\",endpoint=\"classifications\",outcome=\"failed\"}} {IGptModel.FailingAfter}", metrics);
    }

    [Fact]
    public async Task StoppingRefusesNewWorkAndLetsRunningWorkFinishWithinTheDrainTime()
    {
        using var factory = new StoppableApiFactory(new ModelsFolder(tiny: true, noClassifier: false, broken: false),
            new Dictionary<string, string?> { ["Api:ShutdownDrainSeconds"] = "30" });
        var client = factory.CreateClient();
        var model = factory.Model();
        var drain = factory.Services.GetRequiredService<ShutdownDrain>();
        factory.Gate().Hold();
        var running = client.PostAsync(Samples, Http.Json(new { n = 2 }));
        var streamed = client.SendAsync(Post(Samples, Http.Json(new { n = 1, stream = true })), HttpCompletionOption.ResponseHeadersRead);
        await Until(() => model.SchedulerStats.ActiveSequences == 3, "both requests hold slots");

        var clock = Stopwatch.StartNew();
        var stopping = factory.Host.StopAsync();
        await Until(() => drain.IsStopping, "the host stops");
        Assert.Equal("stopping", (await ReadyAsync(client, HttpStatusCode.ServiceUnavailable))["status"]!.GetValue<string>());
        var refused = await client.PostAsync(Samples, Http.Json(new { n = 1 }));
        var problem = await refused.AssertProblemAsync(HttpStatusCode.ServiceUnavailable);
        Assert.Equal("Service stopping", problem["title"]!.GetValue<string>());
        Assert.NotNull(refused.Headers.RetryAfter);
        Assert.False(stopping.IsCompleted);   // waits for the running requests

        factory.Gate().Open();
        Assert.Equal(HttpStatusCode.OK, (await running.WaitAsync(Patience)).StatusCode);
        Assert.Equal("result", (await EventsAsync(await streamed.WaitAsync(Patience)))[^1].EventType);
        await stopping.WaitAsync(Patience);
        Assert.True(clock.Elapsed < TimeSpan.FromSeconds(30), $"stopping took {clock.Elapsed}");

        factory.Dispose();
        Assert.True(model.IsDisposed);   // decode thread stopped, sessions released
    }

    [Fact]
    public async Task WorkStillRunningAfterTheDrainTimeIsCancelledWith503()
    {
        using var factory = new StoppableApiFactory(new ModelsFolder(tiny: true, noClassifier: false, broken: false),
            new Dictionary<string, string?> { ["Api:ShutdownDrainSeconds"] = "1" });
        var client = factory.CreateClient();
        var model = factory.Model();
        factory.Gate().Hold();   // nothing finishes: the drain time must end the requests
        var running = client.PostAsync(Samples, Http.Json(new { n = 2 }));
        var streamed = client.SendAsync(Post(Samples, Http.Json(new { n = 1, stream = true })), HttpCompletionOption.ResponseHeadersRead);
        await Until(() => model.SchedulerStats.ActiveSequences == 3, "both requests hold slots");

        var clock = Stopwatch.StartNew();
        await factory.Host.StopAsync().WaitAsync(Patience);
        var elapsed = clock.Elapsed;
        Assert.InRange(elapsed, TimeSpan.FromSeconds(0.9), ShutdownDrain.AbortGrace + TimeSpan.FromSeconds(1));

        var problem = await (await running.WaitAsync(Patience)).AssertProblemAsync(HttpStatusCode.ServiceUnavailable);
        Assert.Equal("Service stopping", problem["title"]!.GetValue<string>());
        var events = await EventsAsync(await streamed.WaitAsync(Patience));
        Assert.Equal("error", events[^1].EventType);
        Assert.Equal(503, JsonNode.Parse(events[^1].Data)!["status"]!.GetValue<int>());
        Assert.Equal(0, model.SchedulerStats.ActiveSequences);
        Assert.Equal(2, model.SchedulerStats.CancelledRequests);

        factory.Dispose();
        Assert.True(model.IsDisposed);
        Assert.Throws<ObjectDisposedException>(() => model.StartCompletion(new CompletionRequest([], 1, SamplingOptions.Default, 1), false, CancellationToken.None));
    }
}
