namespace IGpt.Inference.Tests;

/// <summary>
/// <see cref="LaneBalancer"/>, which splits a kernel step's rows alone between its row lanes: every row in exactly one
/// lane, as many rows a lane as halves by slot would give it, each lane's rows in slot order, and the lanes' positions
/// within one row's of each other; and the halves by slot themselves, for rows in groups.
/// </summary>
public class LaneBalancerTests
{
    private static long[] Loads(LaneBalancer b, int lanes, int[] positions)
    {
        var loads = new long[lanes];
        for (int lane = 0; lane < lanes; lane++)
            for (int i = b.Start[lane]; i < b.Start[lane + 1]; i++) loads[lane] += positions[b.Order[i]] + 1;
        return loads;
    }

    [Fact]
    public void EveryRowGoesToOneLaneAndTheLanesEndWithinOneRowOfEachOther()
    {
        var rng = new Random(5);
        for (int trial = 0; trial < 2000; trial++)
        {
            int lanes = rng.Next(1, 5), rows = rng.Next(1, 17);
            var positions = Enumerable.Range(0, rows).Select(_ => rng.Next(0, 1024)).ToArray();
            var b = new LaneBalancer(16, lanes);
            b.Balance(positions);

            Assert.Equal(0, b.Start[0]);
            Assert.Equal(rows, b.Start[lanes]);
            Assert.Equal(Enumerable.Range(0, rows), b.Order.Take(rows).Order());
            var loads = Loads(b, lanes, positions);
            for (int lane = 0; lane < lanes; lane++)
            {
                var mine = b.Order[b.Start[lane]..b.Start[lane + 1]];
                Assert.Equal(mine.Order(), mine);   // slot order within a lane
                Assert.Equal(LaneRunner.LaneRows(rows, lanes, lane).Count, mine.Length);
            }
            long largest = positions.Max() + 1;
            Assert.True(loads.Max() <= loads.Min() + largest, $"trial {trial}: loads {string.Join(", ", loads)}, largest row {largest}");
        }
    }

    [Fact]
    public void SixteenStaggeredRowsSplitEvenlyWhereHalvesBySlotWouldNot()
    {
        // Clients that started one after another: the longest caches in the first slots.
        var positions = Enumerable.Range(0, 16).Select(r => 783 - 49 * r).ToArray();
        var b = new LaneBalancer(16, 2);
        b.Balance(positions);
        var loads = Loads(b, 2, positions);
        double mean = loads.Average();
        long firstHalf = positions[..8].Sum(p => p + 1L), secondHalf = positions[8..].Sum(p => p + 1L);
        Assert.True(Math.Max(firstHalf, secondHalf) / mean > 1.4, "the halves by slot should be uneven here");
        Assert.True(loads.Max() / mean < 1.01, $"balanced loads {loads[0]} and {loads[1]}");
    }

    [Fact]
    public void HalvesKeepTheSlotOrderWithLaneRowsCounts()
    {
        var b = new LaneBalancer(16, 3);
        b.Balance(Enumerable.Range(0, 16).Select(r => 783 - 49 * r).ToArray());   // a balanced split first: Halves replaces it
        b.Halves(7);
        Assert.Equal(Enumerable.Range(0, 7), b.Order.Take(7));
        for (int lane = 0; lane < 3; lane++)
            Assert.Equal(LaneRunner.LaneRows(7, 3, lane), (b.Start[lane], b.Start[lane + 1] - b.Start[lane]));
        Assert.Equal(7, b.Start[3]);
    }

    [Fact]
    public void MoreRowsThanItHoldsAreRefused() =>
        Assert.Throws<ArgumentOutOfRangeException>(() => new LaneBalancer(4, 2).Balance(new int[5]));

    [Fact]
    public void MoreRowsThanItHoldsAreRefusedByHalvesToo() =>
        Assert.Throws<ArgumentOutOfRangeException>(() => new LaneBalancer(4, 2).Halves(5));
}
