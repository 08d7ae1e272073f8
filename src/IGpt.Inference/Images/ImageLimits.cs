using System.ComponentModel.DataAnnotations;

namespace IGpt.Inference.Images;

/// <summary>What uploads the image codec accepts. Bound from configuration section "ImageLimits".</summary>
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

    public void Validate()
    {
        if (MaxWidth is < 1 or > 65535) throw new ArgumentException("ImageLimits:MaxWidth must be 1..65535.");
        if (MaxHeight is < 1 or > 65535) throw new ArgumentException("ImageLimits:MaxHeight must be 1..65535.");
        if (MaxBytes < 1) throw new ArgumentException("ImageLimits:MaxBytes must be positive.");
        if (MaxPixels < 1) throw new ArgumentException("ImageLimits:MaxPixels must be positive.");
    }
}
