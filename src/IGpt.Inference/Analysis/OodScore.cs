using System.IO.Compression;

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
/// The out-of-distribution score: the model's bits per pixel minus a generic compressor's (zlib, smallest size, over the
/// quantized image's raw pixel bytes). Raw likelihood ranks simple images as likely whatever they show (Nalisnick et al.
/// 2019: a Fashion-MNIST model prefers MNIST digits); subtracting what a compressor needs removes most of that image
/// complexity (Serrà et al., ICLR 2020). Higher means less like the training images.
/// </summary>
public static class OodScore
{
    /// <summary>The score's name in the manifest's analysis.ood.score: the calibration applies only to the score it was measured for.</summary>
    public const string Name = "bits_per_pixel_minus_zlib";

    /// <summary>The score of an image whose model bits per pixel are <paramref name="bitsPerPixel"/>.</summary>
    public static double Of(double bitsPerPixel, double compressorBitsPerPixel) => bitsPerPixel - compressorBitsPerPixel;

    /// <summary>
    /// 8 x the zlib-format deflate size (CompressionLevel.SmallestSize) of the quantized image's pixel bytes, per pixel: each
    /// pixel's palette colour (1 byte grey, 3 bytes R, G, B), raster order, no PNG filter.
    /// </summary>
    public static double CompressorBitsPerPixel(ReadOnlySpan<int> tokens, Palette palette)
    {
        if (tokens.IsEmpty) throw new ArgumentException("the image has no pixels");
        var pixels = new byte[tokens.Length * palette.Channels];
        palette.Dequantize(tokens, pixels);
        var compressed = new MemoryStream();
        using (var zlib = new ZLibStream(compressed, CompressionLevel.SmallestSize, leaveOpen: true)) zlib.Write(pixels);
        return 8.0 * compressed.Length / tokens.Length;
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
