namespace IGpt.Inference.Tests;

/// <summary>analysis.onnx through the library: PyTorch's features and bits (parity.json), and bits that agree with the decoder's own logits.</summary>
public class AnalysisTests
{
    /// <summary>Each parity row's features and bits within the package's tolerance, in one batch and one by one.</summary>
    internal static async Task AssertAnalysisMatchesParity(IGptModel model, Parity parity, string what)
    {
        Assert.True(model.HasAnalysis, $"{what}has no analysis graph");
        var images = parity.AnalysisInputIds!;
        var batch = await model.AnalyzeBatchAsync(images, CancellationToken.None);
        for (int r = 0; r < images.Length; r++)
        {
            var single = (await model.AnalyzeBatchAsync([images[r]], CancellationToken.None))[0];
            foreach (var got in new[] { batch[r], single })
            {
                Assert.Equal(parity.AnalysisFeatures![r].Length, got.Layers);
                for (int layer = 0; layer < got.Layers; layer++)
                    DecoderTests.AssertClose(parity.AnalysisFeatures[r][layer], got.Layer(layer), parity.Tolerance, $"{what}row {r} layer {layer}");
                DecoderTests.AssertClose(parity.AnalysisTokenBits![r], [.. got.TokenBits], parity.Tolerance, $"{what}row {r} bits");
            }
            // The score as the export's reference computes it: the same context model, the same bits.
            var manifest = model.Manifest;
            var score = OodScore.Of(batch[r].BitsPerPixel, OodScore.CompressorBitsPerPixel(images[r], manifest.Width, manifest.PaletteSize));
            Assert.True(Math.Abs(parity.AnalysisOodScores![r] - score) <= parity.Tolerance, $"{what}row {r} ood_score: {parity.AnalysisOodScores[r]} vs {score}");
        }
    }

    [Fact]
    public async Task FeaturesAndBitsMatchPyTorch()
    {
        using var model = Fixture.LoadCpu(maxBatch: 1);  // batches larger than MaxBatch run in several
        await AssertAnalysisMatchesParity(model, Fixture.ReadParity(), "");
    }

    [Fact]
    public async Task BitsAreTheDecodersPrefillLogitsOfEachPixel()
    {
        // An independent route to the same numbers: the KV decoder's full-sequence logits, softmaxed here.
        using var model = Fixture.LoadCpu();
        var tokens = Enumerable.Range(0, 64).Select(i => (i * 5 + i / 8) % 8).ToArray();
        var analysis = (await model.AnalyzeBatchAsync([tokens], CancellationToken.None))[0];
        var logits = model.ForwardWithoutCache([model.Manifest.SosTokenId, .. tokens[..^1]]);
        int v = model.Decoder.VocabSize;  // palette + SOS, whose logit is -1e9: never a pixel
        var probabilities = new float[v];
        for (int i = 0; i < tokens.Length; i++)
        {
            Sampler.Softmax(logits.AsSpan(i * v, v), probabilities);
            var bits = -Math.Log2(probabilities[tokens[i]]);
            Assert.True(Math.Abs(bits - analysis.TokenBits[i]) < 1e-3, $"pixel {i}: decoder {bits} vs analysis {analysis.TokenBits[i]}");
        }
        Assert.Equal(analysis.TokenBits.Average(b => (double)b), analysis.BitsPerPixel, 9);
        Assert.Equal(analysis.BitsPerPixel, analysis.RowBits(8).Average(), 9);
    }

    [Fact]
    public async Task RefusesImagesOfTheWrongSizeOrTokens()
    {
        using var model = Fixture.LoadCpu();
        await Assert.ThrowsAsync<ArgumentException>(() => model.AnalyzeBatchAsync([new int[63]], CancellationToken.None));
        await Assert.ThrowsAsync<ArgumentException>(() => model.AnalyzeBatchAsync([Enumerable.Repeat(8, 64).ToArray()], CancellationToken.None));
        await Assert.ThrowsAsync<ArgumentException>(() => model.AnalyzeBatchAsync([Enumerable.Repeat(-1, 64).ToArray()], CancellationToken.None));
    }

