using Microsoft.Extensions.Options;

namespace IGpt.Api.Hosting;

public static class ConfigurationExtensions
{
    /// <summary>
    /// Reads the repository root's appsettings.json (and appsettings.{Environment}.json) whatever the content root,
    /// then re-adds environment variables and the command line so that they still override the files
    /// (ASPNETCORE_URLS, Urls=..., --urls, --Inference:ModelsPath=...).
    /// </summary>
    public static WebApplicationBuilder AddServiceRootConfiguration(this WebApplicationBuilder builder, string[] args)
    {
        var root = ServiceRoot.Find(builder.Environment.ContentRootPath);
        builder.Services.AddSingleton(root);

        var contentRoot = Path.GetFullPath(builder.Environment.ContentRootPath).TrimEnd(Path.DirectorySeparatorChar);
        if (!string.Equals(contentRoot, root.Path.TrimEnd(Path.DirectorySeparatorChar), StringComparison.Ordinal))
        {
            builder.Configuration.AddJsonFile(Path.Combine(root.Path, "appsettings.json"), optional: true, reloadOnChange: false);
            builder.Configuration.AddJsonFile(
                Path.Combine(root.Path, $"appsettings.{builder.Environment.EnvironmentName}.json"), optional: true, reloadOnChange: false);
        }
        builder.Configuration.AddEnvironmentVariables("ASPNETCORE_");
        builder.Configuration.AddEnvironmentVariables();
        builder.Configuration.AddCommandLine(args);
        return builder;
    }

    /// <summary>
    /// Checks every setting registered with ValidateOnStart now, right after Build, so that a bad setting stops the
    /// entry point itself with the OptionsValidationException that names it. Left to the host's start, the failure
    /// happens inside Run, which then disposes the host; WebApplicationFactory, which waits on that start from
    /// another thread, could reach the disposed host first and report an ObjectDisposedException instead (a CI run
    /// failed so). The host's start validates again, at no real cost.
    /// </summary>
    public static WebApplication ValidateSettings(this WebApplication app)
    {
        app.Services.GetService<IStartupValidator>()?.Validate();
        return app;
    }
}
