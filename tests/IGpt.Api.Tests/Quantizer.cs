using System.Text.Json.Nodes;

namespace IGpt.Api.Tests;

/// <summary>The tiny package's palette, read from its manifest, and nearest-colour quantization written out here (not the library's).</summary>
public static class Quantizer
{
    public static byte[] Palette { get; } = LoadPalette();

    /// <summary>Each grey value replaced by its nearest palette grey (ties to the lowest index).</summary>
    public static byte[] Quantize(byte[] grey) => [.. Tokens(grey).Select(t => Palette[t])];

    /// <summary>Each grey value's nearest palette index (ties to the lowest).</summary>
    public static int[] Tokens(byte[] grey)
    {
        var result = new int[grey.Length];
        for (int i = 0; i < grey.Length; i++)
        {
            int best = 0, bestDistance = int.MaxValue;
            for (int p = 0; p < Palette.Length; p++)
            {
                int d = (grey[i] - Palette[p]) * (grey[i] - Palette[p]);
                if (d < bestDistance)
                {
                    bestDistance = d;
                    best = p;
                }
            }
            result[i] = best;
        }
        return result;
    }

    private static byte[] LoadPalette()
    {
        var manifest = JsonNode.Parse(File.ReadAllText(Path.Combine(ModelsFolder.FixturePackage, "model.json")))!;
        return [.. manifest["palette"]!.AsArray().Select(entry => (byte)entry![0]!.GetValue<int>())];
    }
}
