using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace IGpt.Inference.Engine.Cpu;

/// <summary>
/// AVX-512 attention kernels that read a compressed cache's entries in place, for one query (a row's own entries,
/// or a group of one): each entry is widened in registers and goes straight into the dot product or the weighted
/// sum, with no fp32 copy written and read back. <see cref="CachedAttention"/> uses them where a converted chunk
/// would serve a single row; rows that share a prompt still convert it once into scratch, as every row then reuses it.
/// <list type="bullet">
/// <item>fp16 needs no exponent re-bias: the half's sign, exponent and mantissa shifted into an fp32's places give
/// its value times 2^-112 exactly, subnormals included (three integer ops per 16 elements). The 2^112 goes into the
/// query, or into the weight a value is added with, so every product is the true one.</item>
/// <item>int8 entries are widened and converted (two ops per 16 elements); the entry's scale multiplies its finished
/// dot product, or the weight its value is added with.</item>
/// </list>
/// Every method handles whole blocks of 16 positions and returns where it stopped; the caller finishes the rest.
/// </summary>
internal static unsafe class CompressedKernels
{
    /// <summary>2^112: an fp16 value over its fp32-shifted bits (<see cref="HalfScaled"/>).</summary>
    public const float HalfScale = HalfConversion.Exp112;

    /// <summary>Whether <paramref name="element"/>'s entries are read in place (fp32 needs no kernel; the others do).</summary>
    public static bool Reads(KvElement element) => element is KvElement.Float16 or KvElement.Int8;

    /// <summary>
    /// scores[t] = q . k_t for t in [from, to) in blocks of 16; returns the first position not done.
    /// <paramref name="query"/>: head_size floats, already multiplied by <see cref="QueryScale"/>.
    /// </summary>
    public static int Scores(KvElement element, byte* keys, int entryBytes, int from, int to, float* query, int d, float* scores)
    {
        int t = from;
        if (element == KvElement.Float16)
        {
            for (; t + 16 <= to; t += 16) Dot16Half((short*)(keys + (long)t * entryBytes), query, d).Store(scores + t);
            return t;
        }
        for (; t + 16 <= to; t += 16)
        {
            byte* e = keys + (long)t * entryBytes;
            (Dot16Int8(e, entryBytes, query, d) * Scales16(e, entryBytes)).Store(scores + t);
        }
        return t;
    }

    /// <summary>What a query is multiplied by before <see cref="Scores"/>.</summary>
    public static float QueryScale(KvElement element) => element == KvElement.Float16 ? HalfScale : 1f;

    /// <summary>acc += sum over t in [from, to) of p[t] v_t, in blocks of 16 positions; returns the first position not done.</summary>
    public static int WeightedValues(KvElement element, byte* values, int entryBytes, int from, int to, float* p, int d, float* acc)
    {
        const int Block = 16;  // values whose entries stay in L1 while each 16-wide column of acc takes them
        int t0 = from;
        bool half = element == KvElement.Float16;
        for (; t0 + Block <= to; t0 += Block)
            for (int c = 0; c < d; c += 16)
            {
                var a = Vector512.Load(acc + c);
                for (int t = t0; t < t0 + Block; t++)
                {
                    byte* e = values + (long)t * entryBytes;
                    a = half
                        ? Vector512.FusedMultiplyAdd(Vector512.Create(p[t] * HalfScale), HalfScaled((short*)e + c), a)
                        : Vector512.FusedMultiplyAdd(Vector512.Create(p[t] * *(float*)e), Int8Widened(e + 4 + c), a);
                }
                a.Store(acc + c);
            }
        return t0;
    }

    /// <summary>16 halves as fp32 values times 2^-112: sign-extended, shifted by 13, the sign's extra copies cleared.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<float> HalfScaled(short* h) =>
        (Avx512F.ShiftLeftLogical(Avx512F.ConvertToVector512Int32(Vector256.Load(h)), 13) & Vector512.Create(unchecked((int)0x8FFF_E000))).AsSingle();

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<float> Int8Widened(byte* q) =>
        Avx512F.ConvertToVector512Single(Avx512F.ConvertToVector512Int32(Vector128.Load((sbyte*)q)));

    /// <summary>The 16 int8 entries' scales, 16 floats <paramref name="entryBytes"/> apart.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<float> Scales16(byte* e, int entryBytes) => Vector512.Create(
        *(float*)e, *(float*)(e + entryBytes), *(float*)(e + 2 * entryBytes), *(float*)(e + 3 * entryBytes),
        *(float*)(e + 4 * entryBytes), *(float*)(e + 5 * entryBytes), *(float*)(e + 6 * entryBytes), *(float*)(e + 7 * entryBytes),
        *(float*)(e + 8 * entryBytes), *(float*)(e + 9 * entryBytes), *(float*)(e + 10 * entryBytes), *(float*)(e + 11 * entryBytes),
        *(float*)(e + 12 * entryBytes), *(float*)(e + 13 * entryBytes), *(float*)(e + 14 * entryBytes), *(float*)(e + 15 * entryBytes));

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

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<float> Partial(byte* entry, Vector512<float> q0, Vector512<float> q1) =>
        Vector512.FusedMultiplyAdd(Int8Widened(entry + 20), q1, Int8Widened(entry + 4) * q0);

    /// <summary>q . (the quantized k) for 16 consecutive int8 entries, before their scales.</summary>
    private static Vector512<float> Dot16Int8(byte* e, int entryBytes, float* q, int d)
    {
        if (d == 32)
        {
            var q0 = Vector512.Load(q);
            var q1 = Vector512.Load(q + 16);
            const int S = 36;  // int8 entry bytes at head size 32: the scale, then 32 bytes
            return CachedAttention.Transpose16(
                Partial(e, q0, q1), Partial(e + S, q0, q1), Partial(e + 2 * S, q0, q1), Partial(e + 3 * S, q0, q1),
                Partial(e + 4 * S, q0, q1), Partial(e + 5 * S, q0, q1), Partial(e + 6 * S, q0, q1), Partial(e + 7 * S, q0, q1),
                Partial(e + 8 * S, q0, q1), Partial(e + 9 * S, q0, q1), Partial(e + 10 * S, q0, q1), Partial(e + 11 * S, q0, q1),
                Partial(e + 12 * S, q0, q1), Partial(e + 13 * S, q0, q1), Partial(e + 14 * S, q0, q1), Partial(e + 15 * S, q0, q1));
        }
        var p = stackalloc Vector512<float>[16];
        for (int key = 0; key < 16; key++)
        {
            var s = Vector512<float>.Zero;
            byte* q8 = e + key * entryBytes + 4;
            for (int c = 0; c < d; c += 16) s = Vector512.FusedMultiplyAdd(Int8Widened(q8 + c), Vector512.Load(q + c), s);
            p[key] = s;
        }
        return CachedAttention.Transpose16(p[0], p[1], p[2], p[3], p[4], p[5], p[6], p[7], p[8], p[9], p[10], p[11], p[12], p[13], p[14], p[15]);
    }
}
