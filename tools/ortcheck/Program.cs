// Checks a model package (models/README.md, format v1) in ONNX Runtime on the CPU provider against
// the PyTorch logits in its parity.json, driving decoder.onnx every way the format allows:
//   dotnet run --project tools/ortcheck -c Release -- models/<id>
// Exit code 0 when every check passes. The fp16 graphs are checked loosely (5e-2) when present.
using System.Text.Json;
using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;

string dir = args.Length > 0 ? args[0] : Path.Combine("tests", "fixtures", "tiny-package");
var package = Package.Load(dir);
var report = new List<(bool Pass, string Line)>();
using var options = new SessionOptions { LogSeverityLevel = OrtLoggingLevel.ORT_LOGGING_LEVEL_ERROR };

void Check(string what, double diff, double limit) =>
    report.Add((diff <= limit, $"{(diff <= limit ? "PASS" : "FAIL")} {what}: max abs diff {diff:E3} (limit {limit:E1})"));

foreach (var (file, fp16, limit) in new[] { ("decoder.onnx", false, package.Tolerance), ("decoder.fp16.onnx", true, 5e-2) })
{
    if (!File.Exists(Path.Combine(dir, file)))
        continue;
    try
    {
        using var decoder = new DecoderChecks(package, new InferenceSession(Path.Combine(dir, file), options), fp16);
        foreach (var (what, diff) in decoder.RunAll())
            Check($"{file} {what}", diff, what.StartsWith("SOS", StringComparison.Ordinal) ? 0 : limit);
    }
    catch (OnnxRuntimeException e)
    {
        report.Add((false, $"FAIL {file}: {e.Message.Split('\n')[0]}"));
    }
}

foreach (var (file, limit) in new[] { ("classifier.onnx", package.Tolerance), ("classifier.fp16.onnx", 5e-2) })
{
    if (package.ClassifierIds is not { } rows || package.ClassifierLogits is not { } want || !File.Exists(Path.Combine(dir, file)))
        continue;
    using var session = new InferenceSession(Path.Combine(dir, file), options);
    using var run = new RunOptions();
    int n = rows[0].Length;
    using var ids = OrtValue.CreateTensorValueFromMemory(rows.SelectMany(r => r).ToArray(), [rows.Length, n]);
    using var outputs = session.Run(run, ["input_ids"], [ids], ["logits"]);
    var got = outputs[0].GetTensorDataAsSpan<float>();
    double diff = 0;
    for (int b = 0; b < rows.Length; b++)
        diff = Math.Max(diff, Package.MaxDiff(got.Slice(b * want[b].Length, want[b].Length), want[b]));
    Check($"{file} (batch {rows.Length}, {n} tokens)", diff, limit);
    using var one = OrtValue.CreateTensorValueFromMemory(rows[^1], [1, n]);
    using var single = session.Run(run, ["input_ids"], [one], ["logits"]);
    Check($"{file} (batch 1)", Package.MaxDiff(single[0].GetTensorDataAsSpan<float>(), want[^1]), limit);
}

foreach (var (_, line) in report)
    Console.WriteLine(line);
bool ok = report.Count > 0 && report.All(r => r.Pass);
Console.WriteLine(ok ? "ALL PASS" : "SOME FAILED");
return ok ? 0 : 1;

/// <summary>What the checks need from model.json and parity.json.</summary>
sealed record Package(int Layers, int Heads, int HeadSize, int Positions, int Vocab, int Sos, double Tolerance,
    long[] Prompt, long[] DecodeTokens, float[][] PrefillLogits, float[][] DecodeLogits,
    long[][]? ClassifierIds, float[][]? ClassifierLogits)
{
    public static Package Load(string dir)
    {
        var manifest = JsonDocument.Parse(File.ReadAllText(Path.Combine(dir, "model.json"))).RootElement;
        var parity = JsonDocument.Parse(File.ReadAllText(Path.Combine(dir, "parity.json"))).RootElement;
        var arch = manifest.GetProperty("architecture");
        bool hasClassifier = parity.TryGetProperty("classifier", out var cls);
        return new Package(arch.GetProperty("n_layer").GetInt32(), arch.GetProperty("n_head").GetInt32(),
            arch.GetProperty("head_size").GetInt32(), arch.GetProperty("n_positions").GetInt32(),
            manifest.GetProperty("vocab_size").GetInt32(), manifest.GetProperty("sos_token_id").GetInt32(),
            parity.GetProperty("tolerance").GetDouble(),
            Longs(parity.GetProperty("prompt")), Longs(parity.GetProperty("decode_tokens")),
            Floats(parity.GetProperty("prefill_logits")), Floats(parity.GetProperty("decode_logits")),
            hasClassifier ? cls.GetProperty("input_ids").EnumerateArray().Select(Longs).ToArray() : null,
            hasClassifier ? Floats(cls.GetProperty("logits")) : null);
    }

    static long[] Longs(JsonElement e) => e.EnumerateArray().Select(x => x.GetInt64()).ToArray();

    static float[][] Floats(JsonElement e) =>
        e.EnumerateArray().Select(r => r.EnumerateArray().Select(x => (float)x.GetDouble()).ToArray()).ToArray();

    public static double MaxDiff(ReadOnlySpan<float> got, float[] want)
    {
        if (got.Length != want.Length)
            throw new InvalidOperationException($"row of {got.Length} values, expected {want.Length}");
        double max = 0;
        for (int i = 0; i < got.Length; i++)
            max = Math.Max(max, Math.Abs(got[i] - want[i]));
        return max;
    }

    /// <summary>Prompt then decode tokens, and the reference logits row for each position.</summary>
    public long[] Sequence => [.. Prompt, .. DecodeTokens];

    public float[][] Reference => [.. PrefillLogits, .. DecodeLogits];
}

