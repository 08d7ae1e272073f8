using Microsoft.Extensions.Caching.Memory;

namespace IGpt.Inference.Tests;

public class DecoderTests
{
    internal static void AssertClose(ReadOnlySpan<float> expected, ReadOnlySpan<float> actual, double tolerance, string what)
    {
        Assert.Equal(expected.Length, actual.Length);
        for (int i = 0; i < expected.Length; i++)
        {
            if (expected[i] <= -1e8f) { Assert.True(actual[i] <= -1e8f, $"{what}[{i}] should be the SOS mask"); continue; }
            Assert.True(Math.Abs(expected[i] - actual[i]) <= tolerance, $"{what}[{i}]: expected {expected[i]}, got {actual[i]}");
        }
    }

    /// <summary>Prefills the parity prompt into slot 0 and decodes its tokens one step at a time, each against PyTorch's logits.</summary>
    internal static void AssertPrefillAndDecodeMatch(KvCacheDecoder d, Parity parity, string what)
    {
        int v = d.VocabSize, s = parity.Prompt.Length;
        var prefill = d.Prefill(parity.Prompt, 1).ToArray();
        for (int i = 0; i < s; i++)
            AssertClose(parity.PrefillLogits[i], prefill.AsSpan(i * v, v), parity.Tolerance, $"{what}prefill[{i}]");
        for (int j = 0; j < parity.DecodeTokens.Length; j++)
            AssertClose(parity.DecodeLogits[j], d.Step(1, [parity.DecodeTokens[j]], [s + j]), parity.Tolerance, $"{what}decode[{j}]");
    }

    [Fact]
    public void KvCachedPrefillAndDecodeMatchPyTorchParity()
    {
        var parity = Fixture.ReadParity();
        using var model = Fixture.LoadCpu();
        Assert.Equal("CPU", model.ExecutionProvider);
        Assert.Contains("UseCuda is off", model.ProviderReason);
        AssertPrefillAndDecodeMatch(model.Decoder, parity, "");
    }

    [Fact]
    public void DecodeStepsAtBatchSizeMatchParityInEveryRow()
    {
        var parity = Fixture.ReadParity();
        using var model = Fixture.LoadCpu();
        var d = model.Decoder;
        int v = d.VocabSize, s = parity.Prompt.Length, rows = 3;
        d.Prefill(parity.Prompt, 1);
        d.ReplicateSlot0(rows, s);
        for (int j = 0; j < parity.DecodeTokens.Length; j++)
        {
            int t = parity.DecodeTokens[j];
            var logits = d.Step(rows, [t, t, t], [s + j, s + j, s + j]).ToArray();
            for (int r = 0; r < rows; r++)
                AssertClose(parity.DecodeLogits[j], logits.AsSpan(r * v, v), parity.Tolerance, $"row {r} decode[{j}]");
        }
    }

    [Fact]
    public void SmallStepsRunOnAOneThreadSessionAndMatchParity()
    {
        // The tiny model's step bound is 66,112 FLOPs a row (49,728 of matmuls, 16,384 of attention over 64
        // positions): a 140,000-FLOP limit puts steps of 1 and 2 rows on the one-thread session and steps of 3
        // and 4 on the two-thread one; every row matches parity either way.
        var parity = Fixture.ReadParity();
        var o = Fixture.CpuOptions(maxBatch: 4);
        o.IntraOpThreads = 2;
        o.SingleThreadStepFlops = 140_000;
        using var model = IGptModel.Load(Fixture.PackageDir, o, Microsoft.Extensions.Logging.Abstractions.NullLogger.Instance);
        var d = model.Decoder;
        Assert.Equal(2, d.Plan.SmallStepRows);
        AssertParityAtEachBatchSize(d, parity, maxRows: 4);
    }

