using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace IGpt.Inference.Engine.Cpu;

/// <summary>
/// The int8 KV cache's layout (<see cref="KvElement.Int8"/>) and the attention kernels that read it with int8 dot products
/// (AVX-VNNI's vpdpbusd: 32 unsigned-by-signed byte products summed four at a time into 8 int32 lanes; on a CPU with AVX-512
/// but not AVX-VNNI, such as Zen 4 or Ice Lake, which have only the EVEX form that .NET does not expose, the same integer
/// sums from the bytes widened to 16 bits and AVX-512BW's vpmaddwd: identical results, about three times the operations).
/// A (slot, head)'s positions are stored in blocks of 16, each 16 x (head_size + 4) bytes: the 16 positions' fp32 scales,
/// then their quantized elements, transposed so that one vpdpbusd does the work of 16 positions or 8 dimensions:
/// <list type="bullet">
/// <item>keys: head_size/4 groups of 64 bytes, group g holding dimensions 4g..4g+3 of positions 0..15 (4 bytes a position),
/// each byte the quantized value + 128 (unsigned). A query quantized to signed bytes then dots 16 keys at once with no
/// transposing reduction: the result's lane t is key t's dot product, plus 128 x the query's byte sum, which is subtracted.</item>
/// <item>values: 4 groups of 4 x head_size bytes, group j holding positions 4j..4j+3 of dimensions 0..head_size-1 (4 bytes a
/// dimension), signed. The 16 positions' attention weights, times the values' scales, quantized to unsigned bytes against their
/// largest, then add 4 positions into 8 dimensions per vpdpbusd.</item>
/// </list>
/// Against widening each entry to fp32 (the layout before this one), a step's attention does about a quarter of the
/// operations; the cost is the query's and the weights' quantization (measured by the quality guard, benchmarks/README.md).
/// </summary>
internal static unsafe class Int8Blocks
{
    private const int Block = KvElementExtensions.Int8Block;

    /// <summary>Elements an entry stores: head_size rounded up to 4 (a vpdpbusd group; zeros past head_size).</summary>
    public static int PaddedHeadSize(int headSize) => (headSize + 3) / 4 * 4;

    /// <summary>Whether this CPU runs the int8 kernels for <paramref name="headSize"/> (AVX-512BW, whole 16-wide vectors).</summary>
    public static bool CanRun(int headSize) => Avx512BW.IsSupported && Avx512F.IsSupported && headSize % 16 == 0 && headSize > 0;

    /// <summary>Whether the kernels' byte products run on AVX-VNNI's vpdpbusd (else on vpmaddwd, <paramref name="vnni"/> false).</summary>
    public static bool HasVnni => AvxVnni.IsSupported;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static byte* BlockOf(byte* head, int position, int padded) => head + (long)(position / Block) * Block * (padded + 4);

    /// <summary>Writes one entry (its scale and <paramref name="padded"/> quantized elements) at <paramref name="position"/> of a (slot, head).</summary>
    public static void Write(KvPart part, byte* head, int position, float scale, sbyte* q, int padded)
    {
        byte* block = BlockOf(head, position, padded);
        int p = position % Block;
        ((float*)block)[p] = scale;
        byte* data = block + 4 * Block;
        if (part == KvPart.Key)
        {
            for (int g = 0; g < padded / 4; g++) *(uint*)(data + g * 4 * Block + 4 * p) = *(uint*)(q + 4 * g) ^ 0x8080_8080u;
            return;
        }
        byte* group = data + p / 4 * 4 * padded + p % 4;
        for (int c = 0; c < padded; c++) group[4 * c] = (byte)q[c];
    }

