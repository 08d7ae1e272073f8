using System.Text.Json.Nodes;

namespace IGpt.Inference.Tests;

public class ManifestTests
{
    [Fact]
    public void LoadsTheFixture()
    {
        var m = ModelManifest.Load(Fixture.PackageDir);
        Assert.Equal("tiny-test", m.Id);
        Assert.Equal((8, 8, 1), (m.Height, m.Width, m.Channels));
        Assert.Equal((8, 8, 9), (m.PaletteSize, m.SosTokenId, m.VocabSize));
        Assert.Equal(new ModelArchitecture(2, 4, 32, 8, 64, 1e-5, "quick_gelu"), m.Architecture);
        Assert.Equal(["dark", "mid", "light"], m.Classes);
        Assert.Equal("decoder.onnx", m.Files.Decoder.Cpu.Path);
        Assert.Equal("float16", m.Files.Decoder.Cuda!.Dtype);
        Assert.NotNull(m.Files.Classifier);
        Assert.Equal(8, m.Palette.Size);
        Assert.Equal(0, m.Training["tokens_seen"]!.GetValue<int>());
        Assert.Empty(m.Metrics);
    }

    private static JsonObject FixtureJson() => JsonNode.Parse(File.ReadAllText(Path.Combine(Fixture.PackageDir, "model.json")))!.AsObject();

    private static ModelPackageException Reject(Action<JsonObject> edit)
    {
        var json = FixtureJson();
        edit(json);
        return Assert.Throws<ModelPackageException>(() => ModelManifest.Parse(json.ToJsonString(), Fixture.PackageDir));
    }

    [Fact]
    public void SamplingDefaultsAreThePackagesOverTheGlobalOnes()
    {
        Assert.Equal(SamplingOptions.Default, ModelManifest.Load(Fixture.PackageDir).Sampling); // the fixture names none

        var json = FixtureJson();
        json["sampling"] = new JsonObject { ["temperature"] = 0.8, ["top_k"] = 40, ["top_p"] = 0.95 };
        Assert.Equal(new SamplingOptions(0.8f, 40, 0.95f), ModelManifest.Parse(json.ToJsonString(), Fixture.PackageDir).Sampling);

        // A setting the package leaves out is the global one; null is the same as no object.
        json["sampling"] = new JsonObject { ["top_p"] = 0.9 };
        Assert.Equal(new SamplingOptions(1, 0, 0.9f), ModelManifest.Parse(json.ToJsonString(), Fixture.PackageDir).Sampling);
        json["sampling"] = null;
        Assert.Equal(SamplingOptions.Default, ModelManifest.Parse(json.ToJsonString(), Fixture.PackageDir).Sampling);
    }

    [Fact]
    public void RejectsSamplingDefaultsNoRequestCouldSend()
    {
        Assert.Contains("sampling: top_p must be in (0, 1]", Reject(j => j["sampling"] = new JsonObject { ["top_p"] = 0 }).Message);
        Assert.Contains("sampling: top_p must be in (0, 1]", Reject(j => j["sampling"] = new JsonObject { ["top_p"] = 1.5 }).Message);
        Assert.Contains("sampling: temperature must be 0..100", Reject(j => j["sampling"] = new JsonObject { ["temperature"] = -0.5 }).Message);
        Assert.Contains("sampling: temperature must be 0..100", Reject(j => j["sampling"] = new JsonObject { ["temperature"] = 101 }).Message);
        Assert.Contains("sampling: top_k must be >= 0", Reject(j => j["sampling"] = new JsonObject { ["top_k"] = -1 }).Message);
        // Wrong types are invalid JSON for the manifest, named by their path.
        Assert.Contains("$.sampling.top_k", Reject(j => j["sampling"] = new JsonObject { ["top_k"] = 2.5 }).Message);
        Assert.Contains("$.sampling.temperature", Reject(j => j["sampling"] = new JsonObject { ["temperature"] = "0.9" }).Message);
        Assert.Contains("$.sampling", Reject(j => j["sampling"] = 0.9).Message);
    }

    [Fact]
    public void RejectsUnknownFormatVersion()
    {
        Assert.Contains("format_version 3 is not supported", Reject(j => j["format_version"] = 3).Message);
        Assert.Contains("format_version 0 is not supported", Reject(j => j["format_version"] = 0).Message);
    }

    [Fact]
    public void ReadsTheWeightsFilesOfVersion2AndVersion1WithoutThem()
    {
        var m = ModelManifest.Load(Fixture.PackageDir);
        Assert.Equal(2, m.FormatVersion);
        Assert.Equal(["weights.data"], m.Files.Weights.Select(w => w.Path));  // the fp16 graphs cast its tensors
        Assert.Equal(["float32"], m.Files.Weights.Select(w => w.Dtype));
        Assert.Equal(new FileInfo(Path.Combine(Fixture.PackageDir, "weights.data")).Length, m.Files.Weights[0].Bytes);

        var json = FixtureJson();
        json["format_version"] = 1;
        json["files"]!.AsObject().Remove("weights");
        var v1 = ModelManifest.Parse(json.ToJsonString(), Fixture.PackageDir);
        Assert.Equal(1, v1.FormatVersion);
        Assert.Empty(v1.Files.Weights);
    }

    [Fact]
    public void RejectsMissingTruncatedOrEscapingWeights()
    {
        Assert.Contains("files.weights is missing", Reject(j => j["files"]!.AsObject().Remove("weights")).Message);
        Assert.Contains("weights file 'gone.data' does not exist", Reject(j => j["files"]!["weights"]![0]!["path"] = "gone.data").Message);
        Assert.Contains("leaves the package folder", Reject(j => j["files"]!["weights"]![0]!["path"] = "../weights.data").Message);
        Assert.Contains("dtype must be float32 or float16", Reject(j => j["files"]!["weights"]![0]!["dtype"] = "int8").Message);
        var truncated = Reject(j => j["files"]!["weights"]![0]!["bytes"] = j["files"]!["weights"]![0]!["bytes"]!.GetValue<long>() + 64);
        Assert.Contains("'weights.data' has", truncated.Message);
        Assert.Contains("truncated", truncated.Message);
    }

