using System.Text.Json.Nodes;
using Microsoft.Extensions.Caching.Memory;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;

namespace IGpt.Inference.Tests;

/// <summary>
/// What the CUDA path shares with the CPU one, run on the CPU: the fp16 graph and its half-size KV cache
/// (ONNX Runtime's CPU provider runs decoder.fp16.onnx), fixed step shapes (CUDA graphs' padding), graph
/// selection, the CUDA settings and the fallback. The CUDA memory and copies themselves need a GPU
/// (scripts/gpu-check.sh).
/// </summary>
public class DevicePathTests
{
    private static TestPlanner Fp16OnCpu(int maxBatch = 16) => new(Fixture.CpuOptions(maxBatch), fp16OnCpu: true);

    [Fact]
    public void Fp16GraphKeepsItsKvCacheInHalvesAndMatchesItsOwnUncachedForward()
    {
        var parity = Fixture.ReadParity();
        using var model = Fp16OnCpu(maxBatch: 4).Load(Fixture.PackageDir);
        var d = model.Decoder;
        Assert.Equal(TensorElementType.Float16, d.KvType);
        Assert.Equal(2L * 2 * 4 * 10 * 8 * 2, d.SnapshotBytes(10));   // 2 layers x (K, V) x 4 heads x 10 positions x 8 x 2 bytes
        int v = d.VocabSize, s = parity.Prompt.Length;
        var prefill = d.Prefill(parity.Prompt, 1).ToArray();
        d.ReplicateSlot0(3, s);
        var seq = parity.Prompt.ToList();
        for (int j = 0; j < parity.DecodeTokens.Length; j++)
        {
            int t = parity.DecodeTokens[j];
            var logits = d.Step(3, [t, t, t], [s + j, s + j, s + j]).ToArray();
            seq.Add(t);
            var reference = model.ForwardWithoutCache(seq.ToArray());
            for (int r = 0; r < 3; r++)
            {
                // Same graph, same precision: the cached path computes the same numbers.
                DecoderTests.AssertClose(reference.AsSpan((seq.Count - 1) * v, v), logits.AsSpan(r * v, v), 1e-3, $"row {r} step {j}");
                // And fp16 stays near PyTorch's fp32 logits.
                DecoderTests.AssertClose(parity.DecodeLogits[j], logits.AsSpan(r * v, v), 0.02, $"row {r} step {j} vs fp32");
            }
        }
        DecoderTests.AssertClose(parity.PrefillLogits[s - 1], prefill.AsSpan((s - 1) * v, v), 0.02, "prefill vs fp32");
    }

    [Fact]
    public async Task Fp16SchedulerCopiesSlotsSnapshotsAndCompactsLikeFp32()
    {
        // Two slots for 3 + 2 samples: replication, host snapshots for the samples that wait, compaction when one ends.
        using var model = Fp16OnCpu(maxBatch: 2).Load(Fixture.PackageDir);
        Assert.Equal("CPU", model.ExecutionProvider);
        int[] prompt = [1, 2, 3, 4, 5, 6, 7, 0];
        var expected = DecoderTests.GreedyWithoutCache(model, prompt);
        var a = model.CompleteAsync(new CompletionRequest(prompt, 3, SamplingOptions.Greedy, 0), CancellationToken.None);
        var b = model.CompleteAsync(new CompletionRequest([], 2, new SamplingOptions(1f), 7), CancellationToken.None);
        var results = await Task.WhenAll(a, b).WaitAsync(TimeSpan.FromSeconds(120));
        foreach (var image in results[0].Images) Assert.Equal(expected, image);

        // Sampled images do not depend on what shared their steps: the same request alone gives the same images.
        using var alone = Fp16OnCpu(maxBatch: 1).Load(Fixture.PackageDir);
        var again = await alone.CompleteAsync(new CompletionRequest([], 2, new SamplingOptions(1f), 7), CancellationToken.None);
        Assert.Equal(results[1].Images, again.Images);
    }