    /// <summary>
    /// For rows = 1..maxRows: prefills the parity prompt into slot 0, copies it to the other rows and decodes the parity
    /// tokens in every row. Each row matches PyTorch, and after the first step at a size (which makes its bindings) a step
    /// allocates nothing. sharePrompt: the step is told the rows are one request's samples (one group, the prompt shared);
    /// afterStep(rows) runs after each step.
    /// </summary>
    internal static void AssertParityAtEachBatchSize(KvCacheDecoder d, Parity parity, int maxRows, bool sharePrompt = false,
        Action<int>? afterStep = null)
    {
        int v = d.VocabSize, s = parity.Prompt.Length;
        int[] tokens = new int[maxRows], positions = new int[maxRows], groups = new int[maxRows], shared = new int[maxRows];
        Array.Fill(shared, s);
        for (int rows = 1; rows <= maxRows; rows++)
        {
            d.Prefill(parity.Prompt, 1);
            d.ReplicateSlot0(rows, s);
            for (int j = 0; j < parity.DecodeTokens.Length; j++)
            {
                Array.Fill(tokens, parity.DecodeTokens[j]);
                Array.Fill(positions, s + j);
                long before = GC.GetAllocatedBytesForCurrentThread();
                var logits = sharePrompt
                    ? d.Step(rows, tokens.AsSpan(0, rows), positions.AsSpan(0, rows), groups.AsSpan(0, rows), shared.AsSpan(0, rows))
                    : d.Step(rows, tokens.AsSpan(0, rows), positions.AsSpan(0, rows));
                if (j > 0) Assert.Equal(0, GC.GetAllocatedBytesForCurrentThread() - before);  // bindings are made once per size
                afterStep?.Invoke(rows);
                for (int r = 0; r < rows; r++)
                    AssertClose(parity.DecodeLogits[j], logits.Slice(r * v, v), parity.Tolerance, $"{rows} rows: row {r} decode[{j}]");
            }
        }
    }

    [Theory]
    [InlineData(2, 132_224, 4, 2)]     // exactly two rows
    [InlineData(2, 132_223, 4, 1)]
    [InlineData(2, 66_111, 4, 0)]      // not even one row fits
    [InlineData(2, 10_000_000, 4, 4)]  // capped at MaxBatch
    [InlineData(1, 10_000_000, 4, 0)]  // one thread already: no second session
    [InlineData(2, 0, 4, 0)]           // off
    public void SmallStepRowsFollowTheFlopLimit(int threads, long flops, int maxBatch, int expected)
    {
        var o = Fixture.CpuOptions(maxBatch);
        o.IntraOpThreads = threads;
        o.SingleThreadStepFlops = flops;
        Assert.Equal(expected, new StepPlanner(o).SmallStepRows(ModelManifest.Load(Fixture.PackageDir)));
    }

    [Fact]
    public void SlotsAtDifferentLengthsShareADecodeStep()
    {
        // The continuous-batching case: a new prompt is prefilled into a free slot while other slots
        // are mid-decode, then one step feeds every slot at its own position.
        var tol = Fixture.ReadParity().Tolerance;
        using var model = Fixture.LoadCpu(maxBatch: 4);
        var d = model.Decoder;
        int v = d.VocabSize;
        var a = new List<int> { 8, 1, 2, 3, 4 };
        var b = new List<int> { 8, 6, 5 };
        d.Prefill(a.ToArray(), 1);
        d.ReplicateSlot0(2, a.Count);
        d.Step(2, [7, 7], [a.Count, a.Count]);
        a.Add(7);
        d.Prefill(b.ToArray(), 1, firstSlot: 2);
        var logits = d.Step(3, [0, 0, 3], [a.Count, a.Count, b.Count]).ToArray();
        a.Add(0);
        b.Add(3);
        var refA = model.ForwardWithoutCache(a.ToArray());
        var refB = model.ForwardWithoutCache(b.ToArray());
        AssertClose(refA.AsSpan((a.Count - 1) * v, v), logits.AsSpan(0, v), tol, "slot 0");
        AssertClose(refA.AsSpan((a.Count - 1) * v, v), logits.AsSpan(v, v), tol, "slot 1");
        AssertClose(refB.AsSpan((b.Count - 1) * v, v), logits.AsSpan(2 * v, v), tol, "slot 2");

        // A snapshot restored into another slot continues identically.
        var snapshot = d.SaveSlot(2, b.Count);
        d.LoadSlots(snapshot, b.Count, 1, firstSlot: 0);
        var again = d.Step(1, [4], [b.Count]).ToArray();
        b.Add(4);
        var refB2 = model.ForwardWithoutCache(b.ToArray());
        AssertClose(refB2.AsSpan((b.Count - 1) * v, v), again, tol, "restored slot");
    }

