using System.ComponentModel.DataAnnotations;

namespace IGpt.Inference.Images;

/// <summary>
/// What uploads the image codec accepts. Bound from configuration section "ImageLimits"; validated by its
/// attributes (<see cref="SettingsValidator{TOptions}"/>), at the service's start.
/// </summary>
public sealed class ImageLimits
{
    public const string SectionName = "ImageLimits";

    [Range(1, 65535)]
    public int MaxWidth { get; set; } = 4096;
    [Range(1, 65535)]
    public int MaxHeight { get; set; } = 4096;
    [Range(1, long.MaxValue)]
    public long MaxBytes { get; set; } = 10L * 1024 * 1024;

    /// <summary>Most pixels (width x height) an upload may declare; a decoded image takes 4 bytes a pixel.</summary>
    [Range(1, 65535L * 65535)]
    public long MaxPixels { get; set; } = 4096L * 4096;

    /// <summary>Throws <see cref="ArgumentException"/> naming the first bad setting (the same rules the service checks at start).</summary>
    public void Validate() => SettingsValidator<ImageLimits>.ThrowIfInvalid(this, SectionName);
}
