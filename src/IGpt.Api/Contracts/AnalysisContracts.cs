namespace IGpt.Api.Contracts;

/// <summary>An image's embedding: one layer's hidden state, average-pooled over the image's positions.</summary>
public sealed record EmbeddingResponse
{
    /// <summary>The model that embedded the image.</summary>
    public required string Model { get; init; }

    /// <summary>The layer, 0 to n_layer: i &lt; n_layer is block i's input after its first norm, n_layer the final norm's output.</summary>
    public required int Layer { get; init; }

    /// <summary>The embedding's length (the model's n_embd).</summary>
    public required int Dimensions { get; init; }

    /// <summary>The features, <c>dimensions</c> numbers.</summary>
    public required IReadOnlyList<float> Embedding { get; init; }

    /// <summary>Whether the analysis cache answered (same model, same image bytes; shared with likelihoods); also sent as X-Cache.</summary>
    public required bool Cached { get; init; }
}

/// <summary>How likely the model finds an image, and how unlike its training images the image is.</summary>
public sealed record LikelihoodResponse
{
    /// <summary>The model that scored the image.</summary>
    public required string Model { get; init; }

    /// <summary>
    /// The model's negative log-likelihood of the quantized image, in bits per pixel: the mean over the pixels of
    /// -log2 p(pixel | the pixels before it), from one teacher-forced pass. Lower means more expected.
    /// </summary>
    public required double BitsPerPixel { get; init; }

    /// <summary>The mean bits of each image row, top to bottom (Accept: image/png draws them per pixel).</summary>
    public required IReadOnlyList<double> Rows { get; init; }

    /// <summary>
    /// What a generic compressor needs for the same image, in bits per pixel: an adaptive context model that predicts each
    /// pixel's colour from its left and upper neighbours with counts learned on the image itself (the code length an
    /// arithmetic coder reaches). Simple images are cheap for both the model and the compressor.
    /// </summary>
    public required double CompressorBitsPerPixel { get; init; }

    /// <summary>
    /// The out-of-distribution score, bits_per_pixel - compressor_bits_per_pixel: higher means less like the training
    /// images. Raw likelihood rates simple images as likely whatever they show; subtracting the compressor's bits takes
    /// that simplicity out.
    /// </summary>
    public required double OodScore { get; init; }

    /// <summary>
    /// The score in words, from the test images' quantiles: "like the training images" (at most the 0.95 quantile),
    /// "unusual" (up to the 0.99 quantile), "unlike the training images" (above it); null when the package has no calibration.
    /// </summary>
    public required string? Verdict { get; init; }

    /// <summary>The test images' scores the verdict compares with; null when the package has no calibration.</summary>
    public required OodCalibrationInfo? Calibration { get; init; }

    /// <summary>Whether the analysis cache answered (same model, same image bytes; shared with embeddings); also sent as X-Cache.</summary>
    public required bool Cached { get; init; }
}

/// <summary>The out-of-distribution score's quantiles over the model's in-distribution test images.</summary>
public sealed record OodCalibrationInfo
{
    /// <summary>The score the quantiles are of (the package's analysis.ood.score).</summary>
    public required string Score { get; init; }

    /// <summary>Quantile ("0.5", "0.95", "0.99", ...) to the test images' score at it.</summary>
    public required IReadOnlyDictionary<string, double> TestQuantiles { get; init; }
}
