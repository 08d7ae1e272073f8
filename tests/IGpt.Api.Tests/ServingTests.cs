using static IGpt.Tests.Shared.Poll;
using System.Net;
using System.Net.Http.Headers;
using System.Net.ServerSentEvents;
using System.Text.Json.Nodes;
using IGpt.Api.Serving;
using IGpt.Inference;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.Extensions.DependencyInjection;

namespace IGpt.Api.Tests;

/// <summary>
/// Serving under load: streaming, backpressure, timeouts, disconnects, metrics, micro-batching. Each test has its own
/// service; the decode scheduler is held still through its step budget (a test hook) wherever the outcome would
/// otherwise depend on timing, and every wait is for a state, with a generous limit.
/// </summary>
public sealed class ServingTests
{
    private const string Samples = $"/v1/models/{ModelsFolder.Tiny}/samples";
    private const string Completions = $"/v1/models/{ModelsFolder.Tiny}/completions";

    private static ConfiguredApiFactory Service(params (string Key, string Value)[] settings) =>
        new(new ModelsFolder(tiny: true, noClassifier: false, broken: false), settings.ToDictionary(s => s.Key, s => (string?)s.Value));

    private static HttpRequestMessage Post(string route, HttpContent? content, string? accept = null)
    {
        var request = new HttpRequestMessage(HttpMethod.Post, route) { Content = content };
        if (accept is not null) request.Headers.Accept.ParseAdd(accept);
        return request;
    }

    /// <summary>The events of a text/event-stream response, read by the framework's SSE parser as they arrive.</summary>
    private static async IAsyncEnumerable<SseItem<string>> Events(HttpResponseMessage response)
    {
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal("text/event-stream", response.Content.Headers.ContentType?.MediaType);
        await using var stream = await response.Content.ReadAsStreamAsync();
        await foreach (var item in SseParser.Create(stream).EnumerateAsync()) yield return item;
    }

    [Fact]
    public async Task StreamedSamplesSendEveryRowThenTheSameBodyAsTheJsonAnswer()
    {
        using var factory = Service();
        var client = factory.CreateClient();
        var plain = await (await client.PostAsync(Samples, Http.Json(new { n = 2, seed = 5, top_k = 4 }))).ReadJsonAsync();

        using var response = await client.SendAsync(Post(Samples, Http.Json(new { n = 2, seed = 5, top_k = 4, stream = true })),
            HttpCompletionOption.ResponseHeadersRead);
        var events = new List<SseItem<string>>();
        await foreach (var e in Events(response)) events.Add(e);

        var rows = events.Where(e => e.EventType == "row").Select(e => JsonNode.Parse(e.Data)!.AsObject()).ToList();
        Assert.Equal(2 * 8, rows.Count);
        Assert.Equal("result", events[^1].EventType);
        Assert.Equal(events.Count - 1, events.FindIndex(e => e.EventType == "result"));
        Assert.DoesNotContain(events, e => e.EventType == "error");
        var result = JsonNode.Parse(events[^1].Data)!.AsObject();
        Assert.Equal(Http.Images(plain), Http.Images(result));
        Assert.Equal(plain["usage"]!.ToJsonString(), result["usage"]!.ToJsonString());

        var images = Http.Images(result).Select(png => TestImages.ReadGrey(Convert.FromBase64String(png)).Pixels).ToArray();
        for (int sample = 0; sample < 2; sample++)
        {
            var mine = rows.Where(r => r["sample"]!.GetValue<int>() == sample).ToList();
            Assert.Equal(Enumerable.Range(0, 8), mine.Select(r => r["row"]!.GetValue<int>()));
            foreach (var row in mine)
            {
                int y = row["row"]!.GetValue<int>();
                var pixels = row["pixels"]!.AsArray().Select(p => (byte)p!.GetValue<int>()).ToArray();
                Assert.Equal(images[sample][(y * 8)..(y * 8 + 8)], pixels);
                Assert.Equal(8, row["tokens"]!.AsArray().Count);
            }
        }
    }