    [Fact]
    public async Task Fp16ClassifierRunsWithTheFp16Decoder()
    {
        var images = Fixture.ReadParity().ClassifierImages();
        using var model = Fp16OnCpu().Load(Fixture.PackageDir);
        using var fp32 = Fixture.LoadCpu();
        var half = await model.ClassifyBatchAsync(images, CancellationToken.None);
        var full = await fp32.ClassifyBatchAsync(images, CancellationToken.None);
        for (int i = 0; i < images.Length; i++)
            for (int c = 0; c < full[i].Length; c++)
                Assert.True(Math.Abs(full[i][c] - half[i][c]) < 0.02, $"image {i} class {c}: fp32 {full[i][c]}, fp16 {half[i][c]}");
    }

    [Fact]
    public void FixedStepShapesPadToPowersOfTwoWithoutChangingTheRows()
    {
        Assert.Equal([1, 2, 4, 4, 8, 8, 8, 8, 10, 10], Enumerable.Range(1, 10).Select(r => KvCacheDecoder.StepSlots(r, 10, true)));
        Assert.Equal([1, 2, 3, 4, 5], Enumerable.Range(1, 5).Select(r => KvCacheDecoder.StepSlots(r, 10, false)));

        var parity = Fixture.ReadParity();
        var manifest = ModelManifest.Load(Fixture.PackageDir);
        using var so = new SessionOptions { IntraOpNumThreads = 1 };
        var session = new InferenceSession(manifest.ResolvePath("decoder.onnx"), so);
        using var d = new KvCacheDecoder(session, manifest, 4, new HostMemory(), TensorElementType.Float, fixedStepShapes: true);
        int v = d.VocabSize, s = parity.Prompt.Length;
        d.Prefill(parity.Prompt, 1);
        d.ReplicateSlot0(3, s);
        d.Prefill([manifest.SosTokenId, 5, 5, 5], 1, firstSlot: 3);
        var before = d.SaveSlot(3, 4);
        // Three rows run as four: slot 3 gets the padding row (a throwaway token at position 0).
        var logits = d.Step(3, [parity.DecodeTokens[0], parity.DecodeTokens[0], parity.DecodeTokens[0]], [s, s, s]).ToArray();
        Assert.Equal(3 * v, logits.Length);
        for (int r = 0; r < 3; r++)
            DecoderTests.AssertClose(parity.DecodeLogits[0], logits.AsSpan(r * v, v), parity.Tolerance, $"row {r}");
        var after = d.SaveSlot(3, 4);
        int perHead = 8 * 4;   // head_size floats x 4 bytes: position 0 of the first head
        Assert.NotEqual(before.AsSpan(0, perHead).ToArray(), after.AsSpan(0, perHead).ToArray());
        Assert.Equal(before.AsSpan(perHead, 3 * perHead).ToArray(), after.AsSpan(perHead, 3 * perHead).ToArray());
    }

    [Theory]
    [InlineData("decoder.fp16.onnx", "lm_head.sos_mask")]
    [InlineData("classifier.fp16.onnx", "score.weight_t")]
    public void Fp16GraphsCastWeightsDataThatOnnxRuntimeFoldsIntoFp16Weights(string graph, string keptInFp32)
    {
        // The fp16 graphs hold weights.data's fp32 tensors, each cast to float16; constant folding, a basic optimization
        // that runs before the graph is partitioned between providers, must leave none of them to cast at run time.
        var before = OnnxInitializers.External(File.ReadAllBytes(Path.Combine(Fixture.PackageDir, graph)), graph);
        Assert.True(before.Count > 10 && before.All(t => t.ElementType == TensorElementType.Float && t.Location == "weights.data"));
        var optimized = Path.Combine(Path.GetTempPath(), $"igpt-folded-{Guid.NewGuid():N}.onnx");
        try
        {
            using (var so = new SessionOptions { GraphOptimizationLevel = GraphOptimizationLevel.ORT_ENABLE_BASIC, OptimizedModelFilePath = optimized })
            using (new InferenceSession(Path.Combine(Fixture.PackageDir, graph), so)) { }
            // What still points into weights.data is what the graph reads as fp32; the folded weights are the session's own.
            var after = OnnxInitializers.External(File.ReadAllBytes(optimized), graph);
            Assert.Equal([keptInFp32], after.Select(t => t.Name));
        }
        finally
        {
            File.Delete(optimized);
        }
    }

