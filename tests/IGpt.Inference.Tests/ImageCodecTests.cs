using IGpt.Tests.Shared;
using Microsoft.Extensions.Options;
using SixLabors.ImageSharp;
using SixLabors.ImageSharp.Formats.Jpeg;
using SixLabors.ImageSharp.Formats.Png;
using SixLabors.ImageSharp.Metadata.Profiles.Exif;
using SixLabors.ImageSharp.PixelFormats;

namespace IGpt.Inference.Tests;

public class ImageCodecTests
{
    private static readonly ModelManifest Tiny = ModelManifest.Load(Fixture.PackageDir);
    private static ImageCodec Codec(ImageLimits? limits = null) => new(Options.Create(limits ?? new ImageLimits()));

    private static byte[] Png<TPixel>(Image<TPixel> image, PngEncoder? encoder = null) where TPixel : unmanaged, IPixel<TPixel>
    {
        using var ms = new MemoryStream();
        image.SaveAsPng(ms, encoder ?? new PngEncoder());
        return ms.ToArray();
    }

    private static Image<L8> Gradient(int w, int h)
    {
        var image = new Image<L8>(w, h);
        for (int y = 0; y < h; y++)
            for (int x = 0; x < w; x++)
                image[x, y] = new L8((byte)((x * 31 + y * 7) % 256));
        return image;
    }

    [Fact]
    public void GreyPngAtModelSizeDecodesExactly()
    {
        using var image = Gradient(8, 8);
        var px = Codec().DecodeForModel(Png(image), Tiny, partial: false);
        Assert.Equal((8, 8, 1), (px.Width, px.Height, px.Channels));
        Assert.Equal((byte)((3 * 31 + 2 * 7) % 256), px.Pixels[2 * 8 + 3]);
    }

    [Fact]
    public void RgbaIsCompositedOnWhiteThenConvertedWithBt601Luma()
    {
        using var image = new Image<Rgba32>(8, 8, new Rgba32(0, 0, 0, 0));
        image[1, 0] = new Rgba32(0, 0, 0, 128);
        image[2, 0] = new Rgba32(255, 0, 0, 255);
        image[3, 0] = new Rgba32(0, 255, 0, 255);
        var px = Codec().DecodeForModel(Png(image), Tiny, partial: false);
        Assert.Equal(255, px.Pixels[0]);      // transparent -> white
        Assert.Equal(127, px.Pixels[1]);      // half black on white
        Assert.Equal(76, px.Pixels[2]);       // 0.299 * 255
        Assert.Equal(150, px.Pixels[3]);      // 0.587 * 255
        var rgb = Codec().DecodeOriginal(Png(image), 3);
        Assert.Equal([255, 255, 255, 127, 127, 127, 255, 0, 0], rgb.Pixels[..9]);
    }

    [Fact]
    public void SixteenBitAndPalettePngsDecode()
    {
        using var grey16 = new Image<L16>(8, 8, new L16(0x8080));
        var a = Codec().DecodeForModel(Png(grey16, new PngEncoder { BitDepth = PngBitDepth.Bit16, ColorType = PngColorType.Grayscale }), Tiny, false);
        Assert.All(a.Pixels, p => Assert.Equal(128, p));

        using var rgb = new Image<Rgb24>(8, 8, new Rgb24(255, 255, 255));
        rgb[0, 0] = new Rgb24(0, 0, 0);
        var b = Codec().DecodeForModel(Png(rgb, new PngEncoder { ColorType = PngColorType.Palette }), Tiny, false);
        Assert.Equal(0, b.Pixels[0]);
        Assert.Equal(255, b.Pixels[1]);
    }

    [Fact]
    public void JpegDecodesAndResizesToModelSize()
    {
        using var image = new Image<Rgb24>(64, 48, new Rgb24(200, 200, 200));
        using var ms = new MemoryStream();
        image.SaveAsJpeg(ms, new JpegEncoder { Quality = 95 });
        var px = Codec().DecodeForModel(ms.ToArray(), Tiny, partial: false);
        Assert.Equal((8, 8, 1), (px.Width, px.Height, px.Channels));
        Assert.All(px.Pixels, p => Assert.InRange(p, 195, 205));
    }

    [Fact]
    public void ExifOrientationIsApplied()
    {
        // 16x8, left half black, right half white; orientation 6 = rotate 90 degrees clockwise to display.
        using var image = new Image<Rgb24>(16, 8, new Rgb24(255, 255, 255));
        for (int y = 0; y < 8; y++)
            for (int x = 0; x < 8; x++)
                image[x, y] = new Rgb24(0, 0, 0);
        image.Metadata.ExifProfile = new ExifProfile();
        image.Metadata.ExifProfile.SetValue(ExifTag.Orientation, (ushort)6);
        using var ms = new MemoryStream();
        image.SaveAsJpeg(ms, new JpegEncoder { Quality = 100 });
        var px = Codec().DecodeOriginal(ms.ToArray(), 1);
        Assert.Equal((8, 16), (px.Width, px.Height));
        Assert.InRange(px.Pixels[2 * 8 + 4], 0, 20);     // top: the former left half
        Assert.InRange(px.Pixels[13 * 8 + 4], 235, 255); // bottom: the former right half
    }

