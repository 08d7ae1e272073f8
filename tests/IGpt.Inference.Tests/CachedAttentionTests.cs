namespace IGpt.Inference.Tests;

/// <summary>The library's attention kernel against a double-precision reference, head sizes with and without the AVX-512 path.</summary>
public unsafe class CachedAttentionTests
{
    [Theory]
    [InlineData(8, false)]
    [InlineData(16, true)]
    [InlineData(32, true)]
    [InlineData(48, true)]
    [InlineData(64, true)]   // iGPT-S and the 512-wide benchmark model: the general 16-key reduction
    [InlineData(96, true)]   // iGPT-L
    [InlineData(64, false)]
    public void AttentionMatchesTheReferenceWithSharedAndOwnEntries(int headSize, bool vectorized)
    {
        vectorized &= CachedAttention.CanVectorize(headSize);
        const int heads = 3, positions = 70, rows = 4, shared = 37;
        int embd = heads * headSize;
        var rng = new Random(headSize);
        var keys = new float[rows * heads * positions * headSize];
        var values = new float[keys.Length];
        for (int i = 0; i < keys.Length; i++) (keys[i], values[i]) = ((float)rng.NextDouble() - 0.5f, (float)rng.NextDouble() - 0.5f);
        // Rows 0, 1 and 3 are one request's samples: identical entries at positions 0..shared-1. Row 2 is alone.
        int Index(int row, int head, int pos) => ((row * heads + head) * positions + pos) * headSize;
        foreach (int r in new[] { 1, 3 })
            for (int h = 0; h < heads; h++)
            {
                Array.Copy(keys, Index(0, h, 0), keys, Index(r, h, 0), shared * headSize);
                Array.Copy(values, Index(0, h, 0), values, Index(r, h, 0), shared * headSize);
            }
        var qkv = new float[rows * 3 * embd];
        for (int i = 0; i < qkv.Length; i++) qkv[i] = (float)rng.NextDouble() * 2 - 1;
        int[] position = [shared + 20, shared + 5, 60, shared], groups = [0, 0, 2, 0], sharedLengths = [shared, shared, 0, shared];

        // Reference: write the new entries, then softmax(q.k / sqrt(d)) v over positions 0..position, in double.
        var refKeys = (float[])keys.Clone();
        var refValues = (float[])values.Clone();
        for (int r = 0; r < rows; r++)
            for (int h = 0; h < heads; h++)
            {
                Array.Copy(qkv, r * 3 * embd + embd + h * headSize, refKeys, Index(r, h, position[r]), headSize);
                Array.Copy(qkv, r * 3 * embd + 2 * embd + h * headSize, refValues, Index(r, h, position[r]), headSize);
            }
        var expected = ReferenceAttention.Expected(qkv, refKeys, refValues, rows, heads, headSize, positions, position);

        foreach (bool grouped in new[] { true, false })
        {
            var k = (float[])keys.Clone();
            var v = (float[])values.Clone();
            var output = new float[rows * embd];
            using var attention = new CachedAttention(heads, headSize, positions, rows, lanes: 2, vectorized);
            attention.CheckGroups(rows, position, grouped ? groups : [], grouped ? sharedLengths : []);
            // Two lanes, as a segmented step splits its rows: rows 0-1 and 2-3 (the group is split between them).
            attention.Plan(0, 0, 2, position, grouped ? groups : [], grouped ? sharedLengths : []);
            attention.Plan(1, 2, 2, position, grouped ? groups : [], grouped ? sharedLengths : []);
            fixed (float* pq = qkv, pk = k, pv = v, po = output)
            {
                attention.Run(0, pq, pk, pv, po);
                attention.Run(1, pq, pk, pv, po);
            }
            for (int i = 0; i < expected.Length; i++)
                Assert.True(Math.Abs(expected[i] - output[i]) < 2e-5, $"grouped {grouped}, output {i}: {expected[i]} vs {output[i]}");
            Assert.Equal(refKeys, k);
            Assert.Equal(refValues, v);
        }
    }

    /// <summary>
    /// A group whose shared prompt is shorter than <see cref="CachedAttention.GroupFromSharedLength"/> (unconditional samples share
    /// only SOS) is planned as its rows alone: an item per row and head, and the same outputs as rows given no group.
    /// </summary>
    [Theory]
    [InlineData("float32")]
    [InlineData("int8")]
    public void AGroupSharingLessThanABlockIsPlannedAsRowsAlone(string type)
    {
        var element = KvCacheTypes.Parse(type);
        const int heads = 2, headSize = 32, positions = 64, rows = 3;
        bool vectorized = CachedAttention.CanVectorize(headSize);
        var rng = new Random(5);
        var qkv = new float[rows * 3 * heads * headSize];
        for (int i = 0; i < qkv.Length; i++) qkv[i] = (float)rng.NextDouble() * 2 - 1;
        // Every entry written through the codec, as a cache holds it: keys, then values.
        var x = new float[rows * heads * positions * headSize];
        byte[] Part(KvPart part)
        {
            for (int i = 0; i < x.Length; i++) x[i] = (float)rng.NextDouble() * 2 - 1;
            return KvCacheCompressionTests.Encode(element, part, x, headSize, positions);
        }
        byte[] cache = [.. Part(KvPart.Key), .. Part(KvPart.Value)];
        long bytes = cache.Length / 2;
        int[] position = [40, 33, 50], groups = [0, 0, 0];
        float[] Run(int sharedLength, out int items, out int perGroup)
        {
            var c = (byte[])cache.Clone();
            var output = new float[rows * heads * headSize];
            using var attention = new CachedAttention(heads, headSize, positions, rows, lanes: 1, vectorized, element);
            int[] shared = sharedLength < 0 ? [] : [sharedLength, sharedLength, sharedLength];
            attention.CheckGroups(rows, position, sharedLength < 0 ? [] : groups, shared);
            attention.Plan(0, 0, rows, position, sharedLength < 0 ? [] : groups, shared);
            items = attention.Items(0);
            perGroup = attention.ItemsPerGroup;   // a head an item, or two for the one-pass int8 kernels
            fixed (float* pq = qkv, po = output)
            fixed (byte* pc = c)
                attention.Run(0, pq, pc, pc + bytes, po);
            return output;
        }
        var alone = Run(-1, out int aloneItems, out int perGroup);
        var sharingSos = Run(1, out int sosItems, out _);
        var sharingABlock = Run(CachedAttention.GroupFromSharedLength, out int blockItems, out _);
        Assert.Equal(rows * perGroup, aloneItems);
        Assert.Equal(rows * perGroup, sosItems);
        Assert.Equal(perGroup, blockItems);
        Assert.Equal(alone, sharingSos);
    }
}
