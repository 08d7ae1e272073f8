using IGpt.Api.Errors;
using IGpt.Api.Hosting;
using Microsoft.Extensions.Options;

namespace IGpt.Api.Serving;

/// <summary>
/// Graceful shutdown. When the host begins to stop (ApplicationStopping) readiness answers 503 and new work (a POST
/// under /v1/) gets a 503 problem at once; requests already running may finish within Api:ShutdownDrainSeconds, then
/// <see cref="Abort"/> cancels them (a waiting answer becomes 503, a stream ends with an SSE error event). StopAsync
/// waits until every such request has answered (HostOptions.ShutdownTimeout leaves room for it), so the models are
/// disposed with the container (decode threads stopped, ONNX Runtime sessions released) only after that.
/// </summary>
public sealed class ShutdownDrain : IHostedService, IDisposable
{
    /// <summary>How long cancelled requests get to answer once the drain time is over.</summary>
    public static readonly TimeSpan AbortGrace = TimeSpan.FromSeconds(5);

    private readonly Lock _lock = new();
    private readonly CancellationTokenSource _abort = new();
    private readonly TaskCompletionSource _idle = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly TimeSpan _drain;
    private readonly ILogger<ShutdownDrain> _logger;
    private readonly CancellationTokenRegistration _registration;
    private int _inFlight;
    private bool _stopping;

    public ShutdownDrain(IHostApplicationLifetime lifetime, IOptions<ApiOptions> options, ILogger<ShutdownDrain> logger)
    {
        _drain = options.Value.ShutdownDrain;
        _logger = logger;
        _registration = lifetime.ApplicationStopping.Register(BeginStopping);
    }

    /// <summary>Whether the service is shutting down (readiness 503, new work refused).</summary>
    public bool IsStopping
    {
        get { lock (_lock) return _stopping; }
    }

    /// <summary>Cancelled when the drain time after the start of shutdown is over: running work must stop.</summary>
    public CancellationToken Abort => _abort.Token;

    /// <summary>Requests (POST under /v1/) running now.</summary>
    public int InFlight
    {
        get { lock (_lock) return _inFlight; }
    }

    /// <summary>Counts a request in, or returns false when the service is stopping (the request must be refused).</summary>
    public bool TryEnter()
    {
        lock (_lock)
        {
            if (_stopping) return false;
            _inFlight++;
            return true;
        }
    }

    public void Exit()
    {
        lock (_lock)
        {
            if (--_inFlight == 0 && _stopping) _idle.TrySetResult();
        }
    }

    private void BeginStopping()
    {
        int running;
        lock (_lock)
        {
            if (_stopping) return;
            _stopping = true;
            running = _inFlight;
            if (running == 0) _idle.TrySetResult();
        }
        _logger.LogInformation("Stopping: new work is refused; {Count} running request(s) get {Seconds} s to finish", running, _drain.TotalSeconds);
        _abort.CancelAfter(_drain);
    }

    public Task StartAsync(CancellationToken cancellationToken) => Task.CompletedTask;

    public async Task StopAsync(CancellationToken cancellationToken)
    {
        BeginStopping();
        await Task.WhenAny(_idle.Task, Task.Delay(_drain + AbortGrace, cancellationToken)).ConfigureAwait(false);
        if (!_idle.Task.IsCompleted)
            _logger.LogWarning("Stopping: {Count} request(s) still running after the drain time; the models are disposed under them", InFlight);
    }

    public void Dispose()
    {
        _registration.Dispose();
        _abort.Dispose();
    }
}

public static class ShutdownDrainExtensions
{
    /// <summary>
    /// Refuses new work (a POST under /v1/) with a 503 problem once the service is stopping, and counts the requests that
    /// run so that shutdown can wait for them.
    /// </summary>
    public static WebApplication UseShutdownDrain(this WebApplication app)
    {
        var drain = app.Services.GetRequiredService<ShutdownDrain>();
        app.Use(async (context, next) =>
        {
            if (!HttpMethods.IsPost(context.Request.Method) || !context.Request.Path.StartsWithSegments("/v1"))
            {
                await next(context);
                return;
            }
            if (!drain.TryEnter())
            {
                await Problems.Stopping(context).ToResult().ExecuteAsync(context);
                return;
            }
            try
            {
                await next(context);
            }
            finally
            {
                drain.Exit();
            }
        });
        return app;
    }
}
