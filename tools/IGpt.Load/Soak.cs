using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Net.Sockets;
using System.Runtime.InteropServices;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace IGpt.Tools.Load;

/// <summary>
/// The soak: mixed load for a long time (default 10 minutes) against a service this program starts (the Release build of
/// src/IGpt.Api on a free port, shipped models) or one at --url. Clients pick, at random, completions (multipart and JSON),
/// samples, classifications, SSE streams, streams they drop after the first row, and bad requests (which must get a 4xx
/// problem). Every ~10 s it samples the service's RSS and threads (/proc/PID/status). At the end: tables of requests by
/// kind and status, latency percentiles, the RSS series, a verdict on whether RSS levelled off after warm-up, and (for a
/// service it started) how long a graceful stop took; the same as JSON. Exit code 1 on any error or a growing RSS.
/// </summary>
internal static class Soak
{
    private const string Usage = """
        usage: dotnet run --project tools/IGpt.Load -c Release -- soak [--minutes 10] [--clients 8] [--url URL --pid PID]
               [--model ID] [--sample-seconds 10] [--max-growth-percent 5] [--out soak.json]
        Without --url the program builds and starts src/IGpt.Api (Release) on a free port and stops it at the end.
        """;

    private static readonly string[] Kinds =
        ["completion-multipart", "completion-json", "samples", "classification", "stream", "stream-disconnect", "bad-request"];
    private static readonly int[] Weights = [14, 14, 14, 22, 14, 10, 12];

