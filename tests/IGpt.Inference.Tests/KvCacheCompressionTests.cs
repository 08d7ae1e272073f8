using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using System.Text.Json.Nodes;

namespace IGpt.Inference.Tests;

/// <summary>
/// Inference:KvCacheType float16 and int8: the conversions, the attention kernel over a compressed cache, the decoder that stores its
/// cache compressed (every step as segments, prefill through an fp32 row), its memory, and the settings' rules.
/// The quality guard on the shipped models is <see cref="KvCacheQualityTests"/>.
/// </summary>
public unsafe class KvCacheCompressionTests
{
    [Fact]
    public void Fp16ToFp32IsExactForEveryFiniteHalf()
    {
        var bits = Enumerable.Range(0, 65536).Where(b => (b & 0x7C00) != 0x7C00).Select(b => (ushort)b).ToArray();
        var converted = new float[bits.Length];
        fixed (ushort* s = bits)
        fixed (float* d = converted)
        {
            HalfConversion.ToSingle(s, d, bits.Length - 5);  // the vector loops, then a scalar tail
            HalfConversion.ToSingle(s + bits.Length - 5, d + bits.Length - 5, 5);
        }
        for (int i = 0; i < bits.Length; i++)
        {
            uint expected = BitConverter.SingleToUInt32Bits((float)BitConverter.UInt16BitsToHalf(bits[i]));
            Assert.True(expected == BitConverter.SingleToUInt32Bits(converted[i]), $"fp16 0x{bits[i]:X4}: {converted[i]}");
            Assert.Equal(expected, BitConverter.SingleToUInt32Bits(HalfConversion.ToSingle(bits[i])));
        }
    }

    [Fact]
    public void Fp32ToFp16RoundsToNearestEvenAndClampsToTheLargestHalf()
    {
        var inputs = new List<float> { 0f, -0f, 65504f, -65504f, 65519f, 65520f, 1e6f, -1e9f, float.Epsilon, 1e-8f, -3e-5f, 6.1e-5f };
        // Every finite fp16 value, and the midpoints between neighbours (ties: round to even), and a little either side.
        for (int b = 0; b < 0x7BFF; b++)
        {
            double lo = (double)BitConverter.UInt16BitsToHalf((ushort)b), hi = (double)BitConverter.UInt16BitsToHalf((ushort)(b + 1));
            float mid = (float)((lo + hi) / 2);
            inputs.AddRange([(float)lo, -(float)lo, mid, -mid, MathF.BitIncrement(mid), MathF.BitDecrement(mid)]);
        }
        var rng = new Random(5);
        for (int i = 0; i < 20_000; i++) inputs.Add((float)((rng.NextDouble() - 0.5) * Math.Pow(10, rng.Next(-9, 6))));
        var source = inputs.ToArray();
        var converted = new ushort[source.Length];
        fixed (float* s = source)
        fixed (ushort* d = converted)
            HalfConversion.ToHalf(s, d, source.Length);
        for (int i = 0; i < source.Length; i++)
        {
            float x = source[i];
            ushort expected = Math.Abs(x) > 65504f
                ? (ushort)(x < 0 ? 0xFBFF : 0x7BFF)
                : BitConverter.HalfToUInt16Bits((Half)x);
            Assert.True(expected == converted[i], $"{x:R}: expected 0x{expected:X4}, got 0x{converted[i]:X4}");
            Assert.Equal(expected, HalfConversion.ToHalfBits(x));
        }
    }

    [Theory]
    [InlineData(32, true)]
    [InlineData(32, false)]
    [InlineData(12, true)]   // under 16: the scalar quantization
    [InlineData(3, false)]   // padded to 4
    [InlineData(20, false)]  // values: 16 dimensions written as one vector, 4 one at a time
    public void Int8EntriesRoundTripWithinHalfAStepOfTheirScaleInTheDocumentedBlocks(int headSize, bool keys)
    {
        var part = keys ? KvPart.Key : KvPart.Value;
        var rng = new Random(headSize);
        const int count = 50;   // three whole blocks and two positions of a fourth
        var x = new float[count * headSize];
        for (int i = 0; i < x.Length; i++) x[i] = (float)((rng.NextDouble() - 0.5) * Math.Pow(10, rng.Next(-3, 3)));
        x.AsSpan(0, headSize).Clear();   // an all-zero entry: scale 0
        var bytes = Encode(KvElement.Int8, part, x, headSize, count);
        var back = Decode(KvElement.Int8, part, bytes, headSize, count);
        int padded = (headSize + 3) / 4 * 4;
        Assert.Equal(64 * (padded + 4), bytes.Length);   // 50 positions take 4 blocks of 16
        for (int e = 0; e < count; e++)
        {
            var entry = x.AsSpan(e * headSize, headSize);
            float max = 0;
            foreach (var v in entry) max = MathF.Max(max, MathF.Abs(v));
            int block = e / 16 * 16 * (padded + 4), p = e % 16;
            float scale = BitConverter.ToSingle(bytes, block + 4 * p);
            Assert.Equal(max / 127f, scale);
            for (int i = 0; i < padded; i++)
            {
                // Keys: dims 4g..4g+3 of the block's 16 positions in 64 bytes, offset by 128; values: positions 4j..4j+3 of each dim.
                int at = part == KvPart.Key ? block + 64 + i / 4 * 64 + 4 * p + i % 4 : block + 64 + p / 4 * 4 * padded + 4 * i + p % 4;
                int q = part == KvPart.Key ? bytes[at] - 128 : (sbyte)bytes[at];
                if (i >= headSize)
                {
                    Assert.Equal(0, q);
                    continue;
                }
                // The vector and scalar paths round alike: to nearest, ties to even.
                Assert.Equal(max > 0 ? (int)MathF.Round(entry[i] * (127f / max), MidpointRounding.ToEven) : 0, q);
                Assert.True(Math.Abs(back[e * headSize + i] - entry[i]) <= scale * 0.5001 + 1e-30, $"entry {e}[{i}]: {entry[i]} -> {back[e * headSize + i]}");
            }
        }
    }

