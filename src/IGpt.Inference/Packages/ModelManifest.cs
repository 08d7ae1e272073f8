using System.Text.Json;
using System.Text.Json.Nodes;
using System.Text.Json.Serialization;
using System.Text.RegularExpressions;

namespace IGpt.Inference.Packages;

/// <summary>The transformer's shape, from model.json "architecture".</summary>
public sealed record ModelArchitecture(
    int NLayer, int NHead, int NEmbd, int HeadSize, int NPositions, double NormEps, string Activation);

/// <summary>One ONNX file of a package: path relative to the package folder, and its float type.</summary>
public sealed record ModelFile(string Path, string Dtype)
{
    /// <summary>
    /// The CPU decoder's step segments (files.decoder.cpu.step_segments; optional): n_layer + 1 graphs of a
    /// one-token step cut at attention, which the library then runs itself. Empty when the package has none.
    /// </summary>
    public IReadOnlyList<string> StepSegments { get; init; } = [];
}

/// <summary>A graph with a CPU variant (fp32, required) and an optional CUDA variant (fp16).</summary>
public sealed record ModelGraphFiles(ModelFile Cpu, ModelFile? Cuda);

/// <summary>
/// A weights file (model.json files.weights, format version 2): ONNX external data that the graphs of one precision
/// point into, each weight stored once; Bytes is its size, checked on load so that a truncated copy is named as such.
/// </summary>
public sealed record WeightsFile(string Path, string Dtype, long Bytes);

/// <summary>
/// model.json "analysis" (optional): the graph behind embeddings and likelihoods, the layer whose features serve as the
/// embedding by default (the best linear probe's), and the out-of-distribution score's quantiles over the test images.
/// </summary>
/// <param name="Cpu">analysis.onnx: image tokens -> per-layer mean-pooled features and each token's bits (fp32, CPU).</param>
/// <param name="EmbeddingLayer">0..n_layer: i &lt; n_layer is block i's input after its first norm, n_layer the final norm's output.</param>
/// <param name="Ood">The score's calibration; null when the package has none (the score is given without a verdict).</param>
public sealed record ModelAnalysis(ModelFile Cpu, int EmbeddingLayer, OodCalibration? Ood);

/// <summary>
/// model.json analysis.ood: which score the quantiles are of, and its quantiles over the in-distribution test images
/// (at least 0.95 and 0.99), from which a score is put in words.
/// </summary>
public sealed record OodCalibration(string Score, IReadOnlyDictionary<double, double> TestQuantiles)
{
    /// <summary>The quantile whose value bounds scores "like the training images".</summary>
    public const double Usual = 0.95;
    /// <summary>The quantile above whose value a score is "unlike the training images".</summary>
    public const double Rare = 0.99;
}

/// <summary>model.json "files".</summary>
public sealed record ModelFiles(
    ModelGraphFiles Decoder, ModelGraphFiles? Classifier, string? GenaiConfig, string? Parity, string? ModelCard)
{
    /// <summary>The weights files (format version 2); empty for a version 1 package, whose graphs hold their own weights.</summary>
    public IReadOnlyList<WeightsFile> Weights { get; init; } = [];
}

/// <summary>
/// A model package's manifest (models/README.md, format versions 1 and 2), validated on load.
/// </summary>
public sealed partial record ModelManifest
{
    /// <summary>The newest format this service reads; it also reads every version from 1.</summary>
    public const int SupportedFormatVersion = 2;
    public const string FileName = "model.json";

    public required int FormatVersion { get; init; }
    public required string Id { get; init; }
    public required string Description { get; init; }
    public required int Height { get; init; }
    public required int Width { get; init; }
    public required int Channels { get; init; }
    public required int PaletteSize { get; init; }
    public required int SosTokenId { get; init; }
    public required int VocabSize { get; init; }
    public required ModelArchitecture Architecture { get; init; }
    public required IReadOnlyList<string> Classes { get; init; }
    public required ModelFiles Files { get; init; }
    public required JsonObject Training { get; init; }
    public required JsonObject Metrics { get; init; }
    /// <summary>The analysis graph and its calibration (embeddings, likelihoods); null for a package exported without it.</summary>
    public ModelAnalysis? Analysis { get; init; }
    /// <summary>The authoritative palette (PaletteSize colours of Channels bytes).</summary>
    public required Palette Palette { get; init; }
    /// <summary>Absolute path of the package folder.</summary>
    public required string PackageDirectory { get; init; }

