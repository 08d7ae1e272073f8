using System.Text.Json.Nodes;

namespace IGpt.Tests.Shared;

/// <summary>
/// A temporary models folder built from the tiny test package (tests/fixtures/tiny-package, 8x8 grey, palette 8,
/// 3 classes): the package itself, a copy without a classification head or analysis graph (a package exported
/// before either), and a package with a corrupt decoder (a
/// failed model), each as the test asks; more copies with <see cref="AddPackage"/>.
/// </summary>
public sealed class ModelsFolder : IDisposable
{
    public const string Tiny = "tiny-test";
    public const string NoClassifier = "tiny-noclass";
    public const string Broken = "tiny-broken";

    public ModelsFolder(bool tiny = true, bool noClassifier = true, bool broken = true)
    {
        Path = Directory.CreateTempSubdirectory("igpt-api-tests-").FullName;
        if (tiny) AddPackage(Tiny);
        if (noClassifier)
        {
            var dir = AddPackage(NoClassifier);
            EditManifest(dir, manifest =>
            {
                manifest["classes"] = new JsonArray();
                ((JsonObject)manifest["files"]!)["classifier"] = null;
                manifest.Remove("analysis");
            });
            foreach (var graph in Directory.GetFiles(dir, "classifier*.onnx").Concat(Directory.GetFiles(dir, "analysis*.onnx"))) File.Delete(graph);
        }
        if (broken)
        {
            var dir = AddPackage(Broken);
            File.WriteAllBytes(System.IO.Path.Combine(dir, "decoder.onnx"), "this is not an ONNX graph"u8.ToArray());
            File.WriteAllBytes(System.IO.Path.Combine(dir, "decoder.fp16.onnx"), "this is not an ONNX graph"u8.ToArray());
        }
    }

    public string Path { get; }

    public static string RepoRoot { get; } = FindRepoRoot();

    public static string FixturePackage => System.IO.Path.Combine(RepoRoot, "tests", "fixtures", "tiny-package");

    /// <summary>The fixture's class names, in index order.</summary>
    public static string[] FixtureClasses { get; } = [.. FixtureManifest()["classes"]!.AsArray().Select(c => c!.GetValue<string>())];

    /// <summary>The fixture's manifest (model.json).</summary>
    public static JsonNode FixtureManifest() => JsonNode.Parse(File.ReadAllText(System.IO.Path.Combine(FixturePackage, "model.json")))!;

    /// <summary>Copies the tiny package into the folder as <paramref name="id"/>, with <paramref name="decoder"/> as its CPU decoder when given.</summary>
    public string AddPackage(string id, string? decoder = null)
    {
        var dir = System.IO.Path.Combine(Path, id);
        Directory.CreateDirectory(dir);
        foreach (var file in Directory.GetFiles(FixturePackage))
        {
            File.Copy(file, System.IO.Path.Combine(dir, System.IO.Path.GetFileName(file)));
        }
        if (decoder is not null) File.Copy(decoder, System.IO.Path.Combine(dir, "decoder.onnx"), overwrite: true);
        EditManifest(dir, manifest => manifest["id"] = id);
        return dir;
    }

    /// <summary>Rewrites the model.json of the package in <paramref name="dir"/> after <paramref name="edit"/>.</summary>
    public static void EditManifest(string dir, Action<JsonObject> edit)
    {
        var path = System.IO.Path.Combine(dir, "model.json");
        var manifest = JsonNode.Parse(File.ReadAllText(path))!.AsObject();
        edit(manifest);
        File.WriteAllText(path, manifest.ToJsonString());
    }

    private static string FindRepoRoot()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            if (File.Exists(System.IO.Path.Combine(dir.FullName, "IGpt.Api.sln"))) return dir.FullName;
        }
        throw new InvalidOperationException("IGpt.Api.sln not found above " + AppContext.BaseDirectory);
    }

    public void Dispose()
    {
        try
        {
            Directory.Delete(Path, recursive: true);
        }
        catch (IOException)
        {
            // A file still mapped by ONNX Runtime; the temp folder is cleaned by the OS.
        }
    }
}