    /// <summary>
    /// The int8 kernels against the arithmetic they stand for, over ranges that start and end inside blocks: key scores are
    /// the exact integer dot products of the quantized query and keys times their scales; weighted values are the exact sums
    /// of each block's weights (p x value scale) quantized against their largest to 0..255. Without VNNI (byte pairs) the
    /// query's scale is its largest pair sum over 127 and a weight byte's step the largest neighbouring pair's sum / 255, the
    /// bytes made by that sum's vrcp14ss reciprocal, so that no 16-bit sum of vpmaddubsw saturates.
    /// </summary>
    [Theory]
    [InlineData(32, true)]
    [InlineData(32, false)]
    [InlineData(64, true)]
    [InlineData(64, false)]
    public void Int8KernelsComputeTheQuantizedDotProductsExactly(int headSize, bool vnni)
    {
        bool bytePairs = !vnni;
        // Without AVX-512BW the cache is converted to fp32 instead (the attention test below); byte pairs stand in for
        // vpdpbusd where AVX-VNNI is missing, and are run here either way.
        if (!Int8Blocks.CanRun(headSize) || (vnni && !Int8Blocks.HasVnni)) return;
        var rng = new Random(headSize);
        const int positions = 75, rows = 2;
        var keys = new float[positions * headSize];
        var values = new float[positions * headSize];
        for (int i = 0; i < keys.Length; i++) (keys[i], values[i]) = ((float)rng.NextDouble() * 4 - 2, (float)rng.NextDouble() * 4 - 2);
        var k = Encode(KvElement.Int8, KvPart.Key, keys, headSize, positions);
        var v = Encode(KvElement.Int8, KvPart.Value, values, headSize, positions);
        var query = new float[rows * headSize];
        for (int i = 0; i < query.Length; i++) query[i] = (float)rng.NextDouble() * 2 - 1;
        var groups = new int[rows * headSize / 4];
        var queryScales = new float[rows];
        var corrections = new int[rows];
        long pitch = positions + 16;
        var scores = new float[rows * pitch];
        var p = new float[rows * pitch];
        for (int i = 0; i < p.Length; i++) p[i] = (float)rng.NextDouble();
        var acc = new float[rows * headSize];
        const int from = 5, to = 70;
        fixed (float* pq = query, ps = scores, pp = p, pa = acc, qs = queryScales)
        fixed (int* pg = groups, pc = corrections)
        fixed (byte* pk = k, pv = v)
        {
            for (int j = 0; j < rows; j++) qs[j] = Int8Blocks.QuantizeQuery(pq + j * headSize, headSize, pg + j * headSize / 4, out pc[j], bytePairs);
            Int8Blocks.Scores(pk, from, to, pg, qs, pc, rows, headSize, ps, pitch, vnni);
            Int8Blocks.WeightedValues(pv, from, to, pp, pitch, rows, headSize, pa, vnni);
            // Prefetching the entries ahead changes nothing but the timing.
            var scores2 = new float[scores.Length];
            var acc2 = new float[acc.Length];
            fixed (float* ps2 = scores2, pa2 = acc2)
            {
                Int8Blocks.Scores(pk, from, to, pg, qs, pc, rows, headSize, ps2, pitch, vnni, prefetch: true);
                Int8Blocks.WeightedValues(pv, from, to, pp, pitch, rows, headSize, pa2, vnni, prefetch: true);
            }
            Assert.Equal(scores, scores2);
            Assert.Equal(acc, acc2);
        }
        var q8 = new sbyte[headSize];
        var k8 = new sbyte[headSize];
        for (int j = 0; j < rows; j++)
        {
            float qMax = 0;
            for (int i = 0; i < headSize; i += bytePairs ? 2 : 1)   // bytePairs: the largest pair sum sets the scale
                qMax = MathF.Max(qMax, MathF.Abs(query[j * headSize + i]) + (bytePairs ? MathF.Abs(query[j * headSize + i + 1]) : 0));
            for (int i = 0; i < headSize; i++) q8[i] = (sbyte)MathF.Round(query[j * headSize + i] * (127f / qMax), MidpointRounding.ToEven);
            Assert.Equal(qMax / 127f, queryScales[j]);
            for (int t = 0; t < positions + 16; t++)
            {
                float score = scores[j * pitch + t];
                if (t < from || t >= to)
                {
                    Assert.Equal(0f, score);   // outside the range: untouched
                    continue;
                }
                float kScale;
                fixed (byte* pk = k)
                fixed (sbyte* pk8 = k8)
                    kScale = Int8Blocks.Read(KvPart.Key, pk, t, pk8, headSize);
                long dot = 0;
                for (int i = 0; i < headSize; i++) dot += q8[i] * k8[i];
                Assert.Equal((float)dot * (kScale * queryScales[j]), score);
            }
            var expected = new double[headSize];
            for (int t0 = 0; t0 < to; t0 += 16)
            {
                var w = new float[16];
                var bytes = new float[16];
                var v8 = new sbyte[16 * headSize];
                float max = 0;
                for (int t = Math.Max(from, t0); t < Math.Min(to, t0 + 16); t++)
                {
                    float scale;
                    fixed (byte* pv = v)
                    fixed (sbyte* pv8 = &v8[(t - t0) * headSize])
                        scale = Int8Blocks.Read(KvPart.Value, pv, t, pv8, headSize);
                    w[t - t0] = p[j * pitch + t] * scale;
                    // Byte pairs: the weight x 255 computed beside the weight, as the kernels do, for the reciprocal below.
                    bytes[t - t0] = bytePairs ? p[j * pitch + t] * (scale * 255f) : w[t - t0];
                    max = MathF.Max(max, w[t - t0]);
                }
                if (max == 0) continue;
                // A byte's step, and what the weights are multiplied by to make their bytes (as the kernels compute them).
                float unit = max / 255f, inverse = 255f / max;
                if (bytePairs)
                {
                    float top = 0;   // the largest sum of two neighbours (the positions vpmaddubsw adds)
                    for (int t = 0; t < 16; t++) top = MathF.Max(top, w[t] + w[t ^ 1]);
                    // Weight x 255 times vrcp14ss's reciprocal of that sum (within 2^-14 of 1 / top), not a division.
                    (unit, inverse) = (top / 255f, Avx512F.Reciprocal14Scalar(Vector128.CreateScalar(top)).ToScalar());
                    Assert.True(MathF.Abs(inverse * top - 1) <= 1f / 16384);
                    for (int t = 0; t < 16; t += 2)   // so that no pair's 16-bit sum can saturate: 256 x 127 < 32,768
                    {
                        float a = MathF.Round(bytes[t] * inverse, MidpointRounding.ToEven), b = MathF.Round(bytes[t + 1] * inverse, MidpointRounding.ToEven);
                        Assert.True(a <= 255 && b <= 255 && a + b <= 256, $"block {t0}, positions {t}, {t + 1}: bytes {a}, {b}");
                    }
                }
                for (int i = 0; i < headSize; i++)
                {
                    long sum = 0;
                    for (int t = 0; t < 16; t++) sum += (long)MathF.Round(bytes[t] * inverse, MidpointRounding.ToEven) * v8[t * headSize + i];
                    expected[i] += sum * (double)unit;
                }
            }
            for (int i = 0; i < headSize; i++)
                Assert.True(Math.Abs(expected[i] - acc[j * headSize + i]) <= 1e-5 * Math.Max(1, Math.Abs(expected[i])),
                    $"row {j}, dim {i}: {expected[i]} vs {acc[j * headSize + i]}");
        }
    }

