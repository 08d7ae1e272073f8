using IGpt.Inference;

namespace IGpt.Api.Requests;

/// <summary>The sampling fields shared by completions and samples, checked.</summary>
public sealed record GenerationParameters(int Count, SamplingOptions Sampling, ulong Seed, int Scale)
{
    public const int MaxScale = 16;
    public const float MaxTemperature = 100;

    /// <param name="maxCount">The most images one request may ask for (Api:MaxImagesPerRequest).</param>
    public static GenerationParameters From(RequestFields fields, int maxCount)
    {
        var count = fields.Int("n", 1, maxCount) ?? 1;
        // 0 is greedy decoding; IsNegative also refuses -0 (and "-1e-50", which parses to -0).
        var temperature = fields.Float("temperature", t => !float.IsNegative(t) && t <= MaxTemperature, $"from 0 (greedy) to {MaxTemperature}") ?? 1f;
        var topK = fields.Int("top_k", 0, int.MaxValue) ?? 0;
        var topP = fields.Float("top_p", p => p is > 0 and <= 1, "greater than 0 and at most 1") ?? 1f;
        // A random seed stays below 2^53 so that JavaScript clients can echo it back exactly.
        var seed = fields.ULong("seed") ?? (ulong)Random.Shared.NextInt64(0, 1L << 53);
        var scale = fields.Int("scale", 1, MaxScale) ?? 1;
        return new GenerationParameters(count, new SamplingOptions(temperature, topK, topP), seed, scale);
    }
}
