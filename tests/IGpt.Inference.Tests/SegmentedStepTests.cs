using Microsoft.Extensions.Logging.Abstractions;

namespace IGpt.Inference.Tests;

/// <summary>
/// Decode steps run as step segments with the library's attention (SegmentedStep, CachedAttention) compute what
/// the single decoder graph (GroupQueryAttention) computes: per row, with and without shared prompt entries.
/// </summary>
public class SegmentedStepTests
{
    private const double Tolerance = 2e-4;

    private static IGptModel Load(string dir, int segmentedRows, bool portable = false, int threads = 2, int maxBatch = 6)
    {
        var o = Fixture.CpuOptions(maxBatch);
        o.IntraOpThreads = threads;
        o.SingleThreadStepFlops = 0;
        o.SegmentedStepRows = segmentedRows;
        o.KernelStepRows = 0;   // every step as segments or the graph (KernelStepTests covers the kernels)
        // Segments past the cost rule, so that short test caches run them too.
        return new TestPlanner(o, portableAttention: portable) { SegmentCost = TestPlanner.AlwaysSegments }.Load(dir);
    }

    public static TheoryData<string, bool> Packages()
    {
        var data = new TheoryData<string, bool> { { Fixture.PackageDir, true } };  // head size 8: portable loops only
        if (CachedAttention.CanVectorize(32))
        {
            data.Add(Path.Combine(Fixture.ShippedModelsDir, "fashion-mnist-14"), false);  // head size 32
            data.Add(Path.GetFullPath(Path.Combine(Fixture.ShippedModelsDir, "..", "tests", "fixtures", "hf-tiny-package")), false);  // head size 16, 1,024 positions
        }
        data.Add(Path.Combine(Fixture.ShippedModelsDir, "fashion-mnist-14"), true);
        return data;
    }

    [Theory]
    [MemberData(nameof(Packages))]
    public void SegmentedStepsMatchTheSingleGraph(string dir, bool portable)
    {
        using var single = Load(dir, segmentedRows: 0);
        using var segmented = Load(dir, segmentedRows: 1, portable);
        Assert.Equal(0, single.Decoder.Plan.SegmentedStepRows);
        Assert.Equal(1, segmented.Decoder.Plan.SegmentedStepRows);
        var m = single.Manifest;
        int v = m.VocabSize, p = m.Architecture.NPositions;
        var rng = new Random(7);
        var layout = SharedPromptRows.Prefill(m, rng, single.Decoder, segmented.Decoder);
        int rows = SharedPromptRows.Rows, lengthA = layout.LengthA;
        var (groups, shared, positions) = (layout.Groups, layout.SharedLengths, layout.Positions);
        var tokens = new int[rows];
        int steps = Math.Min(40, p - lengthA);
        for (int step = 0; step < steps; step++)
        {
            for (int r = 0; r < rows; r++) tokens[r] = rng.Next(m.PaletteSize);
            var expected = single.Decoder.Step(rows, tokens, positions).ToArray();
            // Alternate: the shared entries read once per group, and every row on its own.
            var actual = step % 2 == 0
                ? segmented.Decoder.Step(rows, tokens, positions, groups, shared).ToArray()
                : segmented.Decoder.Step(rows, tokens, positions).ToArray();
            for (int r = 0; r < rows; r++)
                DecoderTests.AssertClose(expected.AsSpan(r * v, v), actual.AsSpan(r * v, v), Tolerance, $"step {step} row {r}");
            for (int r = 0; r < rows; r++) positions[r]++;
        }
        Assert.Equal(steps, segmented.Decoder.SegmentedSteps);
        Assert.Equal(0, single.Decoder.SegmentedSteps);
        // The caches themselves agree (every new key and value was written where GroupQueryAttention writes it).
        var a = single.Decoder.SaveSlot(4, positions[4]);
        var b = segmented.Decoder.SaveSlot(4, positions[4]);
        Assert.Equal(a.Length, b.Length);
        var fa = System.Runtime.InteropServices.MemoryMarshal.Cast<byte, float>(a);
        var fb = System.Runtime.InteropServices.MemoryMarshal.Cast<byte, float>(b);
        for (int i = 0; i < fa.Length; i++) Assert.True(Math.Abs(fa[i] - fb[i]) <= 1e-4, $"cache float {i}: {fa[i]} vs {fb[i]}");
    }

    [Fact]
    public void ShippedPackagesMatchTheirParityThroughSegments()
    {
        foreach (var dir in Directory.GetDirectories(Fixture.ShippedModelsDir).Order())
        {
            if (!File.Exists(Path.Combine(dir, "model.json"))) continue;
            using var model = Load(dir, segmentedRows: 1, portable: !CachedAttention.CanVectorize(32), maxBatch: 1);
            Assert.Equal(1, model.Decoder.Plan.SegmentedStepRows);
            var parity = Fixture.ReadParity(dir);
            DecoderTests.AssertPrefillAndDecodeMatch(model.Decoder, parity, $"{Path.GetFileName(dir)} segmented ");
            Assert.Equal(parity.DecodeTokens.Length, model.Decoder.SegmentedSteps);
        }
    }

