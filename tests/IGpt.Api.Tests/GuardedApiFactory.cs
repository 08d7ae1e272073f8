using System.Collections.Concurrent;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Mvc.Testing;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using Microsoft.AspNetCore.TestHost;
using Microsoft.Extensions.DependencyInjection;
using Serilog.Core;
using Serilog.Events;

namespace IGpt.Api.Tests;

/// <summary>
/// The service on Kestrel at a free loopback port (real sockets: a request body can arrive slowly), with API keys, a per-client limit of two requests in flight, at most 600 images a request and
/// 10,000 pixels an image, logging everything down to Debug into <see cref="Logs"/>.
/// </summary>
public sealed class GuardedApiFactory : ApiFactory
{
    public const string KeyOne = "test-key-one-7f3a9c1e5b2d";
    public const string KeyTwo = "test-key-two-c4e8a2f6d0b9";
    public const int PerClient = 2;
    public const int MaxImages = 600;
    public const int MaxPixels = 10_000;

    private static readonly Dictionary<string, string?> Settings = new()
    {
        ["Api:Keys:0"] = KeyOne,
        ["Api:Keys:1"] = KeyTwo,
        ["Api:MaxConcurrentRequestsPerClient"] = PerClient.ToString(),
        ["Api:MaxImagesPerRequest"] = MaxImages.ToString(),
        ["ImageLimits:MaxPixels"] = MaxPixels.ToString(),
        ["Serilog:MinimumLevel:Default"] = "Debug",
        ["Serilog:MinimumLevel:Override:Microsoft.AspNetCore"] = "Debug",
    };

    public GuardedApiFactory() : base(new ModelsFolder(tiny: true, noClassifier: false, broken: false), Settings, kestrel: true)
    {
    }

    /// <summary>Every log event the service wrote (Serilog reads sinks registered as services).</summary>
    public LogCapture Logs { get; } = new();

    /// <param name="key">Sent as Authorization: Bearer, when given.</param>
    /// <param name="streamBodies">No redirect handler: it would buffer a request body before sending any of it.</param>
    public HttpClient CreateClient(string? key, bool streamBodies = false)
    {
        StartServer();
        var client = streamBodies
            ? CreateClient(new WebApplicationFactoryClientOptions { AllowAutoRedirect = false, BaseAddress = ClientOptions.BaseAddress })
            : CreateClient();
        if (key is not null) client.DefaultRequestHeaders.Authorization = new("Bearer", key);
        return client;
    }

    protected override void ConfigureWebHost(IWebHostBuilder builder)
    {
        base.ConfigureWebHost(builder);
        builder.ConfigureTestServices(services =>
        {
            services.AddSingleton<ILogEventSink>(Logs);
            // RateLimitTests holds request bodies open; Kestrel would answer 408 after 5 s under 240 bytes/s.
            services.PostConfigure<KestrelServerOptions>(kestrel => kestrel.Limits.MinRequestBodyDataRate = null);
        });
    }
}

public sealed class LogCapture : ILogEventSink
{
    private readonly ConcurrentQueue<LogEvent> _events = new();

    public void Emit(LogEvent logEvent) => _events.Enqueue(logEvent);

    /// <summary>Waits (up to 10 s) for an event whose text matches: the request log line is written after the answer is sent.</summary>
    public Task<bool> WaitForAsync(Func<string, bool> match) => WaitForAsync(match, count: 1);

    /// <summary>Waits (up to 10 s) until <paramref name="count"/> events match.</summary>
    public async Task<bool> WaitForAsync(Func<string, bool> match, int count)
    {
        for (var deadline = DateTime.UtcNow.AddSeconds(10); DateTime.UtcNow < deadline; await Task.Delay(20))
        {
            if (Texts().Count(match) >= count) return true;
        }
        return false;
    }

    /// <summary>Each event as text: the rendered message, every property and the exception.</summary>
    public IReadOnlyList<string> Texts() =>
        [.. _events.Select(e => $"{e.RenderMessage()} {string.Join(" ", e.Properties.Select(p => $"{p.Key}={p.Value}"))} {e.Exception}")];
}

/// <summary>
/// Run alone, after the parallel collections: these tests wait on the service for a bounded time (a held client's 429,
/// log lines), which other collections' hosts starting on the same two cores would stretch. (Each host logs through its
/// own logger, not Serilog's static one: <see cref="RequestLogTests"/>.)
/// </summary>
[CollectionDefinition(Name, DisableParallelization = true)]
public sealed class GuardedApiCollection : ICollectionFixture<GuardedApiFactory>
{
    public const string Name = "guarded api";
}