/// <summary>Drives one decoder graph through each way of running it that models/README.md describes.</summary>
sealed class DecoderChecks(Package p, InferenceSession session, bool fp16) : IDisposable
{
    readonly RunOptions _run = new();
    readonly TensorElementType _cacheType = fp16 ? TensorElementType.Float16 : TensorElementType.Float;

    public void Dispose()
    {
        _run.Dispose();
        session.Dispose();
    }

    public IEnumerable<(string What, double Diff)> RunAll()
    {
        yield return ("prefill + decode, shared buffer", SharedBatch1([p.Prompt.Length, .. Enumerable.Repeat(1, p.DecodeTokens.Length)], out double sos));
        yield return ("SOS column is -1e9", sos);
        int split = Math.Max(1, p.Prompt.Length - 3);
        yield return ($"chunked prefill {split} + {p.Prompt.Length - split}, shared buffer",
            SharedBatch1([split, p.Prompt.Length - split, .. Enumerable.Repeat(1, p.DecodeTokens.Length)], out _));
        yield return ("batch 2 token by token from SOS", TokenByToken(batch: 2));
        yield return ("batch 2 of lengths differing by 3, right-padded prefill, then decode", RaggedBatch(lag: Math.Min(3, p.Prompt.Length - 1)));
        yield return ($"full context: {p.Positions}-token prefill vs {p.Positions} steps (ORT vs ORT)", FullContext());
        if (!fp16)
            yield return ("growing cache (past fed back from present, empty at first)", GrowingCache());
    }

    List<OrtValue> Caches(int batch)
    {
        var caches = new List<OrtValue>();
        for (int i = 0; i < 2 * p.Layers; i++)
            caches.Add(OrtValue.CreateAllocatedTensorValue(OrtAllocator.DefaultInstance, _cacheType, [batch, p.Heads, p.Positions, p.HeadSize]));
        return caches;
    }

    /// <summary>One step with each past bound as its own present (the shared buffer). Returns logits [B*S*V].</summary>
    float[] Step(List<OrtValue> caches, long[] ids, long[] mask, long[] positions, int batch)
    {
        int s = ids.Length / batch, t = mask.Length / batch;
        using var idsValue = OrtValue.CreateTensorValueFromMemory(ids, [batch, s]);
        using var maskValue = OrtValue.CreateTensorValueFromMemory(mask, [batch, t]);
        using var posValue = OrtValue.CreateTensorValueFromMemory(positions, [batch, s]);
        using var logits = OrtValue.CreateAllocatedTensorValue(OrtAllocator.DefaultInstance, TensorElementType.Float, [batch, s, p.Vocab]);
        var inNames = new List<string> { "input_ids", "attention_mask", "position_ids" };
        var inValues = new List<OrtValue> { idsValue, maskValue, posValue };
        var outNames = new List<string> { "logits" };
        var outValues = new List<OrtValue> { logits };
        for (int i = 0; i < p.Layers; i++)
        {
            foreach (var (kind, k) in new[] { ("key", 0), ("value", 1) })
            {
                inNames.Add($"past_key_values.{i}.{kind}");
                inValues.Add(caches[2 * i + k]);
                outNames.Add($"present.{i}.{kind}");
                outValues.Add(caches[2 * i + k]);
            }
        }
        session.Run(_run, inNames, inValues, outNames, outValues);
        return logits.GetTensorDataAsSpan<float>().ToArray();
    }

    static long[] Ones(int n) => Enumerable.Repeat(1L, n).ToArray();

    static long[] Range(int start, int count) => Enumerable.Range(start, count).Select(x => (long)x).ToArray();

    double Compare(float[] logits, int row, int position) => Package.MaxDiff(logits.AsSpan(row * p.Vocab, p.Vocab), p.Reference[position]);

    double SharedBatch1(int[] chunks, out double sosDiff)
    {
        var caches = Caches(1);
        var seq = p.Sequence;
        double max = 0;
        sosDiff = 0;
        int pos = 0;
        foreach (int s in chunks)
        {
            var logits = Step(caches, seq[pos..(pos + s)], Ones(pos + s), Range(pos, s), 1);
            for (int i = 0; i < s; i++)
            {
                max = Math.Max(max, Compare(logits, i, pos + i));
                sosDiff = Math.Max(sosDiff, Math.Abs(logits[i * p.Vocab + p.Sos] + 1e9f));
            }
            pos += s;
        }
        caches.ForEach(c => c.Dispose());
        return max;
    }

