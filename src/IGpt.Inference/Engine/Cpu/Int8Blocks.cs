using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace IGpt.Inference.Engine.Cpu;

/// <summary>
/// The int8 KV cache's layout (<see cref="KvElement.Int8"/>) and the attention kernels that read it with int8 dot products
/// (AVX-VNNI's vpdpbusd: 32 unsigned-by-signed byte products summed four at a time into 8 int32 lanes; on a CPU with AVX-512
/// but not AVX-VNNI, such as Zen 4 or Ice Lake, which have only the EVEX form that .NET does not expose, AVX-512BW's
/// vpmaddubsw, which adds two byte products in 16 bits, then vpmaddwd against ones into 32: the query and the weights are
/// then quantized by the sums of neighbouring pairs, so that no 16-bit sum saturates; see <see cref="AttendBytePairs"/>).
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

    /// <summary>Whether the kernels' byte products run on AVX-VNNI's vpdpbusd (else on vpmaddubsw's byte pairs: their vnni false).</summary>
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
        byte* group = data + p / 4 * 4 * padded;
        int c = 0, shift = 8 * (p % 4);
        if (Avx512BW.IsSupported)
        {
            // 16 dimensions at a time: each one's byte goes to byte p % 4 of its 4-byte slot, the other positions' kept.
            var mask = Vector512.Create(0xFFu << shift).AsByte();
            for (; c + 16 <= padded; c += 16)
            {
                var bytes = (Avx512F.ConvertToVector512Int32(Vector128.Load(q + c)) << shift).AsByte();
                Avx512BW.BlendVariable(Vector512.Load(group + 4 * c), bytes, mask).Store(group + 4 * c);
            }
        }
        for (; c < padded; c++) group[4 * c + p % 4] = (byte)q[c];
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
    /// (4 signed bytes), <paramref name="correction"/> = 128 x their sum; returns its scale. With <paramref name="bytePairs"/>
    /// (for the kernels without VNNI: their vnni false) the scale is set by the largest sum of two
    /// neighbouring elements' magnitudes, so that vpmaddubsw's 16-bit sum of their products with two key bytes (at most 255
    /// each) cannot saturate: |q[2i]| + |q[2i+1]| &lt;= 128, and 128 x 255 = 32,640.
    /// </summary>
    public static float QuantizeQuery(float* query, int headSize, int* groups, out int correction, bool bytePairs = false)
    {
        // The groups are the bytes in order (4 to an int): quantize straight into them, then sum 16 at a time (CanRun: the
        // head size is a multiple of 16).
        sbyte* q = (sbyte*)groups;
        float scale = KvCodec.QuantizeInt8(query, q, headSize, bytePairs);
        var sums = Vector512<int>.Zero;
        for (int i = 0; i < headSize; i += 16) sums += Avx512F.ConvertToVector512Int32(Vector128.Load(q + i));
        correction = 128 * Vector512.Sum(sums);
        return scale;
    }

    /// <summary>
    /// scores[j * pitch + t] = q_j . k_t for t in [from, to) and the <paramref name="count"/> queries j of
    /// <see cref="QuantizeQuery"/> (groups head_size/4 ints apart): each block's keys are read once for all of them. Without
    /// <paramref name="vnni"/> on byte pairs, for queries quantized with bytePairs.
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
                    : Dot16BytePairs(block + 4 * Block, queryGroups + j * groups, groups, corrections[j]);
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

    /// <summary>Whether <see cref="Attend"/> serves <paramref name="headSize"/> on this CPU (AVX-512BW, a head size of 32).</summary>
    public static bool CanAttend(int headSize) => headSize == 32 && CanRun(headSize);

    /// <summary>
    /// One row's attention over positions 0..to-1 in a single pass, as <see cref="AttendVnni"/> (whose summary says what it
    /// computes) on a CPU with AVX-VNNI; else as <see cref="AttendBytePairs"/>, whose query must be quantized with
    /// <see cref="QuantizeQuery"/>'s bytePairs.
    /// </summary>
    public static float Attend(byte* sharedKeys, byte* sharedValues, int shared, byte* keys, byte* values, int to, int* query,
        float queryScale, int correction, float* acc, bool prefetch) =>
        Attend(sharedKeys, sharedValues, shared, keys, values, to, query, queryScale, correction, acc, prefetch, HasVnni);

    /// <summary>
    /// <see cref="Attend(byte*, byte*, int, byte*, byte*, int, int*, float, int, float*, bool)"/> on the kernel
    /// <paramref name="vnni"/> names, whatever this CPU would choose (so that a CPU with AVX-VNNI tests the byte-pair kernel
    /// too); the VNNI kernel needs <see cref="HasVnni"/>.
    /// </summary>
    public static float Attend(byte* sharedKeys, byte* sharedValues, int shared, byte* keys, byte* values, int to, int* query,
        float queryScale, int correction, float* acc, bool prefetch, bool vnni)
    {
        if (!vnni) return AttendBytePairs(sharedKeys, sharedValues, shared, keys, values, to, query, queryScale, correction, acc, prefetch);
        if (!HasVnni) throw new PlatformNotSupportedException("the VNNI attention kernel needs AVX-VNNI");
        return AttendVnni(sharedKeys, sharedValues, shared, keys, values, to, query, queryScale, correction, acc, prefetch);
    }

    /// <summary>
    /// <see cref="Attend(byte*, byte*, int, byte*, byte*, int, int*, float, int, float*, bool, bool)"/> for two heads of one
    /// row: head h's entries where the pointers say, head h + 1's <paramref name="headBytes"/> on; their quantized queries'
    /// groups head_size / 4 ints apart at <paramref name="queries"/> (scales and corrections two in a row), their outputs
    /// at <paramref name="acc"/> and 32 floats on. The same results as two calls; without <paramref name="vnni"/> (byte
    /// pairs) in one pass over both heads' blocks, with it as two passes.
    /// </summary>
    public static void AttendTwoHeads(byte* sharedKeys, byte* sharedValues, int shared, byte* keys, byte* values, int to, long headBytes,
        int* queries, float* queryScales, int* corrections, float* acc, bool prefetch, bool vnni, out float sumA, out float sumB)
    {
        if (!vnni)
        {
            AttendTwoHeadsBytePairs(sharedKeys, sharedValues, shared, keys, values, to, headBytes, queries, queryScales, corrections, acc, prefetch,
                out sumA, out sumB);
            return;
        }
        sumA = Attend(sharedKeys, sharedValues, shared, keys, values, to, queries, queryScales[0], corrections[0], acc, prefetch, vnni);
        sumB = Attend(sharedKeys + headBytes, sharedValues + headBytes, shared, keys + headBytes, values + headBytes, to, queries + 8, queryScales[1],
            corrections[1], acc + 32, prefetch, vnni);
    }

    /// <summary>
    /// One row's attention over positions 0..to-1 in a single pass (AVX-VNNI, a head size of 32):
    /// positions below <paramref name="shared"/> from one (slot, head) (a group's first row's: its shared prompt), the rest
    /// from another (the row's own; the same one for a row alone). Per block: its 16 scores, the softmax's running maximum
    /// (the accumulated output and sum rescaled when it rises), the weights' exponentials and their weighted values, so that
    /// scores never leave registers. The same products and quantization as <see cref="Scores"/> then
    /// <see cref="WeightedValues"/> (weights quantized against each block's largest, which is the same relative to any
    /// maximum), in fewer operations and without the passes' stores and reloads. Writes the unnormalized output to
    /// <paramref name="acc"/> (32 floats) and returns the sum of the exponentials.
    /// Unrolled, with constant offsets and the output in registers. For a head size of 64 neither a general loop over the head
    /// size nor this kernel on both halves beat the three passes where rows share a prompt (benchmarks/README.md, "One pass per row").
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static float AttendVnni(byte* sharedKeys, byte* sharedValues, int shared, byte* keys, byte* values, int to, int* query,
        float queryScale, int correction, float* acc, bool prefetch)
    {
        const int BlockBytes = Block * 36;
        var qs = Vector512.Create(queryScale);
        var corrections = Vector512.Create(correction);
        float max = float.NegativeInfinity;
        var sums = Vector512<float>.Zero;
        Vector256<float> o0 = default, o1 = default, o2 = default, o3 = default;
        var q0 = Vector256.Create(query[0]).AsSByte();
        var q1 = Vector256.Create(query[1]).AsSByte();
        var q2 = Vector256.Create(query[2]).AsSByte();
        var q3 = Vector256.Create(query[3]).AsSByte();
        var q4 = Vector256.Create(query[4]).AsSByte();
        var q5 = Vector256.Create(query[5]).AsSByte();
        var q6 = Vector256.Create(query[6]).AsSByte();
        var q7 = Vector256.Create(query[7]).AsSByte();
        for (int part = 0; part < 2; part++)
        {
            byte* kh = part == 0 ? sharedKeys : keys, vh = part == 0 ? sharedValues : values;
            int from = part == 0 ? 0 : shared, end = part == 0 ? shared : to;
            for (int t0 = from / Block * Block; t0 < end; t0 += Block)
            {
                long offset = (long)(t0 / Block) * BlockBytes;
                byte* kb = kh + offset, vb = vh + offset;
                if (prefetch && t0 + 4 * Block < end)
                {
                    Ahead(kb + 4 * BlockBytes, BlockBytes);
                    Ahead(vb + 4 * BlockBytes, BlockBytes);
                }
                // Keys: group g (dimensions 4g..4g+3) of positions 0-7 at k + 64g, of 8-15 at k + 64g + 32.
                byte* k = kb + 4 * Block;
                var a0 = AvxVnni.MultiplyWideningAndAdd(default, Vector256.Load(k), q0);
                var a1 = AvxVnni.MultiplyWideningAndAdd(default, Vector256.Load(k + 32), q0);
                var b0 = AvxVnni.MultiplyWideningAndAdd(default, Vector256.Load(k + 64), q1);
                var b1 = AvxVnni.MultiplyWideningAndAdd(default, Vector256.Load(k + 96), q1);
                a0 = AvxVnni.MultiplyWideningAndAdd(a0, Vector256.Load(k + 128), q2);
                a1 = AvxVnni.MultiplyWideningAndAdd(a1, Vector256.Load(k + 160), q2);
                b0 = AvxVnni.MultiplyWideningAndAdd(b0, Vector256.Load(k + 192), q3);
                b1 = AvxVnni.MultiplyWideningAndAdd(b1, Vector256.Load(k + 224), q3);
                a0 = AvxVnni.MultiplyWideningAndAdd(a0, Vector256.Load(k + 256), q4);
                a1 = AvxVnni.MultiplyWideningAndAdd(a1, Vector256.Load(k + 288), q4);
                b0 = AvxVnni.MultiplyWideningAndAdd(b0, Vector256.Load(k + 320), q5);
                b1 = AvxVnni.MultiplyWideningAndAdd(b1, Vector256.Load(k + 352), q5);
                a0 = AvxVnni.MultiplyWideningAndAdd(a0, Vector256.Load(k + 384), q6);
                a1 = AvxVnni.MultiplyWideningAndAdd(a1, Vector256.Load(k + 416), q6);
                b0 = AvxVnni.MultiplyWideningAndAdd(b0, Vector256.Load(k + 448), q7);
                b1 = AvxVnni.MultiplyWideningAndAdd(b1, Vector256.Load(k + 480), q7);
                var s = Avx512F.ConvertToVector512Single(Vector512.Create(a0 + b0, a1 + b1) - corrections) * (Vector512.Load((float*)kb) * qs);
                bool whole = t0 >= from && t0 + Block <= end;
                var inRange = whole ? default : InRange(t0, from, end);
                if (!whole) s = Vector512.ConditionalSelect(inRange, s, Vector512.Create(float.NegativeInfinity));
                float blockMax = MaxOf(s);
                if (blockMax > max)
                {
                    // The running maximum rises: what is accumulated so far was weighted against the old one.
                    var r = VectorExp.ExpNonPositive(Vector512.Create(max - blockMax));
                    sums *= r;
                    var r8 = r.GetLower();
                    (o0, o1, o2, o3) = (o0 * r8, o1 * r8, o2 * r8, o3 * r8);
                    max = blockMax;
                }
                var e = VectorExp.ExpNonPositive(s - Vector512.Create(max));
                sums += e;
                var w = e * Vector512.Load((float*)vb);
                // Past `to` the value scales may be anything (unwritten): select, not multiply.
                if (!whole) w = Vector512.ConditionalSelect(inRange, w, Vector512<float>.Zero);
                float wMax = MaxOf(w);
                if (!(wMax > 0)) continue;   // every weight underflowed to 0: nothing to add
                var bytes = Avx512F.ConvertToVector128ByteWithSaturation(Avx512F.ConvertToVector512UInt32(w * (255f / wMax))).AsInt32();
                var both = Vector256.Create(bytes, bytes);
                var w0 = Avx2.Shuffle(both, 0x00).AsByte();
                var w1 = Avx2.Shuffle(both, 0x55).AsByte();
                var w2 = Avx2.Shuffle(both, 0xAA).AsByte();
                var w3 = Avx2.Shuffle(both, 0xFF).AsByte();
                // Values: positions 4j..4j+3 of dimensions c..c+7 at v + 128j + 4c.
                sbyte* v = (sbyte*)vb + 4 * Block;
                var p0 = AvxVnni.MultiplyWideningAndAdd(default, w0, Vector256.Load(v));
                var p1 = AvxVnni.MultiplyWideningAndAdd(default, w0, Vector256.Load(v + 32));
                var p2 = AvxVnni.MultiplyWideningAndAdd(default, w0, Vector256.Load(v + 64));
                var p3 = AvxVnni.MultiplyWideningAndAdd(default, w0, Vector256.Load(v + 96));
                p0 = AvxVnni.MultiplyWideningAndAdd(p0, w1, Vector256.Load(v + 128));
                p1 = AvxVnni.MultiplyWideningAndAdd(p1, w1, Vector256.Load(v + 160));
                p2 = AvxVnni.MultiplyWideningAndAdd(p2, w1, Vector256.Load(v + 192));
                p3 = AvxVnni.MultiplyWideningAndAdd(p3, w1, Vector256.Load(v + 224));
                p0 = AvxVnni.MultiplyWideningAndAdd(p0, w2, Vector256.Load(v + 256));
                p1 = AvxVnni.MultiplyWideningAndAdd(p1, w2, Vector256.Load(v + 288));
                p2 = AvxVnni.MultiplyWideningAndAdd(p2, w2, Vector256.Load(v + 320));
                p3 = AvxVnni.MultiplyWideningAndAdd(p3, w2, Vector256.Load(v + 352));
                p0 = AvxVnni.MultiplyWideningAndAdd(p0, w3, Vector256.Load(v + 384));
                p1 = AvxVnni.MultiplyWideningAndAdd(p1, w3, Vector256.Load(v + 416));
                p2 = AvxVnni.MultiplyWideningAndAdd(p2, w3, Vector256.Load(v + 448));
                p3 = AvxVnni.MultiplyWideningAndAdd(p3, w3, Vector256.Load(v + 480));
                var unit = Vector256.Create(wMax / 255f);
                o0 = Fma.MultiplyAdd(Avx.ConvertToVector256Single(p0), unit, o0);
                o1 = Fma.MultiplyAdd(Avx.ConvertToVector256Single(p1), unit, o1);
                o2 = Fma.MultiplyAdd(Avx.ConvertToVector256Single(p2), unit, o2);
                o3 = Fma.MultiplyAdd(Avx.ConvertToVector256Single(p3), unit, o3);
            }
        }
        o0.Store(acc);
        o1.Store(acc + 8);
        o2.Store(acc + 16);
        o3.Store(acc + 24);
        return Vector512.Sum(sums);
    }

    /// <summary>
    /// <see cref="AttendVnni"/> for a CPU with AVX-512BW but not AVX-VNNI (Zen 4, Ice Lake: .NET exposes only the VEX form of
    /// vpdpbusd). The byte products run on vpmaddubsw, which multiplies unsigned by signed bytes and adds each two in 16 bits
    /// (saturating), then vpmaddwd against ones, which adds those pairs into 32 bits: two operations where VNNI has one, on
    /// whole 64-byte rows of the layout (a key group of 16 positions; 16 dimensions of a value group). No 16-bit sum can
    /// saturate: the query is quantized by its pairs' magnitudes (<see cref="QuantizeQuery"/>'s bytePairs), and each block's
    /// weights by theirs (<see cref="PairWeightBytes"/>), which costs some of a byte's precision where two neighbours are both
    /// large (the quality guard's figures are in benchmarks/README.md).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static float AttendBytePairs(byte* sharedKeys, byte* sharedValues, int shared, byte* keys, byte* values, int to, int* query,
        float queryScale, int correction, float* acc, bool prefetch)
    {
        const int BlockBytes = Block * 36;
        var qs = Vector512.Create(queryScale * VectorExp.Log2E);   // scores in log2 units (see Exponentials)
        var corrections = Vector512.Create(correction);
        var ones = Vector512.Create((short)1);
        var max = Vector512.Create(float.NegativeInfinity);
        var sums = Vector512<float>.Zero;
        Vector512<float> o0 = default, o1 = default;   // dimensions 0-15, 16-31
        for (int part = 0; part < 2; part++)
        {
            byte* kh = part == 0 ? sharedKeys : keys, vh = part == 0 ? sharedValues : values;
            int from = part == 0 ? 0 : shared, end = part == 0 ? shared : to;
            for (int t0 = from / Block * Block; t0 < end; t0 += Block)
            {
                long offset = (long)(t0 / Block) * BlockBytes;
                byte* kb = kh + offset, vb = vh + offset;
                if (prefetch && t0 + 4 * Block < end)
                {
                    Ahead(kb + 4 * BlockBytes, BlockBytes);
                    Ahead(vb + 4 * BlockBytes, BlockBytes);
                }
                // As in AttendTwoHeadsBytePairs: a whole block's code without the range's selects.
                if (t0 >= from && t0 + Block <= end)
                    OneHeadBlock(kb, vb, query, qs, corrections, ones, true, default, ref max, ref sums, ref o0, ref o1);
                else
                    OneHeadBlock(kb, vb, query, qs, corrections, ones, false, InRange(t0, from, end), ref max, ref sums, ref o0, ref o1);
            }
        }
        o0.Store(acc);
        o1.Store(acc + 16);
        return Vector512.Sum(sums);
    }

    /// <summary>
    /// <see cref="AttendBytePairs"/> for two heads of one row at once: head h's entries where the pointers say, head h + 1's
    /// <paramref name="headBytes"/> on (the next (slot, head) of the cache), over the same positions; their queries' groups 8
    /// ints apart at <paramref name="queries"/>, their outputs at <paramref name="acc"/> and 32 floats on. Each head's sums are
    /// those of its own pass, bit for bit. Why: a pass waits on its entries, coming from L3 or DRAM when 16 rows stream caches
    /// of their own, and two independent streams keep twice the loads in flight (benchmarks/README.md, "Two heads a pass").
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void AttendTwoHeadsBytePairs(byte* sharedKeys, byte* sharedValues, int shared, byte* keys, byte* values, int to, long headBytes,
        int* queries, float* queryScales, int* corrections, float* acc, bool prefetch, out float sumA, out float sumB)
    {
        const int BlockBytes = Block * 36;
        var qsA = Vector512.Create(queryScales[0] * VectorExp.Log2E);   // scores in log2 units (see Exponentials)
        var qsB = Vector512.Create(queryScales[1] * VectorExp.Log2E);
        var correctionsA = Vector512.Create(corrections[0]);
        var correctionsB = Vector512.Create(corrections[1]);
        var ones = Vector512.Create((short)1);
        Vector512<float> maxA = Vector512.Create(float.NegativeInfinity), maxB = maxA;
        Vector512<float> sumsA = default, sumsB = default, a0 = default, a1 = default, b0 = default, b1 = default;
        for (int part = 0; part < 2; part++)
        {
            byte* kh = part == 0 ? sharedKeys : keys, vh = part == 0 ? sharedValues : values;
            int from = part == 0 ? 0 : shared, end = part == 0 ? shared : to;
            for (int t0 = from / Block * Block; t0 < end; t0 += Block)
            {
                long offset = (long)(t0 / Block) * BlockBytes;
                byte* ka = kh + offset, va = vh + offset;
                if (prefetch && t0 + 4 * Block < end)
                {
                    Ahead(ka + 4 * BlockBytes, BlockBytes);
                    Ahead(va + 4 * BlockBytes, BlockBytes);
                    Ahead(ka + headBytes + 4 * BlockBytes, BlockBytes);
                    Ahead(va + headBytes + 4 * BlockBytes, BlockBytes);
                }
                // Two copies of the block's code, a whole block's without any of the range's selects or the exponential's clamp.
                if (t0 >= from && t0 + Block <= end)
                    TwoHeadsBlock(ka, va, headBytes, queries, qsA, qsB, correctionsA, correctionsB, ones, true, default, ref maxA, ref sumsA,
                        ref a0, ref a1, ref maxB, ref sumsB, ref b0, ref b1);
                else
                    TwoHeadsBlock(ka, va, headBytes, queries, qsA, qsB, correctionsA, correctionsB, ones, false, InRange(t0, from, end),
                        ref maxA, ref sumsA, ref a0, ref a1, ref maxB, ref sumsB, ref b0, ref b1);
            }
        }
        a0.Store(acc);
        a1.Store(acc + 16);
        b0.Store(acc + 32);
        b1.Store(acc + 48);
        (sumA, sumB) = (Vector512.Sum(sumsA), Vector512.Sum(sumsB));
    }

    /// <summary>One block of <see cref="AttendBytePairs"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void OneHeadBlock(byte* kb, byte* vb, int* query, Vector512<float> qs, Vector512<int> corrections, Vector512<short> ones,
        bool whole, Vector512<float> inRange, ref Vector512<float> max, ref Vector512<float> sums, ref Vector512<float> o0, ref Vector512<float> o1)
    {
        var e = Exponentials(PairDots(kb, query, corrections, ones), Vector512.Load((float*)kb) * qs, whole, inRange, ref max, ref sums,
            ref o0, ref o1);
        AddWeightedValues(vb, e, whole, inRange, ones, ref o0, ref o1);
    }

    /// <summary>One block of <see cref="AttendTwoHeadsBytePairs"/>: head h's entries at <paramref name="ka"/> and <paramref name="va"/>, head h + 1's <paramref name="headBytes"/> on.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void TwoHeadsBlock(byte* ka, byte* va, long headBytes, int* queries, Vector512<float> qsA, Vector512<float> qsB,
        Vector512<int> correctionsA, Vector512<int> correctionsB, Vector512<short> ones, bool whole, Vector512<float> inRange,
        ref Vector512<float> maxA, ref Vector512<float> sumsA, ref Vector512<float> a0, ref Vector512<float> a1,
        ref Vector512<float> maxB, ref Vector512<float> sumsB, ref Vector512<float> b0, ref Vector512<float> b1)
    {
        var eA = Exponentials(PairDots(ka, queries, correctionsA, ones), Vector512.Load((float*)ka) * qsA, whole, inRange, ref maxA,
            ref sumsA, ref a0, ref a1);
        var eB = Exponentials(PairDots(ka + headBytes, queries + 8, correctionsB, ones), Vector512.Load((float*)(ka + headBytes)) * qsB, whole,
            inRange, ref maxB, ref sumsB, ref b0, ref b1);
        AddWeightedValues(va, eA, whole, inRange, ones, ref a0, ref a1);
        AddWeightedValues(va + headBytes, eB, whole, inRange, ones, ref b0, ref b1);
    }

    /// <summary>
    /// A block's 16 integer dot products on byte pairs for a query's 8 groups (head size 32; <see cref="QuantizeQuery"/>'s
    /// bytePairs), less the query's correction, as floats (exact: under 2^24 in magnitude): key group g (dimensions 4g..4g+3
    /// of the 16 positions) at 64g past the scales, lane t of each sum position t's. Times the keys' scales and the query's,
    /// the block's scores.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<float> PairDots(byte* kb, int* query, Vector512<int> correction, Vector512<short> ones)
    {
        byte* k = kb + 4 * Block;
        var d0 = KeyGroup(k, Broadcast(query, 0), ones) + KeyGroup(k + 64, Broadcast(query, 1), ones);
        var d1 = KeyGroup(k + 128, Broadcast(query, 2), ones) + KeyGroup(k + 192, Broadcast(query, 3), ones);
        var d2 = KeyGroup(k + 256, Broadcast(query, 4), ones) + KeyGroup(k + 320, Broadcast(query, 5), ones);
        var d3 = KeyGroup(k + 384, Broadcast(query, 6), ones) + KeyGroup(k + 448, Broadcast(query, 7), ones);
        return Avx512F.ConvertToVector512Single((d0 + d1) + (d2 + d3) - correction);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<sbyte> Broadcast(int* query, int group) => Vector512.Create(query[group]).AsSByte();

    /// <summary>
    /// The online softmax over one block: its scores are <paramref name="dots"/> x <paramref name="scales"/> (the keys' scales
    /// times the query's times log2(e), so in log2 units: 2^score is e^(the score in natural units)), positions outside the
    /// block's range (not <paramref name="whole"/>: <paramref name="inRange"/>) at -infinity. When any rises above the running
    /// maximum <paramref name="max"/> (all lanes, log2 units), what is accumulated so far (the sum and the output) was weighted
    /// against the old one and is rescaled; returns the block's exponentials against the maximum, already added to
    /// <paramref name="sums"/>. Why log2 units: each score against the maximum is then one FMA, and its exponential
    /// (<see cref="VectorExp.Exp2Finite"/>) needs no multiply by log2(e) and no FMA by ln 2, all on the kernels' longest chain.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<float> Exponentials(Vector512<float> dots, Vector512<float> scales, bool whole, Vector512<float> inRange,
        ref Vector512<float> max, ref Vector512<float> sums, ref Vector512<float> o0, ref Vector512<float> o1)
    {
        var x = Avx512F.FusedMultiplySubtract(dots, scales, max);
        if (!whole) x = Vector512.ConditionalSelect(inRange, x, Vector512.Create(float.NegativeInfinity));
        // One comparison finds whether any score rises above the running maximum (rare past a row's first blocks); only then
        // the block's largest, a horizontal maximum.
        if (Vector512.GreaterThanAny(x, Vector512<float>.Zero))
        {
            var s = dots * scales;
            if (!whole) s = Vector512.ConditionalSelect(inRange, s, Vector512.Create(float.NegativeInfinity));
            // At least the old maximum: the fused score above can exceed it by a rounding where the score itself does not.
            var risen = Vector512.Max(max, Vector512.Create(MaxOf(s)));
            var r = VectorExp.Exp2NonPositive(max - risen);
            (sums, o0, o1) = (sums * r, o0 * r, o1 * r);
            max = risen;
            x = Avx512F.FusedMultiplySubtract(dots, scales, max);
            if (!whole) x = Vector512.ConditionalSelect(inRange, x, Vector512.Create(float.NegativeInfinity));
        }
        // A whole block's scores are all finite; a partial one's outside lanes are -infinity, which needs the clamp.
        var e = whole ? VectorExp.Exp2Finite(x) : VectorExp.Exp2NonPositive(x);
        sums += e;
        return e;
    }

    /// <summary>
    /// A block's values weighted by its exponentials <paramref name="e"/> times the values' scales, added to the output's
    /// dimensions 0-15 and 16-31 on byte pairs: the weights quantized by <see cref="PairWeightBytes"/>; value group j
    /// (positions 4j..4j+3 of dimensions 0..31, 4 bytes a dimension) at 128j past the scales, dimensions 16-31 64 bytes on.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void AddWeightedValues(byte* vb, Vector512<float> e, bool whole, Vector512<float> inRange, Vector512<short> ones,
        ref Vector512<float> o0, ref Vector512<float> o1)
    {
        var scales = Vector512.Load((float*)vb);
        // Past the block's range the value scales may be anything (unwritten): select, not multiply.
        if (!whole) scales = Vector512.ConditionalSelect(inRange, scales, Vector512<float>.Zero);
        if (!PairWeightBytes(e * scales, e * (scales * 255f), out var w0, out var w1, out var w2, out var w3, out float unit))
            return;   // every weight underflowed to 0: nothing to add
        sbyte* v = (sbyte*)vb + 4 * Block;
        var units = Vector512.Create(unit);
        o0 = Vector512.FusedMultiplyAdd(Avx512F.ConvertToVector512Single(ValueDimensions(v, 128, w0, w1, w2, w3, ones)), units, o0);
        o1 = Vector512.FusedMultiplyAdd(Avx512F.ConvertToVector512Single(ValueDimensions(v + 64, 128, w0, w1, w2, w3, ones)), units, o1);
    }

    /// <summary>
    /// A block's 16 weights <paramref name="w"/> (not negative) as bytes for vpmaddubsw, positions 4j..4j+3's in every 4 bytes
    /// of wj, and the step of one byte, <paramref name="unit"/>; false (nothing to add) when every weight is 0.
    /// <paramref name="w255"/> is w x 255, computed beside w (off the chain that waits for the step). The weights are
    /// quantized against their largest neighbour-pair sum (<see cref="PairMax"/>) by that sum's reciprocal from vrcp14ss
    /// (relative error below 2^-14), not by a division: the byte step's chain is the one-pass kernels' longest, and the
    /// reciprocal takes a third of a division's cycles there. A byte is then at most 255 x (1 + 2^-14), which rounds to 255,
    /// and two neighbours' to at most 256 (<see cref="PairMax"/>); the step is that sum / 255, within 2^-14 of the exact
    /// inverse of the quantizing factor (far below a byte's rounding).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static bool PairWeightBytes(Vector512<float> w, Vector512<float> w255, out Vector512<byte> w0, out Vector512<byte> w1,
        out Vector512<byte> w2, out Vector512<byte> w3, out float unit)
    {
        var pair = PairMax(w);
        unit = pair.ToScalar() / 255f;
        if (!(unit > 0))
        {
            w0 = w1 = w2 = w3 = default;
            return false;
        }
        // Each weight's byte in the low byte of its int (at most 255: nothing to saturate); vpshufb gathers the low bytes of
        // ints 4j..4j+3 into every int of 128-bit lane j, and vshufi32x4 copies lane j across wj.
        var ints = Avx512F.ConvertToVector512UInt32(w255 * Vector512.Create(Avx512F.Reciprocal14Scalar(pair).ToScalar())).AsByte();
        var lanes = Avx512BW.Shuffle(ints, Vector512.Create(0x0C080400).AsByte()).AsInt32();
        w0 = Avx512F.Shuffle4x128(lanes, lanes, 0x00).AsByte();
        w1 = Avx512F.Shuffle4x128(lanes, lanes, 0x55).AsByte();
        w2 = Avx512F.Shuffle4x128(lanes, lanes, 0xAA).AsByte();
        w3 = Avx512F.Shuffle4x128(lanes, lanes, 0xFF).AsByte();
        return true;
    }

    /// <summary>
    /// The largest sum of two neighbouring weights (positions 2i and 2i+1, which vpmaddubsw adds), against which a block's
    /// weights are quantized on byte pairs: one byte step is that sum / 255. Each weight is at most its pair's sum (weights
    /// are not negative), so every byte stays within 255, and two neighbours' bytes, rounded, add up to at most 256: their
    /// products with value bytes (at most 127 in magnitude) to 32,512, which 16 bits hold. Where one weight of the top pair
    /// dominates, as in a peaked softmax, the step is that weight / 255, a full byte. In lane 0; 0 when every weight is 0.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector128<float> PairMax(Vector512<float> w) =>
        // Lanes 2i and 2i+1 both hold their pair's sum, so the even lanes' largest is the answer: MaxOf's last step, which
        // compares the even and odd lanes, is two instructions fewer on the kernels' longest chain.
        EvenAndOddMax(w + Avx512F.Shuffle(w, w, 0b10_11_00_01));

    /// <summary>One key group's 16 positions (64 unsigned bytes at <paramref name="k"/>) dotted with the query's 4 bytes, as 16 ints.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<int> KeyGroup(byte* k, Vector512<sbyte> q, Vector512<short> ones) =>
        Avx512BW.MultiplyAddAdjacent(Avx512BW.MultiplyAddAdjacent(Vector512.Load(k), q), ones);

    /// <summary>
    /// 16 dimensions of a block's weighted values: the four value groups' 64 bytes at <paramref name="v"/> (the dimensions'
    /// offset, 4 bytes each), <paramref name="groupBytes"/> apart, times their positions' weight bytes w0..w3, summed, as 16 ints.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<int> ValueDimensions(sbyte* v, int groupBytes, Vector512<byte> w0, Vector512<byte> w1, Vector512<byte> w2,
        Vector512<byte> w3, Vector512<short> ones) =>
        (ValueGroup(v, w0, ones) + ValueGroup(v + groupBytes, w1, ones))
        + (ValueGroup(v + 2 * groupBytes, w2, ones) + ValueGroup(v + 3 * groupBytes, w3, ones));

    /// <summary>16 dimensions of a value group (64 signed bytes at <paramref name="v"/>) times its 4 positions' weight bytes, as 16 ints.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<int> ValueGroup(sbyte* v, Vector512<byte> w, Vector512<short> ones) =>
        Avx512BW.MultiplyAddAdjacent(Avx512BW.MultiplyAddAdjacent(w, Vector512.Load(v)), ones);

    /// <summary>Lanes t of the block at <paramref name="t0"/> with <paramref name="from"/> &lt;= t0 + t &lt; <paramref name="end"/>, as a float mask.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<float> InRange(int t0, int from, int end)
    {
        var lane = Vector512<int>.Indices;
        return (Vector512.GreaterThanOrEqual(lane, Vector512.Create(from - t0)) & Vector512.LessThan(lane, Vector512.Create(end - t0))).AsSingle();
    }

    /// <summary>
    /// The largest of 16 lanes without NaN, by vmaxps itself (MaxNative): the same as IEEE maximum for such lanes, without its
    /// NaN and signed-zero fix-ups, which cost as much again. Also <see cref="KvCodec"/>'s, for the magnitudes it quantizes.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static float MaxOf(Vector512<float> v)
    {
        var m2 = EvenAndOddMax(v);
        return Vector128.MaxNative(m2, Avx.Permute(m2, 0b10_11_00_01)).ToScalar();
    }

    /// <summary>Lane 0: the largest of <paramref name="v"/>'s even lanes; lane 1: of its odd lanes.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector128<float> EvenAndOddMax(Vector512<float> v)
    {
        // vmaxps itself (MaxNative): the scores hold no NaN, and IEEE maximum's fix-ups cost as much again.
        var m = Vector256.MaxNative(v.GetLower(), v.GetUpper());
        var m4 = Vector128.MaxNative(m.GetLower(), m.GetUpper());
        return Vector128.MaxNative(m4, Avx.Permute(m4, 0b01_00_11_10));
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

    /// <summary>
    /// <see cref="Dot16"/> on vpmaddubsw's byte pairs (a query quantized with <see cref="QuantizeQuery"/>'s bytePairs): each key
    /// group's 64 bytes hold 4 dimensions of all 16 positions, so each group gives the 16 positions' partial sums directly.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<float> Dot16BytePairs(byte* data, int* query, int groups, int correction)
    {
        var ones = Vector512.Create((short)1);
        Vector512<int> a = default, b = default;   // even and odd groups: two chains
        for (int g = 0; g < groups; g += 2)   // CanRun: groups = head_size / 4 is even
        {
            a += KeyGroup(data + g * 4 * Block, Vector512.Create(query[g]).AsSByte(), ones);
            b += KeyGroup(data + (g + 1) * 4 * Block, Vector512.Create(query[g + 1]).AsSByte(), ones);
        }
        return Avx512F.ConvertToVector512Single(a + b - Vector512.Create(correction));
    }

    /// <summary>
    /// acc_j += sum over t in [from, to) of p_j[t] v_t for <paramref name="count"/> rows (p rows <paramref name="pitch"/> apart,
    /// acc rows head_size apart): per block and row, the 16 weights p_j[t] x scale_t quantized to bytes against their largest
    /// (without <paramref name="vnni"/>, as <see cref="Attend"/>'s byte-pair kernel quantizes them, <see cref="PairWeightBytes"/>, and
    /// added on byte pairs).
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
            // Outside [from, to) the weights and scales may be anything (another range's, or unwritten): select, not multiply.
            var scales = Vector512.Load((float*)block);
            if (!whole) scales = Vector512.ConditionalSelect(inRange.AsSingle(), scales, Vector512<float>.Zero);
            for (int j = 0; j < count; j++)
            {
                var p = Vector512.Load(probabilities + j * pitch + t0);
                if (!whole) p = Vector512.ConditionalSelect(inRange.AsSingle(), p, Vector512<float>.Zero);
                float* a = acc + (long)j * headSize;
                if (!vnni)
                {
                    // Weights quantized so that two neighbours' products with value bytes fit 16 bits, as the one-pass kernel does.
                    if (PairWeightBytes(p * scales, p * (scales * 255f), out var b0, out var b1, out var b2, out var b3, out float step))
                        AddBytePairs(data, b0, b1, b2, b3, step, headSize, a);
                    continue;
                }
                var w = p * scales;
                float top = MaxOf(w);
                if (!(top > 0)) continue;   // every weight underflowed to 0: nothing to add
                float unitOf = top / 255f;
                var bytes = Avx512F.ConvertToVector128ByteWithSaturation(Avx512F.ConvertToVector512UInt32(w * (255f / top))).AsInt32();
                var w0 = Vector256.Create(bytes.GetElement(0)).AsByte();
                var w1 = Vector256.Create(bytes.GetElement(1)).AsByte();
                var w2 = Vector256.Create(bytes.GetElement(2)).AsByte();
                var w3 = Vector256.Create(bytes.GetElement(3)).AsByte();
                var unit = Vector256.Create(unitOf);
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
    /// One block's weighted values on vpmaddubsw's byte pairs (weights quantized by <see cref="PairWeightBytes"/>):
    /// each value group's 64 bytes at 4c hold dimensions c..c+15 of its 4 positions.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void AddBytePairs(byte* data, Vector512<byte> w0, Vector512<byte> w1, Vector512<byte> w2, Vector512<byte> w3, float unit,
        int headSize, float* acc)
    {
        int groupBytes = 4 * headSize;
        var ones = Vector512.Create((short)1);
        var u = Vector512.Create(unit);
        for (int c = 0; c < headSize; c += 16)
        {
            var sum = ValueDimensions((sbyte*)data + c * 4, groupBytes, w0, w1, w2, w3, ones);
            Vector512.FusedMultiplyAdd(Avx512F.ConvertToVector512Single(sum), u, Vector512.Load(acc + c)).Store(acc + c);
        }
    }
}
