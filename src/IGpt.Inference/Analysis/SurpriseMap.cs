namespace IGpt.Inference.Analysis;

/// <summary>
/// A picture of where an image surprised the model: each pixel coloured by its bits on a dark-to-bright ramp (black,
/// purple, red, orange, pale yellow: the "inferno" colour map's anchors, readable in grey too), on a fixed scale from 0
/// to log2(palette size) bits (a uniform guess) so that maps of different images compare; more bits show as the brightest.
/// </summary>
public static class SurpriseMap
{
    private static readonly (float At, byte R, byte G, byte B)[] Ramp =
    [
        (0.00f, 0, 0, 4),
        (0.25f, 87, 16, 110),
        (0.50f, 188, 55, 84),
        (0.75f, 249, 142, 9),
        (1.00f, 252, 255, 164),
    ];

    /// <summary>The bits at which a pixel shows as the brightest colour: those of a uniform guess over the palette.</summary>
    public static double ScaleBits(int paletteSize) => Math.Log2(paletteSize);

    /// <summary>An RGB image of <paramref name="width"/> x (bits / width) pixels.</summary>
    public static PixelImage Draw(IReadOnlyList<float> tokenBits, int width, int paletteSize)
    {
        if (width < 1 || tokenBits.Count == 0 || tokenBits.Count % width != 0)
            throw new ArgumentException($"{tokenBits.Count} pixels are not whole rows of {width}");
        var top = ScaleBits(paletteSize);
        var pixels = new byte[tokenBits.Count * 3];
        for (int i = 0; i < tokenBits.Count; i++)
        {
            var (r, g, b) = Colour(float.IsNaN(tokenBits[i]) ? 1f : (float)Math.Clamp(tokenBits[i] / top, 0, 1));
            pixels[i * 3] = r;
            pixels[i * 3 + 1] = g;
            pixels[i * 3 + 2] = b;
        }
        return new PixelImage(width, tokenBits.Count / width, 3, pixels);
    }

    /// <summary>The ramp's colour at <paramref name="t"/> (0..1), linear between its anchors.</summary>
    internal static (byte R, byte G, byte B) Colour(float t)
    {
        int k = 1;
        while (k < Ramp.Length - 1 && t > Ramp[k].At) k++;
        var (a, b) = (Ramp[k - 1], Ramp[k]);
        float f = (t - a.At) / (b.At - a.At);
        static byte Mix(byte x, byte y, float f) => (byte)Math.Round(x + (y - x) * f);
        return (Mix(a.R, b.R, f), Mix(a.G, b.G, f), Mix(a.B, b.B, f));
    }
}
