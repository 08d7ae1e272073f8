using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace IGpt.Inference.Engine.Cpu;

/// <summary>
/// Entries of a compressed KV cache (<see cref="KvElement"/>) to and from fp32: what <see cref="CachedAttention"/> writes
/// for each new key and value (and converts back a chunk at a time where it has no kernel that reads them in place), and
/// what a prefill stores from its fp32 row. Addressed as positions of one (slot, head) of a cache buffer, since an int8
/// entry is spread over its block (<see cref="Int8Blocks"/>).
/// Vectorised: fp16 by <see cref="HalfConversion"/>; int8's quantization with AVX-512 where present.
/// </summary>
internal static unsafe class KvCodec
{
    /// <summary>
    /// Stores <paramref name="count"/> entries of <paramref name="headSize"/> floats (consecutive in <paramref name="source"/>) at
    /// positions from..from+count-1 of the (slot, head) starting at <paramref name="head"/>.
    /// </summary>
    [SkipLocalsInit]   // a decode step encodes every (row, head)'s new key and value: no zeroing of the scratch it overwrites
    public static void Encode(KvElement element, KvPart part, float* source, byte* head, int from, int count, int headSize)
    {
        switch (element)
        {
            case KvElement.Float16:
                HalfConversion.ToHalf(source, (ushort*)(head + (long)from * 2 * headSize), checked(count * headSize));
                break;
            case KvElement.Int8:
                int padded = Int8Blocks.PaddedHeadSize(headSize);
                sbyte* quantized = stackalloc sbyte[padded];   // not zeroed ([SkipLocalsInit]): QuantizeInt8 writes 0..headSize-1
                for (int c = headSize; c < padded; c++) quantized[c] = 0;
                for (int e = 0; e < count; e++)
                {
                    float scale = QuantizeInt8(source + (long)e * headSize, quantized, headSize);
                    Int8Blocks.Write(part, head, from + e, scale, quantized, padded);
                }
                break;
            default:
                Buffer.MemoryCopy(source, head + (long)from * 4 * headSize, (long)count * headSize * 4, (long)count * headSize * 4);
                break;
        }
    }

    /// <summary>Reads positions from..from+count-1 of a (slot, head) back into <paramref name="headSize"/> floats each.</summary>
    public static void Decode(KvElement element, KvPart part, byte* head, int from, int count, float* destination, int headSize)
    {
        switch (element)
        {
            case KvElement.Float16:
                HalfConversion.ToSingle((ushort*)(head + (long)from * 2 * headSize), destination, checked(count * headSize));
                break;
            case KvElement.Int8:
                int padded = Int8Blocks.PaddedHeadSize(headSize);
                sbyte* quantized = stackalloc sbyte[padded];
                for (int e = 0; e < count; e++)
                {
                    float scale = Int8Blocks.Read(part, head, from + e, quantized, padded);
                    Dequantize(quantized, scale, destination + (long)e * headSize, headSize);
                }
                break;
            default:
                Buffer.MemoryCopy(head + (long)from * 4 * headSize, destination, (long)count * headSize * 4, (long)count * headSize * 4);
                break;
        }
    }

    /// <summary>
    /// q = round(x / scale) as sbytes, scale = max |x| / 127 (0 for an all-zero entry); returns the scale. With
    /// <paramref name="pairs"/> (an even d), scale = the largest |x[2i]| + |x[2i+1]| over 127 instead, so that each pair's
    /// bytes add up to at most 128 in magnitude (see <see cref="Int8Blocks.QuantizeQuery"/>).
    /// </summary>
    internal static float QuantizeInt8(float* x, sbyte* q, int d, bool pairs = false)
    {
        float max = 0;
        int i = 0;
        if (pairs && Avx512F.IsSupported && d % 16 == 0)
        {
            // Each lane pair's |x[2i]| + |x[2i+1]| (the same sum in both lanes), the largest over the vectors.
            var m = Vector512<float>.Zero;
            for (; i < d; i += 16)
            {
                var a = Vector512.Abs(Vector512.Load(x + i));
                m = Vector512.MaxNative(m, a + Avx512F.Shuffle(a, a, 0b10_11_00_01));
            }
            max = Int8Blocks.MaxOf(m);   // vmaxps without IEEE maximum's fix-ups: a step quantizes every new entry and row
        }
        else if (pairs)
            for (; i < d; i += 2) max = MathF.Max(max, MathF.Abs(x[i]) + MathF.Abs(x[i + 1]));
        else max = LargestMagnitude(x, d);
        float inverse = max > 0 ? 127f / max : 0f;
        i = 0;
        if (Avx512F.IsSupported)
        {
            var vi = Vector512.Create(inverse);
            for (; i + 16 <= d; i += 16)   // vcvtps2dq rounds to nearest even; vpmovsdb saturates (|x| * 127 / max <= 127 anyway)
                Avx512F.ConvertToVector128SByteWithSaturation(Avx512F.ConvertToVector512Int32(Vector512.Load(x + i) * vi)).Store(q + i);
        }
        for (; i < d; i++) q[i] = (sbyte)Math.Clamp((int)MathF.Round(x[i] * inverse, MidpointRounding.ToEven), -127, 127);
        return max / 127f;
    }

    /// <summary>The largest |x[i]| of <paramref name="d"/> floats (0 for none).</summary>
    internal static float LargestMagnitude(float* x, int d)
    {
        float max = 0;
        int i = 0;
        if (Vector512.IsHardwareAccelerated && d >= 16)
        {
            var m = Vector512<float>.Zero;
            for (; i + 16 <= d; i += 16) m = Vector512.MaxNative(m, Vector512.Abs(Vector512.Load(x + i)));
            max = Int8Blocks.MaxOf(m);
        }
        for (; i < d; i++) max = MathF.Max(max, MathF.Abs(x[i]));
        return max;
    }

    private static void Dequantize(sbyte* q, float scale, float* x, int d)
    {
        int i = 0;
        if (Avx512F.IsSupported)
        {
            var vs = Vector512.Create(scale);
            for (; i + 16 <= d; i += 16)
                (Avx512F.ConvertToVector512Single(Avx512F.ConvertToVector512Int32(Vector128.Load(q + i))) * vs).Store(x + i);
        }
        for (; i < d; i++) x[i] = q[i] * scale;
    }
}
