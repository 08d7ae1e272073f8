namespace IGpt.Inference.Tests;

/// <summary>
/// One-row decode steps on the library's kernels (Inference:OneRowKernels: OneRowStep, RowKernels) compute what the decoder
/// graph and the step segments compute, over every cache type, on one thread or two, and allocate nothing; a package whose
/// weights do not fit them keeps the sessions with a reason.
/// </summary>
public unsafe class OneRowStepTests
{
    private static bool Runs => OneRowStep.Supported && CachedAttention.CanVectorize(16);

    private static string Shipped(string id) => Path.Combine(Fixture.ShippedModelsDir, id);

    private static IGptModel Load(string dir, string kvCacheType, bool kernels, int threads = 2, int maxBatch = 2)
    {
        var o = KvCacheCompressionTests.Options(kvCacheType, maxBatch, threads, oneRowKernels: kernels);
        return IGptModel.Load(dir, o);
    }

    [Fact]
    public void ShippedPackagesMatchTheirParityThroughTheKernels()
    {
        foreach (var dir in Directory.GetDirectories(Fixture.ShippedModelsDir).Order())
        {
            if (!File.Exists(Path.Combine(dir, "model.json"))) continue;
            using var model = Load(dir, KvCacheTypes.Float32, kernels: true, maxBatch: 1);
            var d = model.Decoder;
            Assert.Equal(Runs, d.Plan.OneRowKernels);
            if (!Runs) continue;
            var parity = Fixture.ReadParity(dir);
            DecoderTests.AssertPrefillAndDecodeMatch(d, parity, $"{Path.GetFileName(dir)} kernels ");
            Assert.Equal(parity.DecodeTokens.Length, d.OneRowKernelSteps);
            Assert.Equal(0, d.SegmentedSteps + d.LaneSteps);
        }
    }

    public static TheoryData<string, string> Caches()
    {
        var data = new TheoryData<string, string>();
        foreach (var type in new[] { KvCacheTypes.Float32, KvCacheTypes.Float16, KvCacheTypes.Int8 })
        {
            data.Add(Shipped("fashion-mnist-14"), type);   // head size 32, 196 positions
            data.Add(Path.GetFullPath(Path.Combine(Fixture.ShippedModelsDir, "..", "tests", "fixtures", "hf-tiny-package")), type);  // head size 16, 1,024 positions
        }
        return data;
    }

