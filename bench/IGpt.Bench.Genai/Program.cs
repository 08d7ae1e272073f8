// The onnxruntime-genai benchmark worker: loads a model package folder through its
// genai_config.json (model type llama over decoder.onnx) and decodes greedily, feeding token ids
// straight in (Generator.AppendTokens; no tokenizer). Driven by bench/run.py.
using System.Diagnostics;
using System.Text.Json;
using System.Text.Json.Nodes;
using IGpt.Bench;
using Microsoft.ML.OnnxRuntimeGenAI;

using var oga = new OgaHandle();
Model? model = null;
int positions = 0, sos = 0;
var hello = new JsonObject { ["ready"] = true, ["method"] = "ort-genai", ["dotnet"] = Environment.Version.ToString(), ["cores"] = Environment.ProcessorCount };
int rc = Protocol.Serve(hello, request => (string?)request["op"] switch
{
    "load" => Load(request),
    "complete" => Complete(request),
    var op => throw new ArgumentException($"unknown op {op}"),
});
model?.Dispose();
return rc;

JsonObject Load(JsonObject r)
{
    model?.Dispose();
    string dir = (string)r["package"]!;
    using var manifest = JsonDocument.Parse(File.ReadAllText(Path.Combine(dir, "model.json")));
    positions = manifest.RootElement.GetProperty("architecture").GetProperty("n_positions").GetInt32();
    sos = manifest.RootElement.GetProperty("sos_token_id").GetInt32();
    // Threads: the package's genai_config.json decides, as it does for a user; when run.py asks for more intra-op
    // threads than that file sets (or it sets none: genai then lets ONNX Runtime pick one per physical core),
    // they are added with genai's own config overlay, the documented way to change session options at load.
    int requested = (int?)r["threads"] ?? 0;
    int? configured = ConfiguredThreads(dir);
    using var config = new Config(dir);
    string source = configured is null ? "genai_config.json sets none" : "genai_config.json";
    int? threads = configured;
    if (requested > 0 && configured != requested)
    {
        config.Overlay(new JsonObject { ["model"] = new JsonObject { ["decoder"] = new JsonObject { ["session_options"] = new JsonObject { ["intra_op_num_threads"] = requested } } } }.ToJsonString());
        threads = requested;
        source = configured is null ? "config overlay; genai_config.json sets none" : $"config overlay; genai_config.json sets {configured}";
    }
    var sw = Stopwatch.StartNew();
    model = new Model(config);
    return new JsonObject
    {
        ["load_ms"] = sw.Elapsed.TotalMilliseconds,
        ["model_type"] = model.GetModelType(),
        ["threads"] = threads,
        ["process_threads"] = Process.GetCurrentProcess().Threads.Count,
        ["settings"] = $"intra_op_num_threads={(threads?.ToString() ?? "ORT default (physical cores)")} ({source}), "
            + "greedy, CPU provider, search options from genai_config.json",
    };
}

// decoder.session_options.intra_op_num_threads in the package's genai_config.json, when it sets one (0 counts as none).
static int? ConfiguredThreads(string dir)
{
    using var doc = JsonDocument.Parse(File.ReadAllText(Path.Combine(dir, "genai_config.json")));
    return doc.RootElement.GetProperty("model").GetProperty("decoder").TryGetProperty("session_options", out var so)
           && so.TryGetProperty("intra_op_num_threads", out var t) && t.GetInt32() > 0 ? t.GetInt32() : null;
}

// Greedy: [SOS, prompt] for every row, then tokens until max_length = n_positions, i.e. the image's
// pixels up to x(n-2) (genai's sequence holds SOS too, so the image's last pixel does not fit).
JsonObject Complete(JsonObject r)
{
    var m = model ?? throw new InvalidOperationException("load first");
    int[] prompt = Protocol.Ints(r["prompt"]);
    int batch = (int)r["batch"]!;
    var input = new int[batch * (prompt.Length + 1)];
    for (int b = 0; b < batch; b++)
    {
        input[b * (prompt.Length + 1)] = sos;
        prompt.CopyTo(input, b * (prompt.Length + 1) + 1);
    }
    var total = Stopwatch.StartNew();
    using var p = new GeneratorParams(m);
    p.SetSearchOption("max_length", positions);
    p.SetSearchOption("batch_size", batch);
    p.SetSearchOption("do_sample", false);
    using var g = new Generator(m, p);
    double setupMs = total.Elapsed.TotalMilliseconds;
    var clock = Stopwatch.StartNew();
    g.AppendTokens(input);   // the prefill: runs the model over the prompt rows
    double prefillMs = clock.Elapsed.TotalMilliseconds;
    clock.Restart();
    int generated = 0;
    while (!g.IsDone())
    {
        g.GenerateNextToken();   // picks from the last logits, then (from the second on) runs one step
        generated++;
    }
    double decodeMs = clock.Elapsed.TotalMilliseconds;
    double totalMs = total.Elapsed.TotalMilliseconds;
    var first = g.GetSequence(0).ToArray();
    bool agree = true;
    for (ulong b = 1; b < (ulong)batch; b++) agree &= g.GetSequence(b).ToArray().AsSpan().SequenceEqual(first);
    return new JsonObject
    {
        ["tokens"] = Protocol.Array(first[(prompt.Length + 1)..]),
        ["setup_ms"] = setupMs,
        ["prefill_ms"] = prefillMs,
        ["decode_ms"] = decodeMs,
        ["total_ms"] = totalMs,
        ["steps"] = generated - 1,
        ["rows_agree"] = agree,
    };
}