    public static async Task<int> RunAsync(string[] args)
    {
        var options = SoakOptions.Parse(args);
        if (options is null)
        {
            Console.Error.WriteLine(Usage);
            return 2;
        }

        using var service = options.Url is null ? await ServiceProcess.StartAsync() : null;
        var url = options.Url ?? service!.Url;
        int? pid = service?.Pid ?? options.Pid;
        using var http = new HttpClient(new SocketsHttpHandler { MaxConnectionsPerServer = 1024, PooledConnectionLifetime = TimeSpan.FromMinutes(10) })
        {
            BaseAddress = new Uri(url),
            Timeout = TimeSpan.FromMinutes(5),
        };
        var model = options.Model ?? await LoadCommon.FirstReadyModelAsync(http);
        using var described = JsonDocument.Parse(await http.GetStringAsync($"/v1/models/{model}"));
        int width = described.RootElement.GetProperty("width").GetInt32(), height = described.RootElement.GetProperty("height").GetInt32();
        bool classifies = described.RootElement.GetProperty("has_classifier").GetBoolean();
        var duration = TimeSpan.FromMinutes(options.Minutes);
        Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"IGpt soak: {url}, model {model} ({width}x{height}), {options.Clients} clients, {options.Minutes:0.##} min, RSS every {options.SampleSeconds:0.#} s{(pid is null ? " (no --pid: RSS not sampled)" : $" (pid {pid})")}"));

        var tally = new Tally();
        var rss = new List<RssSample>();
        var clock = Stopwatch.StartNew();
        using var stop = new CancellationTokenSource(duration);
        var sampler = Task.Run(async () =>
        {
            while (true)
            {
                if (pid is { } p && RssSample.Read(p, clock.Elapsed) is { } sample)
                {
                    lock (rss) rss.Add(sample);
                    Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
                        $"  {sample.Seconds,6:0} s  RSS {sample.RssMiB,7:0.0} MiB  threads {sample.Threads,3}  requests {tally.Total,7}  errors {tally.Errors}"));
                }
                try { await Task.Delay(TimeSpan.FromSeconds(options.SampleSeconds), stop.Token); }
                catch (OperationCanceledException) { break; }
            }
        });
        var requests = new RequestFactory(model, width, height);
        var clients = Enumerable.Range(0, options.Clients).Select(c => Task.Run(async () =>
        {
            var random = new Random(1000 + c);
            while (!stop.IsCancellationRequested)
            {
                var kind = Pick(random);
                if (kind == "classification" && !classifies) kind = "samples";
                await RunOneAsync(http, requests, kind, random, tally);
            }
        })).ToArray();
        await Task.WhenAll(clients);
        await sampler;
        var elapsed = clock.Elapsed;
        if (pid is { } last && RssSample.Read(last, elapsed) is { } final) rss.Add(final);

        double? stopSeconds = null;
        int? stopExit = null;
        if (service is not null) (stopSeconds, stopExit) = await service.StopAsync();

        var report = Report(options, url, model, elapsed, tally, rss, stopSeconds, stopExit);
        await File.WriteAllTextAsync(options.Out, report.ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
        Console.WriteLine($"report: {Path.GetFullPath(options.Out)}");
        return tally.Errors == 0 && report["rss"]!["levelled_off"]!.GetValue<bool>() != false ? 0 : 1;
    }

    private static string Pick(Random random)
    {
        int roll = random.Next(Weights.Sum());
        for (int i = 0; i < Kinds.Length; i++)
        {
            if (roll < Weights[i]) return Kinds[i];
            roll -= Weights[i];
        }
        return Kinds[^1];
    }

    /// <summary>One request of <paramref name="kind"/>: its status and latency go to the tally; anything unexpected is an error.</summary>
    private static async Task RunOneAsync(HttpClient http, RequestFactory requests, string kind, Random random, Tally tally)
    {
        var started = Stopwatch.GetTimestamp();
        using var request = requests.Create(kind, random, out var expect4xx);
        try
        {
            var streaming = kind.StartsWith("stream", StringComparison.Ordinal);
            using var response = await http.SendAsync(request, streaming ? HttpCompletionOption.ResponseHeadersRead : HttpCompletionOption.ResponseContentRead);
            int status = (int)response.StatusCode;
            string? error = null;
            if (response.StatusCode == HttpStatusCode.ServiceUnavailable && response.Headers.RetryAfter?.Delta is { } retry)
            {
                tally.Add(kind, status, Stopwatch.GetElapsedTime(started), null);   // queue full: back off, not an error
                await Task.Delay(retry > TimeSpan.Zero ? retry : TimeSpan.FromMilliseconds(50));
                return;
            }
            if (expect4xx)
            {
                if (status is < 400 or >= 500 || response.Content.Headers.ContentType?.MediaType != "application/problem+json")
                    error = $"expected a 4xx problem, got {status}";
            }
            else if (status != 200)
            {
                error = $"{status} {await ShortBodyAsync(response)}";
            }
            else if (kind == "stream")
            {
                var last = await LastEventAsync(response, stopAfterRow: false);
                if (last != "result") error = $"stream ended with '{last}'";
            }
            else if (kind == "stream-disconnect")
            {
                var last = await LastEventAsync(response, stopAfterRow: true);
                if (last is not ("row" or "result")) error = $"stream gave '{last}' before its first row";
            }
            tally.Add(kind, status, Stopwatch.GetElapsedTime(started), error);
        }
        catch (Exception e) when (e is HttpRequestException or IOException or TaskCanceledException)
        {
            tally.Add(kind, 0, Stopwatch.GetElapsedTime(started), $"transport: {e.GetType().Name}: {e.Message}");
        }
    }

    /// <summary>Reads events up to the end (or, to drop the stream, the first row); returns the last event's type.</summary>
    private static async Task<string?> LastEventAsync(HttpResponseMessage response, bool stopAfterRow)
    {
        await using var stream = await response.Content.ReadAsStreamAsync();
        using var reader = new StreamReader(stream);
        string? last = null;
        while (await reader.ReadLineAsync() is { } line)
        {
            if (!line.StartsWith("event: ", StringComparison.Ordinal)) continue;
            last = line["event: ".Length..];
            if (stopAfterRow && last == "row") break;   // dispose: the client goes away mid-stream
        }
        return last;
    }

    private static async Task<string> ShortBodyAsync(HttpResponseMessage response)
    {
        var text = await response.Content.ReadAsStringAsync();
        return text[..Math.Min(200, text.Length)];
    }

    private static JsonObject Report(SoakOptions options, string url, string model, TimeSpan elapsed, Tally tally, List<RssSample> rss,
        double? stopSeconds, int? stopExit)
    {
        var inv = CultureInfo.InvariantCulture;
        Console.WriteLine();
        Console.WriteLine(string.Create(inv, $"{tally.Total} requests in {elapsed.TotalSeconds:0} s ({tally.Total / elapsed.TotalSeconds:0.0}/s), {tally.Errors} errors"));
        Console.WriteLine();
        Console.WriteLine("| kind | requests | statuses | errors | p50 ms | p95 ms | p99 ms |");
        Console.WriteLine("|---|--:|---|--:|--:|--:|--:|");
        var kinds = new JsonObject();
        foreach (var kind in Kinds)
        {
            var k = tally.Of(kind);
            if (k.Count == 0) continue;
            var sorted = k.Latencies.Order().ToArray();
            double p50 = LoadCommon.Percentile(sorted, 0.5), p95 = LoadCommon.Percentile(sorted, 0.95), p99 = LoadCommon.Percentile(sorted, 0.99);
            var statuses = string.Join(", ", k.Statuses.OrderBy(s => s.Key).Select(s => $"{(s.Key == 0 ? "none" : s.Key.ToString(inv))}: {s.Value}"));
            Console.WriteLine(string.Create(inv, $"| {kind} | {k.Count} | {statuses} | {k.Errors} | {p50:0} | {p95:0} | {p99:0} |"));
            kinds[kind] = new JsonObject
            {
                ["requests"] = k.Count,
                ["errors"] = k.Errors,
                ["statuses"] = new JsonObject(k.Statuses.OrderBy(s => s.Key).Select(s => KeyValuePair.Create(s.Key.ToString(inv), (JsonNode?)s.Value))),
                ["p50_ms"] = Math.Round(p50, 1),
                ["p95_ms"] = Math.Round(p95, 1),
                ["p99_ms"] = Math.Round(p99, 1),
            };
        }
        var errors = tally.FirstErrors();
        foreach (var e in errors) Console.WriteLine($"  error: {e}");

        // Levelled off: over the last third of the run (after warm-up), RSS grew by at most --max-growth-percent.
        JsonObject rssJson;
        if (rss.Count >= 3)
        {
            var third = rss.Where(s => s.Seconds >= rss[^1].Seconds * 2 / 3).ToArray();
            var from = third.Length >= 2 ? third[0] : rss[^2];
            double growth = 100 * (rss[^1].RssMiB - from.RssMiB) / from.RssMiB;
            double minutes = (rss[^1].Seconds - from.Seconds) / 60;
            bool levelled = growth <= options.MaxGrowthPercent;
            Console.WriteLine();
            Console.WriteLine(string.Create(inv,
                $"RSS: start {rss[0].RssMiB:0.0} MiB, peak {rss.Max(s => s.RssMiB):0.0} MiB, end {rss[^1].RssMiB:0.0} MiB; last third {from.RssMiB:0.0} -> {rss[^1].RssMiB:0.0} MiB ({growth:+0.0;-0.0}% in {minutes:0.0} min): {(levelled ? "levelled off" : "STILL GROWING")} (limit {options.MaxGrowthPercent:0.#}%)"));
            rssJson = new JsonObject
            {
                ["start_mib"] = Math.Round(rss[0].RssMiB, 1),
                ["peak_mib"] = Math.Round(rss.Max(s => s.RssMiB), 1),
                ["end_mib"] = Math.Round(rss[^1].RssMiB, 1),
                ["last_third_growth_percent"] = Math.Round(growth, 2),
                ["max_growth_percent"] = options.MaxGrowthPercent,
                ["levelled_off"] = levelled,
                ["samples"] = new JsonArray([.. rss.Select(s => (JsonNode)new JsonObject
                {
                    ["seconds"] = Math.Round(s.Seconds, 1),
                    ["rss_mib"] = Math.Round(s.RssMiB, 1),
                    ["threads"] = s.Threads,
                })]),
            };
        }
        else
        {
            Console.WriteLine("RSS: too few samples for a verdict");
            rssJson = new JsonObject { ["levelled_off"] = null, ["samples"] = new JsonArray() };
        }
        if (stopSeconds is { } seconds)
            Console.WriteLine(string.Create(inv, $"graceful stop (SIGTERM): {seconds:0.00} s, exit code {stopExit}"));

        return new JsonObject
        {
            ["url"] = url,
            ["model"] = model,
            ["clients"] = options.Clients,
            ["seconds"] = Math.Round(elapsed.TotalSeconds, 1),
            ["requests"] = tally.Total,
            ["errors"] = tally.Errors,
            ["first_errors"] = new JsonArray([.. errors.Select(e => (JsonNode)e)]),
            ["kinds"] = kinds,
            ["rss"] = rssJson,
            ["stop_seconds"] = stopSeconds,
            ["stop_exit_code"] = stopExit,
        };
    }

    /// <summary>The requests of each kind: images vary (so classifications miss the cache and prompts the prefix cache) about half the time.</summary>
    private sealed class RequestFactory(string model, int width, int height)
    {
        private readonly byte[][] _images = [.. Enumerable.Range(0, 8).Select(salt => LoadCommon.GreyPng(width, height, salt * 17))];
        private int _bad;

        private byte[] Image(Random random) => random.Next(2) == 0 ? _images[0] : LoadCommon.GreyPng(width, height, random.Next(1, 1_000_000));

        public HttpRequestMessage Create(string kind, Random random, out bool expect4xx)
        {
            expect4xx = false;
            var rows = Math.Max(1, height / 2).ToString(CultureInfo.InvariantCulture);
            var seed = random.Next().ToString(CultureInfo.InvariantCulture);
            switch (kind)
            {
                case "completion-multipart":
                    return Post("completions", Form(Image(random), ("rows", rows), ("n", "2"), ("seed", seed)));
                case "completion-json":
                    return Post("completions", Json($$"""{"image": "{{Convert.ToBase64String(Image(random))}}", "n": 2, "seed": {{seed}}}"""));
                case "samples":
                    return Post("samples", Json($$"""{"n": 2, "seed": {{seed}}}"""));
                case "classification":
                    return Post("classifications", Form(Image(random), ("top", "3")));
                case "stream":
                case "stream-disconnect":
                    var stream = Post("samples", Json($$"""{"n": 1, "stream": true, "seed": {{seed}}}"""));
                    stream.Headers.Accept.ParseAdd("text/event-stream");
                    return stream;
                default:
                    expect4xx = true;
                    return (Interlocked.Increment(ref _bad) % 6) switch
                    {
                        0 => Post("samples", Json("""{"n": 1,""")),                                     // malformed JSON: 400
                        1 => Post("samples", Json("""{"n": 0}""")),                                     // out of range: 400
                        2 => Post("completions", Form("not an image"u8.ToArray(), ("rows", rows))),     // undecodable image: 400
                        3 => Post("completions", new StringContent("n=1", Encoding.UTF8, "text/plain")), // media type: 415
                        4 => new HttpRequestMessage(HttpMethod.Post, "/v1/models/no-such-model/samples") { Content = Json("{}") }, // 404
                        _ => Post("completions", Json("""{"n": 1}""")),                                 // no image: 400
                    };
            }
        }

        private HttpRequestMessage Post(string route, HttpContent content) =>
            new(HttpMethod.Post, $"/v1/models/{model}/{route}") { Content = content };

        private static StringContent Json(string json) => new(json, Encoding.UTF8, "application/json");

        private static MultipartFormDataContent Form(byte[] image, params (string Name, string Value)[] fields)
        {
            var form = new MultipartFormDataContent();
            var file = new ByteArrayContent(image);
            file.Headers.ContentType = new System.Net.Http.Headers.MediaTypeHeaderValue("image/png");
            form.Add(file, "image", "image.png");
            foreach (var (name, value) in fields) form.Add(new StringContent(value), name);
            return form;
        }
    }

    private sealed record RssSample(double Seconds, double RssMiB, int Threads)
    {
        /// <summary>VmRSS and Threads of a process from /proc (Linux); null when it cannot be read.</summary>
        public static RssSample? Read(int pid, TimeSpan at)
        {
            try
            {
                double? rss = null;
                int threads = 0;
                foreach (var line in File.ReadLines($"/proc/{pid}/status"))
                {
                    if (line.StartsWith("VmRSS:", StringComparison.Ordinal))
                        rss = long.Parse(line["VmRSS:".Length..].Trim().Split(' ')[0], CultureInfo.InvariantCulture) / 1024.0;
                    else if (line.StartsWith("Threads:", StringComparison.Ordinal))
                        threads = int.Parse(line["Threads:".Length..].Trim(), CultureInfo.InvariantCulture);
                }
                return rss is { } r ? new RssSample(at.TotalSeconds, r, threads) : null;
            }
            catch (IOException)
            {
                return null;
            }
        }
    }

    private sealed class Tally
    {
        private readonly Lock _lock = new();
        private readonly Dictionary<string, KindTally> _kinds = [];
        private readonly List<string> _errors = [];
        private long _total, _errorCount;

        public long Total => Interlocked.Read(ref _total);
        public long Errors => Interlocked.Read(ref _errorCount);

        public void Add(string kind, int status, TimeSpan latency, string? error)
        {
            lock (_lock)
            {
                if (!_kinds.TryGetValue(kind, out var k)) _kinds[kind] = k = new KindTally();
                k.Count++;
                k.Statuses[status] = k.Statuses.GetValueOrDefault(status) + 1;
                k.Latencies.Add(latency.TotalMilliseconds);
                if (error is not null)
                {
                    k.Errors++;
                    Interlocked.Increment(ref _errorCount);
                    if (_errors.Count < 10) _errors.Add($"{kind}: {error}");
                }
                Interlocked.Increment(ref _total);
            }
        }

        public KindTally Of(string kind)
        {
            lock (_lock) return _kinds.GetValueOrDefault(kind) ?? new KindTally();
        }

        public string[] FirstErrors()
        {
            lock (_lock) return [.. _errors];
        }
    }

    private sealed class KindTally
    {
        public int Count, Errors;
        public Dictionary<int, int> Statuses { get; } = [];
        public List<double> Latencies { get; } = [];
    }

    /// <summary>The service, built in Release and started on a free loopback port from the repository root.</summary>
    private sealed class ServiceProcess : IDisposable
    {
        private readonly Process _process;

        private ServiceProcess(Process process, string url)
        {
            _process = process;
            Url = url;
        }

        public string Url { get; }
        public int Pid => _process.Id;

        public static async Task<ServiceProcess> StartAsync()
        {
            var root = FindRepoRoot();
            Console.WriteLine("building src/IGpt.Api (Release) ...");
            using (var build = Process.Start(new ProcessStartInfo("dotnet", ["build", Path.Combine(root, "src", "IGpt.Api"), "-c", "Release", "-v", "q", "-nologo"])
                   { WorkingDirectory = root })!)
            {
                await build.WaitForExitAsync();
                if (build.ExitCode != 0) throw new InvalidOperationException("dotnet build src/IGpt.Api failed");
            }
            var dll = Directory.GetFiles(Path.Combine(root, "src", "IGpt.Api", "bin", "Release"), "IGpt.Api.dll", SearchOption.AllDirectories)
                .OrderByDescending(File.GetLastWriteTimeUtc).First();
            var url = $"http://127.0.0.1:{FreePort()}";
            var log = Path.Combine(Path.GetTempPath(), $"igpt-soak-service-{Environment.ProcessId}.log");
            var info = new ProcessStartInfo("dotnet", [dll, "--urls", url])
            {
                WorkingDirectory = root,
                RedirectStandardOutput = true,
                RedirectStandardError = true,
            };
            info.Environment["Serilog__MinimumLevel__Default"] = "Warning";
            var process = Process.Start(info)!;
            var writer = new StreamWriter(log) { AutoFlush = true };
            process.OutputDataReceived += (_, e) => { if (e.Data is not null) lock (writer) writer.WriteLine(e.Data); };
            process.ErrorDataReceived += (_, e) => { if (e.Data is not null) lock (writer) writer.WriteLine(e.Data); };
            process.BeginOutputReadLine();
            process.BeginErrorReadLine();
            Console.WriteLine($"service pid {process.Id} at {url} (log {log})");

            using var probe = new HttpClient { BaseAddress = new Uri(url), Timeout = TimeSpan.FromSeconds(5) };
            var deadline = DateTime.UtcNow + TimeSpan.FromMinutes(3);
            while (true)
            {
                if (process.HasExited) throw new InvalidOperationException($"the service exited with {process.ExitCode}; see {log}");
                try
                {
                    if ((await probe.GetAsync("/health/ready")).IsSuccessStatusCode) break;
                }
                catch (Exception e) when (e is HttpRequestException or TaskCanceledException) { }
                if (DateTime.UtcNow > deadline) throw new TimeoutException($"the service was not ready within 3 minutes; see {log}");
                await Task.Delay(250);
            }
            return new ServiceProcess(process, url);
        }

        /// <summary>SIGTERM, as a container runtime stops it; the time it took to exit and its exit code.</summary>
        public async Task<(double Seconds, int ExitCode)> StopAsync()
        {
            var clock = Stopwatch.StartNew();
            if (Kill(_process.Id, 15) != 0) _process.Kill();
            using var limit = new CancellationTokenSource(TimeSpan.FromMinutes(2));
            try { await _process.WaitForExitAsync(limit.Token); }
            catch (OperationCanceledException) { _process.Kill(entireProcessTree: true); }
            await _process.WaitForExitAsync();
            return (clock.Elapsed.TotalSeconds, _process.ExitCode);
        }

        [DllImport("libc", EntryPoint = "kill")]
        private static extern int Kill(int pid, int signal);

        private static int FreePort()
        {
            using var socket = new TcpListener(IPAddress.Loopback, 0);
            socket.Start();
            return ((IPEndPoint)socket.LocalEndpoint).Port;
        }

        private static string FindRepoRoot()
        {
            foreach (var start in new[] { Directory.GetCurrentDirectory(), AppContext.BaseDirectory })
                for (var dir = new DirectoryInfo(start); dir is not null; dir = dir.Parent)
                    if (File.Exists(Path.Combine(dir.FullName, "IGpt.Api.sln"))) return dir.FullName;
            throw new InvalidOperationException("IGpt.Api.sln not found: run from the repository, or pass --url");
        }

        public void Dispose()
        {
            if (!_process.HasExited) _process.Kill(entireProcessTree: true);
            _process.Dispose();
        }
    }

    private sealed record SoakOptions(string? Url, int? Pid, string? Model, int Clients, double Minutes, double SampleSeconds,
        double MaxGrowthPercent, string Out)
    {
        public static SoakOptions? Parse(string[] args)
        {
            string? url = null, model = null;
            int? pid = null;
            int clients = 8;
            double minutes = 10, sampleSeconds = 10, maxGrowth = 5;
            string output = "soak.json";
            for (int i = 0; i < args.Length; i++)
            {
                string Next() => i + 1 < args.Length ? args[++i] : throw new ArgumentException($"{args[i]} needs a value");
                switch (args[i])
                {
                    case "--url": url = Next(); break;
                    case "--pid": pid = int.Parse(Next(), CultureInfo.InvariantCulture); break;
                    case "--model": model = Next(); break;
                    case "--clients": clients = int.Parse(Next(), CultureInfo.InvariantCulture); break;
                    case "--minutes": minutes = double.Parse(Next(), CultureInfo.InvariantCulture); break;
                    case "--sample-seconds": sampleSeconds = double.Parse(Next(), CultureInfo.InvariantCulture); break;
                    case "--max-growth-percent": maxGrowth = double.Parse(Next(), CultureInfo.InvariantCulture); break;
                    case "--out": output = Next(); break;
                    default: return null;
                }
            }
            if (clients < 1 || minutes <= 0 || sampleSeconds <= 0) return null;
            return new SoakOptions(url, pid, model, clients, minutes, sampleSeconds, maxGrowth, output);
        }
    }
}
