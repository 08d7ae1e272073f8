using System.Text.Json.Nodes;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.ML.OnnxRuntime.Tensors;

namespace IGpt.Inference.Tests;

/// <summary>Format version 2's weights files: read from the graphs' external data, held in memory, checked against the files.</summary>
public class PackageWeightsTests
{
    [Fact]
    public void ReadsTheGraphsExternalInitializers()
    {
        var decoder = OnnxInitializers.External(File.ReadAllBytes(Path.Combine(Fixture.PackageDir, "decoder.onnx")), "decoder.onnx");
        var wte = Assert.Single(decoder, t => t.Name == "transformer.wte.weight");
        Assert.Equal(("weights.data", TensorElementType.Float, 9L * 32 * 4), (wte.Location, wte.ElementType, wte.Length));
        Assert.Equal([9L, 32L], wte.Dims);
        Assert.All(decoder, t => Assert.Equal(0, t.Offset % 64));
        // The classifier and the fp16 graphs (which cast them) point at the decoder's bytes for the weights they share.
        var classifier = OnnxInitializers.External(File.ReadAllBytes(Path.Combine(Fixture.PackageDir, "classifier.onnx")), "classifier.onnx");
        var (d, c) = (decoder.Single(t => t.Name == "transformer.h.1.mlp.c_fc.weight"), classifier.Single(t => t.Name == "transformer.h.1.mlp.c_fc.weight"));
        Assert.Equal((d.Location, d.Offset, d.Length), (c.Location, c.Offset, c.Length));
        var fp16 = OnnxInitializers.External(File.ReadAllBytes(Path.Combine(Fixture.PackageDir, "decoder.fp16.onnx")), "decoder.fp16.onnx");
        var (h, w) = (fp16.Single(t => t.Name == "transformer.wte.weight"), wte);
        Assert.Equal((w.Location, w.Offset, w.Length, TensorElementType.Float), (h.Location, h.Offset, h.Length, h.ElementType));
        Assert.Contains("not an ONNX graph", Assert.Throws<ModelPackageException>(() => OnnxInitializers.External([0x3a, 0x7f], "x.onnx")).Message);
    }

    [Fact]
    public void ServedModelKeepsItsWeightsInMemoryNotMappedFromTheFile() => InTempPackage(dir =>
    {
        using var model = IGptModel.Load(dir, Fixture.CpuOptions(), NullLogger.Instance);
        Assert.DoesNotContain(Path.Combine(dir, "weights.data"), File.ReadAllText("/proc/self/maps"));
        // A weights file truncated in place under a mapping would fault on the next read of a mapped page.
        File.WriteAllBytes(Path.Combine(dir, "weights.data"), []);
        AssertPrefillParity(model, dir);
    });

    [Fact]
    public void WithoutSharedWeightsEachSessionLoadsTheFileItselfAndComputesTheSame() => InTempPackage(dir =>
    {
        var options = Fixture.CpuOptions();
        options.ShareWeights = false;
        using var model = IGptModel.Load(dir, options, NullLogger.Instance);
        Assert.Contains(Path.Combine(dir, "weights.data"), File.ReadAllText("/proc/self/maps"));  // ONNX Runtime's own mapping
        AssertPrefillParity(model, dir);
    });

    private static void InTempPackage(Action<string> test)
    {
        var dir = Fixture.CopyToTemp(out var root);
        try { test(dir); }
        finally { Directory.Delete(root, recursive: true); }
    }

    private static void AssertPrefillParity(IGptModel model, string dir)
    {
        var parity = Fixture.ReadParity(dir);
        var full = model.ForwardWithoutCache([.. parity.Prompt]);
        int v = model.Manifest.VocabSize;
        for (int i = 0; i < parity.Prompt.Length; i++)
            DecoderTests.AssertClose(parity.PrefillLogits[i], full.AsSpan(i * v, v), parity.Tolerance, $"prefill[{i}]");
    }

    [Fact]
    public void AWeightPastTheEndOfItsFileIsAPackageError() => InTempPackage(dir =>
    {
        // A shorter weights file that the manifest agrees with: the graphs still point past its end.
        var path = Path.Combine(dir, "weights.data");
        var bytes = File.ReadAllBytes(path);
        File.WriteAllBytes(path, bytes[..(bytes.Length / 2)]);
        var manifest = JsonNode.Parse(File.ReadAllText(Path.Combine(dir, "model.json")))!;
        manifest["files"]!["weights"]![0]!["bytes"] = bytes.Length / 2;
        File.WriteAllText(Path.Combine(dir, "model.json"), manifest.ToJsonString());
        var e = Assert.Throws<ModelPackageException>(() => IGptModel.Load(dir, Fixture.CpuOptions(), NullLogger.Instance));
        Assert.Contains("does not fit 'weights.data'", e.Message);
    });
}
