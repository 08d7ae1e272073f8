using System.Globalization;
using System.Net;
using System.Text.Json.Nodes;

namespace IGpt.Api.Tests;

/// <summary>
/// The tiny package twice: as it is (no sampling defaults: temperature 1, top_k 0, top_p 1) and a copy whose manifest
/// names defaults (<see cref="Defaults"/>). Same weights, so any difference between their images comes from the settings.
/// </summary>
public sealed class SamplingDefaultsFactory : ApiFactory
{
    public const string WithDefaults = "tiny-defaults";

    /// <summary>Far enough from the global settings that the tiny random model draws other images with them.</summary>
    public static readonly (float Temperature, int TopK, float TopP) Defaults = (0.5f, 3, 0.8f);

    public SamplingDefaultsFactory() : base(Folder())
    {
    }

    private static ModelsFolder Folder()
    {
        var models = new ModelsFolder(tiny: true, noClassifier: false, broken: false);
        ModelsFolder.EditManifest(models.AddPackage(WithDefaults), manifest => manifest["sampling"] = new JsonObject
        {
            ["temperature"] = Defaults.Temperature, ["top_k"] = Defaults.TopK, ["top_p"] = Defaults.TopP,
        });
        return models;
    }
}

public sealed class SamplingDefaultsTests(SamplingDefaultsFactory factory) : IClassFixture<SamplingDefaultsFactory>
{
    private const string WithDefaults = SamplingDefaultsFactory.WithDefaults, Plain = ModelsFolder.Tiny;
    private static readonly (float Temperature, int TopK, float TopP) Defaults = SamplingDefaultsFactory.Defaults;
    private readonly HttpClient _client = factory.CreateClient();

    [Fact]
    public async Task ModelDescriptionsShowTheDefaults()
    {
        var list = (await (await _client.GetAsync("/v1/models")).ReadJsonAsync())["models"]!.AsArray()
            .ToDictionary(m => m!["id"]!.GetValue<string>(), m => m!["sampling"]!.AsObject());
        Assert.Equal((Defaults.Temperature, Defaults.TopK, Defaults.TopP), Settings(list[WithDefaults]));
        Assert.Equal((1f, 0, 1f), Settings(list[Plain])); // a package that names none gets the global settings

        var one = await (await _client.GetAsync($"/v1/models/{WithDefaults}")).ReadJsonAsync();
        Assert.Equal((Defaults.Temperature, Defaults.TopK, Defaults.TopP), Settings(one["sampling"]!.AsObject()));
    }

    [Fact]
    public async Task SamplesWithoutSettingsUseThePackagesDefaults()
    {
        var implicitDefaults = await SampleAsync(WithDefaults, new { n = 4, seed = 7 });
        Assert.Equal(implicitDefaults, await SampleAsync(WithDefaults, new { n = 4, seed = 7 })); // seeds still reproduce
        var named = await SampleAsync(WithDefaults, new
        {
            n = 4, seed = 7, temperature = Defaults.Temperature, top_k = Defaults.TopK, top_p = Defaults.TopP,
        });
        Assert.Equal(named, implicitDefaults);
        // The same weights at the global settings draw other images: the defaults were applied, not ignored.
        Assert.NotEqual(implicitDefaults, await SampleAsync(Plain, new { n = 4, seed = 7 }));
        Assert.Equal(named, await SampleAsync(Plain, new
        {
            n = 4, seed = 7, temperature = Defaults.Temperature, top_k = Defaults.TopK, top_p = Defaults.TopP,
        }));
    }

    [Fact]
    public async Task AnswersNameTheSettingsTheImagesWereDrawnWith()
    {
        async Task<(float, int, float)> Used(object body)
        {
            var response = await _client.PostAsync($"/v1/models/{WithDefaults}/samples", Http.Json(body));
            Assert.Equal(HttpStatusCode.OK, response.StatusCode);
            return Settings((await response.ReadJsonAsync())["sampling"]!.AsObject());
        }

        Assert.Equal((Defaults.Temperature, Defaults.TopK, Defaults.TopP), await Used(new { n = 1 }));
        Assert.Equal((1.5f, Defaults.TopK, Defaults.TopP), await Used(new { n = 1, temperature = 1.5 }));
        Assert.Equal((1f, 0, 1f), await Used(new { n = 1, temperature = 1, top_k = 0, top_p = 1 }));
    }

    [Fact]
    public async Task ExplicitSettingsOverrideTheDefaults()
    {
        var global = new { n = 4, seed = 11, temperature = 1f, top_k = 0, top_p = 1f };
        var overridden = await SampleAsync(WithDefaults, global);
        Assert.Equal(await SampleAsync(Plain, global), overridden);
        Assert.NotEqual(await SampleAsync(WithDefaults, new { n = 4, seed = 11 }), overridden);
    }

    [Fact]
    public async Task EachSettingLeftOutTakesThePackagesValue()
    {
        // Only the temperature named: top_k and top_p stay the package's, not the global 0 and 1.
        var onlyTemperature = await SampleAsync(WithDefaults, new { n = 4, seed = 5, temperature = 1f });
        Assert.Equal(await SampleAsync(Plain, new { n = 4, seed = 5, temperature = 1f, top_k = Defaults.TopK, top_p = Defaults.TopP }),
            onlyTemperature);
        Assert.NotEqual(await SampleAsync(Plain, new { n = 4, seed = 5, temperature = 1f }), onlyTemperature);

        // Only top_k named (0 = off): the package's temperature and top_p remain.
        var onlyTopK = await SampleAsync(WithDefaults, new { n = 4, seed = 5, top_k = 0 });
        Assert.Equal(await SampleAsync(Plain, new { n = 4, seed = 5, temperature = Defaults.Temperature, top_k = 0, top_p = Defaults.TopP }),
            onlyTopK);
    }

    [Fact]
    public async Task CompletionsUseTheDefaultsToo()
    {
        var image = TestImages.Png();
        async Task<string[]> Complete(string model, params (string, string)[] fields)
        {
            var response = await _client.PostAsync($"/v1/models/{model}/completions",
                Http.Form(image, [("rows", "3"), ("n", "4"), ("seed", "3"), .. fields]));
            Assert.Equal(HttpStatusCode.OK, response.StatusCode);
            return Http.Images(await response.ReadJsonAsync());
        }

        var implicitDefaults = await Complete(WithDefaults);
        var named = await Complete(Plain, ("temperature", Text(Defaults.Temperature)), ("top_k", Text(Defaults.TopK)), ("top_p", Text(Defaults.TopP)));
        Assert.Equal(named, implicitDefaults);
        Assert.NotEqual(await Complete(Plain), implicitDefaults);
        // Empty form inputs (as Swagger UI sends them) are fields left out: the defaults apply.
        Assert.Equal(implicitDefaults, await Complete(WithDefaults, ("temperature", ""), ("top_k", ""), ("top_p", "")));
    }

    private async Task<string[]> SampleAsync(string model, object body)
    {
        var response = await _client.PostAsync($"/v1/models/{model}/samples", Http.Json(body));
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        return Http.Images(await response.ReadJsonAsync());
    }

    private static string Text(IFormattable value) => value.ToString(null, CultureInfo.InvariantCulture);

    private static (float, int, float) Settings(JsonObject sampling) =>
        (sampling["temperature"]!.GetValue<float>(), sampling["top_k"]!.GetValue<int>(), sampling["top_p"]!.GetValue<float>());
}
