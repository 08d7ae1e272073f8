namespace IGpt.Inference.Tests;

public class SamplerTests
{
    private static readonly float[] Logits = [1.0f, 3.0f, 2.0f, 3.0f, -1.0f, 0.5f, 1e9f]; // last column = "SOS"

    [Fact]
    public void SplitMixAndXoshiroAreTheDocumentedGenerators()
    {
        ulong x = 0;
        Assert.Equal(0xE220A8397B1DCDAFUL, Xoshiro256StarStar.SplitMix64(ref x));
        var a = Xoshiro256StarStar.ForRow(42, 3);
        var b = Xoshiro256StarStar.ForRow(42, 3);
        var c = Xoshiro256StarStar.ForRow(42, 4);
        ulong a1 = a.NextUInt64();
        Assert.Equal(a1, b.NextUInt64());
        Assert.NotEqual(a1, c.NextUInt64());
        for (int i = 0; i < 1000; i++) Assert.InRange(a.NextDouble(), 0.0, 0.9999999999999999);
    }

    [Fact]
    public void GreedyTakesTheFirstMaximumAndNeverSos()
    {
        var sampler = new Sampler(6);
        var rng = new Xoshiro256StarStar(1);
        Assert.Equal(1, sampler.Pick(Logits, SamplingOptions.Greedy, ref rng));
    }

    [Fact]
    public void TemperatureZeroIsTheArgMaxWhateverTheSeedTopKAndTopP()
    {
        var sampler = new Sampler(6);
        float[] logits = [0.5f, -2f, 4f, 3.9f, 1f, 0f, 1e9f];
        var options = new[] { SamplingOptions.Greedy, new SamplingOptions(0f, TopK: 3), new SamplingOptions(0f, TopP: 0.2f), new SamplingOptions(0f, 2, 0.5f) };
        foreach (var o in options) o.Validate();
        for (ulong seed = 0; seed < 50; seed++)
        {
            var rng = Xoshiro256StarStar.ForRow(seed, 0);
            foreach (var o in options) Assert.Equal(2, sampler.Pick(logits, o, ref rng));
        }
    }

    [Theory]
    [InlineData(1e-30f)]
    [InlineData(1e-39f)]           // subnormal: 3 / t overflows to +inf
    [InlineData(float.Epsilon)]
    public void TemperaturesJustAbove0DrawOnlyTheLargestLogits(float temperature)
    {
        var sampler = new Sampler(6);
        var options = new SamplingOptions(temperature);
        options.Validate();
        var rng = new Xoshiro256StarStar(21);
        var seen = new HashSet<int>();
        for (int i = 0; i < 200; i++) seen.Add(sampler.Pick(Logits, options, ref rng));
        Assert.Subset(new HashSet<int> { 1, 3 }, seen);  // tokens 1 and 3 share the largest logit, 3.0
    }

    [Fact]
    public void SosIsNeverSampled()
    {
        var sampler = new Sampler(6);
        var rng = new Xoshiro256StarStar(5);
        for (int i = 0; i < 2000; i++)
            Assert.InRange(sampler.Pick(Logits, new SamplingOptions(Temperature: 5f), ref rng), 0, 5);
    }

    [Fact]
    public void TopKKeepsTiesWithTheKthAndRemovesTheRest()
    {
        var sampler = new Sampler(6);
        var rng = new Xoshiro256StarStar(9);
        var seen = new HashSet<int>();
        // k = 1: the largest value 3.0 is shared by tokens 1 and 3, so both survive.
        for (int i = 0; i < 500; i++) seen.Add(sampler.Pick(Logits, new SamplingOptions(1f, TopK: 1), ref rng));
        Assert.Equal([1, 3], seen.Order());
        seen.Clear();
        for (int i = 0; i < 2000; i++) seen.Add(sampler.Pick(Logits, new SamplingOptions(10f, TopK: 3), ref rng));
        Assert.Equal([1, 2, 3], seen.Order());
    }

    [Fact]
    public void TopPKeepsTheSmallestPrefixReachingP()
    {
        var sampler = new Sampler(4);
        float[] logits = [MathF.Log(0.5f), MathF.Log(0.3f), MathF.Log(0.15f), MathF.Log(0.05f)];
        var rng = new Xoshiro256StarStar(3);
        var seen = new HashSet<int>();
        for (int i = 0; i < 2000; i++) seen.Add(sampler.Pick(logits, new SamplingOptions(1f, TopP: 0.45f), ref rng));
        Assert.Equal([0], seen.Order());  // the mass before token 1 is 0.5, not < 0.45
        seen.Clear();
        for (int i = 0; i < 2000; i++) seen.Add(sampler.Pick(logits, new SamplingOptions(1f, TopP: 0.7f), ref rng));
        Assert.Equal([0, 1], seen.Order());
        seen.Clear();
        for (int i = 0; i < 4000; i++) seen.Add(sampler.Pick(logits, new SamplingOptions(1f, TopP: 0.81f), ref rng));
        Assert.Equal([0, 1, 2], seen.Order());
    }

