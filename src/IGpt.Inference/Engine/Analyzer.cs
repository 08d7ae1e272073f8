using Microsoft.ML.OnnxRuntime;

namespace IGpt.Inference.Engine;

/// <summary>
/// analysis.onnx: one teacher-forced pass over an image's tokens x0 .. x(n-1) (the graph puts SOS in front) that gives
/// the mean-pooled normalized hidden state of every layer and each token's surprise, -log2 p(x_i | SOS, x_&lt;i).
/// Runs one batch at a time into buffers allocated once for MaxBatch images (the API's batcher already queues callers
/// per model); callers on other threads wait their turn.
/// </summary>
internal sealed class Analyzer : IDisposable
{
    private const string InputIds = "input_ids", Features = "features", TokenBits = "token_bits";

    private readonly InferenceSession _session;
    private readonly int _tokens, _layers, _embd, _paletteSize, _maxBatch;
    private readonly long[] _ids;
    private readonly float[] _features, _bits;
    private readonly Lock _run = new();
    private int _disposed;

    public Analyzer(InferenceSession session, ModelManifest manifest, int maxBatch)
    {
        _session = session;
        var a = manifest.Architecture;
        (_tokens, _layers, _embd, _paletteSize, _maxBatch) = (manifest.TokensPerImage, a.NLayer + 1, a.NEmbd, manifest.PaletteSize, maxBatch);
        if (!session.InputMetadata.TryGetValue(InputIds, out var ids)) throw new ModelPackageException($"analysis: input '{InputIds}' is missing");
        if (ids.ElementType != typeof(long)) throw new ModelPackageException($"analysis: {InputIds} is {ids.ElementType.Name}, expected int64");
        foreach (var name in new[] { Features, TokenBits })
        {
            if (!session.OutputMetadata.TryGetValue(name, out var output)) throw new ModelPackageException($"analysis: output '{name}' is missing");
            if (output.ElementType != typeof(float)) throw new ModelPackageException($"analysis: {name} is {output.ElementType.Name}, expected float32");
        }
        // A graph from another model (or an older export) would fail at the first request; say so at load instead.
        var f = session.OutputMetadata[Features].Dimensions;
        if (f.Length != 3 || (f[1] > 0 && f[1] != _layers) || (f[2] > 0 && f[2] != _embd))
            throw new ModelPackageException($"analysis: features shape [{string.Join(", ", f)}] is not [batch, {_layers}, {_embd}] (n_layer + 1, n_embd)");
        var b = session.OutputMetadata[TokenBits].Dimensions;
        if (b.Length != 2 || (b[1] > 0 && b[1] != _tokens))
            throw new ModelPackageException($"analysis: token_bits shape [{string.Join(", ", b)}] is not [batch, {_tokens}]");
        _ids = new long[maxBatch * _tokens];
        _features = new float[maxBatch * _layers * _embd];
        _bits = new float[maxBatch * _tokens];
    }

    /// <summary>The analysis of each image (height*width palette tokens), run in batches of up to MaxBatch.</summary>
    public ImageAnalysis[] Analyze(IReadOnlyList<int[]> images, CancellationToken cancellationToken)
    {
        for (int i = 0; i < images.Count; i++)
        {
            var image = images[i];
            if (image.Length != _tokens) throw new ArgumentException($"image {i} has {image.Length} tokens; the model takes {_tokens}");
            foreach (int t in image)
                if ((uint)t >= (uint)_paletteSize) throw new ArgumentException($"image {i} has token {t}, which is not a palette index (0..{_paletteSize - 1})");
        }
        var results = new ImageAnalysis[images.Count];
        lock (_run)
        {
            ObjectDisposedException.ThrowIf(_disposed != 0, this);
            for (int start = 0; start < images.Count; start += _maxBatch)
            {
                cancellationToken.ThrowIfCancellationRequested();
                int rows = Math.Min(_maxBatch, images.Count - start);
                for (int r = 0; r < rows; r++)
                {
                    var row = _ids.AsSpan(r * _tokens, _tokens);
                    var image = images[start + r];
                    for (int i = 0; i < _tokens; i++) row[i] = image[i];
                }
                int featureCount = rows * _layers * _embd;
                // The tensors are views of the buffers for this batch's rows: the graph writes its outputs into them.
                using var input = OrtValue.CreateTensorValueFromMemory(OrtMemoryInfo.DefaultInstance, _ids.AsMemory(0, rows * _tokens), [rows, _tokens]);
                using var features = OrtValue.CreateTensorValueFromMemory(OrtMemoryInfo.DefaultInstance, _features.AsMemory(0, featureCount), [rows, _layers, _embd]);
                using var bits = OrtValue.CreateTensorValueFromMemory(OrtMemoryInfo.DefaultInstance, _bits.AsMemory(0, rows * _tokens), [rows, _tokens]);
                using var runOptions = new RunOptions();
                _session.Run(runOptions, [InputIds], [input], [Features, TokenBits], [features, bits]);
                for (int r = 0; r < rows; r++)
                {
                    results[start + r] = new ImageAnalysis(
                        _features.AsSpan(r * _layers * _embd, _layers * _embd).ToArray(), _layers, _embd,
                        _bits.AsSpan(r * _tokens, _tokens).ToArray());
                }
            }
        }
        return results;
    }

    public void Dispose()
    {
        lock (_run)
        {
            if (_disposed != 0) return;
            _disposed = 1;
            _session.Dispose();
        }
    }
}
