using Microsoft.Extensions.Options;
using SixLabors.ImageSharp;
using SixLabors.ImageSharp.Formats;
using SixLabors.ImageSharp.Formats.Jpeg;
using SixLabors.ImageSharp.Formats.Png;
using SixLabors.ImageSharp.PixelFormats;
using SixLabors.ImageSharp.Processing;

namespace IGpt.Inference.Images;

/// <summary>
/// Uploaded PNG/JPEG to model pixels, and model pixels to PNG. Only the PNG and JPEG decoders are
/// registered; dimensions are checked with Image.Identify before anything is decoded.
/// </summary>
public sealed class ImageCodec
{
    private readonly ImageLimits _limits;
    private readonly Configuration _configuration;

    public ImageCodec(IOptions<ImageLimits> options)
    {
        _limits = options.Value;
        _limits.Validate();
        _configuration = new Configuration(new PngConfigurationModule(), new JpegConfigurationModule());
    }

    public ImageLimits Limits => _limits;

    /// <summary>
    /// Decodes an upload for a model: EXIF orientation applied, alpha composited on white, converted
    /// to the model's channels (grey = BT.601 luma), resized to the model's width x height. With
    /// <paramref name="partial"/>, only the width is fixed to the model's: the height scales by the same
    /// factor, and rows below the model's height are cropped, giving the top rows of an image to complete.
    /// </summary>
    public PixelImage DecodeForModel(ReadOnlySpan<byte> data, ModelManifest model, bool partial)
    {
        using var image = Decode(data);
        int width = model.Width, height = model.Height;
        if (partial)
        {
            // Keep the aspect ratio; an image taller than the model keeps only its top rows.
            double factor = (double)model.Width / image.Width;
            height = Math.Max(1, (int)Math.Round(image.Height * factor));
        }
        if (image.Width != width || image.Height != height)
            image.Mutate(x => x.Resize(new ResizeOptions { Size = new Size(width, height), Mode = ResizeMode.Stretch, Sampler = KnownResamplers.Bicubic }));
        if (image.Height > model.Height)
            image.Mutate(x => x.Crop(new Rectangle(0, 0, width, model.Height)));
        return ToPixelImage(image, model.Channels);
    }

    /// <summary>Decodes an upload as it is (oriented, alpha on white) to <paramref name="channels"/> channels.</summary>
    public PixelImage DecodeOriginal(ReadOnlySpan<byte> data, int channels)
    {
        using var image = Decode(data);
        return ToPixelImage(image, channels);
    }

    /// <summary>PNG of the image, each pixel drawn as a scale x scale block (1-16).</summary>
    public byte[] EncodePng(PixelImage image, int scale) => EncodePngStrip([image], scale);

    /// <summary>PNG of images side by side (top-aligned on white), each pixel drawn as a scale x scale block (1-16).</summary>
    public byte[] EncodePngStrip(IReadOnlyList<PixelImage> images, int scale)
    {
        if (scale is < 1 or > 16) throw new ArgumentOutOfRangeException(nameof(scale), scale, "scale must be 1..16");
        if (images.Count == 0) throw new ArgumentException("no images", nameof(images));
        int channels = images[0].Channels;
        long totalWidth = 0;
        int height = 0;
        foreach (var im in images)
        {
            if (im.Channels != channels) throw new ArgumentException("images differ in channels", nameof(images));
            totalWidth += (long)im.Width * scale;
            height = Math.Max(height, im.Height * scale);
        }
        if (totalWidth > 65535 || height > 65535) throw new ArgumentException("strip too large", nameof(images));

        using var canvas = new Image<Rgb24>(_configuration, (int)totalWidth, height, new Rgb24(255, 255, 255));
        int x0 = 0;
        canvas.ProcessPixelRows(rows =>
        {
            foreach (var im in images)
            {
                for (int y = 0; y < im.Height * scale; y++)
                {
                    var row = rows.GetRowSpan(y);
                    var src = im.Pixels.AsSpan((y / scale) * im.Width * channels, im.Width * channels);
                    for (int x = 0; x < im.Width * scale; x++)
                    {
                        int s = (x / scale) * channels;
                        row[x0 + x] = channels == 1 ? new Rgb24(src[s], src[s], src[s]) : new Rgb24(src[s], src[s + 1], src[s + 2]);
                    }
                }
                x0 += im.Width * scale;
            }
        });
        var encoder = new PngEncoder
        {
            ColorType = channels == 1 ? PngColorType.Grayscale : PngColorType.Rgb,
            BitDepth = PngBitDepth.Bit8,
        };
        using var output = new MemoryStream();
        canvas.SaveAsPng(output, encoder);
        return output.ToArray();
    }

