// IGpt.Load: N concurrent clients against a running IGpt service, one level of N after another.
// Each client posts generation requests back to back for --seconds; the table gives, per N, the aggregate
// tokens/s and images/s, latency percentiles of the 200 answers, the statuses seen, and the server's own view
// from /metrics (mean sequences per decode step, decode steps per second, mean decode step time). Only 200 and a clean 503 (problem+json
// with Retry-After, after which the client waits that long) are allowed; anything else makes the exit code 1.
// `soak` (first argument) runs the mixed-load soak instead (Soak.cs).
using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Text;
using System.Text.Json;
using System.Text.RegularExpressions;
using IGpt.Tools.Load;

if (args.Length > 0 && args[0] == "soak") return await Soak.RunAsync(args[1..]);

var options = LoadOptions.Parse(args);
if (options is null) return 2;

using var http = new HttpClient(new SocketsHttpHandler { MaxConnectionsPerServer = 1024, PooledConnectionLifetime = TimeSpan.FromMinutes(10) })
{
    BaseAddress = new Uri(options.Url),
    Timeout = TimeSpan.FromMinutes(10),
};

var model = options.Model ?? await LoadCommon.FirstReadyModelAsync(http);
var route = $"/v1/models/{model}/{options.Kind}";
var body = await RequestBodyAsync(http, model, options);
Console.WriteLine($"IGpt.Load: {options.Url}{route}, n={options.N} image(s) per request, {options.Seconds} s per level, warm-up {options.WarmupSeconds} s");
Console.WriteLine();
Console.WriteLine("| clients | requests | 200 | 503 | other | images/s | tokens/s | x vs 1 | p50 ms | p90 ms | p99 ms | rows/step | steps/s | ms/step |");
Console.WriteLine("|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|");

double? single = null;
bool clean = true;
foreach (var clients in options.Clients)
{
    await RunLevelAsync(http, route, body, clients, TimeSpan.FromSeconds(options.WarmupSeconds));
    var before = await ScrapeAsync(http, model);
    var level = await RunLevelAsync(http, route, body, clients, TimeSpan.FromSeconds(options.Seconds));
    var after = await ScrapeAsync(http, model);
    double tokensPerSecond = level.Tokens / level.Elapsed.TotalSeconds;
    single ??= clients == 1 ? tokensPerSecond : null;
    double steps = after.Steps - before.Steps;
    double rowsPerStep = after.OccupancyCount > before.OccupancyCount
        ? (after.OccupancySum - before.OccupancySum) / (after.OccupancyCount - before.OccupancyCount) : 0;
    double msPerStep = after.StepCount > before.StepCount
        ? 1000 * (after.StepSeconds - before.StepSeconds) / (after.StepCount - before.StepCount) : 0;
    var latencies = level.Latencies.Order().ToArray();
    Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
        $"| {clients} | {level.Requests} | {level.Ok} | {level.Busy} | {level.Other} | {level.Images / level.Elapsed.TotalSeconds:0.0} | {tokensPerSecond:0} | {(single is { } s ? tokensPerSecond / s : double.NaN):0.00} | {LoadCommon.Percentile(latencies, 0.5):0} | {LoadCommon.Percentile(latencies, 0.9):0} | {LoadCommon.Percentile(latencies, 0.99):0} | {rowsPerStep:0.0} | {steps / level.Elapsed.TotalSeconds:0} | {msPerStep:0.00} |"));
    foreach (var problem in level.Problems.Take(5)) Console.WriteLine($"  unexpected answer: {problem}");
    clean &= level.Other == 0;
}
Console.WriteLine();
Console.WriteLine(clean ? "statuses: only 200 and clean 503" : "statuses: UNEXPECTED answers (see above)");
return clean ? 0 : 1;

static async Task<LevelResult> RunLevelAsync(HttpClient http, string route, string body, int clients, TimeSpan duration)
{
    var result = new LevelResult();
    var clock = Stopwatch.StartNew();
    var tasks = Enumerable.Range(0, clients).Select(c => Task.Run(async () =>
    {
        ulong seed = (ulong)c * 7919;
        while (clock.Elapsed < duration)
        {
            var started = Stopwatch.GetTimestamp();
            using var content = new StringContent(body.Replace("\"seed\": 0", $"\"seed\": {seed++}"), Encoding.UTF8, "application/json");
            HttpResponseMessage response;
            try
            {
                response = await http.PostAsync(route, content);
            }
            catch (HttpRequestException e)
            {
                result.Add(other: $"transport error: {e.Message}");
                continue;
            }
            using (response)
            {
                var text = await response.Content.ReadAsStringAsync();
                var latency = Stopwatch.GetElapsedTime(started).TotalMilliseconds;
                if (response.StatusCode == HttpStatusCode.OK)
                {
                    using var json = JsonDocument.Parse(text);
                    var usage = json.RootElement.GetProperty("usage");
                    result.AddOk(latency, json.RootElement.GetProperty("images").GetArrayLength(), usage.GetProperty("generated_tokens").GetInt64());
                }
                else if (response.StatusCode == HttpStatusCode.ServiceUnavailable
                         && response.Content.Headers.ContentType?.MediaType == "application/problem+json"
                         && response.Headers.RetryAfter?.Delta is { } retry)
                {
                    result.AddBusy();
                    await Task.Delay(retry > TimeSpan.Zero ? retry : TimeSpan.FromMilliseconds(50));
                }
                else
                {
                    result.Add(other: $"{(int)response.StatusCode} {text[..Math.Min(200, text.Length)]}");
                }
            }
        }
    })).ToArray();
    await Task.WhenAll(tasks);
    result.Elapsed = clock.Elapsed;
    return result;
}

