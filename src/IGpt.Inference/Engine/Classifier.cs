using Microsoft.ML.OnnxRuntime;

namespace IGpt.Inference.Engine;

/// <summary>classifier.onnx: [SOS, x0 .. x(n-2)] -> class logits -> softmax probabilities. Thread-safe.</summary>
internal sealed class Classifier : IDisposable
{
    private readonly InferenceSession _session;
    private readonly int _tokens, _classes, _sos, _paletteSize, _maxBatch;

    public Classifier(InferenceSession session, ModelManifest manifest, int maxBatch)
    {
        _session = session;
        (_tokens, _classes, _sos, _paletteSize, _maxBatch) =
            (manifest.TokensPerImage, manifest.Classes.Count, manifest.SosTokenId, manifest.PaletteSize, maxBatch);
        if (!session.InputMetadata.TryGetValue("input_ids", out var ids)) throw new ModelPackageException("classifier: input 'input_ids' is missing");
        if (!session.OutputMetadata.TryGetValue("logits", out var logits)) throw new ModelPackageException("classifier: output 'logits' is missing");
        // The fp16 graph (CUDA) keeps int64 ids in and float32 logits out, like the fp32 one.
        if (ids.ElementType != typeof(long)) throw new ModelPackageException($"classifier: input_ids is {ids.ElementType.Name}, expected int64");
        if (logits.ElementType != typeof(float)) throw new ModelPackageException($"classifier: logits are {logits.ElementType.Name}, expected float32");
        var dims = logits.Dimensions;
        if (dims.Length != 2 || (dims[1] > 0 && dims[1] != _classes))
            throw new ModelPackageException($"classifier: logits shape [{string.Join(", ", dims)}] does not match {_classes} classes");
    }

    /// <summary>Softmax probabilities per class for each image (height*width palette tokens).</summary>
    public float[][] Classify(IReadOnlyList<int[]> images, CancellationToken cancellationToken)
    {
        var results = new float[images.Count][];
        for (int start = 0; start < images.Count; start += _maxBatch)
        {
            cancellationToken.ThrowIfCancellationRequested();
            int rows = Math.Min(_maxBatch, images.Count - start);
            var ids = new long[rows * _tokens];
            for (int r = 0; r < rows; r++)
            {
                var image = images[start + r];
                if (image.Length != _tokens) throw new ArgumentException($"image {start + r} has {image.Length} tokens; the model takes {_tokens}");
                var row = ids.AsSpan(r * _tokens, _tokens);
                row[0] = _sos;
                for (int i = 0; i < _tokens - 1; i++)
                {
                    int t = image[i];
                    if ((uint)t >= (uint)_paletteSize) throw new ArgumentException($"image {start + r} token {i} = {t} is not a palette index");
                    row[i + 1] = t;
                }
                if ((uint)image[_tokens - 1] >= (uint)_paletteSize) throw new ArgumentException($"image {start + r} has a token that is not a palette index");
            }
            using var input = OrtValue.CreateTensorValueFromMemory(ids, [rows, _tokens]);
            using var runOptions = new RunOptions();
            using var outputs = _session.Run(runOptions, ["input_ids"], [input], ["logits"]);
            var logits = outputs[0].GetTensorDataAsSpan<float>();
            for (int r = 0; r < rows; r++)
            {
                var probs = new float[_classes];
                Sampler.Softmax(logits.Slice(r * _classes, _classes), probs);
                results[start + r] = probs;
            }
        }
        return results;
    }

    public void Dispose() => _session.Dispose();
}
