namespace IGpt.Inference.Generation;

/// <summary>
/// How the next pixel is chosen. Temperature 0 is greedy decoding, as in vLLM and the OpenAI API: the argmax
/// (ties to the lowest index), so TopK, TopP and the random generator make no difference. TopK 0 = off;
/// TopP in (0, 1], 1 = off.
/// </summary>
public sealed record SamplingOptions(float Temperature = 1, int TopK = 0, float TopP = 1)
{
    public static SamplingOptions Default { get; } = new();
    public static SamplingOptions Greedy { get; } = new(Temperature: 0);

    /// <summary>Throws <see cref="ArgumentException"/> naming the bad value.</summary>
    public void Validate()
    {
        // IsNegative also refuses -0, so that every negative input (even one that rounds to -0) is an error.
        if (!float.IsFinite(Temperature) || float.IsNegative(Temperature) || Temperature > 100)
            throw new ArgumentException($"temperature must be 0..100 (0 = greedy), got {Temperature}");
        if (TopK < 0) throw new ArgumentException($"top_k must be >= 0 (0 = off), got {TopK}");
        if (!(TopP > 0 && TopP <= 1)) throw new ArgumentException($"top_p must be in (0, 1], got {TopP}");
    }
}

/// <summary>
/// A small, fixed pseudo-random generator (xoshiro256**, seeded with splitmix64) so that a seed gives
/// the same images on every .NET version and machine, unlike System.Random.
/// Row i of a request with seed s is seeded from splitmix64 over (s, i): see <see cref="ForRow"/>.
/// </summary>
public struct Xoshiro256StarStar
{
    private ulong _s0, _s1, _s2, _s3;

    public Xoshiro256StarStar(ulong seed)
    {
        ulong x = seed;
        _s0 = SplitMix64(ref x);
        _s1 = SplitMix64(ref x);
        _s2 = SplitMix64(ref x);
        _s3 = SplitMix64(ref x);
    }

    /// <summary>The generator of one sample: state from splitmix64(seed) mixed with the sample index.</summary>
    public static Xoshiro256StarStar ForRow(ulong seed, int sampleIndex)
    {
        ulong x = seed;
        ulong a = SplitMix64(ref x);
        ulong y = a ^ (0xD1B54A32D192ED03UL * (ulong)(sampleIndex + 1));
        return new Xoshiro256StarStar(SplitMix64(ref y));
    }

    public static ulong SplitMix64(ref ulong x)
    {
        ulong z = x += 0x9E3779B97F4A7C15UL;
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
        return z ^ (z >> 31);
    }

    public ulong NextUInt64()
    {
        ulong result = ulong.RotateLeft(_s1 * 5, 7) * 9;
        ulong t = _s1 << 17;
        _s2 ^= _s0;
        _s3 ^= _s1;
        _s1 ^= _s2;
        _s0 ^= _s3;
        _s2 ^= t;
        _s3 = ulong.RotateLeft(_s3, 45);
        return result;
    }

    /// <summary>Uniform in [0, 1) with 53 random bits.</summary>
    public double NextDouble() => (NextUInt64() >> 11) * (1.0 / (1UL << 53));
}

/// <summary>
/// Picks one token from a row of logits, in the order of training/igpt/sample.py: temperature
/// (&lt;= 0: greedy, the argmax without a draw), top-k (ties with the k-th kept), top-p (descending probability, ties by index;
/// a token is kept while the mass before it is &lt; p), then one uniform draw against the cumulative
/// distribution in palette order. Only the first <c>paletteSize</c> columns are candidates (SOS never is).
/// One instance per thread: it reuses its scratch buffers, so picking allocates nothing.
/// </summary>
public sealed class Sampler
{
    private readonly int _paletteSize;
    private readonly float[] _scaled;
    private readonly float[] _probs;
    private readonly ulong[] _order;