    [Fact]
    public void AGraphThatIsNotAnAnalysisGraphFailsTheLoadNamingIt()
    {
        // The classifier in analysis.onnx's place: loadable, but without the outputs the service reads.
        var dir = Fixture.CopyToTemp(out var root);
        try
        {
            File.Copy(Path.Combine(dir, "classifier.onnx"), Path.Combine(dir, "analysis.onnx"), overwrite: true);
            var e = Assert.Throws<ModelPackageException>(() => IGptModel.Load(dir, Fixture.CpuOptions()));
            Assert.Contains("analysis.onnx", e.Message);
            Assert.Contains("output 'token_bits' is missing", e.Message);  // its 'features' are the pooled final norm only
            File.WriteAllText(Path.Combine(dir, "analysis.onnx"), "not an ONNX graph");
            Assert.StartsWith("analysis.onnx: ", Assert.Throws<ModelPackageException>(() => IGptModel.Load(dir, Fixture.CpuOptions())).Message);
        }
        finally
        {
            Directory.Delete(root, recursive: true);
        }
    }

    [Fact]
    public void CompressorBitsAreTheContextModelsCodeLength()
    {
        // One row of four 0s, palette of 2: contexts (none, none), then (0, none) three times, learning as it goes.
        // Bits: -log2(0.5/1) + -log2(0.5/1) + -log2(1.5/2) + -log2(2.5/3).
        double expected = (1 + 1 - Math.Log2(1.5 / 2) - Math.Log2(2.5 / 3)) / 4;
        Assert.Equal(expected, OodScore.CompressorBitsPerPixel([0, 0, 0, 0], width: 4, paletteSize: 2), 12);
        // The same tokens as two rows: the second row's contexts have an upper neighbour, (none, 0) then (0, 0).
        expected = (1 + 1 + 1 + 1) / 4.0;
        Assert.Equal(expected, OodScore.CompressorBitsPerPixel([0, 0, 0, 0], width: 2, paletteSize: 2), 12);

        var flat = new int[256];
        var busy = Enumerable.Range(0, 256).Select(i => (i * 7919 % 251) % 16).ToArray();
        Assert.True(OodScore.CompressorBitsPerPixel(flat, 16, 16) < OodScore.CompressorBitsPerPixel(busy, 16, 16));
        Assert.Throws<ArgumentException>(() => OodScore.CompressorBitsPerPixel([0, 2], 2, 2));
        Assert.Throws<ArgumentException>(() => OodScore.CompressorBitsPerPixel([0, 1, 0], 2, 2));
    }

    [Fact]
    public void VerdictBandsAreTheQuantilesInclusive()
    {
        var calibration = new OodCalibration(OodScore.Name, new Dictionary<double, double> { [0.95] = 1.0, [0.99] = 2.0 });
        Assert.Equal(Familiarity.LikeTraining, OodScore.Judge(-5, calibration));
        Assert.Equal(Familiarity.LikeTraining, OodScore.Judge(1.0, calibration));
        Assert.Equal(Familiarity.Unusual, OodScore.Judge(1.5, calibration));
        Assert.Equal(Familiarity.Unusual, OodScore.Judge(2.0, calibration));
        Assert.Equal(Familiarity.UnlikeTraining, OodScore.Judge(2.01, calibration));
        Assert.Equal("unlike the training images", OodScore.Words(Familiarity.UnlikeTraining));
    }

    [Fact]
    public void SurpriseMapRunsDarkToBrightOnAFixedScale()
    {
        // Palette of 16: log2 = 4 bits is the top of the scale; more is clamped, NaN shows as the most surprising.
        var map = SurpriseMap.Draw([0f, 1f, 2f, 4f, 9f, float.NaN], width: 3, paletteSize: 16);
        Assert.Equal((3, 2, 3), (map.Width, map.Height, map.Channels));
        int Brightness(int i) => map.Pixels[i * 3] + map.Pixels[i * 3 + 1] + map.Pixels[i * 3 + 2];
        Assert.True(Brightness(0) < Brightness(1) && Brightness(1) < Brightness(2) && Brightness(2) < Brightness(3));
        Assert.Equal(map.Pixels[9..12], map.Pixels[12..15]);
        Assert.Equal(map.Pixels[9..12], map.Pixels[15..18]);
        Assert.Equal([0, 0, 4], map.Pixels[0..3]);
        Assert.Equal([252, 255, 164], map.Pixels[9..12]);
    }
}
