namespace IGpt.Api.Hosting;

/// <summary>
/// The folder the service's relative paths (models/, appsettings.json) are anchored to: the repository root
/// (the folder holding IGpt.Api.sln) when the service runs from a checkout, whether started with
/// <c>dotnet run --project src/IGpt.Api</c> from the root or by a test host whose content root is the project
/// folder; otherwise (a published deployment) the content root.
/// </summary>
public sealed record ServiceRoot(string Path)
{
    public const string Marker = "IGpt.Api.sln";

    public static ServiceRoot Find(string contentRoot)
    {
        foreach (var start in new[] { contentRoot, Directory.GetCurrentDirectory(), AppContext.BaseDirectory })
        {
            for (var dir = new DirectoryInfo(start); dir is not null; dir = dir.Parent)
            {
                if (File.Exists(System.IO.Path.Combine(dir.FullName, Marker))) return new ServiceRoot(dir.FullName);
            }
        }
        return new ServiceRoot(System.IO.Path.GetFullPath(contentRoot));
    }

    /// <summary>An absolute path: <paramref name="path"/> itself when rooted, else relative to this root.</summary>
    public string Resolve(string path) =>
        System.IO.Path.GetFullPath(System.IO.Path.IsPathRooted(path) ? path : System.IO.Path.Combine(Path, path));
}
