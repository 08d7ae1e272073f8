using System.Runtime.InteropServices;

namespace IGpt.Inference.Analysis;

/// <summary>How an out-of-distribution score compares with the test images' (<see cref="OodCalibration"/>).</summary>
public enum Familiarity
{
    /// <summary>At or below the test images' 0.95 quantile.</summary>
    LikeTraining,
    /// <summary>Between the 0.95 and 0.99 quantiles: rarer than 19 test images in 20.</summary>
    Unusual,
    /// <summary>Above the 0.99 quantile: rarer than 99 test images in 100.</summary>
    UnlikeTraining,
}

/// <summary>
/// The out-of-distribution score: the model's bits per pixel minus a generic compressor's, here an adaptive context model
/// that learns on the image itself. Raw likelihood ranks simple images as likely whatever they show (Nalisnick et al. 2019:
/// a Fashion-MNIST model prefers digits to its own test images); subtracting what a compressor needs for the same image
/// removes that image complexity (Serrà et al., ICLR 2020). Higher means less like the training images. Of the compressors
/// measured at export (zlib, PNG, filtered zlib, this context model), only the context model reached AUROC 0.95 against
/// emoji, font digits and noise alike (models/README.md).
/// </summary>
public static class OodScore
{
    /// <summary>The score's name in the manifest's analysis.ood.score: the calibration applies only to the score it was measured for.</summary>
    public const string Name = "bits_per_pixel_minus_context_model";

    /// <summary>The Krichevsky-Trofimov estimator's pseudo-count per colour.</summary>
    private const double Prior = 0.5;

    /// <summary>The score of an image whose model bits per pixel are <paramref name="bitsPerPixel"/>.</summary>
    public static double Of(double bitsPerPixel, double compressorBitsPerPixel) => bitsPerPixel - compressorBitsPerPixel;

    /// <summary>
    /// The compressor's code length in bits per pixel of the image's palette tokens: pixels in raster order, each coded in the
    /// context of its left and upper neighbours' tokens (palette size K standing for "none" in the first column and row),
    /// with counts that start empty for each image: -log2((count[context, x] + 1/2) / (total[context] + K/2)), then the
    /// counts are updated. An arithmetic coder over this model reaches the length within 2 bits; computed in double
    /// precision in the same order as the export's reference (training/igpt/analysis.py, context_model_bits_per_pixel).
    /// </summary>
    public static double CompressorBitsPerPixel(ReadOnlySpan<int> tokens, int width, int paletteSize)
    {
        if (tokens.IsEmpty || width < 1 || tokens.Length % width != 0) throw new ArgumentException($"{tokens.Length} tokens are not whole rows of {width}");
        int k = paletteSize;
        // At most one entry per pixel: a palette of 512 would need (K+1)^2 K = 135 M counters as an array.
        var counts = new Dictionary<long, int>(tokens.Length);
        var totals = new Dictionary<long, int>(tokens.Length);
        double bits = 0;
        for (int p = 0; p < tokens.Length; p++)
        {
            int x = tokens[p];
            if ((uint)x >= (uint)k) throw new ArgumentException($"token {p} = {x} is not a palette index (0..{k - 1})");
            long left = p % width != 0 ? tokens[p - 1] : k;
            long up = p >= width ? tokens[p - width] : k;
            long context = left * (k + 1) + up;
            ref int count = ref CollectionsMarshal.GetValueRefOrAddDefault(counts, context * k + x, out _);
            ref int total = ref CollectionsMarshal.GetValueRefOrAddDefault(totals, context, out _);
            bits -= Math.Log2((count + Prior) / (total + Prior * k));
            count++;
            total++;
        }
        return bits / tokens.Length;
    }

    /// <summary>
    /// The package's calibration when it is of this score (analysis.ood.score = <see cref="Name"/>), else null: quantiles
    /// of another score would give a wrong verdict.
    /// </summary>
    public static OodCalibration? CalibrationOf(ModelManifest manifest) =>
        manifest.Analysis?.Ood is { } ood && ood.Score == Name ? ood : null;

    /// <summary>Where <paramref name="score"/> falls among the test images' scores.</summary>
    public static Familiarity Judge(double score, OodCalibration calibration) =>
        score <= calibration.TestQuantiles[OodCalibration.Usual] ? Familiarity.LikeTraining
        : score <= calibration.TestQuantiles[OodCalibration.Rare] ? Familiarity.Unusual
        : Familiarity.UnlikeTraining;

    /// <summary>The verdict in a person's words.</summary>
    public static string Words(Familiarity familiarity) => familiarity switch
    {
        Familiarity.LikeTraining => "like the training images",
        Familiarity.Unusual => "unusual",
        _ => "unlike the training images",
    };
}
