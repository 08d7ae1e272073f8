using System.ComponentModel.DataAnnotations;

namespace IGpt.Api.Hosting;

/// <summary>Settings of the HTTP layer. Bound from configuration section "Api".</summary>
public sealed class ApiOptions
{
    public const string SectionName = "Api";

    /// <summary>Largest request body in bytes (Kestrel, multipart and JSON bodies); larger requests get 413.</summary>
    [Range(1024, 1L << 31)]
    public long MaxRequestBytes { get; set; } = 16L * 1024 * 1024;

    /// <summary>How many classification results the API keeps, keyed by (model, image hash); 0 disables the cache.</summary>
    [Range(0, 10_000_000)]
    public int ClassificationCacheEntries { get; set; } = 4096;

    /// <summary>Longest a generation request may take, queue included; past it the answer is 504 (or an SSE error event).</summary>
    [Range(0.001, 86_400)]
    public double RequestTimeoutSeconds { get; set; } = 120;

    /// <summary>The Retry-After (seconds) of a 503 answered because a model's queue is full.</summary>
    [Range(0, 3600)]
    public int RetryAfterSeconds { get; set; } = 1;

    /// <summary>A streamed response sends a heartbeat event after this long without another event (e.g. while queued).</summary>
    [Range(0.01, 3600)]
    public double HeartbeatSeconds { get; set; } = 5;

    /// <summary>How long a classification waits for others to share its batch (milliseconds; 0 = only those already waiting).</summary>
    [Range(0, 10_000)]
    public double ClassificationBatchWindowMs { get; set; } = 2;

    /// <summary>Most images classified in one batch.</summary>
    [Range(1, 1024)]
    public int ClassificationMaxBatch { get; set; } = 16;

    /// <summary>
    /// On shutdown, how long running requests may still take before they are cancelled (waiting answers get 503,
    /// streams an SSE error event). New work is refused and readiness answers 503 from the start of shutdown.
    /// </summary>
    [Range(0, 3600)]
    public double ShutdownDrainSeconds { get; set; } = 10;

    public TimeSpan ShutdownDrain => TimeSpan.FromSeconds(ShutdownDrainSeconds);
    public TimeSpan RequestTimeout => TimeSpan.FromSeconds(RequestTimeoutSeconds);
    public TimeSpan Heartbeat => TimeSpan.FromSeconds(HeartbeatSeconds);
    public TimeSpan ClassificationBatchWindow => TimeSpan.FromMilliseconds(ClassificationBatchWindowMs);
}
