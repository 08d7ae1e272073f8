using IGpt.Api.Contracts;
using IGpt.Inference;

namespace IGpt.Api.Catalog;

/// <summary>
/// The example images of every package: the PNGs of its optional <c>examples/</c> folder (a few test-split images, which
/// the web page offers to complete in one click). Read once, when first asked for, and kept in memory. A file that is
/// not a PNG the service can read, or is over <see cref="MaxBytes"/>, is left out with a warning: examples never fail a model.
/// </summary>
public sealed class ModelExamples
{
    public const string FolderName = "examples";
    public const int MaxCount = 16;
    public const int MaxBytes = 64 * 1024;

    private readonly Dictionary<string, IReadOnlyList<ExampleImage>> _byModel;

    public ModelExamples(ModelLoader loader, ImageCodec codec, ILogger<ModelExamples> logger)
    {
        _byModel = loader.Registry.Entries.ToDictionary(e => e.Id, e => Load(e.Directory, codec, logger), StringComparer.Ordinal);
    }

    /// <summary>The examples of model <paramref name="id"/> (empty when its package has none); null when there is no such model.</summary>
    public IReadOnlyList<ExampleImage>? For(string id) => _byModel.GetValueOrDefault(id);

    /// <summary>The examples in <paramref name="packageDirectory"/>/examples, sorted by file name, at most <see cref="MaxCount"/>.</summary>
    public static IReadOnlyList<ExampleImage> Load(string packageDirectory, ImageCodec codec, ILogger logger)
    {
        var folder = Path.Combine(packageDirectory, FolderName);
        if (!Directory.Exists(folder)) return [];
        var examples = new List<ExampleImage>();
        foreach (var path in Directory.EnumerateFiles(folder, "*.png").Order(StringComparer.Ordinal))
        {
            if (examples.Count == MaxCount)
            {
                logger.LogWarning("{Folder} has more than {Max} examples; the first {Max} by name are served", folder, MaxCount, MaxCount);
                break;
            }
            try
            {
                var size = new FileInfo(path).Length;
                if (size > MaxBytes) throw new InvalidImageException($"it has {size} bytes; an example may have {MaxBytes}");
                var png = File.ReadAllBytes(path);
                if (!png.AsSpan().StartsWith(PngSignature)) throw new InvalidImageException("it is not a PNG");
                var image = codec.DecodeOriginal(png, channels: 3);
                examples.Add(new ExampleImage
                {
                    Name = Path.GetFileNameWithoutExtension(path),
                    Width = image.Width,
                    Height = image.Height,
                    Image = Convert.ToBase64String(png),
                });
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException or ImageDecodeException)
            {
                logger.LogWarning("Example {Path} is left out: {Reason}", path, e.Message);
            }
        }
        return examples;
    }

    private static ReadOnlySpan<byte> PngSignature => [0x89, (byte)'P', (byte)'N', (byte)'G', 0x0D, 0x0A, 0x1A, 0x0A];
}
