using IGpt.Api.Catalog;
using IGpt.Inference;
using Microsoft.Extensions.DependencyInjection;

namespace IGpt.Api.Tests;

/// <summary>The service over a temporary models folder, CPU only, with small body limits so 413 is cheap to reach.</summary>
public class ApiFactory : ServiceFactory
{
    public const long MaxRequestBytes = 256 * 1024;
    public const long MaxImageBytes = 128 * 1024;

    public ApiFactory() : this(new ModelsFolder())
    {
    }

    /// <param name="models">The models folder (disposed with the factory).</param>
    /// <param name="overrides">Settings on top of the test defaults.</param>
    /// <param name="kestrel">Serve on a free loopback port (real sockets).</param>
    protected ApiFactory(ModelsFolder models, IReadOnlyDictionary<string, string?>? overrides = null, bool kestrel = false)
        : base(models, WithLimits(overrides), kestrel)
    {
    }

    /// <summary>The loaded model <paramref name="id"/> (the host is started first).</summary>
    public IGptModel Model(string id = ModelsFolder.Tiny) => Services.GetRequiredService<ModelLoader>().Registry.Find(id)!.Model!;

    private static Dictionary<string, string?> WithLimits(IReadOnlyDictionary<string, string?>? overrides)
    {
        var settings = new Dictionary<string, string?>
        {
            ["Api:MaxRequestBytes"] = MaxRequestBytes.ToString(),
            ["ImageLimits:MaxBytes"] = MaxImageBytes.ToString(),
        };
        foreach (var (key, value) in overrides ?? new Dictionary<string, string?>()) settings[key] = value;
        return settings;
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
