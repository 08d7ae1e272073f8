namespace IGpt.Inference.Images;

/// <summary>An 8-bit image: Height rows of Width pixels, Channels (1 grey, 3 RGB) interleaved bytes each.</summary>
public sealed record PixelImage(int Width, int Height, int Channels, byte[] Pixels)
{
    public int Width { get; } = Width > 0 ? Width : throw new ArgumentOutOfRangeException(nameof(Width), Width, "must be positive");
    public int Height { get; } = Height > 0 ? Height : throw new ArgumentOutOfRangeException(nameof(Height), Height, "must be positive");
    public int Channels { get; } = Channels is 1 or 3 ? Channels : throw new ArgumentOutOfRangeException(nameof(Channels), Channels, "must be 1 or 3");
    public byte[] Pixels { get; } = Pixels.Length == (long)Width * Height * Channels
        ? Pixels
        : throw new ArgumentException($"expected {(long)Width * Height * Channels} bytes, got {Pixels.Length}", nameof(Pixels));

    /// <summary>Pixels of an image made of palette tokens (height = tokens / width).</summary>
    public static PixelImage FromTokens(ReadOnlySpan<int> tokens, int width, Palette palette)
    {
        if (width <= 0 || tokens.Length == 0 || tokens.Length % width != 0)
            throw new ArgumentException($"{tokens.Length} tokens are not whole rows of {width}");
        var pixels = new byte[tokens.Length * palette.Channels];
        palette.Dequantize(tokens, pixels);
        return new PixelImage(width, tokens.Length / width, palette.Channels, pixels);
    }

    /// <summary>The palette tokens of every pixel (raster order).</summary>
    public int[] ToTokens(Palette palette)
    {
        if (palette.Channels != Channels) throw new ArgumentException($"image has {Channels} channel(s), palette {palette.Channels}");
        var tokens = new int[Width * Height];
        palette.Quantize(Pixels, tokens);
        return tokens;
    }
}
