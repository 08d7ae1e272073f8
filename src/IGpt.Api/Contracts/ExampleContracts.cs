namespace IGpt.Api.Contracts;

/// <summary>A model's example images: test-split images its package ships, ready to complete or classify.</summary>
public sealed record ModelExamplesResponse
{
    /// <summary>Model id.</summary>
    public required string Model { get; init; }

    /// <summary>The examples, by file name; empty when the package ships none.</summary>
    public required IReadOnlyList<ExampleImage> Examples { get; init; }
}

/// <summary>One example image of a model package (a PNG of its <c>examples/</c> folder).</summary>
public sealed record ExampleImage
{
    /// <summary>The file name without <c>.png</c>, e.g. <c>4-dress</c> (number, then the class it belongs to).</summary>
    public required string Name { get; init; }

    /// <summary>Width in pixels.</summary>
    public required int Width { get; init; }

    /// <summary>Height in pixels.</summary>
    public required int Height { get; init; }

    /// <summary>The PNG file as base64: post it as it is to completions or classifications.</summary>
    public required string Image { get; init; }
}