    /// <summary>The one-pass kernels this CPU runs, by <see cref="Int8Blocks.Attend(byte*, byte*, int, byte*, byte*, int, int*, float, int, float*, bool, bool)"/>'s vnni: the byte-pair kernel wherever there is AVX-512BW, the VNNI one where there is AVX-VNNI.</summary>
    private static bool[] OnePassKernels() => Int8Blocks.HasVnni ? [false, true] : [false];

    /// <summary>
    /// Two heads of a row in one pass (<see cref="Int8Blocks.AttendTwoHeads"/>, the one-pass kernels' items) give each head's
    /// own pass bit for bit, with a shared prompt from another slot and lengths that end inside, at and past a block.
    /// </summary>
    [Fact]
    public void TwoHeadsInOnePassAreEachHeadsOwnPass()
    {
        const int headSize = 32, positions = 784;
        if (!Int8Blocks.CanAttend(headSize)) return;
        var rng = new Random(23);
        // Four (slot, head) regions in a row, as a cache holds them: the leader's two heads, then the row's own two.
        float[] Random(int n) => Enumerable.Range(0, n).Select(_ => (float)(rng.NextDouble() * 4 - 2)).ToArray();
        byte[] Regions(KvPart part) => [.. Enumerable.Range(0, 4).SelectMany(_ => Encode(KvElement.Int8, part, Random(positions * headSize), headSize, positions))];
        byte[] k = Regions(KvPart.Key), v = Regions(KvPart.Value);
        long headBytes = k.Length / 4;
        var queries = new int[2 * headSize / 4];
        var scales = new float[2];
        var corrections = new int[2];
        var pair = new float[2 * headSize];
        var single = new float[2 * headSize];
        fixed (byte* pk = k, pv = v)
        fixed (int* pg = queries, pc = corrections)
        fixed (float* ps = scales, pp = pair, p1 = single)
            foreach (bool vnni in OnePassKernels())
            foreach (var (shared, to) in new[] { (0, 1), (0, 17), (16, 100), (392, 393), (392, 784), (100, 600) })
            {
                for (int h = 0; h < 2; h++)
                {
                    var q = Random(headSize);
                    fixed (float* pq = q) scales[h] = Int8Blocks.QuantizeQuery(pq, headSize, pg + h * headSize / 4, out pc[h], bytePairs: !vnni);
                }
                byte* leaderK = pk, leaderV = pv, ownK = pk + 2 * headBytes, ownV = pv + 2 * headBytes;
                Int8Blocks.AttendTwoHeads(leaderK, leaderV, shared, ownK, ownV, to, headBytes, pg, ps, pc, pp, prefetch: false, vnni,
                    out float sumA, out float sumB);
                float oneA = Int8Blocks.Attend(leaderK, leaderV, shared, ownK, ownV, to, pg, ps[0], pc[0], p1, prefetch: false, vnni);
                float oneB = Int8Blocks.Attend(leaderK + headBytes, leaderV + headBytes, shared, ownK + headBytes, ownV + headBytes, to,
                    pg + headSize / 4, ps[1], pc[1], p1 + headSize, prefetch: false, vnni);
                Assert.Equal(oneA, sumA);
                Assert.Equal(oneB, sumB);
                Assert.Equal(single, pair);
            }
    }

