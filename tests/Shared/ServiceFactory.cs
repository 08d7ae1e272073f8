using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Mvc.Testing;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.Hosting;

namespace IGpt.Tests.Shared;

/// <summary>
/// The real service over a <see cref="ModelsFolder"/> (disposed with the factory), CPU only with one thread per session,
/// logging warnings and worse; on a loopback Kestrel port when a test needs real sockets (a browser, a slow body).
/// </summary>
public class ServiceFactory : WebApplicationFactory<Program>
{
    private readonly IReadOnlyDictionary<string, string?> _settings;
    private readonly bool _kestrel;

    /// <param name="models">The models folder (disposed with the factory).</param>
    /// <param name="settings">Settings on top of the test defaults.</param>
    /// <param name="kestrel">Serve on a free loopback port instead of the in-memory test server.</param>
    protected ServiceFactory(ModelsFolder models, IReadOnlyDictionary<string, string?> settings, bool kestrel)
    {
        Models = models;
        _settings = settings;
        _kestrel = kestrel;
        // The port comes from Urls (127.0.0.1:0, below), not UseKestrel(0): with a port, the factory rewrites the
        // server's addresses after the entry point has built the app, racing the app's own start, and a loaded
        // run failed with "Addresses cannot be modified after the server has started".
        if (kestrel) UseKestrel();
    }

    public ModelsFolder Models { get; }

    protected override void ConfigureWebHost(IWebHostBuilder builder)
    {
        var settings = new Dictionary<string, string?>
        {
            ["Inference:ModelsPath"] = Models.Path,
            ["Inference:UseCuda"] = "false",
            ["Inference:IntraOpThreads"] = "1",
            ["Serilog:MinimumLevel:Default"] = "Warning",
        };
        if (_kestrel) settings["Urls"] = "http://127.0.0.1:0";
        foreach (var (key, value) in _settings) settings[key] = value;
        builder.ConfigureAppConfiguration((_, configuration) => configuration.AddInMemoryCollection(settings));
    }

    /// <summary>
    /// Builds and starts one host at a time across the test assembly; the tests themselves still run in parallel.
    /// A host's start touches process-wide state (the hosting DiagnosticListener the factory intercepts the entry point
    /// through), and a CI run once failed a start-up test only when many hosts started at once.
    /// </summary>
    protected override IHost CreateHost(IHostBuilder builder)
    {
        lock (HostStartLock) return base.CreateHost(builder);
    }

    private static readonly Lock HostStartLock = new();

    protected override void Dispose(bool disposing)
    {
        base.Dispose(disposing);
        if (disposing) Models.Dispose();
    }
}
