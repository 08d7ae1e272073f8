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

        DecoderTests.AssertPrefillAndDecodeMatch(model.Decoder, parity, $"{id} ");

        Assert.True(model.HasClassifier, $"{id} ships no classifier");
        var images = parity.ClassifierImages();
        var probabilities = await model.ClassifyBatchAsync(images, CancellationToken.None);
        for (int r = 0; r < images.Length; r++)
        {
            var expected = parity.ClassifierProbabilities(r);
            for (int c = 0; c < expected.Length; c++)
                Assert.True(Math.Abs(expected[c] - probabilities[r][c]) <= parity.Tolerance, $"{id} row {r} class {c}: {expected[c]} vs {probabilities[r][c]}");
        }

        await AnalysisTests.AssertAnalysisMatchesParity(model, parity, $"{id} ");
    }
}
