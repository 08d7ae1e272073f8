namespace IGpt.Inference.Tests;

public class PaletteTests
{
    [Fact]
    public void GreyQuantizesToNearestWithTiesToLowestIndex()
    {
        var palette = new Palette([0, 10, 20, 255], 1);
        var tokens = new int[6];
        palette.Quantize([0, 4, 5, 6, 15, 200], tokens);
        // 5 is equally far from 0 and 10 -> 0; 15 equally far from 10 and 20 -> 1 (index of 10).
        Assert.Equal([0, 0, 0, 1, 1, 3], tokens);
    }

    [Fact]
    public void RgbQuantizeMatchesBruteForceIncludingTiesAndCache()
    {
        var rng = new Random(1234);
        var colors = new byte[64 * 3];
        rng.NextBytes(colors);
        colors[3..6].CopyTo(colors.AsSpan(9, 3));  // a duplicate colour: index 1 must win over 3
        var palette = new Palette(colors, 3);
        var pixels = new byte[3000 * 3];
        rng.NextBytes(pixels);
        colors.AsSpan(3, 3).CopyTo(pixels.AsSpan(0, 3));
        var tokens = new int[3000];
        palette.Quantize(pixels, tokens);
        var again = new int[3000];
        palette.Quantize(pixels, again);  // served from the cache
        Assert.Equal(tokens, again);
        Assert.Equal(1, tokens[0]);
        for (int i = 0; i < tokens.Length; i++)
        {
            int best = 0, bestD = int.MaxValue;
            for (int k = 0; k < 64; k++)
            {
                int dr = colors[k * 3] - pixels[i * 3], dg = colors[k * 3 + 1] - pixels[i * 3 + 1], db = colors[k * 3 + 2] - pixels[i * 3 + 2];
                int d = dr * dr + dg * dg + db * db;
                if (d < bestD) (bestD, best) = (d, k);
            }
            Assert.Equal(best, tokens[i]);
        }
    }

    [Fact]
    public void RoundTripOfPaletteColoursIsExact()
    {
        var palette = ModelManifest.Load(Fixture.PackageDir).Palette;
        int[] tokens = [0, 1, 2, 3, 4, 5, 6, 7, 7, 0];
        var pixels = new byte[tokens.Length];
        palette.Dequantize(tokens, pixels);
        Assert.Equal([0, 36, 73, 109, 146, 182, 219, 255, 255, 0], pixels);
        var back = new int[tokens.Length];
        palette.Quantize(pixels, back);
        Assert.Equal(tokens, back);
    }

    [Fact]
    public void DequantizeRejectsSosAndNegativeTokens()
    {
        var palette = new Palette([0, 255], 1);
        Assert.Throws<ArgumentOutOfRangeException>(() => palette.Dequantize([2], new byte[1]));
        Assert.Throws<ArgumentOutOfRangeException>(() => palette.Dequantize([-1], new byte[1]));
        Assert.Throws<ArgumentException>(() => palette.Quantize(new byte[3], new int[2]));
    }
}