    [Fact]
    public async Task AcceptEventStreamStreamsACompletionWithHeartbeatsWhileQueued()
    {
        using var factory = Service(("Inference:MaxBatch", "1"), ("Api:HeartbeatSeconds", "0.05"));
        var client = factory.CreateClient();
        var model = factory.Model();
        factory.Gate().Hold();
        var first = client.PostAsync(Samples, Http.Json(new { n = 1 }));
        await Until(() => model.SchedulerStats.ActiveSequences == 1, "the first request holds the only slot");

        using var response = await client.SendAsync(
            Post(Completions, Http.Form(TestImages.Png(), ("rows", "5"), ("seed", "3")), "text/event-stream"), HttpCompletionOption.ResponseHeadersRead);
        var events = new List<SseItem<string>>();
        await foreach (var e in Events(response))
        {
            events.Add(e);
            if (e.EventType == "heartbeat" && events.Count == 1)
            {
                Assert.Equal("queued", JsonNode.Parse(e.Data)!["state"]!.GetValue<string>());
                factory.Gate().Open();
            }
        }
        Assert.Equal("heartbeat", events[0].EventType);
        Assert.Equal([5, 6, 7], events.Where(e => e.EventType == "row").Select(e => JsonNode.Parse(e.Data)!["row"]!.GetValue<int>()));
        Assert.Equal("result", events[^1].EventType);
        Assert.Equal(5, JsonNode.Parse(events[^1].Data)!["rows"]!.GetValue<int>());
        Assert.Equal(HttpStatusCode.OK, (await first).StatusCode);
    }

    [Fact]
    public async Task AFullQueueAnswers503WithRetryAfterAtOnce()
    {
        using var factory = Service(("Inference:MaxBatch", "1"), ("Inference:QueueCapacity", "1"), ("Api:RetryAfterSeconds", "2"));
        var client = factory.CreateClient();
        var model = factory.Model();
        factory.Gate().Hold();
        var running = client.PostAsync(Samples, Http.Json(new { n = 1 }));
        await Until(() => model.SchedulerStats.ActiveSequences == 1, "one request running");
        var waiting = client.PostAsync(Samples, Http.Json(new { n = 1 }));
        await Until(() => model.SchedulerStats.QueuedRequests == 1, "one request queued");

        var refused = await client.PostAsync(Samples, Http.Json(new { n = 1 }));
        var problem = await refused.AssertProblemAsync(HttpStatusCode.ServiceUnavailable);
        Assert.Equal("Queue full", problem["title"]!.GetValue<string>());
        Assert.Equal(TimeSpan.FromSeconds(2), refused.Headers.RetryAfter?.Delta);
        var streamed = await client.PostAsync(Samples, Http.Json(new { n = 1, stream = true }));
        await streamed.AssertProblemAsync(HttpStatusCode.ServiceUnavailable);

        factory.Gate().Open();
        Assert.Equal(HttpStatusCode.OK, (await running).StatusCode);
        Assert.Equal(HttpStatusCode.OK, (await waiting).StatusCode);
        var metrics = await client.GetStringAsync("/metrics");
        Assert.Contains($"igpt_requests_total{{model=\"{ModelsFolder.Tiny}\",endpoint=\"samples\",outcome=\"rejected\"}} 2", metrics);
        Assert.Contains($"igpt_requests_total{{model=\"{ModelsFolder.Tiny}\",endpoint=\"samples\",outcome=\"ok\"}} 2", metrics);
    }

