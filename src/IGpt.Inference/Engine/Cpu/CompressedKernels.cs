using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace IGpt.Inference.Engine.Cpu;

/// <summary>
/// AVX-512 attention kernels that read an fp16 cache's entries in place, for one query (a row's own entries, or a group of
/// one): each entry is widened in registers and goes straight into the dot product or the weighted sum, with no fp32 copy
/// written and read back. <see cref="CachedAttention"/> uses them where a converted chunk would serve a single row; rows that
/// share a prompt still convert it once into scratch, as every row then reuses it. fp16 needs no exponent re-bias: the half's
/// sign, exponent and mantissa shifted into an fp32's places give its value times 2^-112 exactly, subnormals included (three
/// integer ops per 16 elements). The 2^112 goes into the query, or into the weight a value is added with, so every product is
/// the true one. (An int8 cache has its own layout and kernels: <see cref="Int8Blocks"/>.)
/// Every method handles whole blocks of 16 positions and returns where it stopped; the caller finishes the rest.
/// </summary>
internal static unsafe class CompressedKernels
{
    /// <summary>2^112: an fp16 value over its fp32-shifted bits (<see cref="HalfScaled"/>).</summary>
    public const float HalfScale = HalfConversion.Exp112;

    /// <summary>
    /// scores[t] = q . k_t for t in [from, to) in blocks of 16; returns the first position not done.
    /// <paramref name="keys"/>: position 0 of a (slot, head); <paramref name="query"/>: head_size floats, already times <see cref="HalfScale"/>.
    /// </summary>
    public static int Scores(byte* keys, int from, int to, float* query, int d, float* scores)
    {
        int t = from;
        for (; t + 16 <= to; t += 16) Dot16Half((short*)keys + (long)t * d, query, d).Store(scores + t);
        return t;
    }

    /// <summary>acc += sum over t in [from, to) of p[t] v_t, in blocks of 16 positions; returns the first position not done.</summary>
    public static int WeightedValues(byte* values, int from, int to, float* p, int d, float* acc)
    {
        const int Block = 16;  // values whose entries stay in L1 while each 16-wide column of acc takes them
        int t0 = from;
        for (; t0 + Block <= to; t0 += Block)
            for (int c = 0; c < d; c += 16)
            {
                var a = Vector512.Load(acc + c);
                for (int t = t0; t < t0 + Block; t++)
                    a = Vector512.FusedMultiplyAdd(Vector512.Create(p[t] * HalfScale), HalfScaled((short*)values + (long)t * d + c), a);
                a.Store(acc + c);
            }
        return t0;
    }

    /// <summary>16 halves as fp32 values times 2^-112: sign-extended, shifted by 13, the sign's extra copies cleared.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<float> HalfScaled(short* h) =>
        (Avx512F.ShiftLeftLogical(Avx512F.ConvertToVector512Int32(Vector256.Load(h)), 13) & Vector512.Create(unchecked((int)0x8FFF_E000))).AsSingle();

    /// <summary>q . k for 16 consecutive fp16 keys (d halves each).</summary>
    private static Vector512<float> Dot16Half(short* k, float* q, int d)
    {
        if (d == 32)
        {
            var q0 = Vector512.Load(q);
            var q1 = Vector512.Load(q + 16);
            return CachedAttention.Transpose16(
                Partial(k, q0, q1), Partial(k + 32, q0, q1), Partial(k + 64, q0, q1), Partial(k + 96, q0, q1),
                Partial(k + 128, q0, q1), Partial(k + 160, q0, q1), Partial(k + 192, q0, q1), Partial(k + 224, q0, q1),
                Partial(k + 256, q0, q1), Partial(k + 288, q0, q1), Partial(k + 320, q0, q1), Partial(k + 352, q0, q1),
                Partial(k + 384, q0, q1), Partial(k + 416, q0, q1), Partial(k + 448, q0, q1), Partial(k + 480, q0, q1));
        }
        var p = stackalloc Vector512<float>[16];
        for (int key = 0; key < 16; key++)
        {
            var s = Vector512<float>.Zero;
            short* kk = k + key * d;
            for (int c = 0; c < d; c += 16) s = Vector512.FusedMultiplyAdd(HalfScaled(kk + c), Vector512.Load(q + c), s);
            p[key] = s;
        }
        return CachedAttention.Transpose16(p[0], p[1], p[2], p[3], p[4], p[5], p[6], p[7], p[8], p[9], p[10], p[11], p[12], p[13], p[14], p[15]);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<float> Partial(short* key, Vector512<float> q0, Vector512<float> q1) =>
        Vector512.FusedMultiplyAdd(HalfScaled(key + 16), q1, HalfScaled(key) * q0);
}
