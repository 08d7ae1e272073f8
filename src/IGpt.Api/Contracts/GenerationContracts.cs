namespace IGpt.Api.Contracts;

/// <summary>Images drawn by a model: completions of a posted image or unconditional samples.</summary>
public sealed record GenerationResponse
{
    /// <summary>The model that drew the images.</summary>
    public required string Model { get; init; }

    /// <summary>The sampling seed used (the one sent, or a random one when none was sent), 0 to 2^53-1; the same seed and fields give the same images.</summary>
    public required long Seed { get; init; }

    /// <summary>
    /// The sampling settings the images were drawn with: those the request named, and the model's defaults for the
    /// others (GET /v1/models/{model} <c>sampling</c>). With the seed they reproduce the images, even after the
    /// package's defaults change.
    /// </summary>
    public required SamplingSettings Sampling { get; init; }

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

/// <summary>Server-sent event "row": one finished image row of one sample.</summary>
public sealed record RowEvent
{
    /// <summary>Which of the n images (0-based).</summary>
    public required int Sample { get; init; }

    /// <summary>The row's index in the model-resolution image (prompt rows are not sent).</summary>
    public required int Row { get; init; }

    /// <summary>The row's palette indices, width of them.</summary>
    public required IReadOnlyList<int> Tokens { get; init; }

    /// <summary>The row's pixel values 0-255 at model resolution, channels interleaved (width * channels values).</summary>
    public required IReadOnlyList<int> Pixels { get; init; }

    /// <summary>Milliseconds since the request was queued.</summary>
    public required double ElapsedMs { get; init; }
}

/// <summary>Server-sent event "heartbeat": sent after Api:HeartbeatSeconds without another event.</summary>
public sealed record HeartbeatEvent
{
    /// <summary>"queued" (waiting for a KV slot) or "decoding".</summary>
    public required string State { get; init; }

    /// <summary>Milliseconds since the request was queued.</summary>
    public required double ElapsedMs { get; init; }
}
