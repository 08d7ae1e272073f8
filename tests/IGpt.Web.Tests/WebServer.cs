using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Http.Features;
using Microsoft.Extensions.DependencyInjection;

namespace IGpt.Web.Tests;

/// <summary>
/// The real service on a loopback Kestrel port, CPU only, over a temporary models folder holding the tiny test
/// package (8x8 grey, palette 8, 3 classes) and a copy whose decoder is corrupt (a failed model the page must not offer).
/// </summary>
public sealed class WebServer : ServiceFactory
{
    public const string Model = ModelsFolder.Tiny;

    public WebServer() : this(new Dictionary<string, string?>())
    {
    }

    /// <param name="settings">Settings on top of the test defaults (e.g. Api:Keys).</param>
    public WebServer(IReadOnlyDictionary<string, string?> settings)
        : base(new ModelsFolder(tiny: true, noClassifier: false, broken: true), settings, kestrel: true)
    {
        StartServer();
        var addresses = Services.GetRequiredService<IServer>().Features.GetRequiredFeature<IServerAddressesFeature>();
        BaseAddress = new Uri(addresses.Addresses.First());
    }

    /// <summary>Where the service listens, e.g. http://127.0.0.1:41234.</summary>
    public Uri BaseAddress { get; }

    public static string RepoRoot => ModelsFolder.RepoRoot;

    /// <summary>The package's palette (grey levels), in token order.</summary>
    public static int[] Palette { get; } =
        [.. ModelsFolder.FixtureManifest()["palette"]!.AsArray().Select(colour => colour!.AsArray()[0]!.GetValue<int>())];

    public static string[] Classes => ModelsFolder.FixtureClasses;

    public static int Height { get; } = ModelsFolder.FixtureManifest()["image"]!["height"]!.GetValue<int>();

    public static int Width { get; } = ModelsFolder.FixtureManifest()["image"]!["width"]!.GetValue<int>();
}