// Completions post the top half of a mid-grey image (rows = half the height); samples post only the fields.
static async Task<string> RequestBodyAsync(HttpClient http, string model, LoadOptions options)
{
    var fields = $"\"n\": {options.N}, \"seed\": 0";
    if (options.Kind == "samples") return "{" + fields + "}";
    using var json = JsonDocument.Parse(await http.GetStringAsync($"/v1/models/{model}"));
    int width = json.RootElement.GetProperty("width").GetInt32(), height = json.RootElement.GetProperty("height").GetInt32();
    return "{" + fields + $", \"image\": \"{Convert.ToBase64String(LoadCommon.GreyPng(width, height))}\"" + "}";
}

static async Task<Scrape> ScrapeAsync(HttpClient http, string model)
{
    string text;
    try { text = await http.GetStringAsync("/metrics"); }
    catch (HttpRequestException) { return new Scrape(0, 0, 0, 0, 0); }
    double Read(string name)
    {
        var m = Regex.Match(text, "^" + Regex.Escape(name) + @"\{model=""" + Regex.Escape(model) + @"""\} (\S+)$", RegexOptions.Multiline);
        return m.Success ? double.Parse(m.Groups[1].Value, CultureInfo.InvariantCulture) : 0;
    }
    return new Scrape(Read("igpt_decode_steps_total"), Read("igpt_batch_occupancy_sum"), Read("igpt_batch_occupancy_count"),
        Read("igpt_decode_step_seconds_sum"), Read("igpt_decode_step_seconds_count"));
}

internal sealed record Scrape(double Steps, double OccupancySum, double OccupancyCount, double StepSeconds, double StepCount);

internal sealed class LevelResult
{
    private readonly Lock _lock = new();
    public List<double> Latencies { get; } = [];
    public List<string> Problems { get; } = [];
    public long Requests, Ok, Busy, Other, Images, Tokens;
    public TimeSpan Elapsed;

    public void AddOk(double latencyMs, int images, long tokens)
    {
        lock (_lock) { Requests++; Ok++; Images += images; Tokens += tokens; Latencies.Add(latencyMs); }
    }

    public void AddBusy()
    {
        lock (_lock) { Requests++; Busy++; }
    }

    public void Add(string other)
    {
        lock (_lock) { Requests++; Other++; Problems.Add(other); }
    }
}

internal sealed record LoadOptions(string Url, string? Model, string Kind, int N, int[] Clients, double Seconds, double WarmupSeconds)
{
    public static LoadOptions? Parse(string[] args)
    {
        string url = "http://localhost:8080", kind = "samples";
        string? model = null;
        int n = 1;
        int[] clients = [1, 4, 16, 64];
        double seconds = 20, warmup = 3;
        for (int i = 0; i < args.Length; i++)
        {
            string Next() => i + 1 < args.Length ? args[++i] : throw new ArgumentException($"{args[i]} needs a value");
            switch (args[i])
            {
                case "--url": url = Next(); break;
                case "--model": model = Next(); break;
                case "--kind": kind = Next(); break;
                case "--n": n = int.Parse(Next(), CultureInfo.InvariantCulture); break;
                case "--clients": clients = [.. Next().Split(',').Select(c => int.Parse(c, CultureInfo.InvariantCulture))]; break;
                case "--seconds": seconds = double.Parse(Next(), CultureInfo.InvariantCulture); break;
                case "--warmup": warmup = double.Parse(Next(), CultureInfo.InvariantCulture); break;
                default:
                    Console.Error.WriteLine("""
                        usage: dotnet run --project tools/IGpt.Load -c Release -- [--url http://localhost:8080] [--model ID]
                               [--kind samples|completions] [--n 1] [--clients 1,4,16,64] [--seconds 20] [--warmup 3]
                        """);
                    return null;
            }
        }
        if (kind is not ("samples" or "completions")) throw new ArgumentException("--kind is samples or completions");
        return new LoadOptions(url, model, kind, n, clients, seconds, warmup);
    }
}
