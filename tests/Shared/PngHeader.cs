namespace IGpt.Tests.Shared;

/// <summary>Rewrites the dimensions a PNG's IHDR declares (CRC fixed up), for decompression-bomb headers.</summary>
internal static class PngHeader
{
    /// <summary>A copy of <paramref name="png"/> whose IHDR declares <paramref name="width"/> x <paramref name="height"/>.</summary>
    public static byte[] Declaring(byte[] png, uint width, uint height)
    {
        var copy = (byte[])png.Clone();
        // Signature (8), then IHDR: length (4), "IHDR" (4), width (4), height (4), 5 more bytes, CRC over type + data.
        WriteBigEndian(copy.AsSpan(16), width);
        WriteBigEndian(copy.AsSpan(20), height);
        WriteBigEndian(copy.AsSpan(29), Crc32(copy.AsSpan(12, 17)));
        return copy;
    }

    // PNG's CRC-32 (ISO 3309, reflected 0xEDB88320).
    private static uint Crc32(ReadOnlySpan<byte> data)
    {
        uint crc = 0xFFFFFFFF;
        foreach (var b in data)
        {
            crc ^= b;
            for (int k = 0; k < 8; k++) crc = (crc & 1) != 0 ? (crc >> 1) ^ 0xEDB88320 : crc >> 1;
        }
        return ~crc;
    }

    private static void WriteBigEndian(Span<byte> target, uint value)
    {
        target[0] = (byte)(value >> 24); target[1] = (byte)(value >> 16); target[2] = (byte)(value >> 8); target[3] = (byte)value;
    }
}