    [Fact]
    public void FrequenciesFollowTheTemperedSoftmax()
    {
        var sampler = new Sampler(3);
        float[] logits = [0f, MathF.Log(2f), MathF.Log(5f)];   // probabilities 1/8, 2/8, 5/8
        var counts = new int[3];
        var rng = new Xoshiro256StarStar(11);
        const int n = 40000;
        for (int i = 0; i < n; i++) counts[sampler.Pick(logits, SamplingOptions.Default, ref rng)]++;
        Assert.InRange(counts[0] / (double)n, 0.115, 0.135);
        Assert.InRange(counts[1] / (double)n, 0.24, 0.26);
        Assert.InRange(counts[2] / (double)n, 0.615, 0.635);
        // Temperature 2 flattens: p ~ sqrt of the ratios 1 : 1.414 : 2.236.
        Array.Clear(counts);
        for (int i = 0; i < n; i++) counts[sampler.Pick(logits, new SamplingOptions(2f), ref rng)]++;
        Assert.InRange(counts[0] / (double)n, 0.2, 0.22);
    }

    [Fact]
    public void SameSeedSameSequence()
    {
        var sampler = new Sampler(6);
        var opts = new SamplingOptions(1.5f, TopK: 4, TopP: 0.9f);
        var r1 = Xoshiro256StarStar.ForRow(77, 0);
        var r2 = Xoshiro256StarStar.ForRow(77, 0);
        for (int i = 0; i < 200; i++) Assert.Equal(sampler.Pick(Logits, opts, ref r1), sampler.Pick(Logits, opts, ref r2));
    }

    [Theory]
    [InlineData(-1f, 0, 1f)]
    [InlineData(-0f, 0, 1f)]
    [InlineData(1f, -1, 1f)]
    [InlineData(1f, 0, 0f)]
    [InlineData(1f, 0, 1.5f)]
    [InlineData(float.NaN, 0, 1f)]
    public void InvalidOptionsAreRejected(float temperature, int topK, float topP) =>
        Assert.Throws<ArgumentException>(() => new SamplingOptions(temperature, topK, topP).Validate());
    /// <summary>The top-p rule as the whole-palette sort writes it, the sampler's before its nucleus prefilter.</summary>
    private static int PickSortingEveryColour(ReadOnlySpan<float> logits, int v, SamplingOptions o, ref Xoshiro256StarStar rng)
    {
        var scaled = new float[v];
        for (int i = 0; i < v; i++) scaled[i] = logits[i] / o.Temperature;
        var probs = new float[v];
        Sampler.Softmax(scaled, probs);
        var order = new ulong[v];
        for (int i = 0; i < v; i++) order[i] = ((ulong)~BitConverter.SingleToUInt32Bits(probs[i]) << 32) | (uint)i;
        Array.Sort(order);
        var kept = (float[])probs.Clone();
        float before = 0;
        for (int j = 0; j < v; j++)
        {
            int i = (int)(order[j] & 0xFFFFFFFF);
            if (j > 0 && before >= o.TopP) kept[i] = 0;
            before += probs[i];
        }
        return Sampler.Draw(kept, rng.NextDouble());
    }

    [Theory]
    [InlineData(512)]
    [InlineData(16)]
    [InlineData(3)]
    public void TopPKeepsWhatSortingEveryColourKeeps(int v)
    {
        // Logits of every shape a model gives: peaked, flat, tied in runs, with colours far below the rest
        // (probabilities 0 and subnormal); temperatures and top_p from tiny to nearly 1. Same seed, same pick.
        var sampler = new Sampler(v);
        var source = new Random(5);
        float[] topPs = [1e-6f, 0.05f, 0.5f, 0.9f, 0.95f, 0.999f, 0.9999999f];
        int draws = 0;
        for (int shape = 0; shape < 400; shape++)
        {
            var logits = new float[v + 1];
            float spread = (float)Math.Pow(10, source.NextDouble() * 4 - 2);
            for (int i = 0; i < v; i++)
            {
                logits[i] = shape % 4 == 0 ? MathF.Round((float)source.NextDouble() * 4) : (float)(source.NextDouble() * spread);
                if (shape % 5 == 0 && i % 7 == 0) logits[i] -= 200;   // below the rest: probability 0 or subnormal
            }
            logits[v] = 1e9f;  // SOS
            foreach (float topP in topPs)
            {
                var o = new SamplingOptions((float)(0.1 + source.NextDouble() * 2), 0, topP);
                ulong seed = (ulong)source.NextInt64();
                var a = Xoshiro256StarStar.ForRow(seed, 0);
                var b = Xoshiro256StarStar.ForRow(seed, 0);
                Assert.Equal(PickSortingEveryColour(logits, v, o, ref b), sampler.Pick(logits, o, ref a));
                draws++;
            }
        }
        Assert.Equal(400 * 7, draws);
    }
}
