using System.Net;
using System.Net.Http.Headers;

namespace IGpt.Api.Tests;

/// <summary>Api:MaxConcurrentRequestsPerClient: requests in flight per client (per API key here); one more is 429.</summary>
[Collection(GuardedApiCollection.Name)]
public sealed class RateLimitTests(GuardedApiFactory factory)
{
    private const string Samples = $"/v1/models/{ModelsFolder.Tiny}/samples";
    private const string Models = "/v1/models";

    [Fact]
    public async Task OneRequestOverTheClientsLimitIs429WithRetryAfterWhileOtherClientsAndHealthAreServed()
    {
        var one = factory.CreateClient(GuardedApiFactory.KeyOne, streamBodies: true);
        var two = factory.CreateClient(GuardedApiFactory.KeyTwo);
        var gate = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        // Requests whose bodies have not finished arriving hold their client's places. They are known to hold them
        // when their endpoint runs (after the limiter): the samples endpoint, which nothing else here calls meanwhile.
        static bool SamplesRuns(string text) => text.StartsWith("Executing endpoint", StringComparison.Ordinal) && text.Contains("/samples");
        var samplesBefore = factory.Logs.Texts().Count(SamplesRuns);
        var holders = Enumerable.Range(0, GuardedApiFactory.PerClient)
            .Select(i => one.PostAsync($"{Samples}?holder={i}", new HeldBody(gate.Task, "{\"n\": 1, \"seed\": 1}"u8.ToArray())))
            .ToArray();
        try
        {
            Assert.True(await factory.Logs.WaitForAsync(SamplesRuns, samplesBefore + holders.Length), "the holders did not reach their endpoint");
            HttpResponseMessage? rejected = null;
            var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(20);
            while (rejected is null && DateTime.UtcNow < deadline)
            {
                var response = await one.GetAsync(Models);
                if (response.StatusCode == HttpStatusCode.TooManyRequests) rejected = response;
                else await Task.Delay(20);
            }
            Assert.NotNull(rejected);
            await rejected.AssertProblemAsync(HttpStatusCode.TooManyRequests);
            Assert.Equal(TimeSpan.FromSeconds(1), rejected.Headers.RetryAfter?.Delta);

            // Another key has places of its own; health and /metrics are not limited.
            Assert.Equal(HttpStatusCode.OK, (await two.GetAsync(Models)).StatusCode);
            Assert.Equal(HttpStatusCode.TooManyRequests, (await one.PostAsync(Samples, Http.RawJson("{\"n\": 1}"))).StatusCode);
            Assert.Equal(HttpStatusCode.OK, (await one.GetAsync("/health/live")).StatusCode);
            Assert.Equal(HttpStatusCode.OK, (await one.GetAsync("/metrics")).StatusCode);
            Assert.All(holders, holder => Assert.False(holder.IsCompleted));
        }
        finally
        {
            gate.SetResult();
        }
        foreach (var holder in holders) Assert.Equal(HttpStatusCode.OK, (await holder).StatusCode);
        Assert.Equal(HttpStatusCode.OK, (await one.GetAsync(Models)).StatusCode);
    }

    /// <summary>A JSON body whose last bytes are sent only when <paramref name="release"/> completes.</summary>
    private sealed class HeldBody : HttpContent
    {
        private readonly Task _release;
        private readonly byte[] _body;

        public HeldBody(Task release, byte[] body)
        {
            _release = release;
            _body = body;
            Headers.ContentType = new MediaTypeHeaderValue("application/json");
        }

        protected override async Task SerializeToStreamAsync(Stream stream, System.Net.TransportContext? context)
        {
            await stream.WriteAsync(_body.AsMemory(0, 1));
            await stream.FlushAsync();
            await _release;
            await stream.WriteAsync(_body.AsMemory(1));
        }

        protected override bool TryComputeLength(out long length)
        {
            length = _body.Length;
            return true;
        }
    }
}
