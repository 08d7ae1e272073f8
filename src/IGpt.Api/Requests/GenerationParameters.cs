using IGpt.Inference;

namespace IGpt.Api.Requests;

/// <summary>The sampling fields shared by completions and samples, checked.</summary>
public sealed record GenerationParameters(int Count, SamplingOptions Sampling, ulong Seed, int Scale)
{
    /// <param name="maxCount">The most images one request may ask for (Api:MaxImagesPerRequest).</param>
    /// <param name="defaults">
    /// The model's sampling settings (<see cref="ModelManifest.Sampling"/>). Each of temperature, top_k and top_p that the
    /// request leaves out takes the model's value, one by one: a request that names only the temperature keeps the model's
    /// top_k and top_p, as a generation config's defaults do in Hugging Face's generate().
    /// </param>
    public static GenerationParameters From(RequestFields fields, int maxCount, SamplingOptions defaults)
    {
        var count = fields.Int(FieldSpecs.N, maxCount) ?? FieldSpecs.DefaultCount;
        var temperature = fields.Float(FieldSpecs.Temperature) ?? defaults.Temperature;
        var topK = fields.Int(FieldSpecs.TopK) ?? defaults.TopK;
        var topP = fields.Float(FieldSpecs.TopP) ?? defaults.TopP;
        // A random seed stays in the declared range, which every client can hold and send back.
        var seed = fields.Seed(FieldSpecs.Seed) ?? (ulong)Random.Shared.NextInt64(0, FieldSpecs.MaxSeed + 1);
        var scale = fields.Int(FieldSpecs.Scale) ?? FieldSpecs.DefaultScale;
        return new GenerationParameters(count, new SamplingOptions(temperature, topK, topP), seed, scale);
    }
}