    /// <summary>
    /// A row alone is attended in one pass (<see cref="Int8Blocks.Attend"/>: a running maximum, the output rescaled as it
    /// rises); the three passes (scores, softmax against the largest score, weighted values) give the same output up to the
    /// rounding of the weights' bytes, which are quantized against each block's largest either way; for each one-pass kernel the
    /// CPU runs (<see cref="OnePassKernels"/>), against the three passes on the same bytes.
    /// </summary>
    [Fact]
    public void OnePassAttentionOfARowAloneMatchesTheThreePasses()
    {
        const int headSize = 32;
        if (!Int8Blocks.CanAttend(headSize)) return;
        const int positions = 784;
        var rng = new Random(headSize + 7);
        var keys = new float[positions * headSize];
        var values = new float[positions * headSize];
        var query = new float[headSize];
        for (int i = 0; i < headSize; i++) query[i] = (float)rng.NextDouble() * 2 - 1;
        // Keys drift toward the query, so that the running maximum rises block after block (and now and then within one).
        for (int t = 0; t < positions; t++)
            for (int i = 0; i < headSize; i++)
            {
                keys[t * headSize + i] = (float)rng.NextDouble() * 2 - 1 + 3f * t / positions * query[i];
                values[t * headSize + i] = (float)rng.NextDouble() * 4 - 2;
            }
        var k = Encode(KvElement.Int8, KvPart.Key, keys, headSize, positions);
        var v = Encode(KvElement.Int8, KvPart.Value, values, headSize, positions);
        var groups = new int[headSize / 4];
        long pitch = positions + 16;
        var scores = new float[pitch];
        var threePass = new float[headSize];
        var onePass = new float[headSize];
        var prefetched = new float[headSize];
        fixed (float* pq = query, ps = scores, pa = threePass, po = onePass, pf = prefetched)
        fixed (int* pg = groups)
        fixed (byte* pk = k, pv = v)
            foreach (bool vnni in OnePassKernels())
            foreach (int to in new[] { 1, 15, 16, 17, 100, 393, 784 })
            {
                // The three passes on the same bytes, with the same instructions.
                float queryScale = Int8Blocks.QuantizeQuery(pq, headSize, pg, out int correction, bytePairs: !vnni);
                Int8Blocks.Scores(pk, 0, to, pg, &queryScale, &correction, 1, headSize, ps, pitch, vnni);
                float max = float.NegativeInfinity, sum = 0;
                for (int t = 0; t < to; t++) max = MathF.Max(max, ps[t]);
                for (int t = 0; t < to; t++) sum += ps[t] = MathF.Exp(ps[t] - max);
                new Span<float>(pa, headSize).Clear();
                Int8Blocks.WeightedValues(pv, 0, to, ps, pitch, 1, headSize, pa, vnni);
                float onePassSum = Int8Blocks.Attend(pk, pv, 0, pk, pv, to, pg, queryScale, correction, po, prefetch: false, vnni);
                float prefetchedSum = Int8Blocks.Attend(pk, pv, 0, pk, pv, to, pg, queryScale, correction, pf, prefetch: true, vnni);
                Assert.Equal(onePass, prefetched);   // prefetching changes nothing but the timing
                Assert.Equal(onePassSum, prefetchedSum);
                Assert.True(Math.Abs(onePassSum - sum) <= 1e-5 * sum, $"length {to}: sum {onePassSum} vs {sum}");
                // Observed: at most 1.8e-7 (float rounding). A weight's byte rounded the other way at a .5 boundary would move
                // an output by up to 2/255 of that weight's share; the bound allows a few such, not a wrong rescale.
                float worst = 0;
                for (int i = 0; i < headSize; i++)
                {
                    float a = threePass[i] / sum, b = onePass[i] / onePassSum;
                    worst = MathF.Max(worst, MathF.Abs(a - b));
                    Assert.True(Math.Abs(a - b) <= 2e-4, $"length {to}, dim {i}: {b} vs {a}");
                }
                Console.WriteLine($"head size {headSize}, {(vnni ? "VNNI" : "byte pairs")}, length {to}: one pass against three, worst {worst:G3}");
            }
    }

    /// <summary>
    /// Each one-pass kernel this CPU runs (<see cref="OnePassKernels"/>) is exact where its bytes are at their largest, which is where the byte-pair kernel would
    /// saturate its 16-bit sums of two byte products if the query and weights were quantized against their largest element
    /// alone: every query element has the same magnitude, every key element is its entry's largest with the query element's
    /// sign, and every value element its entry's largest. The softmax's sum must match scores computed in integers from the
    /// same bytes, and since every position holds the same value, the output must be that value (up to the weights' rounding).
    /// </summary>
    [Fact]
    public void OnePassAttentionIsExactWhereItsBytesAreAtTheirLargest()
    {
        const int headSize = 32, positions = 48;
        if (!Int8Blocks.CanAttend(headSize)) return;
        var query = new float[headSize];
        var keys = new float[positions * headSize];
        var values = new float[positions * headSize];
        for (int i = 0; i < headSize; i++) query[i] = i % 3 == 0 ? -0.5f : 0.5f;
        for (int t = 0; t < positions; t++)
            for (int i = 0; i < headSize; i++)
            {
                keys[t * headSize + i] = MathF.Sign(query[i]) * (0.2f + 0.01f * t);   // scores rise with t
                values[t * headSize + i] = i % 2 == 0 ? 0.75f : -0.75f;
            }
        var k = Encode(KvElement.Int8, KvPart.Key, keys, headSize, positions);
        var v = Encode(KvElement.Int8, KvPart.Value, values, headSize, positions);
        var groups = new int[headSize / 4];
        var acc = new float[headSize];
        var q8 = new sbyte[headSize];
        var k8 = new sbyte[headSize];
        var v8 = new sbyte[headSize];
        fixed (float* pq = query, pa = acc)
        fixed (int* pg = groups)
        fixed (byte* pk = k, pv = v)
        fixed (sbyte* pk8 = k8, pv8 = v8)
        foreach (bool vnni in OnePassKernels())
        {
            float queryScale = Int8Blocks.QuantizeQuery(pq, headSize, pg, out int correction, bytePairs: !vnni);
            new ReadOnlySpan<sbyte>(pg, headSize).CopyTo(q8);
            int largest = vnni ? 127 : 64;   // byte pairs: each two add up to 128
            Assert.All(q8, b => Assert.Equal(largest, Math.Abs((int)b)));
            float sum = Int8Blocks.Attend(pk, pv, 0, pk, pv, positions, pg, queryScale, correction, pa, prefetch: false, vnni);
            var scores = new double[positions];
            for (int t = 0; t < positions; t++)
            {
                float keyScale = Int8Blocks.Read(KvPart.Key, pk, t, pk8, headSize);
                Assert.All(k8, b => Assert.Equal(127, Math.Abs((int)b)));
                long dot = 0;
                for (int i = 0; i < headSize; i++) dot += q8[i] * k8[i];
                scores[t] = dot * (double)keyScale * queryScale;
            }
            double max = scores.Max(), expected = scores.Sum(s => Math.Exp(s - max));
            Assert.True(Math.Abs(sum - expected) <= 1e-5 * expected, $"sum {sum} vs {expected}");
            float valueScale = Int8Blocks.Read(KvPart.Value, pv, 0, pv8, headSize);
            Assert.All(v8, b => Assert.Equal(127, Math.Abs((int)b)));
            for (int i = 0; i < headSize; i++)
            {
                float value = v8[i] * valueScale, output = acc[i] / sum;
                Assert.True(Math.Abs(output - value) <= 0.01f * Math.Abs(value), $"dimension {i}: {output} vs {value}");
            }
        }
    }

    [Fact]
    public void EntriesArePrefetchedOnlyWhenAStepsRowsReadMoreThanSixteenMiBOfTheirOwn()
    {
        // 4 heads of 32, int8 (36 bytes an entry), 8 layers, keys and values: 2,304 bytes a position, so 16 MiB is 7,281.8.
        using var attention = new CachedAttention(4, 32, 784, 16, 1, CachedAttention.CanVectorize(32), KvElement.Int8);
        attention.ChoosePrefetch(7281, 8);
        Assert.False(attention.PrefetchEntries);
        attention.ChoosePrefetch(7282, 8);
        Assert.True(attention.PrefetchEntries);
        attention.ChoosePrefetch(16 * 392, 8);   // fashion-mnist-28's 16 rows at the average position of a sampled image
        Assert.False(attention.PrefetchEntries);
    }