    /// <summary>
    /// The sampling settings a request gets for the ones it leaves out: the manifest's optional "sampling" object, each
    /// setting it does not name taken from <see cref="SamplingOptions.Default"/> (temperature 1, top_k 0, top_p 1).
    /// </summary>
    public SamplingOptions Sampling { get; init; } = SamplingOptions.Default;

    /// <summary>Pixels (= tokens) per image: Height * Width.</summary>
    public int TokensPerImage => Height * Width;

    /// <summary>
    /// Weights a decode step multiplies per row: 12 L C^2 in the blocks (c_attn, c_proj, c_fc, mlp.c_proj) plus
    /// C V in the head; wte/wpe are gathered, not multiplied. Sizes the CPU step paths (FLOPs, bytes read).
    /// </summary>
    internal long MatmulParameters => 12L * Architecture.NLayer * Architecture.NEmbd * Architecture.NEmbd + (long)Architecture.NEmbd * VocabSize;

    public string ResolvePath(string relativePath) => System.IO.Path.Combine(PackageDirectory, relativePath);

    /// <summary>Reads and validates <c>packageDir/model.json</c>; throws <see cref="ModelPackageException"/> with the reason.</summary>
    public static ModelManifest Load(string packageDir)
    {
        var dir = System.IO.Path.GetFullPath(packageDir);
        var path = System.IO.Path.Combine(dir, FileName);
        if (!File.Exists(path)) throw new ModelPackageException($"{FileName} not found in {dir}");
        string json;
        try { json = File.ReadAllText(path); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new ModelPackageException($"{FileName}: cannot read: {e.Message}", e);
        }
        return Parse(json, dir);
    }

    /// <summary>Parses and validates manifest JSON; file references are checked against <paramref name="packageDir"/>.</summary>
    public static ModelManifest Parse(string json, string packageDir)
    {
        RawManifest raw;
        try
        {
            raw = JsonSerializer.Deserialize<RawManifest>(json, JsonOptions)
                  ?? throw new ModelPackageException($"{FileName}: the document is null");
        }
        catch (JsonException e)
        {
            throw new ModelPackageException($"{FileName}: invalid JSON: {e.Message}", e);
        }
        return Validate(raw, System.IO.Path.GetFullPath(packageDir));
    }

    private static readonly JsonSerializerOptions JsonOptions = new()
    {
        PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower,
        ReadCommentHandling = JsonCommentHandling.Skip,
        AllowTrailingCommas = true,
        NumberHandling = JsonNumberHandling.Strict,
    };

    [GeneratedRegex("^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")]
    private static partial Regex IdPattern();

