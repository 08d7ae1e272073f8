using Microsoft.Extensions.Caching.Memory;

namespace IGpt.Inference.Generation;

/// <summary>
/// Prompt KV snapshots (and the logits after the prompt), so that a repeated prompt skips prefill.
/// Keyed by model and prompt content; entries are sized in bytes against the cache's size limit.
/// </summary>
internal sealed class PrefixCache(IMemoryCache cache, string modelKey)
{
    public bool TryGet(int[] prompt, out PrefixEntry entry)
    {
        if (cache.TryGetValue(new PrefixKey(modelKey, prompt), out PrefixEntry? e) && e is not null)
        {
            entry = e;
            return true;
        }
        entry = null!;
        return false;
    }

    public void Add(int[] prompt, PrefixEntry entry)
    {
        var options = new MemoryCacheEntryOptions { Size = entry.Bytes, SlidingExpiration = TimeSpan.FromHours(1) };
        cache.Set(new PrefixKey(modelKey, (int[])prompt.Clone()), entry, options);
    }
}

/// <summary>A prompt's KV (positions 0..Length-1, SOS included) and the logits at its last position.</summary>
internal sealed record PrefixEntry(byte[] Kv, int Length, float[] Logits)
{
    public long Bytes => Kv.Length + Logits.Length * 4L + 128;
}

/// <summary>(model, prompt tokens) with a content hash; equality compares the tokens themselves.</summary>
internal sealed class PrefixKey : IEquatable<PrefixKey>
{
    private readonly string _model;
    private readonly int[] _tokens;
    private readonly int _hash;

    public PrefixKey(string model, int[] tokens)
    {
        _model = model;
        _tokens = tokens;
        var h = new HashCode();
        h.Add(model);
        h.AddBytes(System.Runtime.InteropServices.MemoryMarshal.AsBytes(tokens.AsSpan()));
        _hash = h.ToHashCode();
    }

    public bool Equals(PrefixKey? other) =>
        other is not null && _hash == other._hash && _model == other._model && _tokens.AsSpan().SequenceEqual(other._tokens);

    public override bool Equals(object? obj) => Equals(obj as PrefixKey);
    public override int GetHashCode() => _hash;
}