    [Fact]
    public void RejectsInconsistentPaletteAndVocab()
    {
        Assert.Contains("palette has 8 entries but palette_size is 9", Reject(j => j["palette_size"] = 9).Message);
        Assert.Contains("vocab_size", Reject(j => j["vocab_size"] = 8).Message);
        Assert.Contains("palette[2][0] = 300", Reject(j => j["palette"]![2]![0] = 300).Message);
        Assert.Contains("n_positions", Reject(j => j["architecture"]!["n_positions"] = 32).Message);
        Assert.Contains("image.channels", Reject(j => j["image"]!["channels"] = 4).Message);
    }

    [Fact]
    public void RejectsMissingOrEscapingFiles()
    {
        Assert.Contains("'nope.onnx' does not exist", Reject(j => j["files"]!["decoder"]!["cpu"]!["path"] = "nope.onnx").Message);
        Assert.Contains("leaves the package folder", Reject(j => j["files"]!["decoder"]!["cpu"]!["path"] = "../x.onnx").Message);
        Assert.Contains("files.decoder is missing", Reject(j => j["files"]!.AsObject().Remove("decoder")).Message);
    }

    [Fact]
    public void RejectsInvalidJsonAndMissingManifest()
    {
        Assert.Contains("invalid JSON", Assert.Throws<ModelPackageException>(() => ModelManifest.Parse("{\"format_version\": 1,", Fixture.PackageDir)).Message);
        Assert.Contains("model.json not found", Assert.Throws<ModelPackageException>(() => ModelManifest.Load(Path.GetTempPath())).Message);
    }

    [Fact]
    public void ModelWithoutHeadHasNoClassifier()
    {
        var json = FixtureJson();
        json["classes"] = new JsonArray();
        json["files"]!.AsObject().Remove("classifier");
        var m = ModelManifest.Parse(json.ToJsonString(), Fixture.PackageDir);
        Assert.Null(m.Files.Classifier);
        Assert.Empty(m.Classes);
    }

    [Fact]
    public void ReadsTheAnalysisGraphAndItsCalibration()
    {
        var m = ModelManifest.Load(Fixture.PackageDir);
        Assert.Equal("analysis.onnx", m.Analysis!.Cpu.Path);
        Assert.Equal(1, m.Analysis.EmbeddingLayer);
        Assert.Null(m.Analysis.Ood);  // the fixture is not calibrated

        var json = FixtureJson();
        json["analysis"]!["ood"] = new JsonObject
        {
            ["score"] = OodScore.Name,
            ["test_quantiles"] = new JsonObject { ["0.99"] = 2.5, ["0.5"] = 0.25, ["0.95"] = 1.5 },
        };
        var ood = ModelManifest.Parse(json.ToJsonString(), Fixture.PackageDir).Analysis!.Ood!;
        Assert.Equal(OodScore.Name, ood.Score);
        Assert.Equal([0.5, 0.95, 0.99], ood.TestQuantiles.Keys);
        Assert.Equal([0.25, 1.5, 2.5], ood.TestQuantiles.Values);

        json.Remove("analysis");
        Assert.Null(ModelManifest.Parse(json.ToJsonString(), Fixture.PackageDir).Analysis);
    }

    [Fact]
    public void RejectsABrokenAnalysisEntry()
    {
        Assert.Contains("analysis.embedding_layer 3 must be 0..n_layer (2)", Reject(j => j["analysis"]!["embedding_layer"] = 3).Message);
        Assert.Contains("analysis.embedding_layer -1", Reject(j => j["analysis"]!["embedding_layer"] = -1).Message);
        Assert.Contains("analysis.embedding_layer is missing", Reject(j => j["analysis"]!.AsObject().Remove("embedding_layer")).Message);
        Assert.Contains("analysis.cpu is missing", Reject(j => j["analysis"]!.AsObject().Remove("cpu")).Message);
        Assert.Contains("'gone.onnx' does not exist", Reject(j => j["analysis"]!["cpu"]!["path"] = "gone.onnx").Message);
        Assert.Contains("must be float32", Reject(j => j["analysis"]!["cpu"]!["dtype"] = "float16").Message);
        static Action<JsonObject> Quantiles(JsonObject quantiles, string score = OodScore.Name) =>
            j => j["analysis"]!["ood"] = new JsonObject { ["score"] = score, ["test_quantiles"] = quantiles };
        Assert.Contains("lacks the 0.99 quantile", Reject(Quantiles(new JsonObject { ["0.95"] = 1.0 })).Message);
        Assert.Contains("'1.5' is not a quantile", Reject(Quantiles(new JsonObject { ["0.95"] = 1.0, ["0.99"] = 2.0, ["1.5"] = 3.0 })).Message);
        Assert.Contains("'half' is not a quantile", Reject(Quantiles(new JsonObject { ["half"] = 1.0 })).Message);
        Assert.Contains("0.95 quantile is above the 0.99", Reject(Quantiles(new JsonObject { ["0.95"] = 3.0, ["0.99"] = 2.0 })).Message);
        Assert.Contains("ood.score is missing", Reject(Quantiles(new JsonObject { ["0.95"] = 1.0, ["0.99"] = 2.0 }, " ")).Message);
        Assert.Contains("invalid JSON", Reject(Quantiles(new JsonObject { ["0.95"] = "1", ["0.99"] = 2.0 })).Message);
    }
}
