using System.Text;
using System.Text.Json;

namespace IGpt.Tools.Load;

/// <summary>What the load program and the soak share: the first ready model, percentiles, a PNG made without an imaging library.</summary>
internal static class LoadCommon
{
    public static double Percentile(double[] sorted, double p) =>
        sorted.Length == 0 ? double.NaN : sorted[Math.Min(sorted.Length - 1, (int)Math.Ceiling(p * sorted.Length) - 1)];

    public static async Task<string> FirstReadyModelAsync(HttpClient http)
    {
        using var json = JsonDocument.Parse(await http.GetStringAsync("/v1/models"));
        foreach (var m in json.RootElement.GetProperty("models").EnumerateArray())
            if (m.GetProperty("status").GetString() == "ready") return m.GetProperty("id").GetString()!;
        throw new InvalidOperationException("the service has no ready model");
    }

    // A minimal grey PNG (stored, unfiltered rows) so the tool needs no imaging library.
    public static byte[] GreyPng(int width, int height, int salt = 0)
    {
        var raw = new byte[height * (width + 1)];
        for (int y = 0; y < height; y++)
            for (int x = 0; x < width; x++) raw[y * (width + 1) + 1 + x] = (byte)(64 + (x * 7 + y * 13 + salt) % 128);
        using var png = new MemoryStream();
        png.Write([137, 80, 78, 71, 13, 10, 26, 10]);
        var header = new byte[13];
        WriteBigEndian(header, 0, width);
        WriteBigEndian(header, 4, height);
        header[8] = 8;   // bit depth; colour type 0 (grey), compression, filter, interlace 0
        Chunk(png, "IHDR", header);
        using (var deflated = new MemoryStream())
        {
            using (var z = new System.IO.Compression.ZLibStream(deflated, System.IO.Compression.CompressionLevel.Optimal, leaveOpen: true)) z.Write(raw);
            Chunk(png, "IDAT", deflated.ToArray());
        }
        Chunk(png, "IEND", []);
        return png.ToArray();

        static void Chunk(Stream s, string type, byte[] data)
        {
            var length = new byte[4];
            WriteBigEndian(length, 0, data.Length);
            s.Write(length);
            var typed = Encoding.ASCII.GetBytes(type).Concat(data).ToArray();
            s.Write(typed);
            var crc = new byte[4];
            WriteBigEndian(crc, 0, (int)Crc32(typed));
            s.Write(crc);
        }

        static uint Crc32(byte[] data)
        {
            uint crc = 0xFFFFFFFF;
            foreach (var b in data)
            {
                crc ^= b;
                for (int k = 0; k < 8; k++) crc = (crc & 1) != 0 ? (crc >> 1) ^ 0xEDB88320 : crc >> 1;
            }
            return ~crc;
        }

        static void WriteBigEndian(byte[] b, int at, int v)
        {
            b[at] = (byte)(v >> 24); b[at + 1] = (byte)(v >> 16); b[at + 2] = (byte)(v >> 8); b[at + 3] = (byte)v;
        }
    }
}
