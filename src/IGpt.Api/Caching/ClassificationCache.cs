using IGpt.Api.Hosting;
using Microsoft.Extensions.Caching.Memory;
using Microsoft.Extensions.Options;

namespace IGpt.Api.Caching;

/// <summary>
/// Class probabilities by (model, SHA-256 of the image bytes), in a size-limited memory cache of its own
/// (one unit per entry, Api:ClassificationCacheEntries units), so that other caches cannot evict it or be evicted by it.
/// </summary>
public sealed class ClassificationCache : IDisposable
{
    private readonly MemoryCache? _cache;

    public ClassificationCache(IOptions<ApiOptions> options)
    {
        var entries = options.Value.ClassificationCacheEntries;
        if (entries > 0) _cache = new MemoryCache(new MemoryCacheOptions { SizeLimit = entries });
    }

    public bool TryGet(string model, string imageHash, out float[] probabilities)
    {
        if (_cache is not null && _cache.TryGetValue((model, imageHash), out float[]? found) && found is not null)
        {
            probabilities = found;
            return true;
        }
        probabilities = [];
        return false;
    }

    public void Set(string model, string imageHash, float[] probabilities) =>
        _cache?.Set((model, imageHash), probabilities, new MemoryCacheEntryOptions { Size = 1 });

    public void Dispose() => _cache?.Dispose();
}
