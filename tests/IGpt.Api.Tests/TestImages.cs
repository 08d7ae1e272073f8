using SixLabors.ImageSharp;
using SixLabors.ImageSharp.Formats.Bmp;
using SixLabors.ImageSharp.Formats.Gif;
using SixLabors.ImageSharp.Formats.Jpeg;
using SixLabors.ImageSharp.Formats.Png;
using SixLabors.ImageSharp.PixelFormats;

namespace IGpt.Api.Tests;

/// <summary>Images made for the tests, and decoding of the PNGs the service returns.</summary>
public static class TestImages
{
    /// <summary>A grey gradient with some structure, so that quantization uses several palette entries.</summary>
    public static byte Pattern(int x, int y) => (byte)((x * 31 + y * 17 + (x * y % 5) * 13) % 256);

    public static Image<L8> Grey(int width, int height, Func<int, int, byte>? pixel = null)
    {
        pixel ??= Pattern;
        var image = new Image<L8>(width, height);
        for (int y = 0; y < height; y++)
        for (int x = 0; x < width; x++)
            image[x, y] = new L8(pixel(x, y));
        return image;
    }

    public static byte[] Png(int width = 8, int height = 8, Func<int, int, byte>? pixel = null) =>
        Encode(Grey(width, height, pixel), new PngEncoder());

    public static byte[] Jpeg(int width = 8, int height = 8) => Encode(Grey(width, height), new JpegEncoder { Quality = 95 });

    public static byte[] Gif(int width = 8, int height = 8) => Encode(Grey(width, height), new GifEncoder());

    public static byte[] Bmp(int width = 8, int height = 8) => Encode(Grey(width, height), new BmpEncoder());

    /// <summary>A PNG whose pixel data is cut off: the header decodes, the image does not.</summary>
    public static byte[] TruncatedPng()
    {
        var png = Png(64, 64, (x, y) => (byte)(x * y));
        return png[..(png.Length / 2)];
    }

    /// <summary>A PNG of random noise (incompressible) of at least <paramref name="bytes"/> bytes.</summary>
    public static byte[] NoisePng(int bytes)
    {
        var side = (int)Math.Ceiling(Math.Sqrt(bytes)) + 8;
        var random = new Random(1);
        return Png(side, side, (_, _) => (byte)random.Next(256));
    }

    /// <summary>The grey values of a PNG, row by row.</summary>
    public static (int Width, int Height, byte[] Pixels) ReadGrey(byte[] png)
    {
        using var image = Image.Load<L8>(png);
        var pixels = new byte[image.Width * image.Height];
        for (int y = 0; y < image.Height; y++)
        for (int x = 0; x < image.Width; x++)
            pixels[y * image.Width + x] = image[x, y].PackedValue;
        return (image.Width, image.Height, pixels);
    }

    private static byte[] Encode(Image<L8> image, SixLabors.ImageSharp.Formats.IImageEncoder encoder)
    {
        using (image)
        using (var stream = new MemoryStream())
        {
            image.Save(stream, encoder);
            return stream.ToArray();
        }
    }
}