    /// <summary>Reads the entry at <paramref name="position"/> back: its elements into <paramref name="q"/>; returns its scale.</summary>
    public static float Read(KvPart part, byte* head, int position, sbyte* q, int padded)
    {
        byte* block = BlockOf(head, position, padded);
        int p = position % Block;
        byte* data = block + 4 * Block;
        if (part == KvPart.Key)
            for (int g = 0; g < padded / 4; g++) *(uint*)(q + 4 * g) = *(uint*)(data + g * 4 * Block + 4 * p) ^ 0x8080_8080u;
        else
        {
            byte* group = data + p / 4 * 4 * padded + p % 4;
            for (int c = 0; c < padded; c++) q[c] = (sbyte)group[4 * c];
        }
        return ((float*)block)[p];
    }

    /// <summary>
    /// A query (fp32, already scaled) as the key kernel reads it: <paramref name="groups"/>[g] = its quantized elements 4g..4g+3
    /// (4 signed bytes), <paramref name="correction"/> = 128 x their sum; returns its scale.
    /// </summary>
    public static float QuantizeQuery(float* query, int headSize, int* groups, out int correction)
    {
        sbyte* q = stackalloc sbyte[headSize];
        float scale = KvCodec.QuantizeInt8(query, q, headSize);
        int sum = 0;
        for (int i = 0; i < headSize; i++) sum += q[i];
        for (int g = 0; g < headSize / 4; g++) groups[g] = *(int*)(q + 4 * g);
        correction = 128 * sum;
        return scale;
    }

