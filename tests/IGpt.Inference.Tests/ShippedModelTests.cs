using Microsoft.Extensions.Logging.Abstractions;

namespace IGpt.Inference.Tests;

/// <summary>Every package under the repository's models/ loads and computes what PyTorch computed at export (its parity.json).</summary>
public class ShippedModelTests
{
    public static TheoryData<string> ShippedPackages()
    {
        var data = new TheoryData<string>();
        foreach (var dir in Directory.GetDirectories(Fixture.ShippedModelsDir).Order())
            if (File.Exists(Path.Combine(dir, "model.json"))) data.Add(Path.GetFileName(dir));
        return data;
    }

    [Theory]
    [MemberData(nameof(ShippedPackages))]
    public async Task ShippedPackageMatchesItsParity(string id)
    {
        string dir = Path.Combine(Fixture.ShippedModelsDir, id);
        var parity = Fixture.ReadParity(dir);
        using var model = IGptModel.Load(dir, Fixture.CpuOptions(maxBatch: 1), NullLogger.Instance);
        Assert.Equal(id, model.Manifest.Id);

        var d = model.Decoder;
        int v = d.VocabSize, s = parity.Prompt.Length;
        var prefill = d.Prefill(parity.Prompt, 1).ToArray();
        for (int i = 0; i < s; i++)
            DecoderTests.AssertClose(parity.PrefillLogits[i], prefill.AsSpan(i * v, v), parity.Tolerance, $"{id} prefill[{i}]");
        for (int j = 0; j < parity.DecodeTokens.Length; j++)
            DecoderTests.AssertClose(parity.DecodeLogits[j], d.Step(1, [parity.DecodeTokens[j]], [s + j]), parity.Tolerance, $"{id} decode[{j}]");

        Assert.True(model.HasClassifier, $"{id} ships no classifier");
        Assert.NotNull(parity.ClassifierInputIds);
        // parity rows are [SOS, x0 .. x(n-2)]; the API takes the image tokens x0 .. x(n-1) (the last is not seen).
        var images = parity.ClassifierInputIds!.Select(ids => ids[1..].Append(0).ToArray()).ToArray();
        var probabilities = await model.ClassifyBatchAsync(images, CancellationToken.None);
        for (int r = 0; r < images.Length; r++)
        {
            var expected = new float[parity.ClassifierLogits![r].Length];
            Sampler.Softmax(parity.ClassifierLogits[r], expected);
            for (int c = 0; c < expected.Length; c++)
                Assert.True(Math.Abs(expected[c] - probabilities[r][c]) <= parity.Tolerance, $"{id} row {r} class {c}: {expected[c]} vs {probabilities[r][c]}");
        }
    }
}
