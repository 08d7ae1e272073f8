namespace IGpt.Api.Contracts;

/// <summary>The most probable classes of a posted image.</summary>
public sealed record ClassificationResponse
{
    /// <summary>The model that classified the image.</summary>
    public required string Model { get; init; }

    /// <summary>The <c>top</c> most probable classes, most probable first.</summary>
    public required IReadOnlyList<Prediction> Predictions { get; init; }

    /// <summary>Whether the result came from the classification cache (same model, same image bytes); also sent as the X-Cache header.</summary>
    public required bool Cached { get; init; }
}

/// <summary>One class and its probability.</summary>
public sealed record Prediction
{
    /// <summary>Class name.</summary>
    public required string Label { get; init; }

    /// <summary>Class index in the model's <c>classes</c> list.</summary>
    public required int Index { get; init; }

    /// <summary>Softmax probability, 0 to 1.</summary>
    public required double Probability { get; init; }
}
