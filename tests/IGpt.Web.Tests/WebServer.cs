using System.Text.Json.Nodes;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Http.Features;
using Microsoft.AspNetCore.Mvc.Testing;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using SixLabors.ImageSharp;
using SixLabors.ImageSharp.PixelFormats;

namespace IGpt.Web.Tests;

/// <summary>
/// The real service on a loopback Kestrel port (WebApplicationFactory.UseKestrel), CPU only, over a temporary
/// models folder holding the tiny test package (8x8 grey, palette 8, 3 classes) with two <see cref="Examples"/>,
/// and a copy whose decoder is corrupt (a failed model the page must not offer).
/// </summary>
public sealed class WebServer : WebApplicationFactory<Program>
{
    public const string Model = "tiny-test";
    private const string Broken = "tiny-broken";

    private readonly string _models = Directory.CreateTempSubdirectory("igpt-web-tests-").FullName;
    private readonly IReadOnlyDictionary<string, string?> _settings;

    public WebServer() : this(new Dictionary<string, string?>())
    {
    }

    /// <param name="settings">Settings on top of the test defaults (e.g. Api:Keys).</param>
    public WebServer(IReadOnlyDictionary<string, string?> settings)
    {
        _settings = settings;
        var model = CopyPackage(Model);
        var examples = Directory.CreateDirectory(Path.Combine(model, "examples")).FullName;
        foreach (var example in Examples) File.WriteAllBytes(Path.Combine(examples, example.Name + ".png"), example.Png);
        var broken = CopyPackage(Broken);
        File.WriteAllBytes(Path.Combine(broken, "decoder.onnx"), "this is not an ONNX graph"u8.ToArray());
        File.WriteAllBytes(Path.Combine(broken, "decoder.fp16.onnx"), "this is not an ONNX graph"u8.ToArray());

        // The port comes from Urls (127.0.0.1:0, below), not UseKestrel(0): with a port, the factory rewrites the
        // server's addresses after the entry point has built the app, racing the app's own start.
        UseKestrel();
        StartServer();
        var addresses = Services.GetRequiredService<IServer>().Features.GetRequiredFeature<IServerAddressesFeature>();
        BaseAddress = new Uri(addresses.Addresses.First());
    }

    /// <summary>Where the service listens, e.g. http://127.0.0.1:41234.</summary>
    public Uri BaseAddress { get; }

    public static string RepoRoot { get; } = FindRepoRoot();

    public static string FixturePackage => Path.Combine(RepoRoot, "tests", "fixtures", "tiny-package");

    /// <summary>The package's palette (grey levels), in token order.</summary>
    public static int[] Palette { get; } =
        [.. Manifest()["palette"]!.AsArray().Select(colour => colour!.AsArray()[0]!.GetValue<int>())];

    public static string[] Classes { get; } = [.. Manifest()["classes"]!.AsArray().Select(c => c!.GetValue<string>())];

    public static int Height { get; } = Manifest()["image"]!["height"]!.GetValue<int>();

    public static int Width { get; } = Manifest()["image"]!["width"]!.GetValue<int>();

    /// <summary>The test model's examples (its package's examples/ folder), named after its classes like the shipped ones.</summary>
    public static IReadOnlyList<Example> Examples { get; } = [MakeExample("1-dark", 0, 3), MakeExample("2-light", 4, 7)];

    /// <summary>An 8x8 grey PNG of palette levels plus noise (under half a palette step), its pixels and their quantized levels.</summary>
    public sealed record Example(string Name, byte[] Png, int[] Pixels, int[] Quantized);

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

    protected override void ConfigureWebHost(IWebHostBuilder builder)
    {
        builder.ConfigureAppConfiguration((_, configuration) => configuration.AddInMemoryCollection(new Dictionary<string, string?>(_settings)
        {
            ["Urls"] = "http://127.0.0.1:0",
            ["Inference:ModelsPath"] = _models,
            ["Inference:UseCuda"] = "false",
            ["Inference:IntraOpThreads"] = "1",
            ["Serilog:MinimumLevel:Default"] = "Warning",
        }));
    }

    private string CopyPackage(string id)
    {
        var dir = Path.Combine(_models, id);
        Directory.CreateDirectory(dir);
        foreach (var file in Directory.GetFiles(FixturePackage)) File.Copy(file, Path.Combine(dir, Path.GetFileName(file)));
        var manifestPath = Path.Combine(dir, "model.json");
        var manifest = JsonNode.Parse(File.ReadAllText(manifestPath))!.AsObject();
        manifest["id"] = id;
        File.WriteAllText(manifestPath, manifest.ToJsonString());
        return dir;
    }

    private static JsonNode Manifest() => JsonNode.Parse(File.ReadAllText(Path.Combine(FixturePackage, "model.json")))!;

    private static string FindRepoRoot()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            if (File.Exists(Path.Combine(dir.FullName, "IGpt.Api.sln"))) return dir.FullName;
        }
        throw new InvalidOperationException("IGpt.Api.sln not found above " + AppContext.BaseDirectory);
    }

    protected override void Dispose(bool disposing)
    {
        base.Dispose(disposing);
        if (!disposing) return;
        try
        {
            Directory.Delete(_models, recursive: true);
        }
        catch (IOException)
        {
            // A file still mapped by ONNX Runtime; the temp folder is cleaned by the OS.
        }
    }
}
