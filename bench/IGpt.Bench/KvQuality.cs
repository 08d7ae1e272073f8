using System.Diagnostics;
using System.Text.Json.Nodes;
using IGpt.Inference;

namespace IGpt.Bench;

/// <summary>
/// The quality guard of a compressed KV cache (bench/kv_quality.py drives it): test images teacher-forced through
/// the service's own decode path for each KV cache type, in one process and in lockstep. Per type a model is loaded
/// as the service loads it (its settings, Inference:KvCacheType = the type); per batch of up to MaxBatch images each
/// image gets its own slot, the prefill of [SOS] (as a completion without a prompt starts) and then one decode step per
/// token, fed the image's own previous token (KvCacheDecoder.Step, the call the scheduler makes, on whatever step path
/// the model's plan picks: with a compressed cache, the segments over the compressed cache). Every position's logits
/// give the image's next token a probability: bits per token = the mean of -log2 p over every token of every image,
/// the training's test metric. Against the first type (the reference, float32) each other type also reports the
/// largest |logit difference| and how often the two agree on the most likely token. A type may also name the kernel
/// steps' weights ("int8/int16": Inference:KernelWeightType int16), their quality guard.
/// </summary>
internal static class KvQuality
{
    public static JsonObject Run(JsonObject r)
    {
        var types = r["kv_cache_types"]!.AsArray().Select(t => (string)t!).ToArray();
        var images = r["images"]!.AsArray().Select(i => Protocol.Ints(i)).ToArray();
        var service = ServiceSettings.Read();
        var models = new List<IGptModel>();
        try
        {
            foreach (var type in types)
            {
                // A type may name the kernels' weights too: "int8/int16" is an int8 cache with Inference:KernelWeightType int16.
                var parts = type.Split('/');
                var options = new InferenceOptions
                {
                    UseCuda = false, IntraOpThreads = (int?)r["threads"] ?? service.IntraOpThreads, AllowSpinning = service.AllowSpinning,
                    SingleThreadStepFlops = service.SingleThreadStepFlops, SegmentedStepRows = service.SegmentedStepRows,
                    LaneStepRows = service.LaneStepRows, KernelStepRows = service.KernelStepRows, KvCacheType = parts[0], MaxBatch = (int?)r["max_batch"] ?? 16,
                    KernelWeightType = parts.Length > 1 ? parts[1] : service.KernelWeightType,
                };
                models.Add(IGptModel.Load((string)r["package"]!, options));
            }
            return Measure(models, images);
        }
        finally
        {
            foreach (var m in models) m.Dispose();
        }
    }

    private static JsonObject Measure(List<IGptModel> models, int[][] images)
    {
        var manifest = models[0].Manifest;
        int n = models.Count, tokens = manifest.TokensPerImage, palette = manifest.PaletteSize, vocab = models[0].Decoder.VocabSize;
        int maxBatch = models.Min(m => m.MaxBatch);
        foreach (var image in images)
            if (image.Length != tokens || image.Any(t => (uint)t >= (uint)palette))
                throw new ArgumentException($"every image must be {tokens} palette indices (0..{palette - 1})");
        var bits = new double[n];
        var maxDiff = new double[n];
        var agree = new long[n];
        long predictions = 0;
        var stepTokens = new int[maxBatch];
        var positions = new int[maxBatch];
        var logits = new float[n][];
        for (int i = 0; i < n; i++) logits[i] = new float[maxBatch * vocab];
        var clock = Stopwatch.StartNew();
        for (int first = 0; first < images.Length; first += maxBatch)
        {
            int rows = Math.Min(maxBatch, images.Length - first);
            // Position 0: the prefill of [SOS] in each image's slot (the first token's logits, the same for every type).
            for (int i = 0; i < n; i++)
                for (int row = 0; row < rows; row++)
                    models[i].Decoder.Prefill([manifest.SosTokenId], 1, row)[..vocab].CopyTo(logits[i].AsSpan(row * vocab));
            Score(0);
            for (int t = 1; t < tokens; t++)
            {
                for (int row = 0; row < rows; row++) (stepTokens[row], positions[row]) = (images[first + row][t - 1], t);
                for (int i = 0; i < n; i++)
                    models[i].Decoder.Step(rows, stepTokens, positions).CopyTo(logits[i]);
                Score(t);
            }

            void Score(int t)
            {
                for (int row = 0; row < rows; row++)
                {
                    int target = images[first + row][t];
                    var reference = logits[0].AsSpan(row * vocab, palette);
                    int referenceTop = ArgMax(reference);
                    for (int i = 0; i < n; i++)
                    {
                        var l = logits[i].AsSpan(row * vocab, palette);
                        bits[i] += (LogSumExp(l) - l[target]) / Math.Log(2);
                        if (ArgMax(l) == referenceTop) agree[i]++;
                        for (int v = 0; v < palette; v++) maxDiff[i] = Math.Max(maxDiff[i], Math.Abs(l[v] - reference[v]));
                    }
                    predictions++;
                }
            }
        }
        var byType = new JsonArray();
        for (int i = 0; i < n; i++)
        {
            var d = models[i].Decoder;
            byType.Add(new JsonObject
            {
                // The cache as the decoder holds it, and the kernels' weights where they are not fp32 ("int8/int16").
                ["kv_cache_type"] = d.Plan.KernelInt16Weights ? $"{d.CacheType}/{KernelWeightTypes.Int16}" : d.CacheType,
                ["bits_per_token"] = bits[i] / predictions,
                ["max_abs_logit_diff"] = maxDiff[i],
                ["top1_agreement"] = (double)agree[i] / predictions,
                ["segmented_steps"] = d.SegmentedSteps,
                ["kv_cache_bytes"] = d.KvCacheBytes,
            });
        }
        return new JsonObject
        {
            ["model"] = manifest.Id, ["images"] = images.Length, ["tokens"] = predictions, ["seconds"] = clock.Elapsed.TotalSeconds,
            ["types"] = byType,
        };
    }

    private static double LogSumExp(ReadOnlySpan<float> x)
    {
        float max = float.NegativeInfinity;
        foreach (var v in x) max = Math.Max(max, v);
        double sum = 0;
        foreach (var v in x) sum += Math.Exp(v - max);
        return max + Math.Log(sum);
    }

    private static int ArgMax(ReadOnlySpan<float> x)
    {
        int best = 0;
        for (int i = 1; i < x.Length; i++)
            if (x[i] > x[best]) best = i;
        return best;
    }
}