    private static ModelManifest Validate(RawManifest r, string dir)
    {
        static ModelPackageException Bad(string what) => new($"{FileName}: {what}");

        if (r.FormatVersion is null) throw Bad("format_version is missing");
        if (r.FormatVersion is not (>= 1 and <= SupportedFormatVersion))
            throw Bad($"format_version {r.FormatVersion} is not supported (this service reads versions 1 to {SupportedFormatVersion})");
        if (string.IsNullOrWhiteSpace(r.Id) || !IdPattern().IsMatch(r.Id))
            throw Bad($"id '{r.Id}' must be 1-128 letters, digits, '.', '_' or '-'");
        var image = r.Image ?? throw Bad("image is missing");
        if (image.Height is not (>= 1 and <= 4096)) throw Bad($"image.height {image.Height} must be 1..4096");
        if (image.Width is not (>= 1 and <= 4096)) throw Bad($"image.width {image.Width} must be 1..4096");
        if (image.Channels is not (1 or 3)) throw Bad($"image.channels {image.Channels} must be 1 (grey) or 3 (RGB)");
        int channels = image.Channels.Value;
        if (r.PaletteSize is not (>= 2 and <= 65535)) throw Bad($"palette_size {r.PaletteSize} must be 2..65535");
        int paletteSize = r.PaletteSize.Value;
        var paletteRows = r.Palette ?? throw Bad("palette is missing");
        if (paletteRows.Length != paletteSize)
            throw Bad($"palette has {paletteRows.Length} entries but palette_size is {paletteSize}");
        var colors = new byte[paletteSize * channels];
        for (int i = 0; i < paletteSize; i++)
        {
            var row = paletteRows[i];
            if (row is null || row.Length != channels)
                throw Bad($"palette[{i}] must have {channels} value(s)");
            for (int c = 0; c < channels; c++)
            {
                if (row[c] is < 0 or > 255) throw Bad($"palette[{i}][{c}] = {row[c]} is outside 0..255");
                colors[i * channels + c] = (byte)row[c];
            }
        }
        if (r.SosTokenId != paletteSize) throw Bad($"sos_token_id {r.SosTokenId} must equal palette_size {paletteSize}");
        if (r.VocabSize != paletteSize + 1) throw Bad($"vocab_size {r.VocabSize} must equal palette_size + 1 = {paletteSize + 1}");

        var a = r.Architecture ?? throw Bad("architecture is missing");
        if (a.NLayer is not (>= 1 and <= 1024)) throw Bad($"architecture.n_layer {a.NLayer} must be 1..1024");
        if (a.NHead is not (>= 1 and <= 1024)) throw Bad($"architecture.n_head {a.NHead} must be 1..1024");
        if (a.NEmbd is not >= 1) throw Bad($"architecture.n_embd {a.NEmbd} must be positive");
        int headSize = a.HeadSize ?? a.NEmbd.Value / a.NHead.Value;
        if (headSize * a.NHead != a.NEmbd)
            throw Bad($"architecture: n_head {a.NHead} x head_size {headSize} must equal n_embd {a.NEmbd}");
        int tokens = image.Height.Value * image.Width.Value;
        if (a.NPositions is null || a.NPositions < tokens)
            throw Bad($"architecture.n_positions {a.NPositions} must be at least height*width = {tokens}");
        var arch = new ModelArchitecture(a.NLayer.Value, a.NHead.Value, a.NEmbd.Value, headSize, a.NPositions.Value,
            a.NormEps ?? 1e-5, a.Activation ?? "quick_gelu");

        var classes = r.Classes ?? [];
        for (int i = 0; i < classes.Length; i++)
            if (string.IsNullOrWhiteSpace(classes[i])) throw Bad($"classes[{i}] is empty");

        var f = r.Files ?? throw Bad("files is missing");
        var weights = Weights(f.Weights, dir);
        if (r.FormatVersion >= 2 && weights.Length == 0) throw Bad("files.weights is missing (format version 2 keeps the graphs' weights there)");
        var decoder = Graph(f.Decoder, "files.decoder", dir) ?? throw Bad("files.decoder is missing");
        var classifier = Graph(f.Classifier, "files.classifier", dir);
        if (decoder.Cpu.StepSegments.Count is int segments and not 0 && segments != arch.NLayer + 1)
            throw Bad($"files.decoder.cpu.step_segments lists {segments} graphs; n_layer {arch.NLayer} needs {arch.NLayer + 1}");
        if (classifier is not null && classes.Length == 0)
            throw Bad("files.classifier is set but classes is empty");
        var sampling = DefaultSampling(r.Sampling);

        return new ModelManifest
        {
            FormatVersion = r.FormatVersion.Value,
            Id = r.Id,
            Description = r.Description ?? "",
            Height = image.Height.Value,
            Width = image.Width.Value,
            Channels = channels,
            PaletteSize = paletteSize,
            SosTokenId = paletteSize,
            VocabSize = paletteSize + 1,
            Architecture = arch,
            Classes = classes,
            Files = new ModelFiles(decoder, classifier, f.GenaiConfig, f.Parity, f.ModelCard) { Weights = weights },
            Training = r.Training ?? [],
            Metrics = r.Metrics ?? [],
            Analysis = ReadAnalysis(r.Analysis, arch, dir),
            Palette = new Palette(colors, channels),
            PackageDirectory = dir,
            Sampling = sampling,
        };
    }

    /// <summary>The package's default sampling settings over the global ones; out-of-range values fail the package.</summary>
    private static SamplingOptions DefaultSampling(RawSampling? s)
    {
        if (s is null) return SamplingOptions.Default;
        var global = SamplingOptions.Default;
        var options = new SamplingOptions(s.Temperature ?? global.Temperature, s.TopK ?? global.TopK, s.TopP ?? global.TopP);
        try
        {
            options.Validate();
        }
        catch (ArgumentException e)
        {
            // The same ranges as the request fields, so that every default is a value a request could have sent.
            throw new ModelPackageException($"{FileName}: sampling: {e.Message}", e);
        }
        return options;
    }

