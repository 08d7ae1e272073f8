using System.Text.Json;
using System.Text.Json.Nodes;

namespace IGpt.Bench;

/// <summary>
/// The benchmark workers' protocol (bench/run.py drives them): one JSON object per line on stdin,
/// one reply per line on stdout ({"ok": true, ...} or {"ok": false, "error": ...}, always with
/// peak_rss_mib); {"op": "quit"} ends the loop. Logs go to stderr.
/// </summary>
public static class Protocol
{
    public static int Serve(JsonObject hello, Func<JsonObject, JsonObject> handle)
    {
        var stdout = Console.Out;
        stdout.WriteLine(hello.ToJsonString());
        stdout.Flush();
        string? line;
        while ((line = Console.In.ReadLine()) is not null)
        {
            if (string.IsNullOrWhiteSpace(line)) continue;
            JsonObject reply;
            try
            {
                var request = JsonNode.Parse(line)!.AsObject();
                if ((string?)request["op"] == "quit") break;
                reply = handle(request);
                reply["ok"] = true;
            }
            catch (Exception e)
            {
                reply = new JsonObject { ["ok"] = false, ["error"] = $"{e.GetType().Name}: {e.Message}" };
                Console.Error.WriteLine(e);
            }
            reply["peak_rss_mib"] = PeakRssMib();
            stdout.WriteLine(reply.ToJsonString());
            stdout.Flush();
        }
        return 0;
    }

    /// <summary>VmHWM of this process (peak resident set), MiB.</summary>
    public static double PeakRssMib()
    {
        foreach (var line in File.ReadLines("/proc/self/status"))
            if (line.StartsWith("VmHWM:", StringComparison.Ordinal))
                return long.Parse(line.Split(' ', StringSplitOptions.RemoveEmptyEntries)[1]) / 1024.0;
        return double.NaN;
    }

    public static int[] Ints(JsonNode? node) => node!.AsArray().Select(x => (int)x!).ToArray();

    public static JsonArray Array<T>(IEnumerable<T> values) => new(values.Select(v => JsonValue.Create(v)).ToArray<JsonNode?>());
}
