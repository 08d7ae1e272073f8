using System.Net;
using System.Text.Json.Nodes;
using SixLabors.ImageSharp;
using SixLabors.ImageSharp.Formats.Png;
using SixLabors.ImageSharp.PixelFormats;

namespace IGpt.Api.Tests;

/// <summary>
/// The HuggingFace chain served: tests/fixtures/hf-tiny-package is a random ImageGPT written in the Hub's format
/// (32x32 RGB, 512 clusters, 1024 positions), imported with import-hf and exported unchanged
/// (training/scripts/make_hf_test_package.py). The service serves that package as it is, at iGPT's own format.
/// </summary>
public sealed class HfChainTests(HfChainApiFactory factory) : IClassFixture<HfChainApiFactory>
{
    private const int Side = 32;
    private readonly HttpClient _client = factory.CreateClient();

    [Fact]
    public async Task ThePackageIsReadyAtIGptsOwnFormat()
    {
        var model = await (await _client.GetAsync($"/v1/models/{HfChainPackage.Id}")).ReadJsonAsync();
        Assert.Equal("ready", model["status"]!.GetValue<string>());
        Assert.Equal((Side, Side, 3), (model["height"]!.GetValue<int>(), model["width"]!.GetValue<int>(), model["channels"]!.GetValue<int>()));
        Assert.Equal(512, model["palette_size"]!.GetValue<int>());
        Assert.False(model["has_classifier"]!.GetValue<bool>());
        Assert.Equal("hf:imagegpt-tiny-random", model["training"]!["dataset"]!.GetValue<string>());

        Assert.Equal(512, HfChainPackage.Palette.Length);
        Assert.Equal(512, HfChainPackage.Palette.Distinct().Count());
    }

    [Fact]
    public async Task CompletionKeepsTheQuantizedRowsInColour()
    {
        var input = ColourPng();
        var response = await _client.PostAsync($"/v1/models/{HfChainPackage.Id}/completions",
            Http.Form(input, ("rows", "16"), ("n", "2"), ("seed", "11")));
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        var body = await response.ReadJsonAsync();
        Assert.Equal(16, body["rows"]!.GetValue<int>());
        Assert.Equal(16 * Side, body["usage"]!["prompt_tokens"]!.GetValue<int>());
        Assert.Equal(2 * 16 * Side, body["usage"]!["generated_tokens"]!.GetValue<int>());

        var expected = HfChainPackage.Quantize(ReadRgb(input));
        Assert.True(expected.Distinct().Count() > 20, "the prompt should use many palette colours");
        var images = Http.Images(body).Select(i => ReadRgb(Convert.FromBase64String(i))).ToArray();
        Assert.Equal(2, images.Length);
        foreach (var pixels in images)
        {
            Assert.Equal(Side * Side, pixels.Length);
            Assert.Equal(expected[..(16 * Side)], pixels[..(16 * Side)]);
            Assert.All(pixels, p => Assert.Contains(p, HfChainPackage.PaletteSet));
            Assert.True(pixels[(16 * Side)..].Distinct().Count() > 20, "the drawn rows should use many palette colours");
        }
        Assert.NotEqual(images[0][(16 * Side)..], images[1][(16 * Side)..]);
    }

    [Fact]
    public async Task SamplesAreDrawnFromThe512ColourPalette()
    {
        async Task<JsonObject> Sample() => await (await _client.PostAsync($"/v1/models/{HfChainPackage.Id}/samples",
            Http.Json(new { n = 2, seed = 5 }))).ReadJsonAsync();

        var body = await Sample();
        Assert.Equal(2 * Side * Side, body["usage"]!["generated_tokens"]!.GetValue<int>());
        var images = Http.Images(body);
        Assert.Equal(2, images.Length);
        var used = new HashSet<Rgb24>();
        foreach (var image in images)
        {
            var pixels = ReadRgb(Convert.FromBase64String(image));
            Assert.Equal(Side * Side, pixels.Length);
            Assert.All(pixels, p => Assert.Contains(p, HfChainPackage.PaletteSet));
            used.UnionWith(pixels);
        }
        Assert.True(used.Count > 50, $"only {used.Count} colours in two random-model samples");
        Assert.Equal(images, Http.Images(await Sample()));
    }

    /// <summary>A 32x32 RGB picture whose colours change along both axes, so quantization uses many palette entries.</summary>
    private static byte[] ColourPng()
    {
        using var image = new Image<Rgb24>(Side, Side);
        for (int y = 0; y < Side; y++)
        for (int x = 0; x < Side; x++)
            image[x, y] = new Rgb24((byte)(x * 8), (byte)(y * 8), (byte)((x * 5 + y * 3) % 32 * 8));
        using var stream = new MemoryStream();
        image.Save(stream, new PngEncoder());
        return stream.ToArray();
    }

    private static Rgb24[] ReadRgb(byte[] png)
    {
        using var image = Image.Load<Rgb24>(png);
        Assert.Equal((Side, Side), (image.Width, image.Height));
        var pixels = new Rgb24[Side * Side];
        for (int y = 0; y < Side; y++)
        for (int x = 0; x < Side; x++)
            pixels[y * Side + x] = image[x, y];
        return pixels;
    }
}

/// <summary>The service over a models folder that holds only the HF chain's package.</summary>
public sealed class HfChainApiFactory() : ApiFactory(HfChainPackage.CreateModelsFolder());

/// <summary>The committed HF-chain package, its palette from the manifest, and nearest-colour quantization written out here.</summary>
public static class HfChainPackage
{
    public const string Id = "hf-tiny-test";

    public static string Directory => Path.Combine(ModelsFolder.RepoRoot, "tests", "fixtures", "hf-tiny-package");

    public static Rgb24[] Palette { get; } =
        [.. JsonNode.Parse(File.ReadAllText(Path.Combine(Directory, "model.json")))!["palette"]!.AsArray()
            .Select(c => new Rgb24((byte)c![0]!.GetValue<int>(), (byte)c[1]!.GetValue<int>(), (byte)c[2]!.GetValue<int>()))];

    public static HashSet<Rgb24> PaletteSet { get; } = [.. Palette];

    public static ModelsFolder CreateModelsFolder()
    {
        var models = new ModelsFolder(tiny: false, noClassifier: false, broken: false);
        var dir = Path.Combine(models.Path, Id);
        System.IO.Directory.CreateDirectory(dir);
        foreach (var file in System.IO.Directory.GetFiles(Directory))
            File.Copy(file, Path.Combine(dir, Path.GetFileName(file)));
        return models;
    }

    /// <summary>Each pixel replaced by its nearest palette colour (squared distance in 0-255, ties to the lowest index).</summary>
    public static Rgb24[] Quantize(Rgb24[] pixels)
    {
        var result = new Rgb24[pixels.Length];
        for (int i = 0; i < pixels.Length; i++)
        {
            int best = 0, bestDistance = int.MaxValue;
            for (int p = 0; p < Palette.Length; p++)
            {
                int dr = pixels[i].R - Palette[p].R, dg = pixels[i].G - Palette[p].G, db = pixels[i].B - Palette[p].B;
                int d = dr * dr + dg * dg + db * db;
                if (d < bestDistance)
                {
                    bestDistance = d;
                    best = p;
                }
            }
            result[i] = Palette[best];
        }
        return result;
    }
}
