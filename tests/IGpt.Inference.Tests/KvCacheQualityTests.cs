using Microsoft.Extensions.Options;

namespace IGpt.Inference.Tests;

/// <summary>
/// The quality guard of Inference:KvCacheType float16 and int8 on every shipped model, on real images (each package's examples/,
/// test-set images): each image's top half is prefilled as a completion request's prompt, then the next
/// <see cref="Steps"/> tokens of the image itself are fed step by step, all images together, through a float32-cache and
/// a compressed-cache decoder. The logits of every step may differ by at most <see cref="MaxLogitDrift"/> (int8: <see cref="MaxLogitDriftInt8"/>) and the most likely
/// token must agree in all but <see cref="MaxTop1Disagreement"/> of the predictions. The test-set bits per token of the
/// same comparison (bench/kv_quality.py, a few hundred images per model) are in benchmarks/README.md.
/// Classification does not read the KV cache (the classifier is its own graph over the whole image): its probabilities
/// must be bit-for-bit those of the float32 model.
/// </summary>
public class KvCacheQualityTests
{
    private const int Steps = 24;
    /// <summary>
    /// Largest |logit difference| allowed, for every shipped model. Measured on these images (every step, every palette
    /// entry; Dec 2026): fashion-mnist-14 0.0031, fashion-mnist-28 0.014, emoji-32 0.0026, with no top-1 change; the bound
    /// leaves over 3x room on the worst and is far below the logit gaps that decide a sample.
    /// </summary>
    private const double MaxLogitDrift = 0.05;
    /// <summary>
    /// The same for int8 (absmax per head and position, 8 bits): measured 0.051 (fashion-mnist-14), 0.079 (fashion-mnist-28),
    /// 0.060 (emoji-32) with VNNI-width queries; 0.050, 0.104 and 0.140 where attention runs on byte pairs (a CPU without
    /// AVX-VNNI, Int8Blocks.AttendBytePairs), with no top-1 change in 144; 1.8x room on the worst.
    /// </summary>
    private const double MaxLogitDriftInt8 = 0.25;
    /// <summary>Share of predictions whose most likely token may differ from float32's (near-ties only).</summary>
    private const double MaxTop1Disagreement = 0.02;

    public static TheoryData<string, string> ShippedPackagesAndTypes()
    {
        var data = new TheoryData<string, string>();
        foreach (var id in ShippedModelTests.ShippedPackages())
            foreach (var type in new[] { KvCacheTypes.Float16, KvCacheTypes.Int8 })
                data.Add(id, type);
        return data;
    }

    [Theory]
    [MemberData(nameof(ShippedPackagesAndTypes))]
    public async Task ACompressedCacheStaysWithinItsBoundOnRealImages(string id, string type)
    {
        double maxDrift = type == KvCacheTypes.Int8 ? MaxLogitDriftInt8 : MaxLogitDrift;
        string dir = Path.Combine(Fixture.ShippedModelsDir, id);
        var manifest = ModelManifest.Load(dir);
        var codec = new ImageCodec(Options.Create(new ImageLimits()));
        var images = Directory.GetFiles(Path.Combine(dir, "examples"), "*.png").Order()
            .Select(f => codec.DecodeForModel(File.ReadAllBytes(f), manifest, partial: false).ToTokens(manifest.Palette))
            .ToArray();
        Assert.NotEmpty(images);
        int rows = images.Length, v = manifest.VocabSize, palette = manifest.PaletteSize;
        int k = manifest.Height / 2 * manifest.Width;   // the top half: a completion request's prompt
        using var fp32 = IGptModel.Load(dir, KvCacheCompressionTests.Options(KvCacheTypes.Float32, maxBatch: rows));
        // The reference on ONNX Runtime's graph, the compressed cache on the service's own path (the library's kernels).
        using var fp16 = IGptModel.Load(dir, KvCacheCompressionTests.Options(type, maxBatch: rows, kernelRows: new InferenceOptions().KernelStepRows));
        foreach (var d in new[] { fp32.Decoder, fp16.Decoder })
            for (int r = 0; r < rows; r++)
                d.Prefill([manifest.SosTokenId, .. images[r][..k]], 1, r);
        double drift = 0;
        int disagree = 0, predictions = 0;
        var tokens = new int[rows];
        var positions = new int[rows];
        for (int step = 0; step < Steps; step++)
        {
            int t = k + step;   // position t takes token t-1 and predicts token t
            for (int r = 0; r < rows; r++) (tokens[r], positions[r]) = (images[r][t - 1], t);
            var expected = fp32.Decoder.Step(rows, tokens, positions).ToArray();
            var actual = fp16.Decoder.Step(rows, tokens, positions);
            for (int r = 0; r < rows; r++)
            {
                var e = expected.AsSpan(r * v, palette);
                var a = actual.Slice(r * v, palette);
                for (int i = 0; i < palette; i++) drift = Math.Max(drift, Math.Abs(e[i] - a[i]));
                if (ArgMax(e) != ArgMax(a)) disagree++;
                predictions++;
            }
        }
        Assert.Equal(Steps, fp16.Decoder.KernelSteps);   // every step on the service's path
        Console.WriteLine($"{id}: {type} KV cache, {rows} images, {Steps} steps after a {k}-token prompt: max |logit diff| {drift:G3}, "
            + $"top-1 disagreement {disagree}/{predictions}");
        Assert.True(drift <= maxDrift, $"{id}: a {type}-cache logit moved by {drift} (bound {maxDrift})");
        Assert.True(drift > 0, $"{id}: the {type} cache changed nothing: is it compressed?");
        Assert.True(disagree <= MaxTop1Disagreement * predictions, $"{id}: top-1 differs from float32 in {disagree} of {predictions} predictions");

        var p32 = await fp32.ClassifyBatchAsync(images, CancellationToken.None);
        var p16 = await fp16.ClassifyBatchAsync(images, CancellationToken.None);
        for (int r = 0; r < rows; r++) Assert.Equal(p32[r], p16[r]);
    }

    private static int ArgMax(ReadOnlySpan<float> x)
    {
        int best = 0;
        for (int i = 1; i < x.Length; i++)
            if (x[i] > x[best]) best = i;
        return best;
    }
}