    [Fact]
    public void ForwardWithoutCacheMatchesParity()
    {
        var parity = Fixture.ReadParity();
        using var model = Fixture.LoadCpu();
        int v = model.Manifest.VocabSize;
        var full = model.ForwardWithoutCache([.. parity.Prompt, .. parity.DecodeTokens]);
        for (int i = 0; i < parity.Prompt.Length; i++)
            AssertClose(parity.PrefillLogits[i], full.AsSpan(i * v, v), parity.Tolerance, $"prefill[{i}]");
        for (int j = 0; j < parity.DecodeTokens.Length; j++)
            AssertClose(parity.DecodeLogits[j], full.AsSpan((parity.Prompt.Length + j) * v, v), parity.Tolerance, $"decode[{j}]");
    }

    internal static int[] GreedyWithoutCache(IGptModel model, int[] prompt)
    {
        var m = model.Manifest;
        var seq = new List<int> { m.SosTokenId };
        seq.AddRange(prompt);
        var image = new List<int>(prompt);
        while (image.Count < m.TokensPerImage)
        {
            var logits = model.ForwardWithoutCache(seq.ToArray());
            int next = Sampler.ArgMax(logits.AsSpan((seq.Count - 1) * m.VocabSize, m.PaletteSize));
            image.Add(next);
            seq.Add(next);
        }
        return [.. image];
    }

    [Theory]
    [InlineData(0)]
    [InlineData(3)]
    public async Task KvCachedGreedyEqualsFullForwardsWithoutCache(int promptRows)
    {
        using var model = Fixture.LoadCpu();
        var prompt = Enumerable.Range(0, promptRows * 8).Select(i => (i * 5 + 3) % 8).ToArray();
        var expected = GreedyWithoutCache(model, prompt);
        var result = await model.CompleteAsync(new CompletionRequest(prompt, 3, SamplingOptions.Greedy, 1), CancellationToken.None);
        Assert.Equal(3, result.Images.Length);
        foreach (var image in result.Images) Assert.Equal(expected, image);
        Assert.Equal(prompt.Length, result.PromptTokens);
        Assert.Equal(64 - prompt.Length, result.GeneratedTokens);
    }

    [Fact]
    public async Task SameSeedGivesSameImagesAndKeepsThePrompt()
    {
        using var model = Fixture.LoadCpu();
        var prompt = Enumerable.Range(0, 16).Select(i => i % 8).ToArray();
        var request = new CompletionRequest(prompt, 4, new SamplingOptions(1.2f, TopK: 6, TopP: 0.95f), 1234);
        var a = await model.CompleteAsync(request, CancellationToken.None);
        var b = await model.CompleteAsync(request, CancellationToken.None);
        Assert.Equal(a.Images, b.Images);
        foreach (var image in a.Images)
        {
            Assert.Equal(64, image.Length);
            Assert.Equal(prompt, image[..16]);
            Assert.All(image, t => Assert.InRange(t, 0, 7));
        }
        // Different rows draw from different generators.
        Assert.True(a.Images.Distinct(new SequenceComparer()).Count() > 1);
        var other = await model.CompleteAsync(request with { Seed = 99 }, CancellationToken.None);
        Assert.NotEqual(a.Images, other.Images);
    }

