using IGpt.Inference;

namespace IGpt.Api.Requests;

/// <summary>The sampling fields shared by completions and samples, checked.</summary>
public sealed record GenerationParameters(int Count, SamplingOptions Sampling, ulong Seed, int Scale)
{
    /// <param name="maxCount">The most images one request may ask for (Api:MaxImagesPerRequest).</param>
    public static GenerationParameters From(RequestFields fields, int maxCount)
    {
        var count = fields.Int(FieldSpecs.N, maxCount) ?? FieldSpecs.DefaultCount;
        var temperature = fields.Float(FieldSpecs.Temperature) ?? FieldSpecs.DefaultTemperature;
        var topK = fields.Int(FieldSpecs.TopK) ?? FieldSpecs.DefaultTopK;
        var topP = fields.Float(FieldSpecs.TopP) ?? FieldSpecs.DefaultTopP;
        // A random seed stays in the declared range, which every client can hold and send back.
        var seed = fields.Seed(FieldSpecs.Seed) ?? (ulong)Random.Shared.NextInt64(0, FieldSpecs.MaxSeed + 1);
        var scale = fields.Int(FieldSpecs.Scale) ?? FieldSpecs.DefaultScale;
        return new GenerationParameters(count, new SamplingOptions(temperature, topK, topP), seed, scale);
    }
}
