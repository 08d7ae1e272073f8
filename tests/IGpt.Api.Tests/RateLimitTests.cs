using System.Diagnostics.Metrics;
using System.Net;
using System.Net.Http.Headers;
using Microsoft.Extensions.DependencyInjection;
using static IGpt.Tests.Shared.Poll;

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
        // once the limiter has leased them, which ASP.NET Core's rate limiting meter counts; nothing else runs meanwhile.
        using var leases = new ActiveLeases(factory.Services.GetRequiredService<IMeterFactory>());
        var holders = Enumerable.Range(0, GuardedApiFactory.PerClient)
            .Select(i => one.PostAsync($"{Samples}?holder={i}", new HeldBody(gate.Task, "{\"n\": 1, \"seed\": 1}"u8.ToArray())))
            .ToArray();
        try
        {
            await Until(() => leases.Count >= holders.Length, "the holders hold their client's places", () => leases.Count);
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

    /// <summary>
    /// Requests holding a rate limiter lease now, on this host: the sum of ASP.NET Core's
    /// aspnetcore.rate_limiting.active_request_leases up-down counter since this listener started.
    /// </summary>
    private sealed class ActiveLeases : IDisposable
    {
        private readonly MeterListener _listener = new();
        private long _count;

        public ActiveLeases(IMeterFactory host)
        {
            _listener.InstrumentPublished = (instrument, listener) =>
            {
                if (instrument.Meter.Scope == host && instrument.Meter.Name == "Microsoft.AspNetCore.RateLimiting"
                    && instrument.Name == "aspnetcore.rate_limiting.active_request_leases")
                {
                    listener.EnableMeasurementEvents(instrument);
                }
            };
            _listener.SetMeasurementEventCallback<long>((_, change, _, _) => Interlocked.Add(ref _count, change));
            _listener.Start();
        }

        public long Count => Interlocked.Read(ref _count);

        public void Dispose() => _listener.Dispose();
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
