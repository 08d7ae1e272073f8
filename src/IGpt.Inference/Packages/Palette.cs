namespace IGpt.Inference.Packages;

/// <summary>
/// A model's colour palette. A pixel's token is the index of the nearest colour (squared Euclidean
/// distance in 0-255 space, ties to the lowest index), as models/README.md defines.
/// </summary>
public sealed class Palette
{
    private readonly byte[] _colors;          // Size * Channels, interleaved
    private readonly ushort[]? _greyLookup;   // channels = 1: token for every grey level
    private readonly long[]? _rgbCache;       // channels = 3: direct-mapped cache, (rgb + 1) << 32 | token; 0 = empty

    private const int RgbCacheBits = 15;

    /// <param name="colors">Size * channels bytes, one colour after another.</param>
    public Palette(ReadOnlySpan<byte> colors, int channels)
    {
        if (channels is not (1 or 3)) throw new ArgumentOutOfRangeException(nameof(channels), channels, "channels must be 1 or 3");
        if (colors.Length == 0 || colors.Length % channels != 0)
            throw new ArgumentException($"colors must be a positive multiple of {channels} bytes", nameof(colors));
        Channels = channels;
        Size = colors.Length / channels;
        if (Size > 65535) throw new ArgumentException("a palette has at most 65535 colours", nameof(colors));
        _colors = colors.ToArray();
        if (channels == 1)
        {
            _greyLookup = new ushort[256];
            Span<byte> px = stackalloc byte[1];
            for (int v = 0; v < 256; v++)
            {
                px[0] = (byte)v;
                _greyLookup[v] = (ushort)Nearest(px);
            }
        }
        else
        {
            _rgbCache = new long[1 << RgbCacheBits];
        }
    }

    public int Size { get; }
    public int Channels { get; }

    /// <summary>The colour of a token (Channels bytes).</summary>
    public ReadOnlySpan<byte> this[int token] => _colors.AsSpan(token * Channels, Channels);

    /// <summary>A copy of the colours, Size * Channels bytes.</summary>
    public byte[] ToArray() => (byte[])_colors.Clone();

    /// <summary>Maps interleaved pixels (Channels bytes each) to tokens.</summary>
    public void Quantize(ReadOnlySpan<byte> pixels, Span<int> tokens)
    {
        if (pixels.Length != tokens.Length * Channels)
            throw new ArgumentException($"pixels has {pixels.Length} bytes; {tokens.Length} tokens need {tokens.Length * Channels}");
        if (_greyLookup is not null)
        {
            for (int i = 0; i < tokens.Length; i++) tokens[i] = _greyLookup[pixels[i]];
            return;
        }
        var cache = _rgbCache!;
        for (int i = 0; i < tokens.Length; i++)
        {
            var px = pixels.Slice(i * 3, 3);
            int rgb = (px[0] << 16) | (px[1] << 8) | px[2];
            int slot = (int)(((uint)rgb * 2654435761u) >> (32 - RgbCacheBits));
            long entry = Volatile.Read(ref cache[slot]);
            if ((int)(entry >> 32) == rgb + 1)
            {
                tokens[i] = (int)(entry & 0xFFFF);
                continue;
            }
            int token = Nearest(px);
            Volatile.Write(ref cache[slot], ((long)(rgb + 1) << 32) | (uint)token);
            tokens[i] = token;
        }
    }

    /// <summary>Maps tokens (0..Size-1) to interleaved pixels.</summary>
    public void Dequantize(ReadOnlySpan<int> tokens, Span<byte> pixels)
    {
        if (pixels.Length != tokens.Length * Channels)
            throw new ArgumentException($"pixels has {pixels.Length} bytes; {tokens.Length} tokens need {tokens.Length * Channels}");
        for (int i = 0; i < tokens.Length; i++)
        {
            int t = tokens[i];
            if ((uint)t >= (uint)Size) throw new ArgumentOutOfRangeException(nameof(tokens), t, $"token at {i} is not a palette index (0..{Size - 1})");
            _colors.AsSpan(t * Channels, Channels).CopyTo(pixels.Slice(i * Channels, Channels));
        }
    }

    /// <summary>Brute-force nearest colour: squared distance, ties to the lowest index.</summary>
    internal int Nearest(ReadOnlySpan<byte> pixel)
    {
        var colors = _colors.AsSpan();
        int best = 0, bestDistance = int.MaxValue;
        if (Channels == 1)
        {
            int v = pixel[0];
            for (int k = 0; k < Size; k++)
            {
                int d = colors[k] - v;
                d *= d;
                if (d < bestDistance) { bestDistance = d; best = k; }
            }
            return best;
        }
        int r = pixel[0], g = pixel[1], b = pixel[2];
        for (int k = 0, o = 0; k < Size; k++, o += 3)
        {
            int dr = colors[o] - r, dg = colors[o + 1] - g, db = colors[o + 2] - b;
            int d = dr * dr + dg * dg + db * db;
            if (d < bestDistance) { bestDistance = d; best = k; }
        }
        return best;
    }
}
