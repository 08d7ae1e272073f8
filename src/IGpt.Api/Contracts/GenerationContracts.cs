namespace IGpt.Api.Contracts;

/// <summary>Images drawn by a model: completions of a posted image or unconditional samples.</summary>
public sealed record GenerationResponse
{
    /// <summary>The model that drew the images.</summary>
    public required string Model { get; init; }

    /// <summary>The sampling seed used (the one sent, or a random one when none was sent); the same seed and fields give the same images.</summary>
    public required ulong Seed { get; init; }

    /// <summary>Rows of the model-resolution image kept from the prompt (0 for unconditional samples).</summary>
    public required int Rows { get; init; }

    /// <summary>The n images, each a base64-encoded PNG of width*scale x height*scale pixels.</summary>
    public required IReadOnlyList<string> Images { get; init; }

    /// <summary>Token counts.</summary>
    public required UsageInfo Usage { get; init; }

    /// <summary>Where the time went.</summary>
    public required TimingInfo Timings { get; init; }

    /// <summary>Whether the prompt's key/value cache came from the prefix cache (also sent as the X-Cache header).</summary>
    public required bool PrefixCacheHit { get; init; }
}

/// <summary>Token counts of a generation request.</summary>
public sealed record UsageInfo
{
    /// <summary>Prompt tokens (pixels) per image: rows * width.</summary>
    public required int PromptTokens { get; init; }

    /// <summary>Tokens (pixels) generated, all images together.</summary>
    public required int GeneratedTokens { get; init; }
}

/// <summary>Milliseconds spent in each phase of a generation request.</summary>
public sealed record TimingInfo
{
    /// <summary>Waiting for the model's batch scheduler.</summary>
    public required double QueueMs { get; init; }

    /// <summary>Running the prompt through the model (0 when the prefix cache held it).</summary>
    public required double PrefillMs { get; init; }

    /// <summary>Drawing the remaining pixels, one step per pixel.</summary>
    public required double DecodeMs { get; init; }
}