    [Fact]
    public void StepsBelowTheThresholdUseTheSingleGraphAndBothAllocateNothing()
    {
        var parity = Fixture.ReadParity();
        using var model = Load(Fixture.PackageDir, segmentedRows: 3, portable: true, maxBatch: 4);
        var d = model.Decoder;
        Assert.Equal(3, d.Plan.SegmentedStepRows);
        long steps = 0;
        DecoderTests.AssertParityAtEachBatchSize(d, parity, maxRows: 4, sharePrompt: true, afterStep: rows =>
        {
            Assert.Equal(rows >= 3 ? steps + 1 : steps, d.SegmentedSteps);
            steps = d.SegmentedSteps;
        });
    }

    [Fact]
    public void BadGroupsAreRefused()
    {
        using var model = Load(Fixture.PackageDir, segmentedRows: 1, portable: true, maxBatch: 4);
        var d = model.Decoder;
        d.Prefill([8, 1, 2], 1);
        d.ReplicateSlot0(3, 3);
        // A group must name an earlier row that is its own group's first, with the same shared length.
        Assert.Throws<ArgumentException>(() => d.Step(3, [1, 1, 1], [3, 3, 3], [0, 2, 2], [3, 3, 3]));
        Assert.Throws<ArgumentException>(() => d.Step(3, [1, 1, 1], [3, 3, 3], [0, 0, 1], [3, 3, 3]));
        Assert.Throws<ArgumentException>(() => d.Step(3, [1, 1, 1], [3, 3, 3], [0, 0, 0], [3, 2, 3]));
        Assert.Throws<ArgumentException>(() => d.Step(3, [1, 1, 1], [3, 3, 3], [0, 0], [3, 3]));
    }

    [Fact]
    public void PackagesWithoutSegmentsAndOptionOffKeepTheSingleGraph()
    {
        string dir = Fixture.CopyToTemp(out var root);
        try
        {
            var json = File.ReadAllText(Path.Combine(dir, "model.json"));
            var node = System.Text.Json.Nodes.JsonNode.Parse(json)!;
            node["files"]!["decoder"]!["cpu"]!.AsObject().Remove("step_segments");
            File.WriteAllText(Path.Combine(dir, "model.json"), node.ToJsonString());
            using (var model = Load(dir, segmentedRows: 1, portable: true))
                Assert.Equal(0, model.Decoder.Plan.SegmentedStepRows);
            using (var model = Load(Fixture.PackageDir, segmentedRows: 0, portable: true))
                Assert.Equal(0, model.Decoder.Plan.SegmentedStepRows);
        }
        finally { Directory.Delete(root, true); }
    }

    [Theory]
    // (layers, width, vocab, rows, position): the shapes measured in benchmarks/README.md.
    [InlineData(8, 128, 17, 4, 588, true)]     // fashion-mnist-28, batch 4: 1.65x
    [InlineData(8, 128, 17, 16, 588, true)]
    [InlineData(6, 128, 17, 2, 195, false)]    // fashion-mnist-14, batch 2: 0.67x (short caches, few rows)
    [InlineData(6, 128, 17, 4, 195, false)]    // batch 4: 1.0x
    [InlineData(6, 128, 17, 8, 98, true)]      // batch 8: 1.5x, though its caches are short
    [InlineData(6, 128, 17, 16, 195, true)]    // batch 16: 1.4-1.7x
    [InlineData(8, 256, 17, 4, 588, false)]    // 256-wide batch 4: caches 1.5x the weights
    [InlineData(8, 256, 17, 8, 392, true)]     // 256-wide batch 8: 1.1x
    [InlineData(8, 256, 17, 16, 588, true)]    // 256-wide batch 16: 1.3x
    [InlineData(8, 512, 513, 4, 768, false)]   // 512-wide batch 4: 0.73x
    [InlineData(8, 512, 513, 7, 512, false)]   // under 8 rows the caches decide: 1.2x the weights here
    [InlineData(8, 128, 17, 1, 783, false)]    // one row: its cache alone is under 3x the weights
    public void SegmentsRunWhereRowsAreManyOrCachesLong(int layers, int width, int vocab, int rows, int position, bool expected)
    {
        long weights = 4L * (12L * layers * width * width + (long)width * vocab);
        var positions = Enumerable.Repeat(position, rows).ToArray();
        Assert.Equal(expected, SegmentCostRule.Default.PaysOff(layers, width, weights, positions));
    }
}
