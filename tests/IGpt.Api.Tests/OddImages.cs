using IGpt.Tests.Shared;
using SixLabors.ImageSharp;
using SixLabors.ImageSharp.Formats;
using SixLabors.ImageSharp.Formats.Jpeg;
using SixLabors.ImageSharp.Formats.Png;
using SixLabors.ImageSharp.Formats.Tiff;
using SixLabors.ImageSharp.Formats.Webp;
using SixLabors.ImageSharp.PixelFormats;

namespace IGpt.Api.Tests;

/// <summary>
/// Valid-but-odd and hostile images: every PNG colour type and bit depth, the JPEG fixtures ImageSharp 2.1 cannot
/// write (tests/fixtures/images, made by scripts/make_test_images.py), headers declaring huge dimensions.
/// </summary>
public static class OddImages
{
    /// <summary>
    /// An 8x8 image whose left half is opaque black and whose right half is white, or, with
    /// <paramref name="transparentRight"/>, fully transparent black (white once composited on white).
    /// </summary>
    public static Image<Rgba64> Halves(bool transparentRight, int width = 8, int height = 8)
    {
        var image = new Image<Rgba64>(width, height);
        for (int y = 0; y < height; y++)
        for (int x = 0; x < width; x++)
            image[x, y] = x < width / 2 ? new Rgba64(0, 0, 0, ushort.MaxValue)
                : transparentRight ? new Rgba64(0, 0, 0, 0) : new Rgba64(ushort.MaxValue, ushort.MaxValue, ushort.MaxValue, ushort.MaxValue);
        return image;
    }

    public static byte[] Png(PngColorType colorType, PngBitDepth bitDepth, bool interlaced, bool transparentRight)
    {
        using var image = Halves(transparentRight);
        return Encode(image, new PngEncoder
        {
            ColorType = colorType,
            BitDepth = bitDepth,
            InterlaceMethod = interlaced ? PngInterlaceMode.Adam7 : PngInterlaceMode.None,
        });
    }

    public static byte[] Jpeg(JpegColorType colorType, int width = 8, int height = 8)
    {
        using var image = Halves(transparentRight: false, width, height);
        return Encode(image, new JpegEncoder { Quality = 95, ColorType = colorType });
    }

    public static byte[] Tiff() { using var image = Halves(false); return Encode(image, new TiffEncoder()); }

    public static byte[] Webp() { using var image = Halves(false); return Encode(image, new WebpEncoder()); }

    /// <summary>A file of tests/fixtures/images.</summary>
    public static byte[] Fixture(string name) => File.ReadAllBytes(Path.Combine(ModelsFolder.RepoRoot, "tests", "fixtures", "images", name));

    /// <summary>A 1x1 PNG whose IHDR (CRC fixed up) declares <paramref name="width"/> x <paramref name="height"/>: a decompression bomb's header.</summary>
    public static byte[] PngDeclaring(uint width, uint height) => PngHeader.Declaring(TestImages.Png(1, 1), width, height);

    /// <summary>A small JPEG whose SOF0 header declares <paramref name="width"/> x <paramref name="height"/>.</summary>
    public static byte[] JpegDeclaring(ushort width, ushort height)
    {
        var jpeg = TestImages.Jpeg(8, 8);
        for (int i = 2; i + 8 < jpeg.Length; i++)
        {
            if (jpeg[i] == 0xFF && jpeg[i + 1] == 0xC0)
            {
                // FF C0, length (2), precision (1), height (2), width (2).
                jpeg[i + 5] = (byte)(height >> 8); jpeg[i + 6] = (byte)height;
                jpeg[i + 7] = (byte)(width >> 8); jpeg[i + 8] = (byte)width;
                return jpeg;
            }
        }
        throw new InvalidOperationException("no SOF0 marker");
    }

    private static byte[] Encode<TPixel>(Image<TPixel> image, IImageEncoder encoder) where TPixel : unmanaged, IPixel<TPixel>
    {
        using var stream = new MemoryStream();
        image.Save(stream, encoder);
        return stream.ToArray();
    }
}
