using IGpt.Api.Hosting;
using Microsoft.Extensions.Caching.Memory;
using Microsoft.Extensions.Options;

namespace IGpt.Api.Caching;

/// <summary>
/// A route's results by (model, SHA-256 of the image bytes), in a size-limited memory cache of its own (one unit per
/// entry, <paramref name="entries"/> units; 0 disables it), so that other caches cannot evict it or be evicted by it.
/// </summary>
public abstract class ImageResultCache<TResult>(int entries) : IDisposable where TResult : class
{
    private readonly MemoryCache? _cache = entries > 0 ? new MemoryCache(new MemoryCacheOptions { SizeLimit = entries }) : null;

    public bool TryGet(string model, string imageHash, out TResult? result)
    {
        result = null;
        return _cache is not null && _cache.TryGetValue((model, imageHash), out result) && result is not null;
    }

    public void Set(string model, string imageHash, TResult result) =>
        _cache?.Set((model, imageHash), result, new MemoryCacheEntryOptions { Size = 1 });

    public void Dispose()
    {
        _cache?.Dispose();
        GC.SuppressFinalize(this);
    }
}

/// <summary>Class probabilities (Api:ClassificationCacheEntries).</summary>
public sealed class ClassificationCache(IOptions<ApiOptions> options) : ImageResultCache<float[]>(options.Value.ClassificationCacheEntries);

/// <summary>
/// Analysis passes (Api:AnalysisCacheEntries): one pass answers both embeddings (any layer) and likelihoods (JSON or PNG)
/// for the same image.
/// </summary>
public sealed class AnalysisCache(IOptions<ApiOptions> options) : ImageResultCache<AnalyzedImage>(options.Value.AnalysisCacheEntries);

/// <summary>What an image's analysis pass gave, with the compressor's bits of the same quantized image (the OOD score's other half).</summary>
public sealed record AnalyzedImage(ImageAnalysis Analysis, double CompressorBitsPerPixel);
