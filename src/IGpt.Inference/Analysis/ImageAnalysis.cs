namespace IGpt.Inference.Analysis;

/// <summary>
/// What one teacher-forced pass of the model says about an image: the mean-pooled normalized hidden state of every layer
/// (the features linear probes read) and each pixel token's surprise in bits.
/// </summary>
public sealed class ImageAnalysis
{
    private readonly float[] _features;

    /// <param name="features">Layers x dimensions, row-major: layer i &lt; n_layer is block i's input after its first norm, the last the final norm's output.</param>
    /// <param name="tokenBits">-log2 p(x_i | SOS, x_&lt;i) for each pixel token, raster order.</param>
    public ImageAnalysis(float[] features, int layers, int dimensions, float[] tokenBits)
    {
        if (layers < 1 || dimensions < 1 || features.Length != layers * dimensions)
            throw new ArgumentException($"{features.Length} features are not {layers} layers of {dimensions}");
        _features = features;
        (Layers, Dimensions, TokenBits) = (layers, dimensions, tokenBits);
    }

    /// <summary>n_layer + 1.</summary>
    public int Layers { get; }

    /// <summary>n_embd: the length of each layer's features.</summary>
    public int Dimensions { get; }

    /// <summary>Each pixel token's surprise, -log2 of the probability the model gave it, in raster order.</summary>
    public IReadOnlyList<float> TokenBits { get; }

    /// <summary>The features of <paramref name="layer"/> (0..n_layer), mean-pooled over the image's positions.</summary>
    public ReadOnlySpan<float> Layer(int layer)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(layer);
        ArgumentOutOfRangeException.ThrowIfGreaterThanOrEqual(layer, Layers);
        return _features.AsSpan(layer * Dimensions, Dimensions);
    }

    /// <summary>The image's negative log-likelihood per pixel token, in bits: the mean of <see cref="TokenBits"/>.</summary>
    public double BitsPerPixel
    {
        get
        {
            double sum = 0;
            foreach (var bits in TokenBits) sum += bits;
            return sum / TokenBits.Count;
        }
    }

    /// <summary>The mean bits of each image row of <paramref name="width"/> pixels.</summary>
    public double[] RowBits(int width)
    {
        if (width < 1 || TokenBits.Count % width != 0) throw new ArgumentException($"{TokenBits.Count} tokens are not whole rows of {width}");
        var rows = new double[TokenBits.Count / width];
        for (int i = 0; i < TokenBits.Count; i++) rows[i / width] += TokenBits[i];
        for (int r = 0; r < rows.Length; r++) rows[r] /= width;
        return rows;
    }
}
