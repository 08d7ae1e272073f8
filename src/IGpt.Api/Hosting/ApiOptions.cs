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
}