    [Fact]
    public async Task AClassifierGraphThatFailsItsFirstRunGivesWayToTheCpuGraph()
    {
        // On CUDA an fp16 classifier exported before its attention declared presents loads and then fails every run. The
        // fp16 graph the tests' planner runs on the CPU stands in for it: the fault fixture that throws on any light pixel.
        var dir = Fixture.CopyToTemp(out var root);
        try
        {
            var failing = Path.Combine(AppContext.BaseDirectory, "fixtures", "faults", "classifier-fails-on-light-pixels.onnx");
            File.Copy(failing, Path.Combine(dir, "classifier.fp16.onnx"), overwrite: true);
            using var model = Fp16OnCpu(maxBatch: 2).Load(dir);
            using var cpu = new TestPlanner(Fixture.CpuOptions(maxBatch: 2)).Load(Fixture.PackageDir);
            int n = model.Manifest.TokensPerImage;
            int[] light = Enumerable.Range(0, n).Select(i => model.Manifest.PaletteSize - 1 - i % 2).ToArray();
            int[] dark = new int[n];
            var got = await model.ClassifyBatchAsync([light, dark], CancellationToken.None);
            Assert.Equal(await cpu.ClassifyBatchAsync([light, dark], CancellationToken.None), got);
        }
        finally
        {
            Directory.Delete(root, recursive: true);
        }
    }

    [Fact]
    public async Task Fp16GraphsWithTheirOwnWeightsFileStillLoadAndGiveTheSameNumbers()
    {
        // Format 2 packages exported before the fp16 graphs cast weights.data kept fp16 copies in weights.fp16.data.
        var dir = Fixture.CopyToTemp(out var root);
        try
        {
            var older = Path.Combine(AppContext.BaseDirectory, "fixtures", "fp16-weights-file");
            foreach (var f in Directory.GetFiles(older)) File.Copy(f, Path.Combine(dir, Path.GetFileName(f)), overwrite: true);
            var json = JsonNode.Parse(File.ReadAllText(Path.Combine(dir, "model.json")))!;
            json["files"]!["weights"]!.AsArray().Add(new JsonObject
            {
                ["path"] = "weights.fp16.data", ["dtype"] = "float16", ["bytes"] = new FileInfo(Path.Combine(dir, "weights.fp16.data")).Length,
            });
            File.WriteAllText(Path.Combine(dir, "model.json"), json.ToJsonString());

            var parity = Fixture.ReadParity();
            using var cast = Fp16OnCpu(maxBatch: 2).Load(Fixture.PackageDir);
            using var own = Fp16OnCpu(maxBatch: 2).Load(dir);
            Assert.Equal(["weights.data", "weights.fp16.data"], own.Manifest.Files.Weights.Select(w => w.Path));
            // The folded casts are the fp16 weights the older graphs hold: the same bits out, not just close.
            Assert.Equal(cast.ForwardWithoutCache(parity.Prompt), own.ForwardWithoutCache(parity.Prompt));
            var request = new CompletionRequest([1, 2, 3, 4, 5, 6, 7, 0], 2, new SamplingOptions(1f), 11);  // one row, two samples
            Assert.Equal((await cast.CompleteAsync(request, CancellationToken.None)).Images, (await own.CompleteAsync(request, CancellationToken.None)).Images);
            // The older classifier graph's attention declares no present outputs, as those exports wrote it, and ONNX
            // Runtime's CPU GroupQueryAttention computes by another path without them: the same probabilities to 1e-5.
            var images = parity.ClassifierImages();
            var expected = await cast.ClassifyBatchAsync(images, CancellationToken.None);
            var actual = await own.ClassifyBatchAsync(images, CancellationToken.None);
            Assert.Equal(expected.Length, actual.Length);
            for (int i = 0; i < expected.Length; i++)
                for (int c = 0; c < expected[i].Length; c++)
                    Assert.True(Math.Abs(expected[i][c] - actual[i][c]) < 1e-5, $"image {i} class {c}: {expected[i][c]} against {actual[i][c]}");
        }
        finally
        {
            Directory.Delete(root, recursive: true);
        }
    }