    [Theory]
    [InlineData(KvCacheTypes.Float16, 8, false)]
    [InlineData(KvCacheTypes.Float16, 32, true)]
    [InlineData(KvCacheTypes.Float16, 32, false)]
    [InlineData(KvCacheTypes.Float16, 64, true)]
    [InlineData(KvCacheTypes.Int8, 8, false)]
    [InlineData(KvCacheTypes.Int8, 32, true)]
    [InlineData(KvCacheTypes.Int8, 32, false)]
    [InlineData(KvCacheTypes.Int8, 64, true)]
    public void AttentionOverACompressedCacheMatchesTheReferenceOverTheSameValues(string type, int headSize, bool vectorized)
    {
        var element = KvCacheTypes.Parse(type);
        vectorized &= CachedAttention.CanVectorize(headSize);
        // 150 positions: three conversion chunks; the shared prefix (70) ends inside the second.
        const int heads = 2, positions = 150, rows = 3, shared = 70;
        int embd = heads * headSize;
        var rng = new Random(headSize + 1);
        int Index(int row, int head, int pos) => ((row * heads + head) * positions + pos) * headSize;
        var keys = new float[rows * heads * positions * headSize];
        var values = new float[keys.Length];
        for (int i = 0; i < keys.Length; i++) (keys[i], values[i]) = ((float)rng.NextDouble() * 4 - 2, (float)rng.NextDouble() * 4 - 2);
        foreach (int r in new[] { 1, 2 })
            for (int h = 0; h < heads; h++)
            {
                Array.Copy(keys, Index(0, h, 0), keys, Index(r, h, 0), shared * headSize);
                Array.Copy(values, Index(0, h, 0), values, Index(r, h, 0), shared * headSize);
            }
        var qkv = new float[rows * 3 * embd];
        for (int i = 0; i < qkv.Length; i++) qkv[i] = (float)rng.NextDouble() * 2 - 1;
        int[] position = [149, 100, shared], groups = [0, 0, 0], sharedLengths = [shared, shared, shared];

        var cachedKeys = Encode(element, KvPart.Key, keys, headSize, positions);
        var cachedValues = Encode(element, KvPart.Value, values, headSize, positions);
        // What the cache holds afterwards: every entry, the new ones too, encoded; the reference attends over its values.
        var allKeys = (float[])keys.Clone();
        var allValues = (float[])values.Clone();
        for (int r = 0; r < rows; r++)
            for (int h = 0; h < heads; h++)
            {
                Array.Copy(qkv, r * 3 * embd + embd + h * headSize, allKeys, Index(r, h, position[r]), headSize);
                Array.Copy(qkv, r * 3 * embd + 2 * embd + h * headSize, allValues, Index(r, h, position[r]), headSize);
            }
        var refKeys = Decode(element, KvPart.Key, Encode(element, KvPart.Key, allKeys, headSize, positions), headSize, positions);
        var refValues = Decode(element, KvPart.Value, Encode(element, KvPart.Value, allValues, headSize, positions), headSize, positions);
        var expected = ReferenceAttention.Expected(qkv, refKeys, refValues, rows, heads, headSize, positions, position);

        // Grouped, the shared prompt is converted into scratch for the group and each row's own entries are read in place;
        // alone, every row is read in place; inPlace false converts everything into scratch.
        foreach (var (grouped, inPlace) in new[] { (true, true), (false, true), (true, false), (false, false) })
        {
            var k = (byte[])cachedKeys.Clone();
            var v = (byte[])cachedValues.Clone();
            var output = new float[rows * embd];
            using var attention = new CachedAttention(heads, headSize, positions, rows, lanes: 1, vectorized, element, inPlace);
            attention.CheckGroups(rows, position, grouped ? groups : [], grouped ? sharedLengths : []);
            attention.Plan(0, 0, rows, position, grouped ? groups : [], grouped ? sharedLengths : []);
            fixed (float* pq = qkv, po = output)
            fixed (byte* pk = k, pv = v)
                attention.Run(0, pq, pk, pv, po);
            // The int8 kernels also quantize the query and the weights (exact to their arithmetic: the test above), which
            // moved these outputs (values within +-2) by at most 1.8e-3 when written.
            double bound = attention.ReadsInt8InPlace ? 5e-3 : 2e-5, worst = 0;
            for (int i = 0; i < expected.Length; i++)
            {
                worst = Math.Max(worst, Math.Abs(expected[i] - output[i]));
                Assert.True(Math.Abs(expected[i] - output[i]) < bound, $"grouped {grouped}, in place {inPlace}, output {i}: {expected[i]} vs {output[i]}");
            }
            Console.WriteLine($"{type} head size {headSize}, grouped {grouped}, in place {inPlace}, int8 kernels {attention.ReadsInt8InPlace}: worst {worst:G3}");
            Assert.Equal(Encode(element, KvPart.Key, allKeys, headSize, positions), k);
            Assert.Equal(Encode(element, KvPart.Value, allValues, headSize, positions), v);
        }
    }

    private static float Round(float x) => (float)(Half)x;

    /// <summary>x: (slot, head)s of <paramref name="positions"/> entries each, stored as a cache buffer stores them.</summary>
    internal static byte[] Encode(KvElement element, KvPart part, float[] x, int headSize, int positions)
    {
        long headBytes = element.HeadBytes(headSize, positions);
        int heads = x.Length / (positions * headSize);
        var bytes = new byte[heads * headBytes];
        fixed (float* s = x)
        fixed (byte* d = bytes)
            for (int h = 0; h < heads; h++)
                KvCodec.Encode(element, part, s + (long)h * positions * headSize, d + h * headBytes, 0, positions, headSize);
        return bytes;
    }

    private static float[] Decode(KvElement element, KvPart part, byte[] bytes, int headSize, int positions)
    {
        long headBytes = element.HeadBytes(headSize, positions);
        int heads = (int)(bytes.Length / headBytes);
        var x = new float[heads * positions * headSize];
        fixed (byte* s = bytes)
        fixed (float* d = x)
            for (int h = 0; h < heads; h++)
                KvCodec.Decode(element, part, s + h * headBytes, 0, positions, d + (long)h * positions * headSize, headSize);
        return x;
    }

