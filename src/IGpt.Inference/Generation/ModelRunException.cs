namespace IGpt.Inference.Generation;

/// <summary>
/// A model failed while running (ONNX Runtime threw during a prefill, a decode step or a classifier batch): a
/// server fault, not bad input. The requests in that run fail with it; the model keeps serving the next ones.
/// </summary>
public sealed class ModelRunException(string modelId, string stage, Exception inner)
    : Exception($"Model '{modelId}': the {stage} run failed: {FirstLine(inner.Message)}", inner)
{
    public string ModelId { get; } = modelId;

    /// <summary>"decode step", "prefill" or "classifier".</summary>
    public string Stage { get; } = stage;

    private static string FirstLine(string message)
    {
        int i = message.IndexOfAny(['\r', '\n']);
        return i < 0 ? message : message[..i];
    }
}