    [Fact]
    public void PartialKeepsAspectAndOnlyTheTopRows()
    {
        using var wide = Gradient(16, 8);
        var px = Codec().DecodeForModel(Png(wide), Tiny, partial: true);
        Assert.Equal((8, 4), (px.Width, px.Height));
        using var tall = Gradient(8, 40);
        var cropped = Codec().DecodeForModel(Png(tall), Tiny, partial: true);
        Assert.Equal((8, 8), (cropped.Width, cropped.Height));
        using var top = Gradient(8, 8);
        Assert.Equal(Codec().DecodeForModel(Png(top), Tiny, partial: false).Pixels, cropped.Pixels);
    }

    [Fact]
    public void GifAndBmpAreUnsupported()
    {
        using var image = Gradient(4, 4);
        using var gif = new MemoryStream();
        image.SaveAsGif(gif);
        using var bmp = new MemoryStream();
        image.SaveAsBmp(bmp);
        Assert.Contains("GIF", Assert.Throws<UnsupportedImageFormatException>(() => Codec().DecodeForModel(gif.ToArray(), Tiny, false)).Message);
        Assert.Contains("BMP", Assert.Throws<UnsupportedImageFormatException>(() => Codec().DecodeForModel(bmp.ToArray(), Tiny, false)).Message);
        Assert.Throws<UnsupportedImageFormatException>(() => Codec().DecodeForModel("hello, world"u8.ToArray(), Tiny, false));
    }

    [Fact]
    public void OversizeDimensionsInTheHeaderAreRejectedBeforeDecoding()
    {
        using var image = Gradient(1, 1);
        var png = PngHeader.Declaring(Png(image), 100000, 1);
        var e = Assert.Throws<ImageTooLargeException>(() => Codec().DecodeForModel(png, Tiny, false));
        Assert.Contains("100000x1", e.Message);
    }

    [Fact]
    public void PixelCountOverTheLimitIsRejectedBeforeDecoding()
    {
        using var image = Gradient(200, 100);
        var e = Assert.Throws<ImageTooLargeException>(() => Codec(new ImageLimits { MaxPixels = 19_999 }).DecodeForModel(Png(image), Tiny, false));
        Assert.Contains("20000 pixels", e.Message);
        Assert.Equal(8, Codec(new ImageLimits { MaxPixels = 20_000 }).DecodeForModel(Png(image), Tiny, false).Width);
    }

    [Fact]
    public void JpegCutInsideItsScanIsInvalid()
    {
        using var image = Gradient(64, 64);
        using var ms = new MemoryStream();
        image.SaveAsJpeg(ms, new JpegEncoder { Quality = 95 });
        var jpeg = ms.ToArray();
        Assert.Equal(8, Codec().DecodeForModel(jpeg, Tiny, false).Width);
        var e = Assert.Throws<InvalidImageException>(() => Codec().DecodeForModel(jpeg[..(jpeg.Length - 100)], Tiny, false));
        Assert.Contains("truncated", e.Message);
        // Bytes after the end-of-image marker (some cameras append data) are no reason to refuse it.
        Assert.Equal(8, Codec().DecodeForModel([.. jpeg, .. "trailing"u8], Tiny, false).Width);
    }

    [Fact]
    public void TooManyBytesAreRejected()
    {
        using var image = Gradient(64, 64);
        Assert.Throws<ImageTooLargeException>(() => Codec(new ImageLimits { MaxBytes = 100 }).DecodeForModel(Png(image), Tiny, false));
    }

    [Fact]
    public void TruncatedOrEmptyDataIsInvalid()
    {
        using var image = new Image<Rgb24>(64, 64);
        var rng = new Random(7);
        for (int y = 0; y < 64; y++)
            for (int x = 0; x < 64; x++)
                image[x, y] = new Rgb24((byte)rng.Next(256), (byte)rng.Next(256), (byte)rng.Next(256));
        var png = Png(image);
        Assert.Throws<InvalidImageException>(() => Codec().DecodeForModel(png.AsSpan(0, png.Length / 2), Tiny, false));
        Assert.Throws<InvalidImageException>(() => Codec().DecodeForModel(png.AsSpan(0, 30), Tiny, false));
        Assert.Throws<InvalidImageException>(() => Codec().DecodeForModel([], Tiny, false));
    }

    [Fact]
    public void EncodePngScalesWithNearestNeighbour()
    {
        var png = Codec().EncodePng(new PixelImage(2, 1, 1, [0, 255]), 3);
        using var decoded = Image.Load<L8>(png);
        Assert.Equal((6, 3), (decoded.Width, decoded.Height));
        Assert.Equal(0, decoded[2, 2].PackedValue);
        Assert.Equal(255, decoded[3, 0].PackedValue);
        Assert.Throws<ArgumentOutOfRangeException>(() => Codec().EncodePng(new PixelImage(1, 1, 1, [0]), 17));
        Assert.Throws<ArgumentOutOfRangeException>(() => Codec().EncodePng(new PixelImage(1, 1, 1, [0]), 0));
    }

    [Fact]
    public void StripPlacesImagesSideBySide()
    {
        var a = new PixelImage(2, 2, 3, [10, 20, 30, 10, 20, 30, 10, 20, 30, 10, 20, 30]);
        var b = new PixelImage(1, 1, 3, [0, 0, 0]);
        var png = Codec().EncodePngStrip([a, b], 2);
        using var decoded = Image.Load<Rgb24>(png);
        Assert.Equal((6, 4), (decoded.Width, decoded.Height));
        Assert.Equal(new Rgb24(10, 20, 30), decoded[3, 3]);
        Assert.Equal(new Rgb24(0, 0, 0), decoded[5, 1]);
        Assert.Equal(new Rgb24(255, 255, 255), decoded[5, 3]); // below the shorter image
    }
}