    public Sampler(int paletteSize)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(paletteSize, 1);
        _paletteSize = paletteSize;
        _scaled = new float[paletteSize];
        _probs = new float[paletteSize];
        _order = new ulong[paletteSize];
    }

    public int PaletteSize => _paletteSize;

    public int Pick(ReadOnlySpan<float> logits, SamplingOptions options, ref Xoshiro256StarStar rng)
    {
        if (logits.Length < _paletteSize) throw new ArgumentException($"logits has {logits.Length} columns; the palette needs {_paletteSize}");
        var row = logits[.._paletteSize];
        if (options.Temperature <= 0) return ArgMax(row);

        int v = _paletteSize;
        var scaled = _scaled.AsSpan();
        float largest = float.NegativeInfinity;
        for (int i = 0; i < v; i++)
        {
            scaled[i] = row[i] / options.Temperature;
            if (scaled[i] > largest) largest = scaled[i];
        }
        // A temperature just above 0 can overflow the largest logits to +inf, where softmax gives NaN (and the draw
        // would always take token 0). Such a temperature is the greedy limit, so it is decoded greedily.
        if (float.IsPositiveInfinity(largest)) return ArgMax(row);

        if (options.TopK > 0 && options.TopK < v)
        {
            var sorted = _probs.AsSpan();  // scratch
            scaled.CopyTo(sorted);
            sorted.Sort();                 // ascending: the k-th largest is at v - k
            float kth = sorted[v - options.TopK];
            for (int i = 0; i < v; i++)
                if (scaled[i] < kth) scaled[i] = float.NegativeInfinity;
        }

        var probs = _probs.AsSpan();
        Softmax(scaled, probs);

        if (options.TopP > 0 && options.TopP < 1)
            KeepNucleus(probs, options.TopP);  // Draw renormalizes what is kept

        return Draw(probs, rng.NextDouble());
    }

    /// <summary>
    /// The colour whose share of the cumulative distribution (in palette order) holds u in [0, 1); the probabilities
    /// need not sum to 1 (u is scaled by their sum).
    /// </summary>
    internal static int Draw(ReadOnlySpan<float> probs, double u)
    {
        double total = 0;
        for (int i = 0; i < probs.Length; i++) total += probs[i];
        double target = u * total, cdf = 0;
        int lastNonZero = 0;
        for (int i = 0; i < probs.Length; i++)
        {
            cdf += probs[i];
            if (cdf > target) return i;
            if (probs[i] > 0) lastNonZero = i;
        }
        return lastNonZero;
    }

    /// <summary>
    /// Top-p: in order of descending probability (ties by ascending index), a colour is dropped (its probability set
    /// to 0) once the colours before it hold at least <paramref name="topP"/>; the first is always kept.
    /// Only the colours that can be kept are sorted: grouped by their probability's binary exponent (one pass), the
    /// groups from the most probable down until they hold topP, and every colour in them (usually a few dozen of
    /// 512). Every colour outside comes after all of them in that order, so once their float sum in order reaches
    /// topP (checked; else the whole palette is sorted) it is dropped exactly as a sort of the whole palette would
    /// drop it: the same colours kept, the same images for a seed, without sorting 512 colours a row (benchmarks/README.md,
    /// "CUDA", for what that saved).
    /// </summary>
    private void KeepNucleus(Span<float> probs, float topP)
    {
        int v = probs.Length;
        Span<double> mass = stackalloc double[256];
        mass.Clear();
        for (int i = 0; i < v; i++)
            mass[(int)((BitConverter.SingleToUInt32Bits(probs[i]) >> 23) & 0xFF)] += probs[i];  // the exponent (the sign is never set)
        int lowest = 255;
        double held = 0;
        while (lowest > 0 && held + mass[lowest] < topP) held += mass[lowest--];
        uint floorBits = (uint)lowest << 23;  // the smallest probability's bits in the lowest group taken

        var candidates = SortedFrom(probs, floorBits);
        float before = 0;
        foreach (ulong key in candidates)
            before += probs[(int)(key & 0xFFFFFFFF)];
        if (candidates.Length < v && !(before >= topP))
        {
            floorBits = 0;  // the float sum in order fell short of the double one: rare; sort the whole palette
            candidates = SortedFrom(probs, floorBits);
        }
        before = 0;
        for (int j = 0; j < candidates.Length; j++)
        {
            int i = (int)(candidates[j] & 0xFFFFFFFF);
            float p = probs[i];
            if (j > 0 && before >= topP) probs[i] = 0;
            before += p;
        }
        if (candidates.Length == v) return;
        for (int i = 0; i < v; i++)
            if (BitConverter.SingleToUInt32Bits(probs[i]) < floorBits) probs[i] = 0;
    }

    /// <summary>
    /// The colours whose probability's bits are at least <paramref name="floorBits"/>, as (~bits, index) keys sorted
    /// ascending: descending probability, ties by ascending index (for probabilities >= 0 the float bits order like
    /// the values).
    /// </summary>
    private Span<ulong> SortedFrom(ReadOnlySpan<float> probs, uint floorBits)
    {
        var order = _order.AsSpan();
        int n = 0;
        for (int i = 0; i < probs.Length; i++)
        {
            uint bits = BitConverter.SingleToUInt32Bits(probs[i]);
            if (bits >= floorBits) order[n++] = ((ulong)~bits << 32) | (uint)i;
        }
        var sorted = order[..n];
        sorted.Sort();
        return sorted;
    }

    /// <summary>Index of the largest value, ties to the lowest index.</summary>
    public static int ArgMax(ReadOnlySpan<float> values)
    {
        int best = 0;
        float bestValue = values[0];
        for (int i = 1; i < values.Length; i++)
            if (values[i] > bestValue) { bestValue = values[i]; best = i; }
        return best;
    }

    /// <summary>softmax in float32; -inf entries get probability 0.</summary>
    public static void Softmax(ReadOnlySpan<float> logits, Span<float> probs)
    {
        float max = float.NegativeInfinity;
        for (int i = 0; i < logits.Length; i++) if (logits[i] > max) max = logits[i];
        float sum = 0;
        for (int i = 0; i < logits.Length; i++)
        {
            float e = MathF.Exp(logits[i] - max);
            probs[i] = e;
            sum += e;
        }
        float inv = 1f / sum;
        for (int i = 0; i < logits.Length; i++) probs[i] *= inv;
    }
}
