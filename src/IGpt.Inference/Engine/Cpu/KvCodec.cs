using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace IGpt.Inference.Engine.Cpu;

/// <summary>
/// Entries of a compressed KV cache (<see cref="KvElement"/>) to and from fp32: what <see cref="CachedAttention"/> writes
/// for each new key and value and converts back a chunk at a time, and what a prefill stores from its fp32 row.
/// Vectorised: fp16 by <see cref="HalfConversion"/>; int8 with AVX-512 (sign-extend 16 bytes, convert, scale) or AVX2
/// (8 at a time), a scalar loop only for what is left of a head size that is not a multiple of 8.
/// </summary>
internal static unsafe class KvCodec
{
    /// <summary>Stores <paramref name="count"/> consecutive entries of <paramref name="headSize"/> floats.</summary>
    public static void Encode(KvElement element, float* source, byte* destination, int count, int headSize)
    {
        switch (element)
        {
            case KvElement.Float16:
                HalfConversion.ToHalf(source, (ushort*)destination, checked(count * headSize));
                break;
            case KvElement.Int8:
                for (int e = 0; e < count; e++) QuantizeInt8(source + (long)e * headSize, destination + (long)e * (headSize + 4), headSize);
                break;
            default:
                Buffer.MemoryCopy(source, destination, (long)count * headSize * 4, (long)count * headSize * 4);
                break;
        }
    }

    /// <summary>Reads <paramref name="count"/> consecutive entries back into <paramref name="headSize"/> floats each.</summary>
    public static void Decode(KvElement element, byte* source, float* destination, int count, int headSize)
    {
        switch (element)
        {
            case KvElement.Float16:
                HalfConversion.ToSingle((ushort*)source, destination, checked(count * headSize));
                break;
            case KvElement.Int8:
                for (int e = 0; e < count; e++) DequantizeInt8(source + (long)e * (headSize + 4), destination + (long)e * headSize, headSize);
                break;
            default:
                Buffer.MemoryCopy(source, destination, (long)count * headSize * 4, (long)count * headSize * 4);
                break;
        }
    }

    /// <summary>entry = [scale][round(x / scale) as sbytes], scale = max |x| / 127 (0 for an all-zero entry).</summary>
    private static void QuantizeInt8(float* x, byte* entry, int d)
    {
        float max = 0;
        int i = 0;
        if (Vector512.IsHardwareAccelerated && d >= 16)
        {
            var m = Vector512<float>.Zero;
            for (; i + 16 <= d; i += 16) m = Vector512.Max(m, Vector512.Abs(Vector512.Load(x + i)));
            max = MaxOf(Vector256.Max(m.GetLower(), m.GetUpper()));
        }
        for (; i < d; i++) max = MathF.Max(max, MathF.Abs(x[i]));
        float scale = max / 127f, inverse = max > 0 ? 127f / max : 0f;
        *(float*)entry = scale;
        var q = (sbyte*)(entry + 4);
        i = 0;
        if (Avx512F.IsSupported)
        {
            var vi = Vector512.Create(inverse);
            for (; i + 16 <= d; i += 16)   // vcvtps2dq rounds to nearest even; vpmovsdb saturates (|x| * 127 / max <= 127 anyway)
                Avx512F.ConvertToVector128SByteWithSaturation(Avx512F.ConvertToVector512Int32(Vector512.Load(x + i) * vi)).Store(q + i);
        }
        for (; i < d; i++) q[i] = (sbyte)Math.Clamp((int)MathF.Round(x[i] * inverse, MidpointRounding.ToEven), -127, 127);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static float MaxOf(Vector256<float> v)
    {
        var m = Vector128.Max(v.GetLower(), v.GetUpper());
        return MathF.Max(MathF.Max(m[0], m[1]), MathF.Max(m[2], m[3]));
    }

    private static void DequantizeInt8(byte* entry, float* x, int d)
    {
        float scale = *(float*)entry;
        var q = (sbyte*)(entry + 4);
        int i = 0;
        if (Avx512F.IsSupported)
        {
            var vs = Vector512.Create(scale);
            for (; i + 16 <= d; i += 16)
                (Avx512F.ConvertToVector512Single(Avx512F.ConvertToVector512Int32(Vector128.Load(q + i))) * vs).Store(x + i);
        }
        if (Avx2.IsSupported)
        {
            var vs = Vector256.Create(scale);
            for (; i + 8 <= d; i += 8)
                (Avx.ConvertToVector256Single(Avx2.ConvertToVector256Int32(Vector128.CreateScalarUnsafe(*(long*)(q + i)).AsSByte())) * vs).Store(x + i);
        }
        for (; i < d; i++) x[i] = q[i] * scale;
    }
}
