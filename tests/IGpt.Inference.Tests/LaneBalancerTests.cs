namespace IGpt.Inference.Tests;

/// <summary>
/// <see cref="LaneBalancer"/>, which splits a kernel step's rows alone between its row lanes: every row in exactly one
/// lane, each lane's rows in slot order, no lane empty while there are rows for it, and the lanes' work within one row's of
/// each other (the longest-first rule's bound).
/// </summary>
public class LaneBalancerTests
{
    private static long[] Loads(LaneBalancer b, int lanes, int[] positions, long rowCost)
    {
        var loads = new long[lanes];
        for (int lane = 0; lane < lanes; lane++)
            for (int i = b.Start[lane]; i < b.Start[lane + 1]; i++) loads[lane] += positions[b.Order[i]] + 1 + rowCost;
        return loads;
    }

    [Fact]
    public void EveryRowGoesToOneLaneAndTheLanesEndWithinOneRowOfEachOther()
    {
        var rng = new Random(5);
        for (int trial = 0; trial < 2000; trial++)
        {
            int lanes = rng.Next(1, 5), rows = rng.Next(1, 17);
            long rowCost = rng.Next(0, 1000);
            var positions = Enumerable.Range(0, rows).Select(_ => rng.Next(0, 1024)).ToArray();
            var b = new LaneBalancer(16, lanes);
            b.Balance(positions, rowCost);

            Assert.Equal(0, b.Start[0]);
            Assert.Equal(rows, b.Start[lanes]);
            Assert.Equal(Enumerable.Range(0, rows), b.Order.Take(rows).Order());
            var loads = Loads(b, lanes, positions, rowCost);
            for (int lane = 0; lane < lanes; lane++)
            {
                var mine = b.Order[b.Start[lane]..b.Start[lane + 1]];
                Assert.Equal(mine.Order(), mine);   // slot order within a lane
                if (rows >= lanes) Assert.NotEmpty(mine);
            }
            long largest = positions.Max() + 1 + rowCost;
            Assert.True(loads.Max() <= loads.Min() + largest, $"trial {trial}: loads {string.Join(", ", loads)}, largest row {largest}");
        }
    }

    [Fact]
    public void SixteenStaggeredRowsSplitEvenlyWhereHalvesBySlotWouldNot()
    {
        // Clients that started one after another: the longest caches in the first slots.
        var positions = Enumerable.Range(0, 16).Select(r => 783 - 49 * r).ToArray();
        const long rowCost = 384;   // fashion-mnist-28's products, in positions (KernelStep)
        var b = new LaneBalancer(16, 2);
        b.Balance(positions, rowCost);
        var loads = Loads(b, 2, positions, rowCost);
        double mean = loads.Average();
        long firstHalf = positions[..8].Sum(p => p + 1 + rowCost), secondHalf = positions[8..].Sum(p => p + 1 + rowCost);
        Assert.True(Math.Max(firstHalf, secondHalf) / mean > 1.2, "the halves by slot should be uneven here");
        Assert.True(loads.Max() / mean < 1.01, $"balanced loads {loads[0]} and {loads[1]}");
        Assert.Equal(8, b.Start[1]);   // equal products: eight rows a lane
    }

    [Fact]
    public void MoreRowsThanItHoldsAreRefused() =>
        Assert.Throws<ArgumentOutOfRangeException>(() => new LaneBalancer(4, 2).Balance(new int[5], 0));
}