    /// <summary>
    /// scores[j * pitch + t] = q_j . k_t for t in [from, to) and the <paramref name="count"/> queries j of
    /// <see cref="QuantizeQuery"/> (groups head_size/4 ints apart): each block's keys are read once for all of them.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void Scores(byte* head, int from, int to, int* queryGroups, float* queryScales, int* corrections, int count,
        int headSize, float* scores, long pitch, bool vnni, bool prefetch = false)
    {
        int groups = headSize / 4, blockBytes = Block * (headSize + 4);
        float* partial = stackalloc float[Block];
        for (int t0 = from / Block * Block; t0 < to; t0 += Block)
        {
            byte* block = head + (long)(t0 / Block) * blockBytes;
            if (prefetch && t0 + 4 * Block < to) Ahead(block + 4 * blockBytes, blockBytes);
            bool whole = t0 >= from && t0 + Block <= to;
            var keyScales = Vector512.Load((float*)block);
            for (int j = 0; j < count; j++)
            {
                var dots = vnni
                    ? Dot16(block + 4 * Block, queryGroups + j * groups, groups, corrections[j])
                    : Dot16Widened(block + 4 * Block, queryGroups + j * groups, groups, corrections[j]);
                var s = dots * (keyScales * queryScales[j]);
                float* row = scores + j * pitch;
                if (whole)
                {
                    s.Store(row + t0);
                    continue;
                }
                s.Store(partial);
                for (int t = Math.Max(from, t0); t < Math.Min(to, t0 + Block); t++) row[t] = partial[t - t0];
            }
        }
    }

    /// <summary>Asks for a block four ahead in L1 (see <see cref="CachedAttention.PrefetchEntries"/>).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Ahead(byte* p, int bytes)
    {
        for (int o = 0; o < bytes; o += 64) Sse.Prefetch0(p + o);
    }

    /// <summary>16 keys' dot products with a quantized query, as floats (before the scales).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<float> Dot16(byte* data, int* query, int groups, int correction)
    {
        // Four accumulators (even and odd groups, positions 0-7 and 8-15) keep the vpdpbusd chains short.
        Vector256<int> a0 = default, a1 = default, b0 = default, b1 = default;
        for (int g = 0; g < groups; g += 2)
        {
            byte* k = data + g * 4 * Block;
            var qa = Vector256.Create(query[g]).AsSByte();
            var qb = Vector256.Create(query[g + 1]).AsSByte();
            a0 = AvxVnni.MultiplyWideningAndAdd(a0, Vector256.Load(k), qa);
            a1 = AvxVnni.MultiplyWideningAndAdd(a1, Vector256.Load(k + 32), qa);
            b0 = AvxVnni.MultiplyWideningAndAdd(b0, Vector256.Load(k + 64), qb);
            b1 = AvxVnni.MultiplyWideningAndAdd(b1, Vector256.Load(k + 96), qb);
        }
        return Avx512F.ConvertToVector512Single(Vector512.Create(a0 + b0, a1 + b1) - Vector512.Create(correction));
    }

    /// <summary><see cref="Dot16"/> without VNNI: keys widened to 16 bits, vpmaddwd's pairs summed across groups, then in pairs.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<float> Dot16Widened(byte* data, int* query, int groups, int correction)
    {
        Vector512<int> a0 = default, a1 = default;   // lanes 2p, 2p+1: position p's dims 0-1 and 2-3 of each group
        for (int g = 0; g < groups; g++)
        {
            byte* k = data + g * 4 * Block;
            var q = Avx512BW.ConvertToVector512Int16(Vector512.Create(query[g]).AsSByte().GetLower());   // 4 shorts, 8 times
            a0 += Avx512BW.MultiplyAddAdjacent(Avx512BW.ConvertToVector512Int16(Vector256.Load(k)).AsInt16(), q);
            a1 += Avx512BW.MultiplyAddAdjacent(Avx512BW.ConvertToVector512Int16(Vector256.Load(k + 32)).AsInt16(), q);
        }
        return Avx512F.ConvertToVector512Single(SumPairs(a0, a1) - Vector512.Create(correction));
    }

    /// <summary>Lane i: a's lanes 2i and 2i+1 for i &lt; 8, b's lanes 2(i-8) and 2(i-8)+1 after.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<int> SumPairs(Vector512<int> a, Vector512<int> b)
    {
        var even = Vector512.Create(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
        return Avx512F.PermuteVar16x32x2(a, even, b) + Avx512F.PermuteVar16x32x2(a, even + Vector512<int>.One, b);
    }

    /// <summary>
    /// acc_j += sum over t in [from, to) of p_j[t] v_t for <paramref name="count"/> rows (p rows <paramref name="pitch"/> apart,
    /// acc rows head_size apart): per block and row, the 16 weights p_j[t] x scale_t quantized to bytes against their largest.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void WeightedValues(byte* head, int from, int to, float* probabilities, long pitch, int count, int headSize, float* acc,
        bool vnni, bool prefetch = false)
    {
        int blockBytes = Block * (headSize + 4), groupBytes = 4 * headSize;
        var lane = Vector512<int>.Indices;
        for (int t0 = from / Block * Block; t0 < to; t0 += Block)
        {
            byte* block = head + (long)(t0 / Block) * blockBytes;
            if (prefetch && t0 + 4 * Block < to) Ahead(block + 4 * blockBytes, blockBytes);
            byte* data = block + 4 * Block;
            bool whole = t0 >= from && t0 + Block <= to;
            var inRange = whole ? default : Vector512.GreaterThanOrEqual(lane, Vector512.Create(from - t0)) & Vector512.LessThan(lane, Vector512.Create(to - t0));
            var valueScales = Vector512.Load((float*)block);
            for (int j = 0; j < count; j++)
            {
                var w = Vector512.Load(probabilities + j * pitch + t0) * valueScales;
                // Outside [from, to) the weights and scales may be anything (another range's, or unwritten): select, not multiply.
                if (!whole) w = Vector512.ConditionalSelect(inRange.AsSingle(), w, Vector512<float>.Zero);
                var m = Vector256.Max(w.GetLower(), w.GetUpper());
                var m4 = Vector128.Max(m.GetLower(), m.GetUpper());
                float max = MathF.Max(MathF.Max(m4[0], m4[1]), MathF.Max(m4[2], m4[3]));
                if (!(max > 0)) continue;   // every weight underflowed to 0: nothing to add
                var bytes = Avx512F.ConvertToVector128ByteWithSaturation(Avx512F.ConvertToVector512UInt32(w * (255f / max))).AsInt32();
                float* a = acc + (long)j * headSize;
                if (!vnni)
                {
                    AddWidened(data, bytes, max / 255f, headSize, a);
                    continue;
                }
                var w0 = Vector256.Create(bytes.GetElement(0)).AsByte();
                var w1 = Vector256.Create(bytes.GetElement(1)).AsByte();
                var w2 = Vector256.Create(bytes.GetElement(2)).AsByte();
                var w3 = Vector256.Create(bytes.GetElement(3)).AsByte();
                var unit = Vector256.Create(max / 255f);
                for (int c = 0; c < headSize; c += 8)
                {
                    var s = AvxVnni.MultiplyWideningAndAdd(default, w0, Vector256.Load((sbyte*)data + c * 4));
                    var s1 = AvxVnni.MultiplyWideningAndAdd(default, w1, Vector256.Load((sbyte*)data + groupBytes + c * 4));
                    s = AvxVnni.MultiplyWideningAndAdd(s, w2, Vector256.Load((sbyte*)data + 2 * groupBytes + c * 4));
                    s1 = AvxVnni.MultiplyWideningAndAdd(s1, w3, Vector256.Load((sbyte*)data + 3 * groupBytes + c * 4));
                    Fma.MultiplyAdd(Avx.ConvertToVector256Single(s + s1), unit, Vector256.Load(a + c)).Store(a + c);
                }
            }
        }
    }

    /// <summary>
    /// One block's weighted values without VNNI: 4 positions' weights as 16-bit pairs, each 8 dimensions' values widened,
    /// vpmaddwd's pairs summed over the 4 groups, then in pairs into 16 dimensions.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void AddWidened(byte* data, Vector128<int> weights, float unit, int headSize, float* acc)
    {
        int groupBytes = 4 * headSize;
        var w0 = Avx512BW.ConvertToVector512Int16(Vector512.Create(weights.GetElement(0)).AsByte().GetLower()).AsInt16();
        var w1 = Avx512BW.ConvertToVector512Int16(Vector512.Create(weights.GetElement(1)).AsByte().GetLower()).AsInt16();
        var w2 = Avx512BW.ConvertToVector512Int16(Vector512.Create(weights.GetElement(2)).AsByte().GetLower()).AsInt16();
        var w3 = Avx512BW.ConvertToVector512Int16(Vector512.Create(weights.GetElement(3)).AsByte().GetLower()).AsInt16();
        var u = Vector512.Create(unit);
        for (int c = 0; c < headSize; c += 16)
        {
            sbyte* v = (sbyte*)data + c * 4;
            var lo = Avx512BW.MultiplyAddAdjacent(Avx512BW.ConvertToVector512Int16(Vector256.Load(v)), w0)
                + Avx512BW.MultiplyAddAdjacent(Avx512BW.ConvertToVector512Int16(Vector256.Load(v + groupBytes)), w1)
                + Avx512BW.MultiplyAddAdjacent(Avx512BW.ConvertToVector512Int16(Vector256.Load(v + 2 * groupBytes)), w2)
                + Avx512BW.MultiplyAddAdjacent(Avx512BW.ConvertToVector512Int16(Vector256.Load(v + 3 * groupBytes)), w3);
            var hi = Avx512BW.MultiplyAddAdjacent(Avx512BW.ConvertToVector512Int16(Vector256.Load(v + 32)), w0)
                + Avx512BW.MultiplyAddAdjacent(Avx512BW.ConvertToVector512Int16(Vector256.Load(v + 32 + groupBytes)), w1)
                + Avx512BW.MultiplyAddAdjacent(Avx512BW.ConvertToVector512Int16(Vector256.Load(v + 32 + 2 * groupBytes)), w2)
                + Avx512BW.MultiplyAddAdjacent(Avx512BW.ConvertToVector512Int16(Vector256.Load(v + 32 + 3 * groupBytes)), w3);
            Vector512.FusedMultiplyAdd(Avx512F.ConvertToVector512Single(SumPairs(lo, hi)), u, Vector512.Load(acc + c)).Store(acc + c);
        }
    }
}