    private static ModelAnalysis? ReadAnalysis(RawAnalysis? a, ModelArchitecture arch, string dir)
    {
        static ModelPackageException Bad(string what) => new($"{FileName}: analysis.{what}");
        if (a is null) return null;
        var cpu = FileRef(a.Cpu, "analysis.cpu", dir) ?? throw Bad("cpu is missing");
        if (cpu.Dtype != "float32") throw Bad($"cpu.dtype must be float32, not {cpu.Dtype}");
        if (a.EmbeddingLayer is not { } layer) throw Bad("embedding_layer is missing");
        if (layer < 0 || layer > arch.NLayer) throw Bad($"embedding_layer {layer} must be 0..n_layer ({arch.NLayer})");
        OodCalibration? ood = null;
        if (a.Ood is { } o)
        {
            if (string.IsNullOrWhiteSpace(o.Score)) throw Bad("ood.score is missing");
            var quantiles = new SortedDictionary<double, double>();
            foreach (var (key, value) in o.TestQuantiles ?? [])
            {
                if (!double.TryParse(key, System.Globalization.NumberStyles.Float, System.Globalization.CultureInfo.InvariantCulture, out var q)
                    || q is not (> 0 and < 1))
                    throw Bad($"ood.test_quantiles key '{key}' is not a quantile between 0 and 1");
                if (!double.IsFinite(value)) throw Bad($"ood.test_quantiles['{key}'] is not a finite number");
                quantiles[q] = value;
            }
            foreach (var needed in new[] { OodCalibration.Usual, OodCalibration.Rare })
                if (!quantiles.ContainsKey(needed)) throw Bad($"ood.test_quantiles lacks the {needed} quantile");
            if (quantiles[OodCalibration.Usual] > quantiles[OodCalibration.Rare])
                throw Bad("ood.test_quantiles: the 0.95 quantile is above the 0.99 one");
            ood = new OodCalibration(o.Score, quantiles);
        }
        return new ModelAnalysis(cpu, layer, ood);
    }

    private static WeightsFile[] Weights(RawWeightsFile[]? files, string dir)
    {
        static ModelPackageException Bad(string what) => new($"{FileName}: {what}");
        var found = new WeightsFile[files?.Length ?? 0];
        for (int i = 0; i < found.Length; i++)
        {
            var w = files![i] ?? throw Bad($"files.weights[{i}] is null");
            if (string.IsNullOrWhiteSpace(w.Path)) throw Bad($"files.weights[{i}].path is missing");
            if (w.Dtype is not ("float32" or "float16")) throw Bad($"files.weights[{i}].dtype must be float32 or float16, not {w.Dtype}");
            if (w.Bytes is not >= 0) throw Bad($"files.weights[{i}].bytes {w.Bytes} must be a size in bytes");
            var full = System.IO.Path.GetFullPath(System.IO.Path.Combine(dir, w.Path));
            if (!full.StartsWith(dir + System.IO.Path.DirectorySeparatorChar, StringComparison.Ordinal))
                throw Bad($"files.weights[{i}].path '{w.Path}' leaves the package folder");
            var info = new FileInfo(full);
            if (!info.Exists) throw Bad($"weights file '{w.Path}' does not exist (the graphs keep their weights in it)");
            // ONNX Runtime would read past the end of a short file only when a graph is loaded, with a less helpful message.
            if (info.Length != w.Bytes)
                throw Bad($"weights file '{w.Path}' has {info.Length} bytes, not the {w.Bytes} the manifest names: it is truncated or from another export");
            found[i] = new WeightsFile(w.Path, w.Dtype, w.Bytes.Value);
        }
        return found;
    }

    private static ModelGraphFiles? Graph(RawGraph? g, string name, string dir)
    {
        if (g is null) return null;
        var cpu = FileRef(g.Cpu, name + ".cpu", dir) ?? throw new ModelPackageException($"{FileName}: {name}.cpu is missing");
        if (cpu.Dtype != "float32") throw new ModelPackageException($"{FileName}: {name}.cpu.dtype must be float32, not {cpu.Dtype}");
        var cuda = FileRef(g.Cuda, name + ".cuda", dir);
        if (cuda is not null && cuda.Dtype is not ("float16" or "float32"))
            throw new ModelPackageException($"{FileName}: {name}.cuda.dtype must be float16 or float32, not {cuda.Dtype}");
        return new ModelGraphFiles(cpu, cuda);
    }