    [Fact]
    public async Task ARequestPastItsTimeoutIs504AndFreesItsSlot()
    {
        using var factory = Service(("Api:RequestTimeoutSeconds", "0.3"));
        var client = factory.CreateClient();
        var model = factory.Model();
        factory.Gate().Hold();   // nothing finishes: the timeout must end the request

        var response = await client.PostAsync(Samples, Http.Json(new { n = 2 }));
        await response.AssertProblemAsync(HttpStatusCode.GatewayTimeout);
        await Until(() => model.SchedulerStats.ActiveSequences == 0, "slots freed");

        using var streamed = await client.SendAsync(Post(Samples, Http.Json(new { n = 2, stream = true })), HttpCompletionOption.ResponseHeadersRead);
        var events = new List<SseItem<string>>();
        await foreach (var e in Events(streamed)) events.Add(e);
        Assert.Equal("error", events[^1].EventType);
        var problem = JsonNode.Parse(events[^1].Data)!.AsObject();
        Assert.Equal(504, problem["status"]!.GetValue<int>());
        Assert.False(string.IsNullOrEmpty(problem["title"]?.GetValue<string>()));
        await Until(() => model.SchedulerStats.ActiveSequences == 0, "slots freed after the streamed timeout");

        var metrics = await client.GetStringAsync("/metrics");
        Assert.Contains($"igpt_requests_total{{model=\"{ModelsFolder.Tiny}\",endpoint=\"samples\",outcome=\"timed_out\"}} 2", metrics);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task AClientThatDisconnectsFreesItsSlotForTheNextRequest(bool stream)
    {
        // A real Kestrel server and socket: the client really goes away.
        // The port comes from Urls, not UseKestrel(0), whose address rewrite races the app's own start (GuardedApiFactory).
        using var factory = Service(("Inference:MaxBatch", "2"), ("Api:HeartbeatSeconds", "0.05"), ("Urls", "http://127.0.0.1:0"));
        factory.UseKestrel();
        factory.StartServer();
        var address = factory.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.First();
        using var client = new HttpClient { BaseAddress = new Uri(address) };
        var model = factory.Model();
        factory.Gate().Hold();

        using var cts = new CancellationTokenSource();
        Task<HttpResponseMessage> leaving = client.SendAsync(Post(Samples, Http.Json(new { n = 2, stream })), HttpCompletionOption.ResponseHeadersRead, cts.Token);
        await Until(() => model.SchedulerStats.ActiveSequences == 2, "the leaving request holds both slots");
        var next = client.PostAsync(Samples, Http.Json(new { n = 2, seed = 8 }));
        await Until(() => model.SchedulerStats.QueuedRequests == 1, "the next request waits");
        long steps = model.SchedulerStats.Steps;

        if (stream)
        {
            // Headers and a heartbeat have arrived; then the client drops the stream.
            var response = await leaving;
            var reader = new StreamReader(await response.Content.ReadAsStreamAsync());
            Assert.StartsWith("event: heartbeat", await reader.ReadLineAsync());
            response.Dispose();
        }
        else
        {
            await cts.CancelAsync();
            await Assert.ThrowsAnyAsync<OperationCanceledException>(() => leaving);
        }

        await Until(() => model.SchedulerStats is { CancelledRequests: 1, QueuedRequests: 0, ActiveSequences: 2 },
            "the slots go to the next request", () => model.SchedulerStats);
        Assert.Equal(steps, model.SchedulerStats.Steps);   // freed without a decode step
        factory.Gate().Open();
        Assert.Equal(HttpStatusCode.OK, (await next.WaitAsync(Patience)).StatusCode);
    }

    [Fact]
    public async Task ACompressedKvCacheServesWithEveryStepAsSegments()
    {
        using var factory = Service(("Inference:KvCacheType", "int8"), ("Inference:MaxBatch", "4"));
        var client = factory.CreateClient();
        var samples = await client.PostAsync(Samples, Http.Json(new { n = 2, seed = 3 }));
        Assert.Equal(HttpStatusCode.OK, samples.StatusCode);
        var completion = await client.PostAsync(Completions, Http.Form(TestImages.Png(), ("rows", "4"), ("n", "2"), ("seed", "3")));
        Assert.Equal(HttpStatusCode.OK, completion.StatusCode);
        Assert.Equal("int8", factory.Model().Decoder.CacheType);
        var text = await (await client.GetAsync("/metrics")).Content.ReadAsStringAsync();
        var m = $"model=\"{ModelsFolder.Tiny}\"";
        string Count(string line) => text.Split('\n').Single(l => l.StartsWith(line, StringComparison.Ordinal)).Split(' ')[1];
        // The graph cannot read the cache: every decode step ran as segments.
        Assert.Equal(Count($"igpt_decode_steps_total{{{m}}}"), Count($"igpt_decode_steps_by_path_total{{{m},path=\"segments\"}}"));
        Assert.Equal("0", Count($"igpt_decode_steps_by_path_total{{{m},path=\"graph\"}}"));
        Assert.NotEqual("0", Count($"igpt_decode_steps_total{{{m}}}"));
    }

    [Fact]
    public async Task ConcurrentRequestsShareDecodeStepsAndMetricsShowIt()
    {
        using var factory = Service(("Inference:MaxBatch", "8"));
        var client = factory.CreateClient();
        var model = factory.Model();
        factory.Gate().Hold();
        var requests = Enumerable.Range(0, 3).Select(i => client.PostAsync(Samples, Http.Json(new { n = 2, seed = i }))).ToArray();
        await Until(() => model.SchedulerStats.ActiveSequences == 6, "six samples in slots");
        factory.Gate().Open();
        var responses = await Task.WhenAll(requests).WaitAsync(Patience);
        Assert.All(responses, r => Assert.Equal(HttpStatusCode.OK, r.StatusCode));
        Assert.Equal(63, model.SchedulerStats.Steps);
        Assert.Equal(6, model.SchedulerStats.MaxRowsPerStep);

        var timing = responses[0].Headers.GetValues("Server-Timing").Single();
        Assert.Matches(@"^queue;dur=[0-9.]+, prefill;dur=[0-9.]+, decode;dur=[0-9.]+$", timing);

        var metrics = await client.GetAsync("/metrics");
        Assert.Equal(HttpStatusCode.OK, metrics.StatusCode);
        Assert.StartsWith("text/plain", metrics.Content.Headers.ContentType?.ToString());
        var text = await metrics.Content.ReadAsStringAsync();
        var m = $"model=\"{ModelsFolder.Tiny}\"";
        Assert.Contains($"igpt_decode_steps_total{{{m}}} 63", text);
        // Every step ran one way: the counts by path add up to the steps.
        long byPath = 0;
        foreach (var path in new[] { "graph", "lanes", "segments", "kernels" })
        {
            var line = text.Split('\n').Single(l => l.StartsWith($"igpt_decode_steps_by_path_total{{{m},path=\"{path}\"}}", StringComparison.Ordinal));
            byPath += long.Parse(line.Split(' ')[1], System.Globalization.CultureInfo.InvariantCulture);
        }
        Assert.Equal(63, byPath);
        Assert.Contains($"igpt_tokens_generated_total{{{m}}} 384", text);
        Assert.Contains($"igpt_queue_depth{{{m}}} 0", text);
        Assert.Contains($"igpt_slots{{{m}}} 8", text);
        Assert.Contains($"igpt_batch_occupancy_sum{{{m}}} 378", text);          // 63 steps x 6 rows
        Assert.Contains($"igpt_decode_step_seconds_count{{{m}}} 63", text);
        Assert.Contains($"igpt_queue_seconds_count{{{m}}} 3", text);
        Assert.Contains($"igpt_time_to_first_row_seconds_count{{{m}}} 3", text);
        Assert.Contains($"igpt_requests_total{{{m},endpoint=\"samples\",outcome=\"ok\"}} 3", text);
    }

    [Fact]
    public async Task ClassificationsAreMicroBatched()
    {
        // A long window that a full batch closes early: the three requests arrive well within it.
        using var factory = Service(("Api:ClassificationBatchWindowMs", "10000"), ("Api:ClassificationMaxBatch", "3"));
        var client = factory.CreateClient();
        var images = Enumerable.Range(1, 3).Select(k => TestImages.Png(pixel: (x, y) => (byte)((x * 29 * k + y * 41) % 256))).ToArray();
        var responses = await Task.WhenAll(images.Select(png => client.PostAsync(
            $"/v1/models/{ModelsFolder.Tiny}/classifications", Http.Form(png)))).WaitAsync(Patience);
        Assert.All(responses, r => Assert.Equal(HttpStatusCode.OK, r.StatusCode));
        var stats = factory.Services.GetRequiredService<ClassificationBatcher>().Stats;
        Assert.Equal((1L, 3L, 3), stats);

        // The batch gives each image the probabilities it gets alone.
        var model = factory.Model();
        for (int i = 0; i < 3; i++)
        {
            var body = await responses[i].ReadJsonAsync();
            var top = body["predictions"]!.AsArray()[0]!;
            var tokens = Quantizer.Quantize(TestImages.ReadGrey(images[i]).Pixels).Select(p => Array.IndexOf(Quantizer.Palette, p)).ToArray();
            var alone = await model.ClassifyAsync(tokens, default);
            Assert.Equal(Math.Round(alone.Max(), 6), top["probability"]!.GetValue<double>(), 5);
        }
    }
}
