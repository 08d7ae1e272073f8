using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Mvc.Testing;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.Hosting;

namespace IGpt.Api.Tests;

/// <summary>The service over a temporary models folder, CPU only, with small body limits so 413 is cheap to reach.</summary>
public class ApiFactory : WebApplicationFactory<Program>
{
    public const long MaxRequestBytes = 256 * 1024;
    public const long MaxImageBytes = 128 * 1024;

    private readonly ModelsFolder _models;
    private readonly IReadOnlyDictionary<string, string?> _overrides;

    public ApiFactory() : this(new ModelsFolder())
    {
    }

    /// <param name="models">The models folder (disposed with the factory).</param>
    /// <param name="overrides">Settings on top of the test defaults.</param>
    protected ApiFactory(ModelsFolder models, IReadOnlyDictionary<string, string?>? overrides = null)
    {
        _models = models;
        _overrides = overrides ?? new Dictionary<string, string?>();
    }

    protected override void ConfigureWebHost(IWebHostBuilder builder)
    {
        var settings = new Dictionary<string, string?>
        {
            ["Inference:ModelsPath"] = _models.Path,
            ["Inference:UseCuda"] = "false",
            ["Inference:IntraOpThreads"] = "1",
            ["Api:MaxRequestBytes"] = MaxRequestBytes.ToString(),
            ["ImageLimits:MaxBytes"] = MaxImageBytes.ToString(),
            ["Serilog:MinimumLevel:Default"] = "Warning",
        };
        foreach (var (key, value) in _overrides) settings[key] = value;
        builder.ConfigureAppConfiguration((_, configuration) => configuration.AddInMemoryCollection(settings));
    }

    /// <summary>
    /// Builds and starts one host at a time across the test assembly; the tests themselves still run in parallel.
    /// A host's start touches process-wide state (the hosting DiagnosticListener the factory intercepts the entry point
    /// through, Serilog's static logger), and a CI run once failed a start-up test only when many hosts started at once.
    /// </summary>
    protected override IHost CreateHost(IHostBuilder builder)
    {
        lock (HostStartLock) return base.CreateHost(builder);
    }

    private static readonly Lock HostStartLock = new();

    protected override void Dispose(bool disposing)
    {
        base.Dispose(disposing);
        if (disposing) _models.Dispose();
    }
}

/// <summary>A models folder and settings chosen by the test.</summary>
public sealed class ConfiguredApiFactory(ModelsFolder models, IReadOnlyDictionary<string, string?> overrides) : ApiFactory(models, overrides);

/// <summary>Only the broken package: nothing is ready.</summary>
public sealed class BrokenOnlyApiFactory() : ApiFactory(new ModelsFolder(tiny: false, noClassifier: false, broken: true));

[CollectionDefinition(Name)]
public sealed class ApiCollection : ICollectionFixture<ApiFactory>
{
    public const string Name = "api";
}