    /// <summary>The decoder with a cache type; steps on the sessions' paths unless <paramref name="kernelRows"/> says (KernelStepTests).</summary>
    internal static InferenceOptions Options(string kvCacheType, int maxBatch = 6, int threads = 2, int kernelRows = 0)
    {
        var o = Fixture.CpuOptions(maxBatch);
        o.IntraOpThreads = threads;
        o.KvCacheType = kvCacheType;
        o.KernelStepRows = kernelRows;
        return o;
    }

    public static TheoryData<string, string, double> Packages()
    {
        var data = new TheoryData<string, string, double>();
        foreach (var (type, bound) in new[] { (KvCacheTypes.Float16, 0.02), (KvCacheTypes.Int8, 0.25) })
        {
            data.Add(Fixture.PackageDir, type, bound);   // head size 8: the portable loops
            data.Add(Path.Combine(Fixture.ShippedModelsDir, "fashion-mnist-14"), type, bound);  // head size 32: AVX-512 where the CPU has it
        }
        return data;
    }

    [Theory]
    [MemberData(nameof(Packages))]
    public void ACompressedCacheRunsEveryStepAsSegmentsAndDecodesLikeFloat32(string dir, string type, double bound)
    {
        using var fp32 = IGptModel.Load(dir, Options(KvCacheTypes.Float32));
        using var compressed = IGptModel.Load(dir, Options(type));
        var (a, b) = (fp32.Decoder, compressed.Decoder);
        var element = KvCacheTypes.Parse(type);
        Assert.Equal((KvElement.Float32, "float32"), (a.CacheElement, a.CacheType));
        Assert.Equal((element, type), (b.CacheElement, b.CacheType));
        Assert.Equal(element, b.Plan.CompressedCache);
        Assert.Equal((0, 0, 1), (b.Plan.SmallStepRows, b.Plan.LaneStepRows, b.Plan.SegmentedStepRows));
        // Fewer bytes per slot (fp16: half; int8: head_size + 4 of 4 x head_size), plus one fp32 slot for the prefill
        // graph; snapshots (the prefix cache) and the bytes a step reads per position shrink alike.
        var m = fp32.Manifest;
        var arch = m.Architecture;
        // int8 stores whole blocks of 16 positions: n_positions and a snapshot's 10 rounded up to 16.
        long entries = (long)arch.NHead * arch.NPositions, entry = element == KvElement.Int8 ? arch.HeadSize + 4 : 2 * arch.HeadSize;
        long stored = element == KvElement.Int8 ? (long)arch.NHead * ((arch.NPositions + 15) / 16 * 16) : entries;
        Assert.Equal(2L * arch.NLayer * 6 * entries * arch.HeadSize * 4, a.KvCacheBytes);
        Assert.Equal(2L * arch.NLayer * (6 * stored * entry + entries * arch.HeadSize * 4), b.KvCacheBytes);
        Assert.Equal(a.SnapshotBytes(element == KvElement.Int8 ? 16 : 10) / (4 * arch.HeadSize) * entry, b.SnapshotBytes(10));
        Assert.Equal(a.KvBytesPerPosition / (4 * arch.HeadSize) * entry, b.KvBytesPerPosition);

        int v = m.VocabSize, p = arch.NPositions;
        var rng = new Random(3);
        int[] Prompt(int n) => [m.SosTokenId, .. Enumerable.Range(1, n - 1).Select(_ => rng.Next(m.PaletteSize))];
        // Slots 0-2: one request's samples (prompt A); slot 3: prompt B; slots 4-5: prompt C restored from a snapshot.
        int lengthA = Math.Min(40, p / 2), lengthB = Math.Min(17, p / 3), lengthC = Math.Min(25, p / 3);
        var (promptA, promptB, promptC) = (Prompt(lengthA), Prompt(lengthB), Prompt(lengthC));
        foreach (var d in new[] { a, b })
        {
            var prefillA = d.Prefill(promptA, 1, 0).ToArray();
            d.ReplicateSlot0(3, lengthA);
            d.Prefill(promptB, 1, 3);
            d.Prefill(promptC, 2, 4);   // two rows of one prompt: one graph run, stored into both slots
            var snapshot = d.SaveSlot(4, lengthC);
            Assert.Equal(d.SnapshotBytes(lengthC), snapshot.Length);
            d.LoadSlots(snapshot, lengthC, 2, firstSlot: 4);
            if (d == b) DecoderTests.AssertClose(a.Prefill(promptA, 1, 0).ToArray(), prefillA, 1e-5, "prefill logits (the fp32 graph either way)");
        }
        a.ReplicateSlot0(3, lengthA);

        int[] groups = [0, 0, 0, 3, 4, 4], shared = [lengthA, lengthA, lengthA, lengthB, lengthC, lengthC];
        int[] positions = [lengthA, lengthA, lengthA, lengthB, lengthC, lengthC];
        var tokens = new int[6];
        int steps = Math.Min(24, p - lengthA - 4);
        double worst = 0;
        void Step(int rows, bool grouped)
        {
            for (int r = 0; r < rows; r++) tokens[r] = rng.Next(m.PaletteSize);
            var expected = grouped ? a.Step(rows, tokens, positions, groups, shared).ToArray() : a.Step(rows, tokens, positions).ToArray();
            var actual = grouped ? b.Step(rows, tokens, positions, groups, shared).ToArray() : b.Step(rows, tokens, positions).ToArray();
            for (int i = 0; i < rows * v; i++)
                if (expected[i] > -1e8f) worst = Math.Max(worst, Math.Abs(expected[i] - actual[i]));
            for (int r = 0; r < rows; r++) positions[r]++;
        }
        // Six rows, the shared prompt entries read once per group and every row on its own; then row 0 alone.
        for (int step = 0; step < steps; step++) Step(6, grouped: step % 2 == 0);
        for (int step = 0; step < 4; step++) Step(1, grouped: false);
        // fp16 keeps 11 significant bits, int8 about 8 of an entry's largest value: on these random tokens the logits
        // move by thousandths or hundredths, int8 on fashion-mnist-14 by up to 0.2 where attention runs on byte pairs
        // (a CPU without AVX-VNNI: the query's and weights' bytes are set by their pairs, Int8Blocks.AttendBytePairs; 0.054
        // with 8-bit queries). The shipped models' bounds on real images are in KvCacheQualityTests.
        Console.WriteLine($"{Path.GetFileName(dir)} {type}: largest logit difference from float32 {worst:G3}");
        Assert.True(worst < bound, $"largest logit difference from float32: {worst} (bound {bound})");
        Assert.True(worst > 0, "the compressed cache changed nothing: is it really compressed?");
        Assert.Equal(steps + 4, b.SegmentedSteps);   // one-row steps as well: the graph cannot read the cache
    }

