using IGpt.Api.Hosting;
using IGpt.Inference;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Options;

namespace IGpt.Api.Tests;

public sealed class ServiceRootTests
{
    [Fact]
    public void TheDefaultModelsPathIsTheRepositoryModelsFolderFromTheRootOrTheProjectFolder()
    {
        var root = ModelsFolder.RepoRoot;
        foreach (var contentRoot in new[] { root, Path.Combine(root, "src", "IGpt.Api") })
        {
            var found = ServiceRoot.Find(contentRoot);
            Assert.Equal(root, found.Path);
            Assert.Equal(Path.Combine(root, "models"), found.Resolve(new InferenceOptions().ModelsPath));
        }
        Assert.Equal("/srv/models", ServiceRoot.Find(root).Resolve("/srv/models"));
    }

    [Fact]
    public void TheTestHostReadsTheRootAppSettings()
    {
        // The test host's content root is src/IGpt.Api; Urls and the Serilog sinks come from <repo>/appsettings.json.
        using var factory = new ApiFactory();
        var configuration = factory.Services.GetRequiredService<Microsoft.Extensions.Configuration.IConfiguration>();
        Assert.Equal("http://localhost:8080", configuration["Urls"]);
        Assert.Equal("Console", configuration["Serilog:WriteTo:0:Name"]);
        // ...while the factory's own settings still win over the file.
        Assert.Equal(ApiFactory.MaxRequestBytes, factory.Services.GetRequiredService<IOptions<ApiOptions>>().Value.MaxRequestBytes);
    }

    [Fact]
    public void ValidateSettingsThrowsTheValidationErrorBeforeTheHostStarts()
    {
        // Program.cs calls it right after Build, so a bad setting never gets as far as starting (and disposing) the host.
        var builder = Microsoft.AspNetCore.Builder.WebApplication.CreateBuilder();
        builder.Services.AddOptions<ApiOptions>().Validate(_ => false, "Api is invalid: test").ValidateOnStart();
        var app = builder.Build();
        try
        {
            var error = Assert.Throws<OptionsValidationException>(() => app.ValidateSettings());
            Assert.Contains("Api is invalid: test", error.Message);
            var lifetime = app.Services.GetRequiredService<Microsoft.Extensions.Hosting.IHostApplicationLifetime>();
            Assert.False(lifetime.ApplicationStarted.IsCancellationRequested);  // not started
        }
        finally { ((IDisposable)app).Dispose(); }
    }

    [Theory]
    [InlineData("Inference:ModelsPath", "/no/such/folder", "Inference:ModelsPath")]
    [InlineData("Inference:MaxBatch", "0", "Inference:MaxBatch")]
    [InlineData("Inference:KvCacheType", "fp16", "Inference:KvCacheType")]
    [InlineData("Api:MaxRequestBytes", "10", "Api:MaxRequestBytes")]
    [InlineData("ImageLimits:MaxBytes", "0", "ImageLimits:MaxBytes")]
    [InlineData("ImageLimits:MaxPixels", "0", "ImageLimits:MaxPixels")]
    [InlineData("Api:MaxImagesPerRequest", "0", "Api:MaxImagesPerRequest")]
    [InlineData("Api:MaxConcurrentRequestsPerClient", "-1", "Api:MaxConcurrentRequestsPerClient")]
    [InlineData("Api:Keys:0", "too-short", "Api:Keys")]
    [InlineData("Api:Keys:0", " padded-key-0123456789 ", "Api:Keys")]
    public void BadSettingsStopTheServiceAtStartNamingTheKey(string key, string value, string named)
    {
        using var factory = new ConfiguredApiFactory(new ModelsFolder(tiny: false, noClassifier: false, broken: false),
            new Dictionary<string, string?> { [key] = value });
        var error = Assert.ThrowsAny<Exception>(() => factory.CreateClient());
        Assert.True(error.ToString().Contains(named), error.ToString());
    }
}
