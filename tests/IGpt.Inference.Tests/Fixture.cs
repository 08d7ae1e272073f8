using System.Text.Json;
using Microsoft.Extensions.Logging.Abstractions;

namespace IGpt.Inference.Tests;

/// <summary>The tiny package from tests/fixtures (copied into the test output) and its parity data.</summary>
internal static class Fixture
{
    public static string PackageDir => Path.Combine(AppContext.BaseDirectory, "fixtures", "tiny-package");

    /// <summary>
    /// CPU options for the library's tests: one thread, a float32 KV cache and float32 kernel weights, so that each step
    /// path (the graph, the one-thread session, lanes, segments, the kernels) runs where its test puts it and matches the
    /// package's parity; the compressed caches and the kernels' int16 weights, the service's defaults, have tests of their
    /// own (KvCacheCompressionTests, KvCacheQualityTests, KernelStepTests) and run under the API's tests.
    /// </summary>
    public static InferenceOptions CpuOptions(int maxBatch = 16, long prefixCache = 64L * 1024 * 1024) => new()
    {
        UseCuda = false,
        IntraOpThreads = 1,
        MaxBatch = maxBatch,
        PrefixCacheSizeLimit = prefixCache,
        KvCacheType = KvCacheTypes.Float32,
        KernelWeightType = KernelWeightTypes.Float32,
    };

    public static IGptModel LoadCpu(int maxBatch = 16, Microsoft.Extensions.Caching.Memory.IMemoryCache? cache = null) =>
        IGptModel.Load(PackageDir, CpuOptions(maxBatch), NullLogger.Instance, cache);

    /// <summary>The repository's models/ folder: the shipped packages.</summary>
    public static string ShippedModelsDir
    {
        get
        {
            for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
                if (File.Exists(Path.Combine(dir.FullName, "IGpt.Api.sln"))) return Path.Combine(dir.FullName, "models");
            throw new DirectoryNotFoundException("no IGpt.Api.sln above " + AppContext.BaseDirectory);
        }
    }

    public static Parity ReadParity(string? packageDir = null)
    {
        using var doc = JsonDocument.Parse(File.ReadAllText(Path.Combine(packageDir ?? PackageDir, "parity.json")));
        var r = doc.RootElement;
        static float[][] Rows(JsonElement e) => e.EnumerateArray().Select(row => row.EnumerateArray().Select(x => (float)x.GetDouble()).ToArray()).ToArray();
        static int[] Ints(JsonElement e) => e.EnumerateArray().Select(x => x.GetInt32()).ToArray();
        int[][]? clsIds = null;
        float[][]? clsLogits = null;
        if (r.TryGetProperty("classifier", out var c) && c.ValueKind == JsonValueKind.Object)
        {
            clsIds = c.GetProperty("input_ids").EnumerateArray().Select(Ints).ToArray();
            clsLogits = Rows(c.GetProperty("logits"));
        }
        int[][]? analysisIds = null;
        float[][][]? features = null;
        float[][]? bits = null;
        double[]? ood = null;
        if (r.TryGetProperty("analysis", out var a) && a.ValueKind == JsonValueKind.Object)
        {
            analysisIds = a.GetProperty("input_ids").EnumerateArray().Select(Ints).ToArray();
            features = a.GetProperty("features").EnumerateArray().Select(Rows).ToArray();
            bits = Rows(a.GetProperty("token_bits"));
            ood = a.GetProperty("ood_score").EnumerateArray().Select(x => x.GetDouble()).ToArray();
        }
        return new Parity(r.GetProperty("tolerance").GetDouble(), Ints(r.GetProperty("prompt")), Rows(r.GetProperty("prefill_logits")),
            Ints(r.GetProperty("decode_tokens")), Rows(r.GetProperty("decode_logits")), clsIds, clsLogits)
        {
            AnalysisInputIds = analysisIds, AnalysisFeatures = features, AnalysisTokenBits = bits, AnalysisOodScores = ood,
        };
    }

    /// <summary>A copy of the package in a fresh temp folder (models/tiny-package) to break.</summary>
    public static string CopyToTemp(out string modelsRoot)
    {
        modelsRoot = Path.Combine(Path.GetTempPath(), "igpt-tests-" + Guid.NewGuid().ToString("N"));
        var dst = Path.Combine(modelsRoot, "tiny-package");
        Directory.CreateDirectory(dst);
        foreach (var f in Directory.GetFiles(PackageDir)) File.Copy(f, Path.Combine(dst, Path.GetFileName(f)));
        return dst;
    }
}

internal sealed record Parity(double Tolerance, int[] Prompt, float[][] PrefillLogits, int[] DecodeTokens, float[][] DecodeLogits,
    int[][]? ClassifierInputIds, float[][]? ClassifierLogits)
{
    /// <summary>The analysis rows (null for a package without the graph): images x0 .. x(n-1), no SOS.</summary>
    public int[][]? AnalysisInputIds { get; init; }
    /// <summary>PyTorch's pooled features per row: [n_layer + 1][n_embd].</summary>
    public float[][][]? AnalysisFeatures { get; init; }
    /// <summary>PyTorch's -log2 p of each pixel per row.</summary>
    public float[][]? AnalysisTokenBits { get; init; }
    /// <summary>PyTorch's bits per pixel minus the context model's, per row (the out-of-distribution score).</summary>
    public double[]? AnalysisOodScores { get; init; }

    /// <summary>
    /// The classifier rows as the API takes them: parity rows are the graph's input [SOS, x0 .. x(n-2)]; an image
    /// is x0 .. x(n-1) (its last token is not seen, so any palette index stands in).
    /// </summary>
    public int[][] ClassifierImages()
    {
        Assert.NotNull(ClassifierInputIds);
        return ClassifierInputIds.Select(ids => ids[1..].Append(0).ToArray()).ToArray();
    }

    /// <summary>PyTorch's class probabilities for classifier row <paramref name="row"/> (the softmax of its logits).</summary>
    public float[] ClassifierProbabilities(int row)
    {
        Assert.NotNull(ClassifierLogits);
        var p = new float[ClassifierLogits[row].Length];
        Sampler.Softmax(ClassifierLogits[row], p);
        return p;
    }
}
