using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace IGpt.Inference.Engine.Cpu;

/// <summary>
/// e^x for 16 floats at a time, for the softmax of <see cref="CachedAttention"/> and the quick_gelu of <see cref="RowKernels"/>:
/// the exponent split off as a power of two (x = n ln 2 + r, |r| &lt;= ln 2 / 2, ln 2 in two parts so that r is exact) and
/// e^r as Cephes' degree-6 polynomial, then 2^n put into the exponent bits. Within 2 ulp of e^x from -87.3 to 88 (tested);
/// 0 below (where e^x is below the smallest normal float, and for -infinity); above 88 it may be +infinity. .NET's
/// Vector512.Exp computes the float case with several times the instructions, which made it most of a softmax
/// (benchmarks/README.md, "Kernel steps").
/// </summary>
internal static class VectorExp
{
    /// <summary>log2(e), as a float: e^x = 2^(x log2 e).</summary>
    public const float Log2E = 1.44269504f;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> Exp(Vector512<float> x)
    {
        var underflow = Vector512.LessThan(x, Vector512.Create(-87.33654f));
        x = Vector512.Min(Vector512.Max(x, Vector512.Create(-87.33654f)), Vector512.Create(88.3762589f));
        var n = Vector512.Round(x * Vector512.Create(Log2E));
        return Vector512.ConditionalSelect(underflow, Vector512<float>.Zero, TwoToNTimesExpR(x, n, Vector512.ConvertToInt32(n)));
    }

    /// <summary>
    /// e^x for x &lt;= 0 (and -infinity), as the one-pass int8 attention kernels' online softmax needs it: their weights are
    /// then quantized to bytes (a step of 1/256 of a block's largest at best), so a relative error of 3e-6 is far below what
    /// they keep. A degree-4 polynomial for e^r (evaluated as Estrin's scheme: two short chains, not one long one), ln 2 as one
    /// constant, and 2^n applied by vscalefps: 13 instructions where <see cref="Exp"/> takes about 21, on the kernels' longest
    /// dependency chain. 0 below -87.33, as <see cref="Exp"/>; exactly 1 at 0.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> ExpNonPositive(Vector512<float> x)
    {
        var underflow = Vector512.LessThan(x, Vector512.Create(-87.33654f));
        x = Vector512.MaxNative(x, Vector512.Create(-87.33654f));
        var n = Avx512F.RoundScale(x * Vector512.Create(Log2E), 0);   // to nearest
        var r = Vector512.FusedMultiplyAdd(n, Vector512.Create(-0.693147182f), x);
        var r2 = r * r;
        // e^r ~ 1 + c1 r + r^2 (c2 + c3 r + c4 r^2) on |r| <= ln 2 / 2 (fitted for relative error; 2.9e-6 at worst).
        var low = Vector512.FusedMultiplyAdd(r, Vector512.Create(0.99996686f), Vector512<float>.One);
        var high = Vector512.FusedMultiplyAdd(r, Vector512.Create(0.16787447f), Vector512.Create(0.50003016f));
        high = Vector512.FusedMultiplyAdd(r2, Vector512.Create(0.041513719f), high);
        var p = Vector512.FusedMultiplyAdd(high, r2, low);
        return Vector512.ConditionalSelect(underflow, Vector512<float>.Zero, Avx512F.Scale(p, n));
    }

    /// <summary>
    /// 2^x for x &lt;= 0 (and -infinity): <see cref="ExpNonPositive"/> for the byte-pair int8 kernels, whose scores are in
    /// log2 units (their scales carry log2(e)), so that the exponent needs no multiply and its fraction no FMA: x = n + f,
    /// |f| &lt;= 1/2, and 2^f is <see cref="ExpNonPositive"/>'s polynomial with its coefficients times ln 2 to their powers.
    /// 0 below -126 (the smallest normal float); exactly 1 at 0.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> Exp2NonPositive(Vector512<float> x)
    {
        var underflow = Vector512.LessThan(x, Vector512.Create(-126f));
        return Vector512.ConditionalSelect(underflow, Vector512<float>.Zero, Exp2Finite(Vector512.MaxNative(x, Vector512.Create(-126f))));
    }

    /// <summary>
    /// <see cref="Exp2NonPositive"/> for -2^22 &lt;= x &lt;= 0 without its clamp and select (the same results from -126 up;
    /// below, a subnormal float or 0 from vscalefps). For the kernels' whole blocks, whose scores are all finite: four
    /// instructions fewer on their longest dependency chain. -infinity gives NaN.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> Exp2Finite(Vector512<float> x)
    {
        var n = Avx512F.RoundScale(x, 0);   // to nearest
        var f = x - n;   // exact
        var f2 = f * f;
        var low = Vector512.FusedMultiplyAdd(f, Vector512.Create(0.693124235f), Vector512<float>.One);
        var high = Vector512.FusedMultiplyAdd(f, Vector512.Create(0.0559063368f), Vector512.Create(0.240240991f));
        high = Vector512.FusedMultiplyAdd(f2, Vector512.Create(0.00958282314f), high);
        return Avx512F.Scale(Vector512.FusedMultiplyAdd(high, f2, low), n);
    }

    /// <summary>e^x as 2^n e^r, r = x - n ln 2: the polynomial for e^r, then n added to its exponent bits.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<float> TwoToNTimesExpR(Vector512<float> x, Vector512<float> n, Vector512<int> whole)
    {
        var r = Vector512.FusedMultiplyAdd(n, Vector512.Create(-0.693359375f), x);   // ln 2's leading bits: n ln2_hi is exact
        r = Vector512.FusedMultiplyAdd(n, Vector512.Create(2.12194440e-4f), r);        // the rest of ln 2
        var p = Vector512.Create(1.9875691500e-4f);
        p = Vector512.FusedMultiplyAdd(p, r, Vector512.Create(1.3981999507e-3f));
        p = Vector512.FusedMultiplyAdd(p, r, Vector512.Create(8.3334519073e-3f));
        p = Vector512.FusedMultiplyAdd(p, r, Vector512.Create(4.1665795894e-2f));
        p = Vector512.FusedMultiplyAdd(p, r, Vector512.Create(1.6666665459e-1f));
        p = Vector512.FusedMultiplyAdd(p, r, Vector512.Create(5.0000001201e-1f));
        p = Vector512.FusedMultiplyAdd(p, r * r, r + Vector512<float>.One);
        return p * ((whole + Vector512.Create(127)) << 23).AsSingle();
    }
}
