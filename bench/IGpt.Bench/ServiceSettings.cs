using System.Text.Json;

namespace IGpt.Bench;

/// <summary>The thread settings the service runs with: "Inference" in the repository's root appsettings.json.</summary>
internal sealed record ServiceSettings(int IntraOpThreads, bool AllowSpinning, long SingleThreadStepFlops, int SegmentedStepRows, int LaneStepRows, string Source,
    string KvCacheType, int KernelStepRows, string KernelWeightType)
{
    private static readonly IGpt.Inference.InferenceOptions Defaults = new();

    public static ServiceSettings Read()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            if (!File.Exists(Path.Combine(dir.FullName, "IGpt.Api.sln"))) continue;
            string path = Path.Combine(dir.FullName, "appsettings.json");
            using var doc = JsonDocument.Parse(File.ReadAllText(path), new JsonDocumentOptions { CommentHandling = JsonCommentHandling.Skip });
            if (!doc.RootElement.TryGetProperty("Inference", out var inference)) break;
            int threads = inference.TryGetProperty("IntraOpThreads", out var t) ? t.GetInt32() : 0;
            bool spinning = inference.TryGetProperty("AllowSpinning", out var a) && a.GetBoolean();
            long smallSteps = inference.TryGetProperty("SingleThreadStepFlops", out var f) ? f.GetInt64() : Defaults.SingleThreadStepFlops;
            int segmented = inference.TryGetProperty("SegmentedStepRows", out var g) ? g.GetInt32() : Defaults.SegmentedStepRows;
            int lanes = inference.TryGetProperty("LaneStepRows", out var l) ? l.GetInt32() : Defaults.LaneStepRows;
            string kv = inference.TryGetProperty("KvCacheType", out var k) ? k.GetString()! : Defaults.KvCacheType;
            int kernelRows = inference.TryGetProperty("KernelStepRows", out var o) ? o.GetInt32() : Defaults.KernelStepRows;
            string weights = inference.TryGetProperty("KernelWeightType", out var w) ? w.GetString()! : Defaults.KernelWeightType;
            return new ServiceSettings(threads, spinning, smallSteps, segmented, lanes, Path.GetRelativePath(dir.FullName, path), kv, kernelRows, weights);
        }
        return new ServiceSettings(0, false, Defaults.SingleThreadStepFlops, Defaults.SegmentedStepRows, Defaults.LaneStepRows,
            "library defaults: no appsettings.json found", Defaults.KvCacheType, Defaults.KernelStepRows, Defaults.KernelWeightType);
    }
}
