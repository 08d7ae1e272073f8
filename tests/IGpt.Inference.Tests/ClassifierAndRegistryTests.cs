using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Options;

namespace IGpt.Inference.Tests;

public class ClassifierTests
{
    [Fact]
    public async Task ClassifierMatchesParity()
    {
        var parity = Fixture.ReadParity();
        using var model = Fixture.LoadCpu();
        Assert.True(model.HasClassifier);
        var images = parity.ClassifierImages();
        var batch = await model.ClassifyBatchAsync(images, CancellationToken.None);
        for (int r = 0; r < images.Length; r++)
        {
            var expected = parity.ClassifierProbabilities(r);
            var single = await model.ClassifyAsync(images[r], CancellationToken.None);
            Assert.Equal(3, single.Length);
            for (int c = 0; c < expected.Length; c++)
            {
                Assert.True(Math.Abs(expected[c] - batch[r][c]) <= parity.Tolerance, $"row {r} class {c}: {expected[c]} vs {batch[r][c]}");
                Assert.True(Math.Abs(expected[c] - single[c]) <= parity.Tolerance, $"row {r} class {c} single");
            }
            Assert.Equal(1.0, single.Sum(), 5);
        }
    }

    [Fact]
    public async Task ClassifierRejectsWrongLengthsAndTokens()
    {
        using var model = Fixture.LoadCpu();
        await Assert.ThrowsAsync<ArgumentException>(() => model.ClassifyAsync(new int[63], CancellationToken.None));
        await Assert.ThrowsAsync<ArgumentException>(() => model.ClassifyAsync(Enumerable.Repeat(8, 64).ToArray(), CancellationToken.None));
    }
}

public class ModelRegistryTests
{
    private static ModelRegistry Open(string root) =>
        new(Options.Create(new InferenceOptions { ModelsPath = root, UseCuda = false, IntraOpThreads = 1, MaxBatch = 4 }), NullLoggerFactory.Instance);

    [Fact]
    public void LoadsGoodPackagesAndReportsBrokenOnes()
    {
        var good = Fixture.CopyToTemp(out var root);
        try
        {
            void Variant(string name, Action<string> breakIt)
            {
                var dir = Path.Combine(root, name);
                Directory.CreateDirectory(dir);
                foreach (var f in Directory.GetFiles(good)) File.Copy(f, Path.Combine(dir, Path.GetFileName(f)));
                var json = File.ReadAllText(Path.Combine(dir, "model.json")).Replace("\"tiny-test\"", $"\"{name}\"");
                File.WriteAllText(Path.Combine(dir, "model.json"), json);
                breakIt(dir);
            }
            Variant("bad-json", dir => File.WriteAllText(Path.Combine(dir, "model.json"), "{ \"format_version\": 1, \"id\": "));
            Variant("truncated-onnx", dir =>
            {
                var path = Path.Combine(dir, "decoder.onnx");
                var bytes = File.ReadAllBytes(path);
                File.WriteAllBytes(path, bytes[..(bytes.Length / 3)]);
            });
            Variant("future-format", dir =>
                File.WriteAllText(Path.Combine(dir, "model.json"), File.ReadAllText(Path.Combine(dir, "model.json")).Replace("\"format_version\": 2", "\"format_version\": 7")));
            Variant("truncated-weights", dir =>
            {
                var path = Path.Combine(dir, "weights.data");
                var bytes = File.ReadAllBytes(path);
                File.WriteAllBytes(path, bytes[..(bytes.Length / 3)]);
            });
            Variant("missing-weights", dir => File.Delete(Path.Combine(dir, "weights.data")));
            Directory.CreateDirectory(Path.Combine(root, "no-manifest"));
            Variant("z-duplicate", dir =>
                File.WriteAllText(Path.Combine(dir, "model.json"), File.ReadAllText(Path.Combine(dir, "model.json")).Replace("\"z-duplicate\"", "\"tiny-test\"")));

            using var registry = Open(root);
            Assert.Equal(8, registry.Entries.Count);
            var ok = registry.Find("tiny-test");
            Assert.NotNull(ok);
            Assert.Equal(ModelStatus.Ready, ok!.Status);
            Assert.NotNull(ok.Model);
            Assert.Equal("CPU", ok.Model!.ExecutionProvider);

            var badJson = registry.Find("bad-json")!;
            Assert.Equal(ModelStatus.Failed, badJson.Status);
            Assert.Contains("invalid JSON", badJson.Error);
            var truncated = registry.Find("truncated-onnx")!;
            Assert.Equal(ModelStatus.Failed, truncated.Status);
            Assert.Contains("decoder.onnx", truncated.Error);
            Assert.Null(truncated.Model);
            Assert.Contains("format_version 7", registry.Find("future-format")!.Error);
            var shortWeights = registry.Find("truncated-weights")!;
            Assert.Equal(ModelStatus.Failed, shortWeights.Status);
            Assert.Contains("weights file 'weights.data' has", shortWeights.Error);
            Assert.Contains("truncated", shortWeights.Error);
            Assert.Contains("weights file 'weights.data' does not exist", registry.Find("missing-weights")!.Error);
            Assert.Contains("model.json not found", registry.Find("no-manifest")!.Error);
            Assert.Null(registry.Find("nope"));
            var duplicate = registry.Entries.Single(e => e.Directory.EndsWith("z-duplicate", StringComparison.Ordinal));
            Assert.Equal(ModelStatus.Failed, duplicate.Status);
            Assert.Contains("already served", duplicate.Error);
            Assert.Same(ok, registry.Find("tiny-test"));
        }
        finally
        {
            Directory.Delete(root, recursive: true);
        }
    }

    [Fact]
    public void MissingModelsFolderGivesAnEmptyRegistry()
    {
        using var registry = Open(Path.Combine(Path.GetTempPath(), "igpt-missing-" + Guid.NewGuid().ToString("N")));
        Assert.Empty(registry.Entries);
    }
}