    /// <summary>
    /// A model too big for row lanes runs one-row steps on the fp32 graph over the decoder's fp32 row, which mirrors slot 0:
    /// from a prefill, from slot 0's compressed entries when rows leave, and stored back into slot 0 before a multi-row
    /// step, a copy, a snapshot or a load touches it. Every step must decode like float32 through all of that.
    /// </summary>
    [Theory]
    [MemberData(nameof(Packages))]
    public void OneRowStepsOfABigModelRunTheGraphOverAnFp32RowAndStayInStepWithTheCompressedSlot(string dir, string type, double bound)
    {
        var options = Options(type);
        options.LaneMaxWeightBytes = 0;   // every model is "too big for lanes"
        using var fp32 = IGptModel.Load(dir, Options(KvCacheTypes.Float32));
        using var compressed = IGptModel.Load(dir, options);
        var (a, b) = (fp32.Decoder, compressed.Decoder);
        Assert.True(b.Plan.OneRowGraph);
        using (var small = IGptModel.Load(dir, Options(type)))
            Assert.False(small.Decoder.Plan.OneRowGraph, "the default limit keeps small models' one-row steps on segments");
        var m = fp32.Manifest;
        int v = m.VocabSize, p = m.Architecture.NPositions;
        var rng = new Random(5);
        int[] Prompt(int n) => [m.SosTokenId, .. Enumerable.Range(1, n - 1).Select(_ => rng.Next(m.PaletteSize))];
        int lengthA = Math.Min(30, p / 4), lengthB = Math.Min(12, p / 4);
        var (promptA, promptB) = (Prompt(lengthA), Prompt(lengthB));
        var positions = new int[3];
        var tokens = new int[3];
        double worst = 0;
        void Step(int rows)
        {
            for (int r = 0; r < rows; r++) tokens[r] = rng.Next(m.PaletteSize);
            var expected = a.Step(rows, tokens, positions).ToArray();
            var actual = b.Step(rows, tokens, positions).ToArray();
            for (int i = 0; i < rows * v; i++)
                if (expected[i] > -1e8f) worst = Math.Max(worst, Math.Abs(expected[i] - actual[i]));
            for (int r = 0; r < rows; r++) positions[r]++;
        }
        foreach (var d in new[] { a, b }) d.Prefill(promptA, 1, 0);
        positions[0] = lengthA;
        for (int i = 0; i < 3; i++) Step(1);                       // the mirror from the prefill
        foreach (var d in new[] { a, b }) d.ReplicateSlot0(2, positions[0]);   // slot 0 read: its new entries stored first
        positions[1] = positions[0];
        foreach (var d in new[] { a, b }) d.Prefill(promptB, 1, 2);   // the prefill overwrites the fp32 row
        positions[2] = lengthB;
        for (int i = 0; i < 3; i++) Step(3);                       // segments
        Assert.Equal(3, b.SegmentedSteps);
        for (int i = 0; i < 3; i++) Step(1);                       // the mirror decoded from slot 0
        var snapshot = new[] { a, b }.Select(d => d.SaveSlot(0, positions[0])).ToArray();
        for (int i = 0; i < 2; i++) Step(1);
        foreach (var d in new[] { a, b }) d.CopySlot(2, 0, positions[2]);   // slot 0 overwritten: the mirror ends
        positions[0] = positions[2];
        for (int i = 0; i < 2; i++) Step(1);
        a.LoadSlots(snapshot[0], positions[1] + 3, 1, 0);             // back to row A's state after its 3 one-row steps
        b.LoadSlots(snapshot[1], positions[1] + 3, 1, 0);
        positions[0] = positions[1] + 3;
        for (int i = 0; i < 3; i++) Step(1);
        Step(2);
        Console.WriteLine($"{Path.GetFileName(dir)} {type}, one-row graph steps: largest logit difference from float32 {worst:G3}");
        Assert.True(worst < bound, $"largest logit difference from float32: {worst} (bound {bound})");
        Assert.Equal(4, b.SegmentedSteps);   // only the multi-row steps
    }