    /// <summary>
    /// From one prefill, one-row steps on the kernels against the same steps on the sessions' path with the same cache type
    /// (the graph for float32; step segments, whose attention the kernels share, for a compressed cache): logits within
    /// float rounding of each other at every step, and the kernels on one thread bit for bit those on two (each column and
    /// head is computed the same whichever thread takes it).
    /// </summary>
    [Theory]
    [MemberData(nameof(Caches))]
    public void KernelStepsMatchTheSessionsAndEveryThreadCount(string dir, string type)
    {
        if (!Runs) return;
        using var sessions = Load(dir, type, kernels: false);
        using var two = Load(dir, type, kernels: true, threads: 2);
        using var one = Load(dir, type, kernels: true, threads: 1);
        Assert.True(two.Decoder.Plan.OneRowKernels && one.Decoder.Plan.OneRowKernels);
        Assert.False(sessions.Decoder.Plan.OneRowKernels);
        var m = sessions.Manifest;
        int v = m.VocabSize, p = m.Architecture.NPositions;
        var rng = new Random(11);
        int length = Math.Min(40, p / 3);
        int[] prompt = [m.SosTokenId, .. Enumerable.Range(1, length - 1).Select(_ => rng.Next(m.PaletteSize))];
        foreach (var model in new[] { sessions, two, one }) model.Decoder.Prefill(prompt, 1);
        double worst = 0;
        int steps = Math.Min(p - length, 150);   // past a block of 16 positions and a chunk of 64, where the kernels' loops change
        for (int j = 0; j < steps; j++)
        {
            int[] token = [rng.Next(m.PaletteSize)], position = [length + j];
            var expected = sessions.Decoder.Step(1, token, position).ToArray();
            var actual = two.Decoder.Step(1, token, position).ToArray();
            var single = one.Decoder.Step(1, token, position).ToArray();
            for (int i = 0; i < v; i++)
                if (expected[i] > -1e8f) worst = Math.Max(worst, Math.Abs(expected[i] - actual[i]));
                else Assert.True(actual[i] <= -1e8f, $"{type} step {j}: SOS must stay masked");
            Assert.True(actual.AsSpan().SequenceEqual(single), $"{type} step {j}: one thread and two differ");
        }
        // float32: rounding alone. A compressed cache: a key or value summed in another order may round to the next fp16
        // or int8 step, which both paths then read; still far inside the compressed cache's own drift from float32
        // (KvCacheCompressionTests: 0.02 and 0.25).
        double bound = type == KvCacheTypes.Float32 ? 2e-4 : type == KvCacheTypes.Float16 ? 2e-3 : 1e-2;
        Console.WriteLine($"{Path.GetFileName(dir)} {type}: kernels against sessions, largest logit difference {worst:G3}");
        Assert.True(worst <= bound, $"{type}: largest logit difference {worst} (bound {bound})");
        Assert.Equal(steps, two.Decoder.OneRowKernelSteps);
        Assert.Equal(steps, one.Decoder.OneRowKernelSteps);
        if (type == KvCacheTypes.Float32)
        {
            // The kernels stored every new key and value where GroupQueryAttention stores them.
            var a = System.Runtime.InteropServices.MemoryMarshal.Cast<byte, float>(sessions.Decoder.SaveSlot(0, length + steps));
            var b = System.Runtime.InteropServices.MemoryMarshal.Cast<byte, float>(two.Decoder.SaveSlot(0, length + steps));
            Assert.Equal(a.Length, b.Length);
            for (int i = 0; i < a.Length; i++) Assert.True(Math.Abs(a[i] - b[i]) <= 1e-4, $"cache float {i}: {a[i]} vs {b[i]}");
        }
        // Then a multi-row step over what the kernels cached: the other paths read it as they would their own.
        foreach (var model in new[] { sessions, two }) model.Decoder.CopySlot(0, 1, length + steps);
        int[] tokens = [1, 2], positions = [length + steps, length + steps];
        DecoderTests.AssertClose(sessions.Decoder.Step(2, tokens, positions).ToArray(), two.Decoder.Step(2, tokens, positions).ToArray(), bound,
            $"{type} two rows after the kernels");
    }

    [Fact]
    public void KernelStepsAllocateNothing()
    {
        if (!Runs) return;
        using var model = Load(Shipped("fashion-mnist-14"), KvCacheTypes.Int8, kernels: true);
        var d = model.Decoder;
        d.Prefill([model.Manifest.SosTokenId, 1, 2], 1);
        for (int t = 3; t < 20; t++) d.Step(1, [1], [t]);   // warm-up
        int[] token = [1], position = [0];
        long before = GC.GetAllocatedBytesForCurrentThread();
        for (int t = 20; t < 120; t++)
        {
            position[0] = t;
            d.Step(1, token, position);
        }
        Assert.Equal(0, GC.GetAllocatedBytesForCurrentThread() - before);
        Assert.Equal(117, d.OneRowKernelSteps);
    }

    [Fact]
    public void APackageWhoseWeightsDoNotFitKeepsTheSessionsWithAReason()
    {
        if (!Runs) return;
        var manifest = ModelManifest.Load(Shipped("fashion-mnist-14"));
        using var weights = PackageWeights.For(manifest)!;
        var tensors = weights.Float32Tensors(manifest.Files.Decoder.Cpu.Path);
        Assert.NotNull(OneRowStepProbe(manifest, tensors, out _));
        var missing = new Dictionary<string, (IntPtr, long[])>(tensors);
        missing.Remove("transformer.h.1.mlp.c_proj.weight");
        Assert.Null(OneRowStepProbe(manifest, missing, out var reason));
        Assert.Contains("'transformer.h.1.mlp.c_proj.weight' is not in the package's weights", reason);
        var reshaped = new Dictionary<string, (IntPtr, long[])>(tensors) { ["lm_head.sos_mask"] = (tensors["lm_head.sos_mask"].Address, [1, 17]) };
        Assert.Null(OneRowStepProbe(manifest, reshaped, out reason));
        Assert.Contains("'lm_head.sos_mask' is [1, 17], not [17]", reason);

        // Weights not shared (each session maps its own): nothing in memory for the kernels, so they are not planned.
        var o = KvCacheCompressionTests.Options(KvCacheTypes.Int8, oneRowKernels: true);
        o.ShareWeights = false;
        using var model = IGptModel.Load(Shipped("fashion-mnist-14"), o);
        Assert.False(model.Decoder.Plan.OneRowKernels);
    }

