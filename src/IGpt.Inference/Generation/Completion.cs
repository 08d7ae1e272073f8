namespace IGpt.Inference.Generation;

/// <summary>
/// Complete <see cref="Count"/> images from the same top rows. <see cref="PromptTokens"/> are pixel
/// tokens without SOS, whole rows (a multiple of the model's width); empty for unconditional samples.
/// Image i is drawn with a generator seeded from (<see cref="Seed"/>, i), so a seed reproduces the images.
/// </summary>
public sealed record CompletionRequest(int[] PromptTokens, int Count, SamplingOptions Sampling, ulong Seed);

/// <summary>
/// Each image is its full height*width tokens with the prompt tokens kept unchanged.
/// Queue: waiting for a KV slot (admission to the first sample's start); Prefill: the prompt (or its cached KV); Decode: the new tokens.
/// </summary>
public sealed record CompletionResult(
    int[][] Images, int PromptTokens, int GeneratedTokens, TimeSpan Queue, TimeSpan Prefill, TimeSpan Decode, bool PrefixCacheHit)
{
    /// <summary>From admission to the first finished image row (zero when nothing was drawn).</summary>
    public TimeSpan FirstRow { get; init; }
}
