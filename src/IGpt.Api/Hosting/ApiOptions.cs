using System.ComponentModel.DataAnnotations;

namespace IGpt.Api.Hosting;

/// <summary>Settings of the HTTP layer. Bound from configuration section "Api".</summary>
public sealed class ApiOptions : IValidatableObject
{
    public const string SectionName = "Api";

    /// <summary>Largest request body in bytes (Kestrel, multipart and JSON bodies); larger requests get 413.</summary>
    [Range(1024, 1L << 31)]
    public long MaxRequestBytes { get; set; } = 16L * 1024 * 1024;

    /// <summary>How many classification results the API keeps, keyed by (model, image hash); 0 disables the cache.</summary>
    [Range(0, 10_000_000)]
    public int ClassificationCacheEntries { get; set; } = 4096;

    /// <summary>
    /// How many analysis passes (embeddings and likelihoods) the API keeps, keyed by (model, image hash); 0 disables the
    /// cache. An entry holds every layer's features and each pixel's bits (about 8 KB for fashion-mnist-28).
    /// </summary>
    [Range(0, 10_000_000)]
    public int AnalysisCacheEntries { get; set; } = 1024;

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

    /// <summary>Most images one completions or samples request may ask for (the field n).</summary>
    [Range(1, 1024)]
    public int MaxImagesPerRequest { get; set; } = 16;

    /// <summary>
    /// Requests one client (its API key when keys are on, else its IP address) may have in flight on the /v1 routes;
    /// one more gets 429 with Retry-After. 0 turns the limit off.
    /// </summary>
    [Range(0, 1_000_000)]
    public int MaxConcurrentRequestsPerClient { get; set; } = 64;

    /// <summary>API keys a client sends as <c>Authorization: Bearer KEY</c> or <c>X-Api-Key: KEY</c>; empty = no keys needed.</summary>
    public List<string> Keys { get; set; } = [];

    public TimeSpan RequestTimeout => TimeSpan.FromSeconds(RequestTimeoutSeconds);
    public TimeSpan Heartbeat => TimeSpan.FromSeconds(HeartbeatSeconds);
    public TimeSpan ClassificationBatchWindow => TimeSpan.FromMilliseconds(ClassificationBatchWindowMs);

    public IEnumerable<ValidationResult> Validate(ValidationContext validationContext)
    {
        // A key is a header value: no blanks around it, no control characters, long enough not to be guessed.
        foreach (var key in Keys)
        {
            if (key is null || key.Length < 16 || key.Trim() != key || key.Any(char.IsControl) || key.Any(c => c > '~'))
            {
                yield return new ValidationResult(
                    "Every Api:Keys entry must be at least 16 printable ASCII characters without leading or trailing blanks.", [nameof(Keys)]);
                yield break;
            }
        }
    }
}
