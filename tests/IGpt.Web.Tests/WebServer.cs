using System.Globalization;
using System.Text.Json.Nodes;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Http.Features;
using Microsoft.Extensions.DependencyInjection;
using SixLabors.ImageSharp;
using SixLabors.ImageSharp.PixelFormats;

namespace IGpt.Web.Tests;

/// <summary>
/// The real service on a loopback Kestrel port, CPU only, over a temporary models folder holding the tiny test
/// package (8x8 grey, palette 8, 3 classes) with two <see cref="Examples"/>, default sampling settings
/// (<see cref="Sampling"/>) and an out-of-distribution calibration (<see cref="Calibrate"/>), and a copy whose decoder
/// is corrupt (a failed model the page must not offer).
/// </summary>
public sealed class WebServer : ServiceFactory
{
    public const string Model = ModelsFolder.Tiny;

    public WebServer() : this(new Dictionary<string, string?>())
    {
    }

    /// <param name="settings">Settings on top of the test defaults (e.g. Api:Keys).</param>
    public WebServer(IReadOnlyDictionary<string, string?> settings)
        : base(WithExamples(new ModelsFolder(tiny: true, noClassifier: false, broken: true)), settings, kestrel: true)
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

    /// <summary>
    /// The test model's default sampling settings (model.json "sampling"): the page fills its fields with them, and
    /// the tests that compare its images with the service's answer to a request without them check they agree.
    /// </summary>
    public static readonly (string Temperature, string TopK, string TopP) Sampling = ("0.75", "5", "0.9");

    /// <summary>The test model's examples (its package's examples/ folder), named after its classes like the shipped ones.</summary>
    public static IReadOnlyList<Example> Examples { get; } = [MakeExample("1-dark", 0, 3), MakeExample("2-light", 4, 7)];

    /// <summary>An 8x8 grey PNG of palette levels plus noise (under half a palette step), its pixels and their quantized levels.</summary>
    public sealed record Example(string Name, byte[] Png, int[] Pixels, int[] Quantized);

    /// <summary>
    /// Test quantiles far below any score the untrained tiny model gives (a few bits per pixel): every image it scores is
    /// "unlike the training images", which the page must put in words.
    /// </summary>
    private static void Calibrate(string packageDir) => ModelsFolder.EditManifest(packageDir, manifest =>
        manifest["analysis"]!["ood"] = new System.Text.Json.Nodes.JsonObject
        {
            ["score"] = IGpt.Inference.Analysis.OodScore.Name,
            ["test_quantiles"] = new System.Text.Json.Nodes.JsonObject { ["0.5"] = -1002.0, ["0.95"] = -1001.0, ["0.99"] = -1000.0 },
        });

    private static ModelsFolder WithExamples(ModelsFolder models)
    {
        Calibrate(Path.Combine(models.Path, Model));
        var examples = Directory.CreateDirectory(Path.Combine(models.Path, Model, "examples")).FullName;
        foreach (var example in Examples) File.WriteAllBytes(Path.Combine(examples, example.Name + ".png"), example.Png);
        ModelsFolder.EditManifest(Path.Combine(models.Path, Model), manifest => manifest["sampling"] = new JsonObject
        {
            ["temperature"] = double.Parse(Sampling.Temperature, CultureInfo.InvariantCulture),
            ["top_k"] = int.Parse(Sampling.TopK, CultureInfo.InvariantCulture),
            ["top_p"] = double.Parse(Sampling.TopP, CultureInfo.InvariantCulture),
        });
        return models;
    }

    private static Example MakeExample(string name, int lowest, int highest)
    {
        var random = new Random(name.Length * 7919 + lowest);
        var pixels = new int[Width * Height];
        var quantized = new int[Width * Height];
        using var image = new Image<L8>(Width, Height);
        for (var y = 0; y < Height; y++)
        {
            for (var x = 0; x < Width; x++)
            {
                var level = Palette[random.Next(lowest, highest + 1)];
                var value = Math.Clamp(level + random.Next(-8, 9), 0, 255);
                image[x, y] = new L8((byte)value);
                (pixels[y * Width + x], quantized[y * Width + x]) = (value, level);
            }
        }
        using var stream = new MemoryStream();
        image.SaveAsPng(stream);
        return new Example(name, stream.ToArray(), pixels, quantized);
    }
}
