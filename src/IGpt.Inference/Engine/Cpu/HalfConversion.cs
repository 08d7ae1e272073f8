using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;

namespace IGpt.Inference.Engine.Cpu;

/// <summary>
/// fp32 to fp16 and back for the compressed KV cache, sixteen (AVX-512) or eight (AVX2) elements at a time.
/// .NET exposes no F16C intrinsic (vcvtps2ph / vcvtph2ps), so the conversion is integer and float vector arithmetic:
/// <list type="bullet">
/// <item>fp16 to fp32 is exact: the fp16 magnitude's bits shifted into place as a float, times 2^112, re-biases the
/// exponent and turns fp16 subnormals into fp32 normals in one multiply; then the sign.</item>
/// <item>fp32 to fp16 rounds to nearest, ties to even, as <c>(Half)x</c> does (Fabian Giesen's float_to_half_fast3_rtne,
/// vectorised: both the normal and the subnormal result are computed and one is selected). Magnitudes above 65504 are
/// clamped to it, so the cache never holds an infinity (keys and values of a working model are far below it).</item>
/// </list>
/// The scalar tails give the same bits as the vector loops (<c>HalfConversionTests</c> checks every fp16 value).
/// </summary>
internal static unsafe class HalfConversion
{
    private const uint SignMask = 0x8000_0000u;
    private const uint HalfMaxBits = 0x477F_E000u;              // 65504f, the largest finite fp16
    private const uint SubnormalLimit = 113u << 23;             // 2^-14: below it the result is an fp16 subnormal
    private const uint DenormMagic = ((127 - 15) + (23 - 10) + 1) << 23;   // 0.5f: adding it rounds to a subnormal's bits
    private const uint Rebias = unchecked((uint)((15 - 127) << 23)) + 0xFFF;  // exponent to fp16's bias, plus rounding
    internal const float Exp112 = 5.192296858534828e33f;       // 2^112 exactly: fp16 to fp32 exponent bias difference

    /// <summary>dst[i] = fp16 bits of src[i], for i in [0, n).</summary>
    public static void ToHalf(float* src, ushort* dst, int n)
    {
        int i = 0;
        if (Vector512.IsHardwareAccelerated)
            for (; i + 16 <= n; i += 16)
                Vector512.Narrow(ToHalfBits(Vector512.Load((uint*)(src + i))), Vector512<uint>.Zero).GetLower().Store(dst + i);
        if (Vector256.IsHardwareAccelerated)
            for (; i + 8 <= n; i += 8)
                Vector256.Narrow(ToHalfBits(Vector256.Load((uint*)(src + i))), Vector256<uint>.Zero).GetLower().Store(dst + i);
        for (; i < n; i++) dst[i] = ToHalfBits(src[i]);
    }

    /// <summary>dst[i] = the fp32 value of fp16 bits src[i], for i in [0, n).</summary>
    public static void ToSingle(ushort* src, float* dst, int n)
    {
        int i = 0;
        if (Vector512.IsHardwareAccelerated)
            for (; i + 16 <= n; i += 16)
                ToSingle(Vector512.WidenLower(Vector256.Load(src + i).ToVector512Unsafe())).Store(dst + i);
        if (Vector256.IsHardwareAccelerated)
            for (; i + 8 <= n; i += 8)
                ToSingle(Vector256.WidenLower(Vector128.Load(src + i).ToVector256Unsafe())).Store(dst + i);
        for (; i < n; i++) dst[i] = ToSingle(src[i]);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<uint> ToHalfBits(Vector512<uint> f)
    {
        var sign = f & Vector512.Create(SignMask);
        var a = Vector512.Min(f ^ sign, Vector512.Create(HalfMaxBits));   // |x| clamped; positive floats order as their bits
        var sub = (a.AsSingle() + Vector512.Create(DenormMagic).AsSingle()).AsUInt32() - Vector512.Create(DenormMagic);
        var odd = Vector512.ShiftRightLogical(a, 13) & Vector512<uint>.One;
        var normal = Vector512.ShiftRightLogical(a + Vector512.Create(Rebias) + odd, 13);
        var bits = Vector512.ConditionalSelect(Vector512.LessThan(a, Vector512.Create(SubnormalLimit)), sub, normal);
        return bits | Vector512.ShiftRightLogical(sign, 16);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<uint> ToHalfBits(Vector256<uint> f)
    {
        var sign = f & Vector256.Create(SignMask);
        var a = Vector256.Min(f ^ sign, Vector256.Create(HalfMaxBits));
        var sub = (a.AsSingle() + Vector256.Create(DenormMagic).AsSingle()).AsUInt32() - Vector256.Create(DenormMagic);
        var odd = Vector256.ShiftRightLogical(a, 13) & Vector256<uint>.One;
        var normal = Vector256.ShiftRightLogical(a + Vector256.Create(Rebias) + odd, 13);
        var bits = Vector256.ConditionalSelect(Vector256.LessThan(a, Vector256.Create(SubnormalLimit)), sub, normal);
        return bits | Vector256.ShiftRightLogical(sign, 16);
    }

    /// <summary>The scalar form of the vector conversion (the same bits).</summary>
    public static ushort ToHalfBits(float x)
    {
        uint f = BitConverter.SingleToUInt32Bits(x);
        uint sign = f & SignMask, a = Math.Min(f ^ sign, HalfMaxBits), bits;
        if (a < SubnormalLimit)
            bits = BitConverter.SingleToUInt32Bits(BitConverter.UInt32BitsToSingle(a) + BitConverter.UInt32BitsToSingle(DenormMagic)) - DenormMagic;
        else
            bits = (a + Rebias + ((a >> 13) & 1)) >> 13;
        return (ushort)(bits | (sign >> 16));
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<float> ToSingle(Vector512<uint> h)
    {
        var magnitude = (Vector512.ShiftLeft(h & Vector512.Create(0x7FFFu), 13).AsSingle() * Vector512.Create(Exp112)).AsUInt32();
        return (magnitude | Vector512.ShiftLeft(h & Vector512.Create(0x8000u), 16)).AsSingle();
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<float> ToSingle(Vector256<uint> h)
    {
        var magnitude = (Vector256.ShiftLeft(h & Vector256.Create(0x7FFFu), 13).AsSingle() * Vector256.Create(Exp112)).AsUInt32();
        return (magnitude | Vector256.ShiftLeft(h & Vector256.Create(0x8000u), 16)).AsSingle();
    }

    /// <summary>The scalar form of the vector conversion (exact for every finite fp16).</summary>
    public static float ToSingle(ushort h)
    {
        uint magnitude = BitConverter.SingleToUInt32Bits(BitConverter.UInt32BitsToSingle((h & 0x7FFFu) << 13) * Exp112);
        return BitConverter.UInt32BitsToSingle(magnitude | ((h & 0x8000u) << 16));
    }
}