    private unsafe Image<Rgba32> Decode(ReadOnlySpan<byte> data)
    {
        if (data.Length == 0) throw new InvalidImageException("the image is empty");
        if (data.Length > _limits.MaxBytes)
            throw new ImageTooLargeException($"the image is {data.Length} bytes; at most {_limits.MaxBytes} are accepted");
        var format = Image.DetectFormat(_configuration, data)
            ?? throw new UnsupportedImageFormatException($"{Describe(data)} is not supported; send a PNG or JPEG");

        // ImageSharp decodes a JPEG cut off inside its scan data without a word, filling the rest with grey.
        if (format is JpegFormat && !JpegHasEndAfterLastScan(data))
            throw new InvalidImageException("the JPEG is truncated: no end-of-image marker follows its last scan");

        fixed (byte* p = data)
        {
            using var stream = new UnmanagedMemoryStream(p, data.Length);
            IImageInfo? info;
            try { info = Image.Identify(_configuration, stream); }
            catch (Exception e) when (IsDecoderFailure(e))
            {
                throw new InvalidImageException($"the {format.Name} header is corrupt: {e.Message}", e);
            }
            if (info is null) throw new InvalidImageException($"the {format.Name} header is corrupt");
            if (info.Width < 1 || info.Height < 1) throw new InvalidImageException($"the {format.Name} has no pixels");
            if (info.Width > _limits.MaxWidth || info.Height > _limits.MaxHeight)
                throw new ImageTooLargeException(
                    $"the image is {info.Width}x{info.Height}; at most {_limits.MaxWidth}x{_limits.MaxHeight} is accepted");
            if ((long)info.Width * info.Height > _limits.MaxPixels)
                throw new ImageTooLargeException(
                    $"the image is {info.Width}x{info.Height} = {(long)info.Width * info.Height} pixels; at most {_limits.MaxPixels} are accepted");

            stream.Position = 0;
            Image<Rgba32> image;
            try { image = Image.Load<Rgba32>(_configuration, stream); }
            catch (Exception e) when (IsDecoderFailure(e))
            {
                throw new InvalidImageException($"the {format.Name} data is truncated or corrupt: {e.Message}", e);
            }
            try
            {
                image.Mutate(x => x.AutoOrient());
                return image;
            }
            catch
            {
                image.Dispose();
                throw;
            }
        }
    }

    /// <summary>
    /// What ImageSharp 2.1's decoders throw on corrupt data: their own exceptions, and, on some mutated JPEGs, a
    /// NullReferenceException, an IndexOutOfRangeException or an arithmetic error from inside the decoder. The
    /// dimensions are checked before decoding, so none of these is the server running out of anything.
    /// </summary>
    private static bool IsDecoderFailure(Exception e) =>
        e is ImageFormatException or InvalidImageContentException or UnknownImageFormatException or NotSupportedException
            or InvalidOperationException or ArgumentException or IndexOutOfRangeException or NullReferenceException
            or ArithmeticException or EndOfStreamException or IOException;

    /// <summary>
    /// Whether an EOI marker (FF D9) follows the last SOS marker (FF DA). In entropy-coded data FF is always followed
    /// by 00 or a restart marker, so neither marker appears there by accident; an EXIF thumbnail's own EOI comes
    /// before the main image's scans.
    /// </summary>
    internal static bool JpegHasEndAfterLastScan(ReadOnlySpan<byte> data)
    {
        var lastScan = data.LastIndexOf([(byte)0xFF, (byte)0xDA]);
        return lastScan >= 0 && data[(lastScan + 2)..].IndexOf([(byte)0xFF, (byte)0xD9]) >= 0;
    }

    private static string Describe(ReadOnlySpan<byte> data)
    {
        if (data.StartsWith("GIF8"u8)) return "GIF";
        if (data.StartsWith("BM"u8)) return "BMP";
        if (data.Length >= 12 && data.StartsWith("RIFF"u8) && data.Slice(8, 4).SequenceEqual("WEBP"u8)) return "WebP";
        if (data.StartsWith("II*\0"u8) || data.StartsWith("MM\0*"u8)) return "TIFF";
        if (data.Length >= 12 && data.Slice(4, 4).SequenceEqual("ftyp"u8)) return "HEIF/AVIF";
        return "this data (not a recognised image)";
    }

    // Alpha composited on white, then converted to the model's channels.
    private static PixelImage ToPixelImage(Image<Rgba32> image, int channels)
    {
        int w = image.Width, h = image.Height;
        var pixels = new byte[w * h * channels];
        image.ProcessPixelRows(rows =>
        {
            for (int y = 0; y < h; y++)
            {
                var row = rows.GetRowSpan(y);
                var dst = pixels.AsSpan(y * w * channels, w * channels);
                for (int x = 0; x < w; x++)
                {
                    var p = row[x];
                    int r = OnWhite(p.R, p.A), g = OnWhite(p.G, p.A), b = OnWhite(p.B, p.A);
                    if (channels == 1)
                    {
                        dst[x] = Luma(r, g, b);
                    }
                    else
                    {
                        dst[x * 3] = (byte)r;
                        dst[x * 3 + 1] = (byte)g;
                        dst[x * 3 + 2] = (byte)b;
                    }
                }
            }
        });
        return new PixelImage(w, h, channels, pixels);
    }

    /// <summary>c over white: (c*a + 255*(255-a)) / 255, rounded.</summary>
    internal static int OnWhite(int c, int a) => (c * a + 255 * (255 - a) + 127) / 255;

    /// <summary>ITU-R BT.601 luma, rounded.</summary>
    internal static byte Luma(int r, int g, int b) => (byte)Math.Clamp((int)Math.Round(0.299 * r + 0.587 * g + 0.114 * b), 0, 255);
}
