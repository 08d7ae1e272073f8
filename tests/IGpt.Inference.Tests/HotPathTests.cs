using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.ML.OnnxRuntime;

namespace IGpt.Inference.Tests;

public class HotPathTests
{
    [Theory]
    [InlineData(false, KvCacheTypes.Float32)]
    [InlineData(true, KvCacheTypes.Float32)]   // the fp16 graph (the CUDA one) on the CPU: the same step code over a half-size KV cache
    [InlineData(false, KvCacheTypes.Float16)]  // compressed caches: segments, with conversions on every step and a prefill row
    [InlineData(false, KvCacheTypes.Int8)]
    public void DecodeStepsAndSamplingAllocateNothing(bool fp16, string kvCacheType)
    {
        var o = Fixture.CpuOptions(maxBatch: 4);
        o.KvCacheType = kvCacheType;
        using var model = new TestPlanner(o, fp16OnCpu: fp16).Load(Fixture.PackageDir);
        var d = model.Decoder;
        var sampler = new Sampler(model.Manifest.PaletteSize);
        var options = new SamplingOptions(1f, TopK: 5, TopP: 0.9f);
        var rng = new Xoshiro256StarStar(3);
        int[] tokens = new int[4], positions = new int[4];

        long Decode(int from, int to)
        {
            d.Prefill([model.Manifest.SosTokenId, 1, 2], 1);
            d.ReplicateSlot0(4, 3);
            long before = GC.GetAllocatedBytesForCurrentThread();
            for (int t = from; t < to; t++)
            {
                for (int r = 0; r < 4; r++) positions[r] = t;
                var logits = d.Step(4, tokens, positions);
                for (int r = 0; r < 4; r++) tokens[r] = sampler.Pick(logits.Slice(r * d.VocabSize, d.VocabSize), options, ref rng);
            }
            return GC.GetAllocatedBytesForCurrentThread() - before;
        }

        Decode(3, 20);  // warm-up: the first step at a batch size creates its bindings, once
        long allocated = Decode(3, 64);
        Assert.Equal(0, allocated);
        if (kvCacheType != KvCacheTypes.Float32) Assert.Equal(17 + 61, d.SegmentedSteps);   // every step, as segments
    }

    [Fact]
    public async Task CudaIsTriedFirstAndFallsBackToCpuWithAReason()
    {
        // The oracle, asked of ONNX Runtime directly: can its CUDA provider open the package's CUDA graph here? Without a
        // GPU, or without the CUDA libraries the provider links, it cannot.
        bool cudaRuns = true;
        try
        {
            using var cuda = new OrtCUDAProviderOptions();
            using var sessionOptions = new SessionOptions();
            sessionOptions.AppendExecutionProvider_CUDA(cuda);
            using var session = new InferenceSession(Path.Combine(Fixture.PackageDir, "decoder.fp16.onnx"), sessionOptions);
        }
        catch (Exception e) when (e is OnnxRuntimeException or DllNotFoundException or EntryPointNotFoundException)
        {
            cudaRuns = false;
        }

        var options = Fixture.CpuOptions();
        options.UseCuda = true;
        using var model = IGptModel.Load(Fixture.PackageDir, options, NullLogger.Instance);
        if (cudaRuns)
        {
            Assert.Equal("CUDA", model.ExecutionProvider);
            Assert.StartsWith("CUDA provider loaded", model.ProviderReason);
        }
        else
        {
            // The model tried CUDA first: its reason is ONNX Runtime's own failure (the wording differs from try to
            // try), not a setting that skipped the try.
            Assert.Equal("CPU", model.ExecutionProvider);
            Assert.StartsWith("CUDA provider unavailable", model.ProviderReason);
            Assert.Contains("[ErrorCode:", model.ProviderReason);
        }

        // UseCuda off never tries: the same machine gives CPU with a reason that says so.
        using var cpu = IGptModel.Load(Fixture.PackageDir, Fixture.CpuOptions(), NullLogger.Instance);
        Assert.Equal("CPU", cpu.ExecutionProvider);
        Assert.DoesNotContain("CUDA provider", cpu.ProviderReason);

        var result = await model.CompleteAsync(new CompletionRequest([1, 2, 3, 4, 5, 6, 7, 0], 2, SamplingOptions.Greedy, 0), CancellationToken.None);
        Assert.Equal(result.Images[0], result.Images[1]);
        Assert.Equal([1, 2, 3, 4, 5, 6, 7, 0], result.Images[0][..8]);
    }

    [Fact]
    public void PixelImageValidatesItsShape()
    {
        Assert.Throws<ArgumentException>(() => new PixelImage(2, 2, 1, new byte[3]));
        Assert.Throws<ArgumentOutOfRangeException>(() => new PixelImage(2, 2, 2, new byte[8]));
        var palette = ModelManifest.Load(Fixture.PackageDir).Palette;
        var image = PixelImage.FromTokens([0, 7, 3, 4], 2, palette);
        Assert.Equal((2, 2), (image.Width, image.Height));
        Assert.Equal([0, 7, 3, 4], image.ToTokens(palette));
    }
}
