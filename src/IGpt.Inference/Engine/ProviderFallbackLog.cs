using System.Text.RegularExpressions;
using Microsoft.Extensions.Logging;

namespace IGpt.Inference.Engine;

/// <summary>
/// Says why the CUDA provider could not be used once per process (every model tries it and fails the same way):
/// the first fallback logs one warning with the short reason (e.g. "libcublasLt.so.13 not found"); every fallback
/// logs ONNX Runtime's full message at Debug, and the model keeps it as its provider reason.
/// </summary>
internal sealed partial class ProviderFallbackLog
{
    private int _reported;

    /// <summary>The process's log: what the library uses unless a caller gives its own (a test that needs a first time).</summary>
    public static ProviderFallbackLog Process { get; } = new();

    /// <summary>Whether a warning has been logged.</summary>
    public bool Reported => Volatile.Read(ref _reported) != 0;

    public void Report(ILogger logger, string modelId, string message)
    {
        if (Interlocked.Exchange(ref _reported, 1) == 0)
            logger.LogWarning("CUDA provider unavailable, running on the CPU: {Reason}", ShortReason(message));
        logger.LogDebug("Model {ModelId}: CUDA provider unavailable: {Message}", modelId, message);
    }

    /// <summary>
    /// The gist of ONNX Runtime's provider load error: the shared library the loader could not find or load, else the
    /// message's last clause (ORT prefixes its source location and error code).
    /// </summary>
    public static string ShortReason(string message)
    {
        if (MissingLibrary().Match(message) is { Success: true } missing) return $"{missing.Groups[1].Value} not found";
        if (LoadFailure().Match(message) is { Success: true } failed) return $"{failed.Groups[1].Value} could not be loaded";
        var line = StepPlanner.FirstLine(message).Trim();
        int colon = line.LastIndexOf(" : ", StringComparison.Ordinal);
        if (colon >= 0 && colon + 3 < line.Length) line = line[(colon + 3)..];
        return line.Length <= 160 ? line : line[..157] + "...";
    }

    // dlopen: "libcublasLt.so.13: cannot open shared object file: No such file or directory".
    [GeneratedRegex(@"([\w.+-]+\.so(?:\.\d+)*): cannot open shared object file")]
    private static partial Regex MissingLibrary();

    // Windows: "LoadLibrary failed with error 126 ... when trying to load ...\onnxruntime_providers_cuda.dll".
    [GeneratedRegex(@"when trying to load ""?(?:[^""]*[\\/])?([\w.+-]+\.dll)")]
    private static partial Regex LoadFailure();
}
