namespace IGpt.Inference.Tests;

/// <summary>The step threads (WorkerTeam): every item of every run runs once, within its run, on any thread.</summary>
public class WorkerTeamTests
{
    [Fact]
    public void EveryItemRunsExactlyOnceBeforeItsRunReturns()
    {
        using var team = new WorkerTeam(3, "test");
        var rng = new Random(5);
        var hits = new int[8];
        int run = 0;
        var usedWorkers = new HashSet<int>();
        for (; run < 100_000; run++)
        {
            int count = rng.Next(1, 9);
            int expectedRun = run;
            Array.Clear(hits);
            // A run's delegate checks that it is called for its own run and in range (a stale helper would break either).
            team.Run(count, (item, worker) =>
            {
                Assert.Equal(expectedRun, Volatile.Read(ref run));
                Assert.InRange(item, 0, count - 1);
                Interlocked.Increment(ref hits[item]);
                if (worker > 0) lock (usedWorkers) usedWorkers.Add(worker);
            });
            for (int i = 0; i < 8; i++) Assert.Equal(i < count ? 1 : 0, hits[i]);
        }
        Assert.NotEmpty(usedWorkers);  // the helpers took part
    }

    [Fact]
    public void AnItemsExceptionIsRethrownAndTheTeamGoesOn()
    {
        using var team = new WorkerTeam(2, "test");
        var e = Assert.Throws<AggregateException>(() => team.Run(4, (item, _) =>
        {
            if (item == 2) throw new InvalidOperationException("item 2");
        }));
        Assert.IsType<InvalidOperationException>(e.InnerException);
        int done = 0;
        team.Run(5, (_, _) => Interlocked.Increment(ref done));
        Assert.Equal(5, done);
    }
}
