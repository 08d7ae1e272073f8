namespace IGpt.Inference.Tests;

/// <summary>
/// Decode steps on the library's kernels (Inference:KernelStepRows: KernelStep, RowKernels) compute what the decoder graph and
/// the step segments compute, one row or several, with shared prompts or without, over every cache type, on one thread or
/// two, and allocate nothing; a package whose weights do not fit them keeps the sessions with a reason.
/// </summary>
public unsafe class KernelStepTests
{
    private static bool Runs => KernelStep.Supported && CachedAttention.CanVectorize(16);

    private static string Shipped(string id) => Path.Combine(Fixture.ShippedModelsDir, id);

    private static IGptModel Load(string dir, string kvCacheType, int kernelRows, int threads = 2, int maxBatch = 6) =>
        IGptModel.Load(dir, KvCacheCompressionTests.Options(kvCacheType, maxBatch, threads, kernelRows));

    [Fact]
    public void ShippedPackagesMatchTheirParityThroughTheKernels()
    {
        foreach (var dir in Directory.GetDirectories(Fixture.ShippedModelsDir).Order())
        {
            if (!File.Exists(Path.Combine(dir, "model.json"))) continue;
            using var model = Load(dir, KvCacheTypes.Float32, kernelRows: 16, maxBatch: 1);
            var d = model.Decoder;
            Assert.Equal(Runs ? 1 : 0, d.Plan.KernelStepRows);   // at most MaxBatch
            if (!Runs) continue;
            var parity = Fixture.ReadParity(dir);
            DecoderTests.AssertPrefillAndDecodeMatch(d, parity, $"{Path.GetFileName(dir)} kernels ");
            Assert.Equal(parity.DecodeTokens.Length, d.KernelSteps);
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
    /// Six rows (three samples of prompt A, two of B, one of SOS alone), then row 0 alone, on the kernels against the same
    /// steps on the sessions' paths with the same cache type (the graph for float32; step segments, whose attention the
    /// kernels share, for a compressed cache): logits within float rounding of each other at every step, the shared prompts
    /// read once per group or every row on its own; and the kernels on one thread bit for bit those on two (each column and
    /// (group, head) is computed the same whichever thread takes it).
    /// </summary>
    [Theory]
    [MemberData(nameof(Caches))]
    public void KernelStepsMatchTheSessionsAndEveryThreadCount(string dir, string type)
    {
        if (!Runs) return;
        using var sessions = Load(dir, type, kernelRows: 0);
        using var two = Load(dir, type, kernelRows: 6, threads: 2);
        using var one = Load(dir, type, kernelRows: 6, threads: 1);
        Assert.Equal(6, two.Decoder.Plan.KernelStepRows);
        Assert.Equal(6, one.Decoder.Plan.KernelStepRows);
        Assert.Equal(0, sessions.Decoder.Plan.KernelStepRows);
        var m = sessions.Manifest;
        int v = m.VocabSize, p = m.Architecture.NPositions;
        var rng = new Random(11);
        var layout = SharedPromptRows.Prefill(m, rng, sessions.Decoder, two.Decoder, one.Decoder);
        int lengthA = layout.LengthA;
        var (groups, shared, positions) = (layout.Groups, layout.SharedLengths, layout.Positions);
        var tokens = new int[6];
        double worst = 0;
        int steps = 0;
        void Step(int rows, bool grouped)
        {
            for (int r = 0; r < rows; r++) tokens[r] = rng.Next(m.PaletteSize);
            var expected = sessions.Decoder.Step(rows, tokens, positions).ToArray();
            float[] Run(KvCacheDecoder d) => grouped ? d.Step(rows, tokens, positions, groups, shared).ToArray() : d.Step(rows, tokens, positions).ToArray();
            var actual = Run(two.Decoder);
            var single = Run(one.Decoder);
            for (int i = 0; i < rows * v; i++)
                if (expected[i] > -1e8f) worst = Math.Max(worst, Math.Abs(expected[i] - actual[i]));
                else Assert.True(actual[i] <= -1e8f, $"{type} step {steps}: SOS must stay masked");
            Assert.True(actual.AsSpan().SequenceEqual(single), $"{type} step {steps}: one thread and two differ");
            for (int r = 0; r < rows; r++) positions[r]++;
            steps++;
        }
        // Past a block of 16 positions and a chunk of 64, where the kernels' loops change.
        int multi = Math.Min(p - lengthA - 40, 80);
        for (int j = 0; j < multi; j++) Step(6, grouped: j % 2 == 0);
        for (int j = 0; j < 30; j++) Step(1, grouped: false);
        // float32: rounding alone. A compressed cache: a key or value summed in another order may round to the next fp16
        // or int8 step, which both paths then read; with int8 a query or an attention weight may too, as the int8 kernels
        // quantize them every step (fashion-mnist-14 over these 110 steps: about 0.002 for fp16, 0.065 for int8). A quarter
        // of the compressed cache's own bound on its drift from float32 (KvCacheCompressionTests: 0.02 and 0.25) for fp16,
        // half for int8.
        double bound = type == KvCacheTypes.Float32 ? 2e-4 : type == KvCacheTypes.Float16 ? 5e-3 : 0.125;
        Console.WriteLine($"{Path.GetFileName(dir)} {type}: kernels against sessions, largest logit difference {worst:G3}");
        Assert.True(worst <= bound, $"{type}: largest logit difference {worst} (bound {bound})");
        Assert.Equal(steps, two.Decoder.KernelSteps);
        Assert.Equal(steps, one.Decoder.KernelSteps);
        if (type == KvCacheTypes.Float32)
        {
            // The kernels stored every new key and value where GroupQueryAttention stores them.
            var a = System.Runtime.InteropServices.MemoryMarshal.Cast<byte, float>(sessions.Decoder.SaveSlot(4, positions[4]));
            var b = System.Runtime.InteropServices.MemoryMarshal.Cast<byte, float>(two.Decoder.SaveSlot(4, positions[4]));
            Assert.Equal(a.Length, b.Length);
            for (int i = 0; i < a.Length; i++) Assert.True(Math.Abs(a[i] - b[i]) <= 1e-4, $"cache float {i}: {a[i]} vs {b[i]}");
        }
    }

    [Fact]
    public void TheDefaultRunsStepsUpToMaxBatchOnTheKernels()
    {
        Assert.Equal(16, new InferenceOptions().KernelStepRows);
        var o = KvCacheCompressionTests.Options(KvCacheTypes.Int8, maxBatch: 8, kernelRows: new InferenceOptions().KernelStepRows);
        using var model = IGptModel.Load(Shipped("fashion-mnist-28"), o);
        var plan = model.Decoder.Plan;
        Assert.Equal(Runs ? 8 : 0, plan.KernelStepRows);   // capped at MaxBatch
        int[] positions = [700, 700, 700, 700, 700, 700, 700, 700];
        for (int rows = 1; rows <= 8; rows++)
            Assert.Equal(Runs ? StepPath.Kernels : StepPath.Segments, plan.Choose(rows, positions));
    }

    /// <summary>
    /// A kernel step whose products are within SingleThreadStepFlops (rows x 2 x matmul weights; 4 MFLOP by default) runs on the
    /// stepping thread alone: fashion-mnist's one-row steps (3.15 MFLOP) do, two rows and the 256-wide model's one row
    /// (12.6 MFLOP) take every step thread. The option at 0 turns it off, as it does the sessions' one-thread steps.
    /// </summary>
    [Theory]
    [InlineData(4_000_000, 1)]
    [InlineData(7_000_000, 2)]
    [InlineData(0, 0)]
    public void KernelStepsWithinTheSingleThreadFlopBoundRunOnTheSteppingThreadAlone(long flops, int aloneRows)
    {
        if (!Runs) return;
        Assert.Equal(4_000_000, new InferenceOptions().SingleThreadStepFlops);
        var o = KvCacheCompressionTests.Options(KvCacheTypes.Int8, maxBatch: 4, threads: 2, kernelRows: 16);
        o.SingleThreadStepFlops = flops;
        using var model = IGptModel.Load(Shipped("fashion-mnist-28"), o);
        var d = model.Decoder;
        Assert.Equal(2L * (12L * 8 * 128 * 128 + 128 * 17), 2 * model.Manifest.MatmulParameters);   // 3.15 MFLOP a row
        Assert.Equal(aloneRows, d.Plan.KernelAloneRows);
        d.Prefill([model.Manifest.SosTokenId, 1, 2], 1);
        d.ReplicateSlot0(4, 3);
        int[] tokens = [1, 2, 3, 4], positions = [3, 3, 3, 3];
        for (int rows = 1; rows <= 4; rows++)
        {
            d.Step(rows, tokens, positions);
            for (int r = 0; r < rows; r++) positions[r]++;
        }
        Assert.Equal(4, d.KernelSteps);
        Assert.Equal(aloneRows, d.KernelStepsAlone);   // the first aloneRows steps (1, 2, ... rows) ran alone
    }

    /// <summary>
    /// Kernel steps of a model within LaneMaxWeightBytes (16 MiB) and of at least LaneStepRows rows (2) run as row lanes: each
    /// step thread takes half the rows through the whole step. Against the same steps with lanes off (every stage's columns
    /// and heads shared out): a float32 cache gives the same logits bit for bit (a row's products and attention do not depend
    /// on the rows beside it), and so does int8 here, where each lane holds two of the request's rows (int8 could differ by
    /// one block's rounding where a lane held a single row of a request: a row alone reads the block holding the end of its
    /// shared prompt as one block rather than two; the bound is the one the kernels keep against the sessions).
    /// </summary>
    [Theory]
    [InlineData(KvCacheTypes.Float32)]
    [InlineData(KvCacheTypes.Int8)]
    public void SmallModelsRunMultiRowKernelStepsAsRowLanesAndDecodeAsWithout(string type)
    {
        if (!Runs) return;
        Assert.Equal((2, 16L << 20), (new InferenceOptions().LaneStepRows, new InferenceOptions().LaneMaxWeightBytes));
        using var lanes = Load(Shipped("fashion-mnist-14"), type, kernelRows: 16, maxBatch: 5);
        var o = KvCacheCompressionTests.Options(type, maxBatch: 5, threads: 2, kernelRows: 16);
        o.LaneStepRows = 0;
        using var columns = IGptModel.Load(Shipped("fashion-mnist-14"), o);
        Assert.Equal((2, 0), (lanes.Decoder.Plan.KernelLaneRows, columns.Decoder.Plan.KernelLaneRows));
        var m = lanes.Manifest;
        var rng = new Random(17);
        int[] prompt = [m.SosTokenId, .. Enumerable.Range(0, 40).Select(_ => rng.Next(m.PaletteSize))];
        foreach (var d in new[] { lanes.Decoder, columns.Decoder })
        {
            d.Prefill(prompt, 1, 0);
            d.ReplicateSlot0(4, prompt.Length);   // rows 0-3: one request's samples, split 2 + 2 between the lanes
            d.Prefill([m.SosTokenId], 1, 4);      // row 4 alone
        }
        int[] groups = [0, 0, 0, 0, 4], shared = [prompt.Length, prompt.Length, prompt.Length, prompt.Length, 1];
        int[] positions = [prompt.Length, prompt.Length, prompt.Length, prompt.Length, 1];
        var tokens = new int[5];
        double worst = 0;
        const int steps = 40;
        for (int step = 0; step < steps; step++)
        {
            int rows = step % 4 == 3 ? 1 : 5;   // one-row steps between: alone, not lanes
            for (int r = 0; r < rows; r++) tokens[r] = rng.Next(m.PaletteSize);
            var expected = columns.Decoder.Step(rows, tokens, positions, groups, shared).ToArray();
            var actual = lanes.Decoder.Step(rows, tokens, positions, groups, shared);
            if (type == KvCacheTypes.Float32) Assert.True(actual.SequenceEqual(expected), $"step {step}: lanes and columns differ");
            for (int i = 0; i < expected.Length; i++)
                if (expected[i] > -1e8f) worst = Math.Max(worst, Math.Abs(expected[i] - actual[i]));
            for (int r = 0; r < rows; r++) positions[r]++;
        }
        Console.WriteLine($"{type}: row lanes against shared-out stages, largest logit difference {worst:G3}");
        Assert.True(worst <= 0.125, $"{type}: largest logit difference {worst}");
        Assert.Equal(steps / 4 * 3, lanes.Decoder.KernelStepsAsLanes);
        Assert.Equal(0, columns.Decoder.KernelStepsAsLanes);
        Assert.Equal(steps / 4, lanes.Decoder.KernelStepsAlone);
    }

    /// <summary>
    /// Row lanes of rows alone (separate requests, each at its own position) are balanced by the positions they read
    /// (<see cref="LaneBalancer"/>): here the longest and the second shortest row share one lane, so the step's rows run in
    /// another order than their slots, and each row's logits and cache entries must still land in its own slot. Against
    /// the same steps with lanes off, float32 and int8 caches give the same logits bit for bit.
    /// </summary>
    [Theory]
    [InlineData(KvCacheTypes.Float32)]
    [InlineData(KvCacheTypes.Int8)]
    public void BalancedRowLanesDecodeEachRowIntoItsOwnSlot(string type)
    {
        if (!Runs) return;
        using var lanes = Load(Shipped("fashion-mnist-14"), type, kernelRows: 16, maxBatch: 5);
        var o = KvCacheCompressionTests.Options(type, maxBatch: 5, threads: 2, kernelRows: 16);
        o.LaneStepRows = 0;
        using var columns = IGptModel.Load(Shipped("fashion-mnist-14"), o);
        var m = lanes.Manifest;
        var rng = new Random(29);
        int[] positions = [150, 3, 120, 7, 90];   // balanced lanes: slots 0 and 3 | 1, 2 and 4; halves by slot: 0-1 | 2-4
        for (int slot = 0; slot < positions.Length; slot++)
        {
            int[] prompt = [m.SosTokenId, .. Enumerable.Range(0, positions[slot] - 1).Select(_ => rng.Next(m.PaletteSize))];
            lanes.Decoder.Prefill(prompt, 1, slot);
            columns.Decoder.Prefill(prompt, 1, slot);
        }
        var tokens = new int[5];
        const int steps = 30;
        for (int step = 0; step < steps; step++)
        {
            int rows = step % 5 == 4 ? 1 : 5;   // one-row steps between: alone, not lanes
            for (int r = 0; r < rows; r++) tokens[r] = rng.Next(m.PaletteSize);
            var expected = columns.Decoder.Step(rows, tokens, positions, [], []).ToArray();
            var actual = lanes.Decoder.Step(rows, tokens, positions, [], []);
            Assert.True(actual.SequenceEqual(expected), $"step {step}: balanced lanes and columns differ");
            for (int r = 0; r < rows; r++) positions[r]++;
        }
        Assert.Equal(steps / 5 * 4, lanes.Decoder.KernelStepsAsLanes);
        Assert.Equal(steps / 5 * 4, lanes.Decoder.KernelStepsBalanced);
        Assert.Equal(0, columns.Decoder.KernelStepsBalanced);
    }

    [Theory]
    [InlineData(KernelWeightTypes.Float32)]
    [InlineData(KernelWeightTypes.Int16)]
    public void KernelStepsAllocateNothing(string weights)
    {
        if (!Runs) return;
        var o = KvCacheCompressionTests.Options(KvCacheTypes.Int8, maxBatch: 4, threads: 2, kernelRows: 4);
        o.KernelWeightType = weights;
        using var model = IGptModel.Load(Shipped("fashion-mnist-14"), o);
        var d = model.Decoder;
        d.Prefill([model.Manifest.SosTokenId, 1, 2], 1);
        d.ReplicateSlot0(4, 3);
        int[] tokens = [1, 2, 3, 4], positions = new int[4], groups = [0, 0, 0, 0], shared = [3, 3, 3, 3];
        void Steps(int from, int to)
        {
            for (int t = from; t < to; t++)
            {
                for (int r = 0; r < 4; r++) positions[r] = t;
                int rows = t % 3 + 1;   // one, two and three rows
                d.Step(rows, tokens, positions, groups.AsSpan(0, rows), shared.AsSpan(0, rows));
            }
        }
        Steps(3, 20);   // warm-up
        // Up to three windows of 50 steps (the model has 196 positions), one of which must allocate nothing: a step that
        // allocates does so in every window, while a one-time allocation (one failure in about 20 full runs of the suite
        // with a single window; the runtime's, its cause not found) lands in one at most.
        var allocated = new List<long>();
        for (int window = 0; window < 3 && (allocated.Count == 0 || allocated[^1] != 0); window++)
        {
            long before = GC.GetAllocatedBytesForCurrentThread();
            Steps(20 + 50 * window, 70 + 50 * window);
            allocated.Add(GC.GetAllocatedBytesForCurrentThread() - before);
        }
        Assert.True(allocated[^1] == 0, $"bytes allocated in each window of 50 steps: {string.Join(", ", allocated)}");
        Assert.Equal(17 + 50 * allocated.Count, d.KernelSteps);
    }

    [Fact]
    public void APackageWhoseWeightsDoNotFitKeepsTheSessionsWithAReason()
    {
        if (!Runs) return;
        var manifest = ModelManifest.Load(Shipped("fashion-mnist-14"));
        using var weights = PackageWeights.For(manifest)!;
        var tensors = weights.Float32Tensors(manifest.Files.Decoder.Cpu.Path);
        Assert.Null(KernelStep.Check(manifest, tensors));
        var missing = new Dictionary<string, (IntPtr, long[])>(tensors);
        missing.Remove("transformer.h.1.mlp.c_proj.weight");
        Assert.Equal("'transformer.h.1.mlp.c_proj.weight' is not in the package's weights", KernelStep.Check(manifest, missing));
        var reshaped = new Dictionary<string, (IntPtr, long[])>(tensors) { ["lm_head.sos_mask"] = (tensors["lm_head.sos_mask"].Address, [1, 17]) };
        Assert.Equal("'lm_head.sos_mask' is [1, 17], not [17]", KernelStep.Check(manifest, reshaped));
        // The planner then keeps the sessions' paths (segments for a compressed cache), and says so in the log.
        var o = KvCacheCompressionTests.Options(KvCacheTypes.Int8, kernelRows: 16);
        var planner = new StepPlanner(o);
        var file = manifest.Files.Decoder.Cpu;
        var unfit = planner.PlanCpuSteps(manifest, file, Microsoft.ML.OnnxRuntime.Tensors.TensorElementType.Float, kernelWeights: false);
        Assert.Equal(0, unfit.KernelStepRows);
        Assert.True(unfit.UsesSegments);
        var fit = planner.PlanCpuSteps(manifest, file, Microsoft.ML.OnnxRuntime.Tensors.TensorElementType.Float, kernelWeights: true);
        Assert.Equal(6, fit.KernelStepRows);   // every step up to MaxBatch: no segment sessions
        Assert.False(fit.UsesSegments || fit.UsesLanes || fit.UsesOneThreadSession);

        // Weights not shared (each session maps its own): nothing in memory for the kernels, so they are not planned.
        o.ShareWeights = false;
        using var model = IGptModel.Load(Shipped("fashion-mnist-14"), o);
        Assert.Equal(0, model.Decoder.Plan.KernelStepRows);
        Assert.True(model.Decoder.Plan.UsesSegments);
    }

    [Theory]
    [InlineData(1, 64, 17, 0, 17)]       // a head: one block of 16, then a single column (no whole block: no panel)
    [InlineData(4, 32, 200, 0, 200)]     // three panels, then what is past them from W's rows
    [InlineData(5, 32, 200, 32, 200)]    // a c0 that is not a panel's first column: from W's rows throughout
    [InlineData(1, 200, 384, 64, 384)]   // blocks of 128 and 64 from a column past the first
    [InlineData(1, 128, 1024, 0, 1000)]  // eight of 128 less the end: 64s, 16s and single columns
    [InlineData(1, 3, 16, 0, 16)]
    [InlineData(4, 64, 17, 0, 17)]       // four rows: what is left of a 64-column block, row by row
    [InlineData(6, 200, 384, 64, 200)]   // four rows by 64 columns, then 16s; then two rows one at a time
    [InlineData(9, 128, 1024, 0, 1000)]
    public void ProductsMatchAReferenceForEveryOutputAndRowCount(int rows, int k, int n, int c0, int c1)
    {
        if (!KernelStep.Supported) return;
        var rng = new Random(k * n + rows);
        const int xStride = 211, yStride = 1031;   // rows apart by more than they hold
        float[] x = Enumerable.Range(0, rows * xStride).Select(_ => (float)(rng.NextDouble() - 0.5)).ToArray();
        float[] w = Enumerable.Range(0, k * n).Select(_ => (float)(rng.NextDouble() - 0.5)).ToArray();
        float[] b = Enumerable.Range(0, n).Select(_ => (float)(rng.NextDouble() - 0.5)).ToArray();
        float[] start = Enumerable.Range(0, rows * yStride).Select(_ => (float)(rng.NextDouble() - 0.5)).ToArray();
        foreach (var output in Enum.GetValues<RowOutput>())
        {
            var y = (float[])start.Clone();
            var alone = (float[])start.Clone();
            var fromRows = (float[])start.Clone();
            fixed (float* px = x, pw = w, pb = b, py = y, pa = alone, pr = fromRows)
            {
                using var panels = new PanelWeights([((IntPtr)pw, k, n)]);
                RowKernels.Multiply(px, xStride, rows, panels[0], c0, c1, pb, py, yStride, output);
                for (int r = 0; r < rows; r++)
                {
                    RowKernels.Multiply(px + r * xStride, panels[0], c0, c1, pb, pa + r * yStride, output);
                    RowKernels.MultiplyRows(px + r * xStride, pw, k, n, c0, c1, pb, pr + r * yStride, output);
                }
            }
            for (int r = 0; r < rows; r++)
                for (int c = 0; c < yStride; c++)
                {
                    int at = r * yStride + c;
                    if (c < c0 || c >= c1) { Assert.Equal(start[at], y[at]); continue; }   // outside the block: untouched
                    double z = b[c];
                    for (int i = 0; i < k; i++) z += (double)x[r * xStride + i] * w[i * n + c];
                    double expected = output switch
                    {
                        RowOutput.Add => start[at] + z,
                        RowOutput.QuickGelu => z / (1 + Math.Exp(-1.702 * z)),
                        _ => z,
                    };
                    Assert.True(Math.Abs(expected - y[at]) <= 1e-5 * Math.Max(1, Math.Sqrt(k)), $"{output} row {r} column {c}: {y[at]} vs {expected}");
                    Assert.True(y[at] == alone[at], $"{output} row {r} column {c}: {y[at]} with {rows} rows, {alone[at]} alone");
                    // The panels change where the weights are read from, not the sums: the package's layout gives the same bits.
                    Assert.True(y[at] == fromRows[at], $"{output} row {r} column {c}: {y[at]} from the panels, {fromRows[at]} from W's rows");
                }
        }
    }

    [Theory]
    [InlineData(1, 64, 128, 0, 128)]
    [InlineData(4, 256, 200, 0, 200)]     // three int16 panels, then what is past them from W's rows in fp32
    [InlineData(6, 1024, 256, 64, 256)]   // k past one int32 chunk (32 pairs) many times; four rows, then two alone
    [InlineData(9, 77, 320, 0, 320)]      // an odd k: the last pair's second row is 0
    [InlineData(3, 128, 64, 0, 64)]
    public void ProductsOnInt16PanelsAreWithinTheirRoundingAndEachRowAsAlone(int rows, int k, int n, int c0, int c1)
    {
        if (!KernelStep.Supported) return;
        var rng = new Random(k * n + rows);
        const int xStride = 1031, yStride = 331;
        int qStride = (k + 1) / 2 + 3;
        float[] x = Enumerable.Range(0, rows * xStride).Select(_ => (float)(rng.NextDouble() - 0.5) * (rng.Next(20) == 0 ? 40 : 1)).ToArray();
        float[] w = Enumerable.Range(0, k * n).Select(_ => (float)(rng.NextDouble() - 0.5)).ToArray();
        float[] b = Enumerable.Range(0, n).Select(_ => (float)(rng.NextDouble() - 0.5)).ToArray();
        float[] start = Enumerable.Range(0, rows * yStride).Select(_ => (float)(rng.NextDouble() - 0.5)).ToArray();
        var q = new int[rows * qStride];
        var scales = new float[rows];
        foreach (var output in Enum.GetValues<RowOutput>())
        {
            var y = (float[])start.Clone();
            var alone = (float[])start.Clone();
            float[] columnScales;
            fixed (float* px = x, pw = w, pb = b, py = y, pa = alone, ps = scales)
            fixed (int* pq = q)
            {
                using var panels = new PanelWeights([((IntPtr)pw, k, n, true)]);
                var panel = panels[0];
                Assert.True(panel.Quantized);
                columnScales = new Span<float>(panel.Scales, panel.PanelColumns).ToArray();
                RowKernels.QuantizeRows(px, xStride, rows, k, pq, qStride, ps);
                RowKernels.MultiplyQuantized(px, xStride, pq, qStride, ps, rows, panel, c0, c1, pb, py, yStride, output);
                for (int r = 0; r < rows; r++)
                    RowKernels.MultiplyQuantized(px + r * xStride, xStride, pq + r * qStride, qStride, ps + r, 1, panel, c0, c1, pb, pa + r * yStride, yStride, output);
            }
            for (int r = 0; r < rows; r++)
            {
                // The inputs' integers: within half a step of the floats, at most 4095, and 0 past k.
                short* qr = null;
                fixed (int* pq = q) qr = (short*)(pq + r * qStride);
                for (int i = 0; i < k; i++)
                {
                    Assert.True(Math.Abs(qr[i]) <= PanelWeight.Int16Range);
                    Assert.True(Math.Abs(qr[i] * (double)scales[r] - x[r * xStride + i]) <= scales[r] * 0.5001 + 1e-12, $"row {r} input {i}");
                }
                if (k % 2 == 1) Assert.Equal(0, qr[k]);
                for (int c = 0; c < yStride; c++)
                {
                    int at = r * yStride + c;
                    if (c < c0 || c >= c1) { Assert.Equal(start[at], y[at]); continue; }   // outside the block: untouched
                    double z = b[c], bound = 1e-5 * Math.Max(1, Math.Sqrt(k));
                    bool panelColumn = c < n / 64 * 64;
                    for (int i = 0; i < k; i++)
                    {
                        double xi = x[r * xStride + i], wi = w[i * n + c];
                        z += xi * wi;
                        // Each product is off by at most |x| half a weight step, |w| half an input step, and both halves.
                        if (panelColumn) bound += Math.Abs(xi) * columnScales[c] / 2 + Math.Abs(wi) * scales[r] / 2 + columnScales[c] * scales[r] / 4;
                    }
                    double expected = output switch
                    {
                        RowOutput.Add => start[at] + z,
                        RowOutput.QuickGelu => z / (1 + Math.Exp(-1.702 * z)),
                        _ => z,
                    };
                    if (output == RowOutput.QuickGelu) bound *= 1.13;   // quick_gelu's slope is at most 1.13
                    Assert.True(Math.Abs(expected - y[at]) <= bound, $"{output} row {r} column {c}: {y[at]} vs {expected} (bound {bound})");
                    Assert.True(y[at] == alone[at], $"{output} row {r} column {c}: {y[at]} with {rows} rows, {alone[at]} alone");
                }
            }
        }
    }

    /// <summary>
    /// Inference:KernelWeightType int16: the same steps as fp32 weights to within the weights' and inputs' rounding (the
    /// quality guard's figures, benchmarks/README.md, "Int16 weights": largest logit difference 0.013-0.074 over 300 test
    /// images), the head's product still fp32, and one thread bit for bit two; the panels hold half the bytes.
    /// </summary>
    [Fact]
    public void Int16WeightsDecodeAsFloat32WithinTheirRoundingOnEveryThreadCount()
    {
        if (!Runs) return;
        string dir = Shipped("fashion-mnist-14");
        IGptModel Weights(string type, int threads)
        {
            var o = KvCacheCompressionTests.Options(KvCacheTypes.Int8, 6, threads, kernelRows: 6);
            o.KernelWeightType = type;
            return IGptModel.Load(dir, o);
        }
        using var fp32 = Weights(KernelWeightTypes.Float32, 2);
        using var two = Weights(KernelWeightTypes.Int16, 2);
        using var one = Weights(KernelWeightTypes.Int16, 1);
        Assert.False(fp32.Decoder.Plan.KernelInt16Weights);
        Assert.True(two.Decoder.Plan.KernelInt16Weights && one.Decoder.Plan.KernelInt16Weights);
        var m = fp32.Manifest;
        int v = m.VocabSize;
        var rng = new Random(5);
        var layout = SharedPromptRows.Prefill(m, rng, fp32.Decoder, two.Decoder, one.Decoder);
        var (groups, shared, positions) = (layout.Groups, layout.SharedLengths, layout.Positions);
        var tokens = new int[6];
        double worst = 0;
        int multi = Math.Min(m.Architecture.NPositions - layout.LengthA - 40, 40);   // then 20 steps of row 0 alone
        for (int step = 0; step < multi + 20; step++)
        {
            int rows = step < multi ? 6 : 1;
            for (int r = 0; r < rows; r++) tokens[r] = rng.Next(m.PaletteSize);
            var expected = fp32.Decoder.Step(rows, tokens, positions, groups, shared).ToArray();
            var actual = two.Decoder.Step(rows, tokens, positions, groups, shared).ToArray();
            var single = one.Decoder.Step(rows, tokens, positions, groups, shared).ToArray();
            for (int i = 0; i < rows * v; i++)
                if (expected[i] > -1e8f) worst = Math.Max(worst, Math.Abs(expected[i] - actual[i]));
                else Assert.True(actual[i] <= -1e8f, $"step {step}: SOS must stay masked");
            Assert.True(actual.AsSpan().SequenceEqual(single), $"step {step}: one thread and two differ");
            for (int r = 0; r < rows; r++) positions[r]++;
        }
        Console.WriteLine($"fashion-mnist-14: int16 weights against float32, largest logit difference {worst:G3}");
        Assert.True(worst > 0, "the int16 weights were not used");
        Assert.True(worst <= 0.1, $"largest logit difference {worst} (bound 0.1)");
    }

    [Fact]
    public void KernelWeightTypeIsValidatedLikeTheOtherSettings()
    {
        Assert.Equal(KernelWeightTypes.Default, new InferenceOptions().KernelWeightType);
        var o = Fixture.CpuOptions();
        foreach (var wrong in new[] { "bf16", "Int16", "" })
        {
            o.KernelWeightType = wrong;
            var errors = SettingsValidator<InferenceOptions>.Errors(o, InferenceOptions.SectionName);
            Assert.Contains(errors, e => e.Contains("Inference:KernelWeightType"));
        }
        o.KernelWeightType = KernelWeightTypes.Int16;
        o.Validate();
    }

    [Fact]
    public void VectorExpIsWithinTwoUlpOfExpAndZeroBelowTheNormals()
    {
        if (!KernelStep.Supported) return;
        var rng = new Random(3);
        var xs = new List<float> { 0f, -0f, 1f, -1f, 88f, -87.3f, 1e-8f, -1e-8f };
        for (int i = 0; i < 200_000; i++) xs.Add((float)(rng.NextDouble() * 175 - 87.3));
        for (float x = -20; x <= 20; x += 1f / 64) xs.Add(x);   // softmax's and quick_gelu's usual range, densely
        double worst = 0;
        float worstX = 0;
        foreach (var x in xs)
        {
            float e = VectorExp.Exp(System.Runtime.Intrinsics.Vector512.Create(x))[0];
            double exact = Math.Exp(x);
            double ulp = MathF.BitIncrement((float)exact) - (float)exact;
            if (Math.Abs(e - exact) / ulp > worst) (worst, worstX) = (Math.Abs(e - exact) / ulp, x);
        }
        Assert.True(worst <= 2, $"largest error {worst:F2} ulp, at {worstX:R}");
        foreach (var x in new[] { -87.5f, -100f, -1e30f, float.NegativeInfinity })
            Assert.Equal(0f, VectorExp.Exp(System.Runtime.Intrinsics.Vector512.Create(x))[0]);
        Assert.Equal(1f, VectorExp.Exp(System.Runtime.Intrinsics.Vector512<float>.Zero)[15]);
    }

    [Fact]
    public void TheInt8KernelsExpIsWithinItsRelativeBoundAndZeroBelowTheNormals()
    {
        if (!KernelStep.Supported) return;
        // Random points down to the normals' edge, a softmax's usual range densely, and the reduction's edge (ln 2 / 2).
        var xs = NonPositivePoints(5, 87.3f, 20, 0f, -0f, -1e-8f, -0.34657359f, -0.34657362f, -87.3f, -87.33f);
        AssertRelativeErrorAtMost(3.5e-6, xs, x => VectorExp.ExpNonPositive(System.Runtime.Intrinsics.Vector512.Create(x))[7], Math.Exp);
        foreach (var x in new[] { -87.5f, -100f, -1e30f, float.NegativeInfinity })
            Assert.Equal(0f, VectorExp.ExpNonPositive(System.Runtime.Intrinsics.Vector512.Create(x))[3]);
        Assert.Equal(1f, VectorExp.ExpNonPositive(System.Runtime.Intrinsics.Vector512<float>.Zero)[15]);
    }

    [Fact]
    public void TheBytePairKernelsExp2IsWithinItsRelativeBoundAndZeroOrSubnormalBelowTheNormals()
    {
        if (!KernelStep.Supported) return;
        // As above in log2 units: the reduction's edge is 1/2.
        var xs = NonPositivePoints(6, 126, 30, 0f, -0f, -1e-8f, -0.5f, -0.50000006f, -125.9f, -126f);
        AssertRelativeErrorAtMost(3.5e-6, xs, x => VectorExp.Exp2NonPositive(System.Runtime.Intrinsics.Vector512.Create(x))[7],
            x => Math.Pow(2, x));
        foreach (var x in new[] { -126.5f, -200f, -1e30f, float.NegativeInfinity })
            Assert.Equal(0f, VectorExp.Exp2NonPositive(System.Runtime.Intrinsics.Vector512.Create(x))[3]);
        Assert.Equal(1f, VectorExp.Exp2NonPositive(System.Runtime.Intrinsics.Vector512<float>.Zero)[15]);

        // Without the clamp, the same instructions from -126 up: the same results, bit for bit.
        foreach (var x in xs)
            Assert.Equal(VectorExp.Exp2NonPositive(System.Runtime.Intrinsics.Vector512.Create(x))[0],
                VectorExp.Exp2Finite(System.Runtime.Intrinsics.Vector512.Create(x))[0]);
        // Below it, down to -2^22: a subnormal or 0, never above the smallest normal, never NaN.
        for (float x = -126.01f; x >= -4_194_304f; x = x > -300 ? x - 0.01f : x * 1.01f)
        {
            float e = VectorExp.Exp2Finite(System.Runtime.Intrinsics.Vector512.Create(x))[5];
            Assert.True(e >= 0 && e <= 1.1755e-38f, $"2^{x:R} gave {e:R}");
        }
    }

    /// <summary><paramref name="special"/>, 200,000 random points in [-<paramref name="lowest"/>, 0] and every 1/256 from -<paramref name="dense"/> to 0.</summary>
    private static List<float> NonPositivePoints(int seed, float lowest, float dense, params float[] special)
    {
        var rng = new Random(seed);
        var xs = new List<float>(special);
        for (int i = 0; i < 200_000; i++) xs.Add((float)(-rng.NextDouble() * lowest));
        for (float x = -dense; x <= 0; x += 1f / 256) xs.Add(x);
        return xs;
    }

    private static void AssertRelativeErrorAtMost(double bound, IEnumerable<float> xs, Func<float, float> computed, Func<double, double> exact)
    {
        double worst = 0;
        float worstX = 0;
        foreach (var x in xs)
        {
            double error = Math.Abs(computed(x) - exact(x)) / exact(x);
            if (error > worst) (worst, worstX) = (error, x);
        }
        Assert.True(worst <= bound, $"largest relative error {worst:E2}, at {worstX:R}");
    }

    [Theory]
    [InlineData(128)]
    [InlineData(40)]   // 16s, then a scalar tail
    public void RmsNormIsIGptsNorm(int n)
    {
        if (!KernelStep.Supported) return;
        var rng = new Random(n);
        float[] x = Enumerable.Range(0, n).Select(_ => (float)(rng.NextDouble() * 4 - 1)).ToArray();
        float[] g = Enumerable.Range(0, n).Select(_ => (float)rng.NextDouble()).ToArray();
        var h = new float[n];
        fixed (float* px = x, pg = g, ph = h) RowKernels.RmsNorm(px, pg, n, 1e-5f, ph);
        double r = 1 / Math.Sqrt(x.Sum(v => (double)v * v) / n + 1e-5);   // no mean subtracted, no bias
        for (int i = 0; i < n; i++) Assert.True(Math.Abs(x[i] * r * g[i] - h[i]) <= 1e-5, $"{i}: {h[i]} vs {x[i] * r * g[i]}");
    }
}
