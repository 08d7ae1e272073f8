namespace IGpt.Inference.Tests;

/// <summary>The settings' DataAnnotations are their rules: enforced where the library is given settings, naming the key.</summary>
public class SettingsTests
{
    [Fact]
    public void TheDefaultsAreValid()
    {
        new InferenceOptions().Validate();
        new ImageLimits().Validate();
        Assert.Empty(SettingsValidator<InferenceOptions>.Errors(new InferenceOptions(), InferenceOptions.SectionName));
    }

    [Theory]
    [InlineData(nameof(ImageLimits.MaxWidth), 0L)]
    [InlineData(nameof(ImageLimits.MaxHeight), 65536L)]
    [InlineData(nameof(ImageLimits.MaxBytes), 0L)]
    [InlineData(nameof(ImageLimits.MaxPixels), 0L)]
    [InlineData(nameof(ImageLimits.MaxPixels), 65535L * 65535 + 1)]   // the attribute's bound: no longer only in a comment
    public void BadImageLimitsNameTheirKey(string property, long value)
    {
        var limits = new ImageLimits();
        var p = typeof(ImageLimits).GetProperty(property)!;
        p.SetValue(limits, p.PropertyType == typeof(int) ? (object)(int)value : value);
        var error = Assert.Throws<ArgumentException>(limits.Validate);
        Assert.Contains($"ImageLimits:{property}", error.Message);
        var result = new SettingsValidator<ImageLimits>(ImageLimits.SectionName).Validate(null, limits);
        Assert.True(result.Failed);
        Assert.Contains($"ImageLimits:{property}", result.FailureMessage);
    }

    [Fact]
    public void BadInferenceOptionsNameTheirKeyAndTheLibraryRefusesThem()
    {
        var o = Fixture.CpuOptions();
        o.MaxBatch = 0;
        o.QueueCapacity = 0;
        var errors = SettingsValidator<InferenceOptions>.Errors(o, InferenceOptions.SectionName);
        Assert.Equal(2, errors.Count);
        Assert.Contains(errors, e => e.Contains("Inference:MaxBatch"));
        Assert.Contains(errors, e => e.Contains("Inference:QueueCapacity"));
        var refused = Assert.Throws<ArgumentException>(() => IGptModel.Load(Fixture.PackageDir, o));
        Assert.Contains("Inference:MaxBatch", refused.Message);
        o.MaxBatch = 4;
        o.QueueCapacity = 4;
        o.ModelsPath = " ";
        Assert.Contains("Inference:ModelsPath", Assert.Throws<ArgumentException>(o.Validate).Message);
    }
}
