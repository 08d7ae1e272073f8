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
}