    /// <summary>OneRowStep.Create without a decoder: the tensors are checked before anything else is touched.</summary>
    private static OneRowStep? OneRowStepProbe(ModelManifest manifest, IReadOnlyDictionary<string, (IntPtr, long[])> tensors, out string? reason)
    {
        using var buffers = new DecoderBuffers(new HostMemory(), manifest.Architecture.NLayer, manifest.Architecture.NHead * manifest.Architecture.NPositions * manifest.Architecture.HeadSize,
            manifest.Architecture.HeadSize, KvElement.Float32, 1, manifest.Architecture.NPositions, manifest.VocabSize);
        var step = OneRowStep.Create(manifest, buffers, null, tensors, out reason);
        step?.Dispose();
        return step;
    }

    [Theory]
    [InlineData(64, 17, 0, 17)]      // a head: one block of 16, then a single column
    [InlineData(200, 384, 64, 384)]  // blocks of 128 and 64 from a column past the first
    [InlineData(128, 1024, 0, 1000)] // eight of 128 less the end: 64s, 16s and single columns
    [InlineData(3, 16, 0, 16)]
    public void MatrixVectorProductsMatchAReferenceForEveryOutput(int k, int n, int c0, int c1)
    {
        if (!OneRowStep.Supported) return;
        var rng = new Random(k * n);
        float[] x = Enumerable.Range(0, k).Select(_ => (float)(rng.NextDouble() - 0.5)).ToArray();
        float[] w = Enumerable.Range(0, k * n).Select(_ => (float)(rng.NextDouble() - 0.5)).ToArray();
        float[] b = Enumerable.Range(0, n).Select(_ => (float)(rng.NextDouble() - 0.5)).ToArray();
        float[] start = Enumerable.Range(0, n).Select(_ => (float)(rng.NextDouble() - 0.5)).ToArray();
        foreach (var output in Enum.GetValues<RowOutput>())
        {
            var y = (float[])start.Clone();
            fixed (float* px = x, pw = w, pb = b, py = y)
                RowKernels.Multiply(px, pw, k, n, c0, c1, pb, py, output);
            for (int c = 0; c < n; c++)
            {
                if (c < c0 || c >= c1) { Assert.Equal(start[c], y[c]); continue; }   // outside the block: untouched
                double z = b[c];
                for (int i = 0; i < k; i++) z += (double)x[i] * w[i * n + c];
                double expected = output switch
                {
                    RowOutput.Add => start[c] + z,
                    RowOutput.QuickGelu => z / (1 + Math.Exp(-1.702 * z)),
                    _ => z,
                };
                Assert.True(Math.Abs(expected - y[c]) <= 1e-5 * Math.Max(1, Math.Sqrt(k)), $"{output} column {c}: {y[c]} vs {expected}");
            }
        }
    }

    [Theory]
    [InlineData(128)]
    [InlineData(40)]   // 16s, then a scalar tail
    public void RmsNormIsIGptsNorm(int n)
    {
        if (!OneRowStep.Supported) return;
        var rng = new Random(n);
        float[] x = Enumerable.Range(0, n).Select(_ => (float)(rng.NextDouble() * 4 - 1)).ToArray();
        float[] g = Enumerable.Range(0, n).Select(_ => (float)rng.NextDouble()).ToArray();
        var h = new float[n];
        fixed (float* px = x, pg = g, ph = h) RowKernels.RmsNorm(px, pg, n, 1e-5f, ph);
        double r = 1 / Math.Sqrt(x.Sum(v => (double)v * v) / n + 1e-5);   // no mean subtracted, no bias
        for (int i = 0; i < n; i++) Assert.True(Math.Abs(x[i] * r * g[i] - h[i]) <= 1e-5, $"{i}: {h[i]} vs {x[i] * r * g[i]}");
    }
}
