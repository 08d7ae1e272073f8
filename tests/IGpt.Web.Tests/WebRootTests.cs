using IGpt.Api.Hosting;

namespace IGpt.Web.Tests;

/// <summary>Where the service finds wwwroot: a checkout run from anywhere, and a publish folder.</summary>
public sealed class WebRootTests : IDisposable
{
    private readonly string _temp = Directory.CreateTempSubdirectory("igpt-webroot-").FullName;

    [Fact]
    public void A_checkout_serves_the_projects_wwwroot_whatever_the_content_root()
    {
        var project = Path.Combine(WebServer.RepoRoot, "src", "IGpt.Api", "wwwroot");
        Assert.True(File.Exists(Path.Combine(project, "index.html")));

        // dotnet run from the repository root, or a content root with no wwwroot, binaries in bin/.
        Assert.Equal(project, WebClientExtensions.FindWebRoot(WebServer.RepoRoot, AppContext.BaseDirectory, WebServer.RepoRoot));
        Assert.Equal(project, WebClientExtensions.FindWebRoot(_temp, AppContext.BaseDirectory, WebServer.RepoRoot));
        // The test host's content root is the project folder.
        Assert.Equal(project, WebClientExtensions.FindWebRoot(Path.Combine(WebServer.RepoRoot, "src", "IGpt.Api"), _temp, _temp));
    }

    [Fact]
    public void A_publish_folder_serves_its_own_wwwroot_from_any_working_directory()
    {
        var publish = Directory.CreateDirectory(Path.Combine(_temp, "publish")).FullName;
        var webRoot = Directory.CreateDirectory(Path.Combine(publish, "wwwroot")).FullName;
        File.WriteAllText(Path.Combine(webRoot, "index.html"), "<!doctype html>");
        var elsewhere = Directory.CreateDirectory(Path.Combine(_temp, "elsewhere")).FullName;

        Assert.Equal(webRoot, WebClientExtensions.FindWebRoot(publish, publish, publish));
        Assert.Equal(webRoot, WebClientExtensions.FindWebRoot(elsewhere, publish, elsewhere));
        Assert.Null(WebClientExtensions.FindWebRoot(elsewhere, elsewhere, elsewhere));
    }

    public void Dispose() => Directory.Delete(_temp, recursive: true);
}
