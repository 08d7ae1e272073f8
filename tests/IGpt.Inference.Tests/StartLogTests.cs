using Microsoft.Extensions.Logging;

namespace IGpt.Inference.Tests;

/// <summary>
/// A start without a usable CUDA installation: every model falls back to the CPU, but the reason is logged once,
/// in one short line; ONNX Runtime's full message stays in each model's ProviderReason and at Debug.
/// </summary>
public class StartLogTests
{
    private const string OrtMessage =
        "[ErrorCode:RuntimeException] /onnxruntime_src/onnxruntime/core/session/provider_bridge_ort.cc:1862 "
        + "onnxruntime::Provider& onnxruntime::ProviderLibrary::Get() [ONNXRuntimeError] : 1 : FAIL : Failed to load library "
        + "libonnxruntime_providers_cuda.so with error: libcublasLt.so.13: cannot open shared object file: No such file or directory";

    [Theory]
    [InlineData(OrtMessage, "libcublasLt.so.13 not found")]
    [InlineData("LoadLibrary failed with error 126 \"\" when trying to load \"C:\\app\\onnxruntime_providers_cuda.dll\"",
        "onnxruntime_providers_cuda.dll could not be loaded")]
    [InlineData("[ONNXRuntimeError] : 1 : FAIL : CUDA failure 100: no CUDA-capable device is detected", "CUDA failure 100: no CUDA-capable device is detected")]
    public void TheShortReasonNamesTheMissingLibrary(string message, string expected) =>
        Assert.Equal(expected, ProviderFallbackLog.ShortReason(message));

    [Fact]
    public void ThreeModelsWithoutCudaWarnOnceInOneShortLine()
    {
        var log = new ListLogger();
        var options = Fixture.CpuOptions();
        options.UseCuda = true;
        var planner = new StepPlanner(options) { Fallbacks = new ProviderFallbackLog() };
        var manifest = ModelManifest.Load(Fixture.PackageDir);
        var models = Enumerable.Range(0, 3).Select(_ => IGptModel.Load(manifest, planner, log)).ToList();
        try
        {
            if (models[0].ExecutionProvider == "CUDA")
            {
                Assert.DoesNotContain(log.Entries, e => e.Message.Contains("CUDA provider unavailable"));   // a GPU host
                return;
            }
            var reason = models[0].ProviderReason;
            Assert.StartsWith("CUDA provider unavailable, using CPU: ", reason);
            Assert.All(models, m => Assert.Equal(reason, m.ProviderReason));
            Assert.All(models, m => Assert.Equal("CUDA provider unavailable", m.ProviderSummary));
            string detail = reason["CUDA provider unavailable, using CPU: ".Length..];

            var warning = Assert.Single(log.Entries, e => e.Level >= LogLevel.Warning);
            Assert.Equal($"CUDA provider unavailable, running on the CPU: {ProviderFallbackLog.ShortReason(detail)}", warning.Message);
            Assert.True(warning.Message.Length < 160, warning.Message);
            // ONNX Runtime's text only at Debug, once per model; never at Information or above.
            Assert.Equal(3, log.Entries.Count(e => e.Level == LogLevel.Debug && e.Message.Contains(detail)));
            Assert.DoesNotContain(log.Entries, e => e.Level >= LogLevel.Information && e.Message.Contains(detail));
        }
        finally
        {
            foreach (var m in models) m.Dispose();
        }
    }

    private sealed class ListLogger : ILogger
    {
        public List<(LogLevel Level, string Message)> Entries { get; } = [];

        public IDisposable? BeginScope<TState>(TState state) where TState : notnull => null;
        public bool IsEnabled(LogLevel logLevel) => true;

        public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
        {
            lock (Entries) Entries.Add((logLevel, formatter(state, exception)));
        }
    }
}
