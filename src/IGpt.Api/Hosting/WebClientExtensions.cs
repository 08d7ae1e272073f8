using Microsoft.Extensions.FileProviders;

namespace IGpt.Api.Hosting;

public static class WebClientExtensions
{
    private const string WebRootName = "wwwroot";

    /// <summary>
    /// Serves the browser client (wwwroot: index.html and its JS modules) at <c>/</c>. The folder is looked up
    /// rather than taken from the content root, which is the working directory under <c>dotnet run --project
    /// src/IGpt.Api</c> from the repository root: the content root's wwwroot (a test host, a publish folder run
    /// from itself), the one next to the binaries (a publish folder run from elsewhere), then the project's own
    /// (a run from a checkout, where the build leaves wwwroot in the project folder).
    /// </summary>
    public static WebApplication UseWebClient(this WebApplication app)
    {
        var root = app.Services.GetRequiredService<ServiceRoot>();
        var webRoot = FindWebRoot(app.Environment.ContentRootPath, AppContext.BaseDirectory, root.Path);
        if (webRoot is null)
        {
            app.Logger.LogWarning("No {WebRoot} folder found: the web page at / is not served", WebRootName);
            return app;
        }

        var files = new PhysicalFileProvider(webRoot);
        app.Environment.WebRootPath = webRoot;
        app.Environment.WebRootFileProvider = files;
        app.UseDefaultFiles(new DefaultFilesOptions { FileProvider = files });
        app.UseStaticFiles(new StaticFileOptions
        {
            FileProvider = files,
            // The page is small and changes with the service: always revalidate (ETag / Last-Modified).
            OnPrepareResponse = context => context.Context.Response.Headers.CacheControl = "no-cache",
        });
        return app;
    }

    /// <summary>The first of the candidate folders that holds index.html; null when none does.</summary>
    public static string? FindWebRoot(string contentRoot, string baseDirectory, string serviceRoot)
    {
        string[] candidates =
        [
            Path.Combine(contentRoot, WebRootName),
            Path.Combine(baseDirectory, WebRootName),
            Path.Combine(serviceRoot, "src", "IGpt.Api", WebRootName),
        ];
        return candidates.Select(Path.GetFullPath).FirstOrDefault(dir => File.Exists(Path.Combine(dir, "index.html")));
    }
}