    double TokenByToken(int batch)
    {
        var caches = Caches(batch);
        var seq = p.Sequence;
        double max = 0;
        for (int t = 0; t < seq.Length; t++)
        {
            var logits = Step(caches, Enumerable.Repeat(seq[t], batch).ToArray(), Ones(batch * (t + 1)), Enumerable.Repeat((long)t, batch).ToArray(), batch);
            for (int r = 0; r < batch; r++)
                max = Math.Max(max, Compare(logits, r, t));
        }
        caches.ForEach(c => c.Dispose());
        return max;
    }

    double RaggedBatch(int lag)
    {
        var caches = Caches(2);
        var seq = p.Sequence;
        int width = p.Prompt.Length;
        int[] length = [width, width - lag];
        var ids = new long[2 * width];
        var mask = new long[2 * width];
        for (int r = 0; r < 2; r++)
            for (int s = 0; s < width; s++)
            {
                ids[r * width + s] = s < length[r] ? seq[s] : 0;
                mask[r * width + s] = s < length[r] ? 1 : 0;
            }
        var logits = Step(caches, ids, mask, [.. Range(0, width), .. Range(0, width)], 2);
        double max = 0;
        for (int r = 0; r < 2; r++)
            for (int s = 0; s < length[r]; s++)
                max = Math.Max(max, Package.MaxDiff(logits.AsSpan((r * width + s) * p.Vocab, p.Vocab), p.Reference[s]));
        for (int k = 0; k < p.DecodeTokens.Length; k++)
        {
            int t = length.Max() + 1;
            var stepMask = new long[2 * t];
            for (int r = 0; r < 2; r++)
                for (int j = 0; j <= length[r]; j++)
                    stepMask[r * t + j] = 1;
            logits = Step(caches, [seq[length[0]], seq[length[1]]], stepMask, [length[0], length[1]], 2);
            for (int r = 0; r < 2; r++)
                max = Math.Max(max, Compare(logits, r, length[r]++));
        }
        caches.ForEach(c => c.Dispose());
        return max;
    }

    double FullContext()
    {
        var seq = new long[p.Positions];
        seq[0] = p.Sos;
        for (int t = 1; t < seq.Length; t++)
            seq[t] = (t * 7 + t / 5) % p.Sos;
        var whole = Caches(1);
        var full = Step(whole, seq, Ones(seq.Length), Range(0, seq.Length), 1);
        var steps = Caches(1);
        double max = 0;
        for (int t = 0; t < seq.Length; t++)
        {
            var logits = Step(steps, [seq[t]], Ones(t + 1), [t], 1);
            max = Math.Max(max, Package.MaxDiff(logits, full[(t * p.Vocab)..((t + 1) * p.Vocab)]));
        }
        whole.Concat(steps).ToList().ForEach(c => c.Dispose());
        return max;
    }

    double GrowingCache()
    {
        var past = new List<OrtValue>();
        for (int i = 0; i < 2 * p.Layers; i++)
            past.Add(OrtValue.CreateTensorValueFromMemory(Array.Empty<float>(), [1, p.Heads, 0, p.HeadSize]));
        var seq = p.Sequence;
        int[] chunks = [p.Prompt.Length, .. Enumerable.Repeat(1, p.DecodeTokens.Length)];
        double max = 0;
        int pos = 0;
        foreach (int s in chunks)
        {
            using var ids = OrtValue.CreateTensorValueFromMemory(seq[pos..(pos + s)], [1, s]);
            using var mask = OrtValue.CreateTensorValueFromMemory(Ones(pos + s), [1, pos + s]);
            using var positions = OrtValue.CreateTensorValueFromMemory(Range(pos, s), [1, s]);
            var inNames = new List<string> { "input_ids", "attention_mask", "position_ids" };
            var inValues = new List<OrtValue> { ids, mask, positions };
            var outNames = new List<string> { "logits" };
            for (int i = 0; i < p.Layers; i++)
            {
                inNames.AddRange([$"past_key_values.{i}.key", $"past_key_values.{i}.value"]);
                inValues.AddRange([past[2 * i], past[2 * i + 1]]);
                outNames.AddRange([$"present.{i}.key", $"present.{i}.value"]);
            }
            var outputs = session.Run(_run, inNames, inValues, outNames);
            var logits = outputs[0].GetTensorDataAsSpan<float>().ToArray();
            for (int i = 0; i < s; i++)
                max = Math.Max(max, Compare(logits, i, pos + i));
            if (outputs[1].GetTensorTypeAndShape().Shape[2] != pos + s)
                throw new InvalidOperationException("present length is not past + new");
            past.ForEach(v => v.Dispose());
            past = outputs.Skip(1).ToList();
            outputs[0].Dispose();
            pos += s;
        }
        past.ForEach(v => v.Dispose());
        return max;
    }
}