    private static ModelFile? FileRef(RawFile? f, string name, string dir)
    {
        if (f is null) return null;
        if (string.IsNullOrWhiteSpace(f.Path)) throw new ModelPackageException($"{FileName}: {name}.path is missing");
        var full = System.IO.Path.GetFullPath(System.IO.Path.Combine(dir, f.Path));
        if (!full.StartsWith(dir + System.IO.Path.DirectorySeparatorChar, StringComparison.Ordinal))
            throw new ModelPackageException($"{FileName}: {name}.path '{f.Path}' leaves the package folder");
        if (!System.IO.File.Exists(full))
            throw new ModelPackageException($"{FileName}: {name}.path '{f.Path}' does not exist");
        var segments = f.StepSegments ?? [];
        foreach (var segment in segments)
        {
            if (string.IsNullOrWhiteSpace(segment)) throw new ModelPackageException($"{FileName}: {name}.step_segments has an empty path");
            var path = System.IO.Path.GetFullPath(System.IO.Path.Combine(dir, segment));
            // Beside the decoder: their weights are external data inside it, which ONNX Runtime resolves from their folder.
            if (System.IO.Path.GetDirectoryName(path) != System.IO.Path.GetDirectoryName(full))
                throw new ModelPackageException($"{FileName}: {name}.step_segments '{segment}' is not in the decoder's folder");
            if (!System.IO.File.Exists(path))
                throw new ModelPackageException($"{FileName}: {name}.step_segments '{segment}' does not exist");
        }
        return new ModelFile(f.Path, f.Dtype ?? "float32") { StepSegments = segments };
    }

    // The JSON as written (snake_case); nullable so that missing fields get clear messages.
    private sealed class RawManifest
    {
        public int? FormatVersion { get; set; }
        public string? Id { get; set; }
        public string? Description { get; set; }
        public RawImage? Image { get; set; }
        public int? PaletteSize { get; set; }
        public int[][]? Palette { get; set; }
        public int? SosTokenId { get; set; }
        public int? VocabSize { get; set; }
        public RawArchitecture? Architecture { get; set; }
        public string[]? Classes { get; set; }
        public RawFiles? Files { get; set; }
        public JsonObject? Training { get; set; }
        public JsonObject? Metrics { get; set; }
        public RawSampling? Sampling { get; set; }
        public RawAnalysis? Analysis { get; set; }
    }

    private sealed class RawSampling
    {
        public float? Temperature { get; set; }
        public int? TopK { get; set; }
        public float? TopP { get; set; }
    }

    private sealed class RawAnalysis
    {
        public RawFile? Cpu { get; set; }
        public int? EmbeddingLayer { get; set; }
        public RawOod? Ood { get; set; }
    }

    private sealed class RawOod
    {
        public string? Score { get; set; }
        public Dictionary<string, double>? TestQuantiles { get; set; }
    }

    private sealed class RawImage
    {
        public int? Height { get; set; }
        public int? Width { get; set; }
        public int? Channels { get; set; }
    }

    private sealed class RawArchitecture
    {
        public int? NLayer { get; set; }
        public int? NHead { get; set; }
        public int? NEmbd { get; set; }
        public int? HeadSize { get; set; }
        public int? NPositions { get; set; }
        public double? NormEps { get; set; }
        public string? Activation { get; set; }
    }

    private sealed class RawFiles
    {
        public RawWeightsFile[]? Weights { get; set; }
        public RawGraph? Decoder { get; set; }
        public RawGraph? Classifier { get; set; }
        public string? GenaiConfig { get; set; }
        public string? Parity { get; set; }
        public string? ModelCard { get; set; }
    }

    private sealed class RawGraph
    {
        public RawFile? Cpu { get; set; }
        public RawFile? Cuda { get; set; }
    }

    private sealed class RawWeightsFile
    {
        public string? Path { get; set; }
        public string? Dtype { get; set; }
        public long? Bytes { get; set; }
    }

    private sealed class RawFile
    {
        public string? Path { get; set; }
        public string? Dtype { get; set; }
        public string[]? StepSegments { get; set; }
    }
}