    /// <summary>
    /// Records what the decoder graph's own path would need for an fp16 cache: ONNX Runtime's CPU GroupQueryAttention reads
    /// and writes an fp16 past/present under fp32 query, key and value (tests/fixtures/gqa-fp16-cache). The shipped graphs
    /// declare their past/present fp32, so a compressed cache runs every step as segments until the exporter writes a
    /// graph with fp16 past/present (benchmarks/README.md, "Compressed KV cache").
    /// </summary>
    [Fact]
    public void OnnxRuntimesCpuGroupQueryAttentionReadsAnFp16CacheUnderAnFp32Graph()
    {
        const int heads = 4, d = 32, length = 16, past = 9;
        var rng = new Random(11);
        float[] Random(int n) => Enumerable.Range(0, n).Select(_ => (float)rng.NextDouble() - 0.5f).ToArray();
        var (q, k, v) = (Random(heads * d), Random(heads * d), Random(heads * d));
        var (pastKeys, pastValues) = (Random(heads * length * d), Random(heads * length * d));
        Microsoft.ML.OnnxRuntime.Float16[] Halves(float[] x) => x.Select(a => new Microsoft.ML.OnnxRuntime.Float16(BitConverter.HalfToUInt16Bits((Half)a))).ToArray();
        using var session = new Microsoft.ML.OnnxRuntime.InferenceSession(Path.Combine(AppContext.BaseDirectory, "fixtures", "gqa-fp16-cache", "gqa.fp16-cache.onnx"));
        using var run = new Microsoft.ML.OnnxRuntime.RunOptions();
        var inputs = new Dictionary<string, Microsoft.ML.OnnxRuntime.OrtValue>
        {
            ["query"] = Microsoft.ML.OnnxRuntime.OrtValue.CreateTensorValueFromMemory(q, [1, 1, heads * d]),
            ["key"] = Microsoft.ML.OnnxRuntime.OrtValue.CreateTensorValueFromMemory(k, [1, 1, heads * d]),
            ["value"] = Microsoft.ML.OnnxRuntime.OrtValue.CreateTensorValueFromMemory(v, [1, 1, heads * d]),
            ["past_key"] = Microsoft.ML.OnnxRuntime.OrtValue.CreateTensorValueFromMemory(Halves(pastKeys), [1, heads, length, d]),
            ["past_value"] = Microsoft.ML.OnnxRuntime.OrtValue.CreateTensorValueFromMemory(Halves(pastValues), [1, heads, length, d]),
            ["seqlens_k"] = Microsoft.ML.OnnxRuntime.OrtValue.CreateTensorValueFromMemory(new[] { past }, [1]),   // the new token at position 9
            ["total_sequence_length"] = Microsoft.ML.OnnxRuntime.OrtValue.CreateTensorValueFromMemory(new[] { past + 1 }, [1]),
        };
        try
        {
            using var outputs = session.Run(run, inputs, ["output", "present_key"]);
            Assert.Equal(Microsoft.ML.OnnxRuntime.Tensors.TensorElementType.Float16, outputs[1].GetTensorTypeAndShape().ElementDataType);
            var output = outputs[0].GetTensorDataAsSpan<float>().ToArray();
            for (int h = 0; h < heads; h++)
            {
                // Positions 0..8 from the fp16 past, 9 the new key and value (stored as fp16 too).
                float Key(int t, int i) => Round(t < past ? pastKeys[(h * length + t) * d + i] : k[h * d + i]);
                float Value(int t, int i) => Round(t < past ? pastValues[(h * length + t) * d + i] : v[h * d + i]);
                var s = Enumerable.Range(0, past + 1).Select(t => Enumerable.Range(0, d).Sum(i => (double)q[h * d + i] * Key(t, i)) / Math.Sqrt(d)).ToArray();
                double max = s.Max(), sum = s.Sum(x => Math.Exp(x - max));
                for (int i = 0; i < d; i++)
                {
                    double expected = Enumerable.Range(0, past + 1).Sum(t => Math.Exp(s[t] - max) / sum * Value(t, i));
                    Assert.True(Math.Abs(expected - output[h * d + i]) < 1e-3, $"head {h} [{i}]: {expected} vs {output[h * d + i]}");
                }
            }
        }
        finally
        {
            foreach (var value in inputs.Values) value.Dispose();
        }
    }

    [Fact]
    public void APackageWithoutStepSegmentsKeepsAFloat32Cache()
    {
        string dir = Fixture.CopyToTemp(out var root);
        try
        {
            var path = Path.Combine(dir, "model.json");
            var manifest = JsonNode.Parse(File.ReadAllText(path))!;
            manifest["files"]!["decoder"]!["cpu"]!.AsObject().Remove("step_segments");
            File.WriteAllText(path, manifest.ToJsonString());
            using var model = IGptModel.Load(dir, Options(KvCacheTypes.Float16));
            Assert.Equal("float32", model.Decoder.CacheType);
            Assert.Null(model.Decoder.Plan.CompressedCache);
            var parity = Fixture.ReadParity(dir);
            DecoderTests.AssertPrefillAndDecodeMatch(model.Decoder, parity, "");
        }
        finally
        {
            Directory.Delete(root, recursive: true);
        }
    }

    [Fact]
    public void KvCacheTypeIsValidatedLikeTheOtherSettings()
    {
        Assert.Equal(KvCacheTypes.Default, new InferenceOptions().KvCacheType);
        var o = Fixture.CpuOptions();
        o.KvCacheType = "float8";
        var errors = SettingsValidator<InferenceOptions>.Errors(o, InferenceOptions.SectionName);
        Assert.Contains(errors, e => e.Contains("Inference:KvCacheType") && e.Contains("float16") && e.Contains("int8"));
        Assert.Contains("Inference:KvCacheType", Assert.Throws<ArgumentException>(() => IGptModel.Load(Fixture.PackageDir, o)).Message);
        o.KvCacheType = "Float16";  // the values are exact, as a typo in a config file should not pass
        Assert.NotEmpty(SettingsValidator<InferenceOptions>.Errors(o, InferenceOptions.SectionName));
        o.KvCacheType = KvCacheTypes.Float16;
        o.Validate();
        o.SegmentedStepRows = 0;   // only the segments read a compressed cache
        var error = Assert.Throws<ArgumentException>(o.Validate).Message;
        Assert.Contains("Inference:KvCacheType", error);
        Assert.Contains("Inference:SegmentedStepRows", error);
    }

    [Fact]
    public void PairScaledQuantizationIsTheScalarRuleForEveryHeadSize()
    {
        var rng = new Random(11);
        foreach (int d in new[] { 2, 16, 32, 48, 64, 128 })
            for (int trial = 0; trial < 200; trial++)
            {
                float[] x = Enumerable.Range(0, d).Select(_ => (float)((rng.NextDouble() - 0.5) * Math.Pow(10, rng.Next(-3, 3)))).ToArray();
                if (trial == 0) Array.Clear(x);   // an all-zero entry: scale 0
                var q = new sbyte[d];
                float scale;
                fixed (float* px = x)
                fixed (sbyte* pq = q)
                    scale = KvCodec.QuantizeInt8(px, pq, d, pairs: true);
                float max = 0;
                for (int i = 0; i < d; i += 2) max = MathF.Max(max, MathF.Abs(x[i]) + MathF.Abs(x[i + 1]));
                Assert.Equal(max / 127f, scale);
                float inverse = max > 0 ? 127f / max : 0f;
                for (int i = 0; i < d; i++)
                {
                    Assert.Equal((sbyte)Math.Clamp((int)MathF.Round(x[i] * inverse, MidpointRounding.ToEven), -127, 127), q[i]);
                    if (i % 2 == 1) Assert.True(Math.Abs(q[i - 1]) + Math.Abs(q[i]) <= 128, $"d {d}: pair {i / 2} sums to more than 128");
                }
            }
    }
}