    [Fact]
    public void GraphSelectionNeedsAnFp16CudaGraph()
    {
        var manifest = ModelManifest.Load(Fixture.PackageDir);
        Assert.Equal("decoder.fp16.onnx", SessionLoader.CudaDecoderFile(manifest, out _)!.Path);
        Assert.Equal("decoder.onnx", new StepPlanner(Fixture.CpuOptions()).CpuGraph(manifest.Files.Decoder).Path);
        Assert.Equal("decoder.fp16.onnx", Fp16OnCpu().CpuGraph(manifest.Files.Decoder).Path);

        var dir = Fixture.CopyToTemp(out var root);
        try
        {
            var json = JsonNode.Parse(File.ReadAllText(Path.Combine(dir, "model.json")))!.AsObject();
            json["files"]!["decoder"]!["cuda"]!["dtype"] = "float32";
            var fp32Cuda = ModelManifest.Parse(json.ToJsonString(), dir);
            Assert.Null(SessionLoader.CudaDecoderFile(fp32Cuda, out var reason));
            Assert.Contains("needs the float16 graph", reason);
            // UseCuda on, but nothing to run there: the CPU, with the reason (no CUDA attempt, so the same on any host).
            var options = Fixture.CpuOptions();
            options.UseCuda = true;
            using (var model = IGptModel.Load(fp32Cuda, options, NullLogger.Instance))
            {
                Assert.Equal("CPU", model.ExecutionProvider);
                Assert.Contains("needs the float16 graph", model.ProviderReason);
            }

            json["files"]!["decoder"]!["cuda"] = null;
            Assert.Null(SessionLoader.CudaDecoderFile(ModelManifest.Parse(json.ToJsonString(), dir), out reason));
            Assert.Contains("no CUDA decoder", reason);

            // A graph whose KV dtype is not the manifest's fails clearly, naming the file.
            json["files"]!["decoder"]!["cuda"] = new JsonObject { ["path"] = "decoder.onnx", ["dtype"] = "float16" };
            var lying = ModelManifest.Parse(json.ToJsonString(), dir);
            var e = Assert.Throws<ModelPackageException>(() => IGptModel.Load(lying, Fp16OnCpu(), NullLogger.Instance));
            Assert.Contains("decoder.onnx", e.Message);
            Assert.Contains("is float32, but the manifest says float16", e.Message);
        }
        finally
        {
            Directory.Delete(root, recursive: true);
        }
    }

    [Theory]
    [InlineData(-1, false)]
    [InlineData(1000, false)]
    [InlineData(InferenceOptions.MinCudaMemoryLimitBytes - 1, false)]
    [InlineData(0, true)]
    [InlineData(InferenceOptions.MinCudaMemoryLimitBytes, true)]
    [InlineData(80L << 30, true)]
    public void CudaMemoryLimitIsZeroOrAtLeast64MiB(long bytes, bool valid)
    {
        var o = Fixture.CpuOptions();
        o.CudaMemoryLimitBytes = bytes;
        if (valid) o.Validate();
        else Assert.Contains("Inference:CudaMemoryLimitBytes", Assert.Throws<ArgumentException>(o.Validate).Message);
    }

