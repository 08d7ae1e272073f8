using Microsoft.Extensions.Logging.Abstractions;

namespace IGpt.Inference.Tests;

/// <summary>
/// Row lanes (StepPath.Lanes, run by LaneRunner): a step's rows split between threads, each running its share through the
/// one-thread session concurrently, compute what one run over all rows computes.
/// </summary>
public class RowLaneTests
{
    private static IGptModel Load(string dir, int laneRows, int maxBatch = 5)
    {
        var o = Fixture.CpuOptions(maxBatch);
        o.IntraOpThreads = 2;
        o.SingleThreadStepFlops = 0;
        o.SegmentedStepRows = 0;
        o.LaneStepRows = laneRows;
        return IGptModel.Load(dir, o, NullLogger.Instance);
    }

    [Fact]
    public void LaneStepsMatchOneRunOverAllRows()
    {
        using var single = Load(Fixture.PackageDir, laneRows: 0);
        using var lanes = Load(Fixture.PackageDir, laneRows: 2);
        Assert.Equal(0, single.Decoder.Plan.LaneStepRows);
        Assert.Equal(2, lanes.Decoder.Plan.LaneStepRows);
        var m = single.Manifest;
        int v = m.VocabSize, rows = 5;
        var rng = new Random(3);
        // Rows at different lengths: slot r holds a prompt of 3 + 4r tokens.
        var positions = new int[rows];
        foreach (var model in new[] { single, lanes })
            for (int r = 0; r < rows; r++)
            {
                var prompt = new int[3 + 4 * r];
                prompt[0] = m.SosTokenId;
                for (int i = 1; i < prompt.Length; i++) prompt[i] = (i * 7 + r) % m.PaletteSize;
                model.Decoder.Prefill(prompt, 1, r);
                positions[r] = prompt.Length;
            }
        var tokens = new int[rows];
        for (int step = 0; step < 20; step++)
        {
            for (int r = 0; r < rows; r++) tokens[r] = rng.Next(m.PaletteSize);
            int n = step % 4 == 3 ? 1 : rows;  // a one-row step between: below the threshold, the decoder session
            var expected = single.Decoder.Step(n, tokens.AsSpan(0, n), positions.AsSpan(0, n)).ToArray();
            long before = GC.GetAllocatedBytesForCurrentThread();
            var logits = lanes.Decoder.Step(n, tokens.AsSpan(0, n), positions.AsSpan(0, n));
            long allocated = GC.GetAllocatedBytesForCurrentThread() - before;
            if (step > 3) Assert.Equal(0, allocated);  // bindings are made by the first step of each shape
            var actual = logits.ToArray();
            for (int r = 0; r < n; r++)
                DecoderTests.AssertClose(expected.AsSpan(r * v, v), actual.AsSpan(r * v, v), 1e-5, $"step {step} row {r}");
            for (int r = 0; r < n; r++) positions[r]++;  // rows a step leaves out keep their length
        }
        Assert.Equal(15, lanes.Decoder.LaneSteps);
        Assert.Equal(0, single.Decoder.LaneSteps);
    }

    [Fact]
    public void LanesNeedSeveralThreadsAndSmallWeights()
    {
        var manifest = ModelManifest.Load(Fixture.PackageDir);
        var o = Fixture.CpuOptions();
        o.IntraOpThreads = 2;
        o.LaneStepRows = 3;
        Assert.Equal(3, new StepPlanner(o).LaneStepRows(manifest));
        o.IntraOpThreads = 1;
        Assert.Equal(0, new StepPlanner(o).LaneStepRows(manifest));
        o.IntraOpThreads = 2;
        o.LaneMaxWeightBytes = 1000;  // the tiny model's matmul weights are ~100 KB
        Assert.Equal(0, new StepPlanner(o).LaneStepRows(manifest));
        o.LaneMaxWeightBytes = 16L << 20;
        o.LaneStepRows = 0;
        Assert.Equal(0, new StepPlanner(o).LaneStepRows(manifest));
    }
}