    [Fact]
    public async Task PrefixCacheHitGivesIdenticalResults()
    {
        using var cache = new MemoryCache(new MemoryCacheOptions { SizeLimit = 1 << 24 });
        using var cached = Fixture.LoadCpu(cache: cache);
        using var uncached = Fixture.LoadCpu();
        var prompt = Enumerable.Range(0, 24).Select(i => (i * 3) % 8).ToArray();
        var request = new CompletionRequest(prompt, 3, new SamplingOptions(1f), 5);
        var first = await cached.CompleteAsync(request, CancellationToken.None);
        var second = await cached.CompleteAsync(request, CancellationToken.None);
        var reference = await uncached.CompleteAsync(request, CancellationToken.None);
        Assert.False(first.PrefixCacheHit);
        Assert.True(second.PrefixCacheHit);
        Assert.False(reference.PrefixCacheHit);
        Assert.Equal(first.Images, second.Images);
        Assert.Equal(reference.Images, second.Images);
        var otherPrompt = await cached.CompleteAsync(request with { PromptTokens = [.. prompt[..16]] }, CancellationToken.None);
        Assert.False(otherPrompt.PrefixCacheHit);
    }

    [Fact]
    public async Task RequestsLargerThanMaxBatchRunInChunksDeterministically()
    {
        using var model = Fixture.LoadCpu(maxBatch: 2);
        var request = new CompletionRequest([], 5, new SamplingOptions(1f), 42);
        var a = await model.CompleteAsync(request, CancellationToken.None);
        var b = await model.CompleteAsync(request, CancellationToken.None);
        Assert.Equal(5, a.Images.Length);
        Assert.Equal(a.Images, b.Images);
        Assert.Equal(0, a.PromptTokens);
    }

    [Fact]
    public async Task FullPromptNeedsNoDecoding()
    {
        using var model = Fixture.LoadCpu();
        var prompt = Enumerable.Range(0, 64).Select(i => i % 8).ToArray();
        var r = await model.CompleteAsync(new CompletionRequest(prompt, 2, SamplingOptions.Default, 0), CancellationToken.None);
        Assert.All(r.Images, image => Assert.Equal(prompt, image));
        Assert.Equal(0, r.GeneratedTokens);
    }

    [Fact]
    public async Task BadRequestsAreRejectedAndCancellationStops()
    {
        using var model = Fixture.LoadCpu();
        await Assert.ThrowsAsync<ArgumentException>(() => model.CompleteAsync(new CompletionRequest(new int[5], 1, SamplingOptions.Default, 0), CancellationToken.None));
        await Assert.ThrowsAsync<ArgumentException>(() => model.CompleteAsync(new CompletionRequest(Enumerable.Repeat(8, 8).ToArray(), 1, SamplingOptions.Default, 0), CancellationToken.None));
        await Assert.ThrowsAsync<ArgumentException>(() => model.CompleteAsync(new CompletionRequest(new int[72], 1, SamplingOptions.Default, 0), CancellationToken.None));
        await Assert.ThrowsAsync<ArgumentException>(() => model.CompleteAsync(new CompletionRequest([], 0, SamplingOptions.Default, 0), CancellationToken.None));
        await Assert.ThrowsAsync<ArgumentException>(() => model.CompleteAsync(new CompletionRequest([], 1, new SamplingOptions(TopP: 0), 0), CancellationToken.None));
        using var cts = new CancellationTokenSource();
        cts.Cancel();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => model.CompleteAsync(new CompletionRequest([], 2, SamplingOptions.Default, 0), cts.Token));
    }

    private sealed class SequenceComparer : IEqualityComparer<int[]>
    {
        public bool Equals(int[]? x, int[]? y) => x.AsSpan().SequenceEqual(y);
        public int GetHashCode(int[] obj) => obj.Length == 0 ? 0 : HashCode.Combine(obj[0], obj[^1], obj.Length);
    }
}