    [Fact]
    public void CudaProviderSettingsUseOnnxRuntimesNames()
    {
        var o = Fixture.CpuOptions();
        o.CudaDeviceId = 1;
        var plain = StepPlanner.CudaProviderOptions(o, cudaGraphs: false);
        Assert.Equal("1", plain["device_id"]);
        Assert.Equal("kSameAsRequested", plain["arena_extend_strategy"]);
        Assert.Equal("0", plain["enable_cuda_graph"]);
        Assert.False(plain.ContainsKey("gpu_mem_limit"));   // 0 = no limit: ORT's default (SIZE_MAX)
        o.CudaMemoryLimitBytes = 6L << 30;
        var limited = StepPlanner.CudaProviderOptions(o, cudaGraphs: true);
        Assert.Equal("6442450944", limited["gpu_mem_limit"]);
        Assert.Equal("1", limited["enable_cuda_graph"]);
    }

    /// <summary>
    /// The CUDA path where it loads, else the fallback. Here (no GPU) it checks the fallback; on a GPU host
    /// (scripts/gpu-check.sh sets IGPT_EXPECT_CUDA=1, so a fallback fails) it checks the device KV cache,
    /// the device slot copies and, with CUDA graphs, padded steps replayed from captured graphs against the
    /// same fp16 graph run without a cache.
    /// </summary>
    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task CudaWhenItLoadsElseCpuWithTheReason(bool cudaGraphs)
    {
        var options = Fixture.CpuOptions(maxBatch: 4);
        (options.UseCuda, options.CudaGraphs, options.CudaMemoryLimitBytes) = (true, cudaGraphs, 1L << 30);
        using var cache = new MemoryCache(new MemoryCacheOptions { SizeLimit = 1 << 26 });
        using var model = IGptModel.Load(Fixture.PackageDir, options, NullLogger.Instance, cache);
        if (Environment.GetEnvironmentVariable("IGPT_EXPECT_CUDA") == "1") Assert.True(model.ExecutionProvider == "CUDA", model.ProviderReason);
        var d = model.Decoder;
        if (model.ExecutionProvider == "CPU")
        {
            Assert.StartsWith("CUDA provider unavailable", model.ProviderReason);
            Assert.True(d.KvOnHost);
            Assert.True(model.PrefixCacheEnabled);
        }
        else
        {
            Assert.Contains("float16", model.ProviderReason);
            Assert.False(d.KvOnHost);
            Assert.Equal(TensorElementType.Float16, d.KvType);
            Assert.False(model.PrefixCacheEnabled);
            var parity = Fixture.ReadParity();
            int v = d.VocabSize, s = parity.Prompt.Length;
            d.Prefill(parity.Prompt, 1);
            d.ReplicateSlot0(3, s);
            var seq = parity.Prompt.ToList();
            for (int j = 0; j < 8; j++)   // enough steps to warm up, capture and replay a graph
            {
                int t = (j * 3 + 1) % model.Manifest.PaletteSize;
                var logits = d.Step(3, [t, t, t], [s + j, s + j, s + j]).ToArray();
                seq.Add(t);
                var reference = model.ForwardWithoutCache(seq.ToArray());
                for (int r = 0; r < 3; r++)
                    DecoderTests.AssertClose(reference.AsSpan((seq.Count - 1) * v, v), logits.AsSpan(r * v, v), 2e-2, $"row {r} step {j}");
            }
        }
        var result = await model.CompleteAsync(new CompletionRequest([1, 2, 3, 4, 5, 6, 7, 0], 3, SamplingOptions.Greedy, 0), CancellationToken.None);
        Assert.Equal(result.Images[0], result.Images[2]);
        Assert.Equal([1, 2, 3, 4, 5, 6, 7, 0], result.Images[1][..8]);
    }
}
