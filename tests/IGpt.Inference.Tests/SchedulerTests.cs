using Microsoft.Extensions.Caching.Memory;
using Microsoft.Extensions.Logging.Abstractions;
using static IGpt.Tests.Shared.Poll;

namespace IGpt.Inference.Tests;

/// <summary>
/// The decode scheduler (continuous batching). The tests steer it through a step budget (a test hook: the loop
/// admits and drops requests but runs no decode step while the budget is 0), so nothing depends on timing.
/// </summary>
public class SchedulerTests
{
    private static IGptModel Load(int slots, int queue = 64, StepGate? gate = null)
    {
        var options = Fixture.CpuOptions(maxBatch: slots);
        options.QueueCapacity = queue;
        return IGptModel.Load(Fixture.PackageDir, options, NullLogger.Instance, gate: gate);
    }

    private static int[] Prompt(int rows, int salt) => Enumerable.Range(0, rows * 8).Select(i => (i * 3 + salt) % 8).ToArray();

    [Fact]
    public async Task ConcurrentRequestsShareDecodeSteps()
    {
        var gate = new StepGate();
        using var model = Load(slots: 8, gate: gate);
        gate.Hold();
        var tasks = Enumerable.Range(0, 3)
            .Select(i => model.CompleteAsync(new CompletionRequest([], 2, SamplingOptions.Default, (ulong)i), CancellationToken.None))
            .ToArray();
        await Until(() => model.SchedulerStats.ActiveSequences == 6, "all six samples hold slots");
        var before = model.SchedulerStats;
        Assert.Equal(0, before.QueuedRequests);
        gate.Open();
        var results = await Task.WhenAll(tasks).WaitAsync(Patience);
        var after = model.SchedulerStats;
        // 64 pixels per image: the first comes from the prompt's logits, 63 from decode steps, and all six
        // sequences took those 63 steps together (separately they would need 3 x 63).
        Assert.Equal(63, after.Steps - before.Steps);
        Assert.Equal(6, after.MaxRowsPerStep);
        Assert.Equal(6 * 63, after.RowsStepped - before.RowsStepped);
        Assert.Equal(6 * 64, after.TokensGenerated);
        Assert.Equal(0, after.ActiveSequences);
        Assert.All(results, r => Assert.Equal(2, r.Images.Length));
    }

    [Fact]
    public async Task RequestsWithOnePromptReadItsCachedEntriesOnceAndDrawWhatTheyDrawAlone()
    {
        // Step segments on one lane (a compressed cache runs every step as segments): the rows of one step are one group
        // when their prompt entries come from one prefill, whichever request they belong to.
        static IGptModel Segmented(StepGate? gate = null)
        {
            var options = Fixture.CpuOptions(maxBatch: 4);
            options.KvCacheType = KvCacheTypes.Float16;
            var prefixCache = new MemoryCache(new MemoryCacheOptions { SizeLimit = options.PrefixCacheSizeLimit });
            return IGptModel.Load(Fixture.PackageDir, options, NullLogger.Instance, prefixCache, gate: gate);
        }
        var sampling = new SamplingOptions(1.1f, TopK: 0, TopP: 0.95f);
        CompletionRequest Request(int salt, ulong seed) => new(Prompt(3, salt), 1, sampling, seed);
        async Task<(CompletionResult[] Results, double KvBytesPerStep)> Together(CompletionRequest[] requests)
        {
            var gate = new StepGate();
            using var model = Segmented(gate);
            gate.Hold();
            var tasks = new List<Task<CompletionResult>>();
            foreach (var request in requests)
            {
                tasks.Add(model.CompleteAsync(request, default));
                await Until(() => model.SchedulerStats.ActiveSequences == tasks.Count, "the request holds its slot");
            }
            long read = model.Decoder.KvBytesRead, steps = model.SchedulerStats.Steps;
            gate.Open();
            var results = await Task.WhenAll(tasks).WaitAsync(Patience);
            return (results, (double)(model.Decoder.KvBytesRead - read) / (model.SchedulerStats.Steps - steps));
        }
        CompletionRequest[] same = [Request(1, 5), Request(1, 6), Request(1, 7), Request(1, 8)];
        CompletionRequest[] different = [Request(1, 5), Request(2, 6), Request(3, 7), Request(4, 8)];
        var (sharedResults, sharedBytes) = await Together(same);
        var (separateResults, separateBytes) = await Together(different);
        // The second to fourth requests load the first one's prefix snapshot: 25 prompt entries read once, not four times.
        Assert.True(sharedBytes < 0.75 * separateBytes, $"KV bytes a step: {sharedBytes} with one prompt, {separateBytes} with four");
        using var alone = Segmented();
        foreach (var (request, together) in same.Zip(sharedResults))
            Assert.Equal((await alone.CompleteAsync(request, default)).Images, together.Images);
        Assert.Equal(sharedResults[0].Images, separateResults[0].Images);
    }

    [Fact]
    public void ARowsLogitsDoNotDependOnTheBatch()
    {
        // What seeded determinism in mixed batches rests on: ONNX Runtime's CPU kernels compute each batch row
        // the same way whatever the other rows are (MLAS keeps the same accumulation order per row), so a
        // sequence's logits are bit-identical alone and beside others at other positions.
        using var model = Load(slots: 4);
        var d = model.Decoder;
        int v = d.VocabSize;
        int[] a = [8, 1, 2, 3, 4, 5], b = [8, 6], c = [8, 7, 7, 7, 0, 1, 2, 3, 4, 5, 6];
        d.Prefill(a, 1, 0);
        var alone = d.Step(1, [3], [a.Length]).ToArray();

        d.Prefill(b, 1, 0);
        d.Prefill(a, 1, 1);
        d.Prefill(c, 1, 2);
        var mixed = d.Step(3, [5, 3, 1], [b.Length, a.Length, c.Length]).ToArray();
        Assert.Equal(alone, mixed.AsSpan(v, v).ToArray());
    }

    [Fact]
    public async Task SeededRequestsGiveTheSameImagesWhateverShareTheBatch()
    {
        var sampling = new SamplingOptions(1.3f, TopK: 6, TopP: 0.97f);
        var a = new CompletionRequest(Prompt(2, 1), 3, sampling, 11);
        var b = new CompletionRequest([], 2, SamplingOptions.Default, 5);
        var c = new CompletionRequest(Prompt(5, 4), 1, sampling, 77);
        CompletionResult[] alone;
        using (var solo = Load(slots: 8))
        {
            alone = [await solo.CompleteAsync(a, default), await solo.CompleteAsync(b, default), await solo.CompleteAsync(c, default)];
        }

        var gate = new StepGate();
        using var model = Load(slots: 5, gate: gate);   // 6 samples in 5 slots: one of c's waits for a slot
        gate.Hold();
        var tb = model.CompleteAsync(b, default);
        await Until(() => model.SchedulerStats.ActiveSequences == 2, "b running");
        long steps = model.SchedulerStats.Steps;
        gate.Allow(7);
        await Until(() => model.SchedulerStats.Steps == steps + 7, "b seven steps ahead");
        var ta = model.CompleteAsync(a, default);
        await Until(() => model.SchedulerStats.ActiveSequences == 5, "a joined");
        gate.Allow(3);
        await Until(() => model.SchedulerStats.Steps == steps + 10, "three shared steps");
        var tc = model.CompleteAsync(c, default);
        await Until(() => model.SchedulerStats.QueuedRequests == 1, "c queued: no free slot");
        gate.Open();
        var mixed = await Task.WhenAll(ta, tb, tc).WaitAsync(Patience);

        for (int i = 0; i < 3; i++) Assert.Equal(alone[i].Images, mixed[i].Images);
        Assert.True(model.SchedulerStats.MaxRowsPerStep == 5);
    }

    [Fact]
    public async Task RequestsLargerThanTheSlotsAreSplitAndStayDeterministic()
    {
        var request = new CompletionRequest(Prompt(1, 2), 7, SamplingOptions.Default, 42);
        CompletionResult reference;
        using (var wide = Load(slots: 8)) reference = await wide.CompleteAsync(request, default);
        using var narrow = Load(slots: 2);
        var other = narrow.CompleteAsync(new CompletionRequest([], 3, SamplingOptions.Default, 1), default);
        var split = await narrow.CompleteAsync(request, default).WaitAsync(Patience);
        await other.WaitAsync(Patience);
        Assert.Equal(reference.Images, split.Images);
        Assert.Equal(2, narrow.SchedulerStats.MaxRowsPerStep);
    }

    [Fact]
    public async Task PicksSplitBetweenThreadsAreThoseOfOneThread()
    {
        // 512 colours (the HF fixture, iGPT's palette), so 16 rows reach RowPicker.MinColourRowsToSplit. Two requests in
        // the same steps, top_p with top_k and a greedy one beside it: the picks of the team, each thread with its own
        // sampler scratch, must be those of the scheduler's thread alone, row for row.
        string package = Path.GetFullPath(Path.Combine(Fixture.ShippedModelsDir, "..", "tests", "fixtures", "hf-tiny-package"));
        int[] top = Enumerable.Range(0, 32 * 24).Select(i => (i * 37) % 512).ToArray();
        CompletionRequest sampled = new(top[..(32 * 20)], 12, new SamplingOptions(1.3f, 40, 0.9f), 17), greedy = new(top[..(32 * 24)], 4, SamplingOptions.Greedy, 1);
        async Task<(CompletionResult Sampled, CompletionResult Greedy, (int Threads, long SplitSteps) Picks)> Run(int threads)
        {
            var gate = new StepGate();
            var options = Fixture.CpuOptions(maxBatch: 16);
            options.SamplingThreads = threads;
            using var model = IGptModel.Load(package, options, NullLogger.Instance, gate: gate);
            gate.Hold();
            var a = model.CompleteAsync(sampled, default);
            var b = model.CompleteAsync(greedy, default);
            await Until(() => model.SchedulerStats.ActiveSequences == 16, "both requests hold slots");
            gate.Open();
            return (await a.WaitAsync(Patience), await b.WaitAsync(Patience), model.Picks);
        }
        var alone = await Run(0);   // the CPU's default: the scheduler's thread
        var split = await Run(4);
        Assert.Equal((1, 0L), alone.Picks);
        Assert.Equal(4, split.Picks.Threads);
        Assert.True(split.Picks.SplitSteps > 0, "the team picked");
        Assert.Equal(alone.Sampled.Images, split.Sampled.Images);
        Assert.Equal(alone.Greedy.Images, split.Greedy.Images);
        Assert.NotEqual(alone.Sampled.Images[0], alone.Sampled.Images[1]);  // the rows drew from their own generators
    }

    [Fact]
    public async Task CancellingFreesTheSlotsWithoutAnotherStep()
    {
        var gate = new StepGate();
        using var model = Load(slots: 4, gate: gate);
        gate.Hold();
        using var cts = new CancellationTokenSource();
        var cancelled = model.CompleteAsync(new CompletionRequest([], 4, SamplingOptions.Default, 3), cts.Token);
        await Until(() => model.SchedulerStats.ActiveSequences == 4, "four samples running");
        var waiting = model.CompleteAsync(new CompletionRequest([], 2, SamplingOptions.Default, 4), default);
        await Until(() => model.SchedulerStats.QueuedRequests == 1, "the second request waits");
        long steps = model.SchedulerStats.Steps;

        cts.Cancel();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => cancelled.WaitAsync(Patience));
        // The freed slots went to the waiting request before any further step.
        await Until(() => model.SchedulerStats.ActiveSequences == 2 && model.SchedulerStats.QueuedRequests == 0, "slots reused", () => model.SchedulerStats);
        Assert.Equal(steps, model.SchedulerStats.Steps);
        Assert.Equal(1, model.SchedulerStats.CancelledRequests);
        gate.Open();
        Assert.Equal(2, (await waiting.WaitAsync(Patience)).Images.Length);
    }

    [Fact]
    public async Task AFullQueueRefusesAtOnceAndACancelledWaiterLeavesIt()
    {
        var gate = new StepGate();
        using var model = Load(slots: 1, queue: 2, gate: gate);
        gate.Hold();
        var running = model.CompleteAsync(new CompletionRequest([], 1, SamplingOptions.Default, 1), default);
        await Until(() => model.SchedulerStats.ActiveSequences == 1, "first request running");
        using var cts = new CancellationTokenSource();
        var queued1 = model.StartCompletion(new CompletionRequest([], 1, SamplingOptions.Default, 2), false, cts.Token);
        var queued2 = model.StartCompletion(new CompletionRequest([], 1, SamplingOptions.Default, 3), false, default);
        Assert.False(queued1.Started);
        Assert.Throws<QueueFullException>(() => model.StartCompletion(new CompletionRequest([], 1, SamplingOptions.Default, 4), false, default));
        await Assert.ThrowsAsync<QueueFullException>(() => model.CompleteAsync(new CompletionRequest([], 1, SamplingOptions.Default, 4), default));

        cts.Cancel();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => queued1.Result.WaitAsync(Patience));
        var queued3 = model.StartCompletion(new CompletionRequest([], 1, SamplingOptions.Default, 5), false, default);
        gate.Open();
        await Task.WhenAll(running, queued2.Result, queued3.Result).WaitAsync(Patience);
    }

    [Fact]
    public async Task RowsAreStreamedAsTheyFinish()
    {
        using var model = Load(slots: 4);
        var handle = model.StartCompletion(new CompletionRequest(Prompt(3, 0), 2, SamplingOptions.Default, 9), streamRows: true, default);
        var rows = new List<ImageRowEvent>();
        await foreach (var row in handle.Rows!.ReadAllAsync()) rows.Add(row);
        var result = await handle.Result.WaitAsync(Patience);
        Assert.Equal(2 * 5, rows.Count);   // rows 3..7 of both samples
        foreach (var row in rows)
        {
            Assert.InRange(row.Row, 3, 7);
            Assert.Equal(result.Images[row.Sample][(row.Row * 8)..(row.Row * 8 + 8)], row.Tokens);
        }
        for (int sample = 0; sample < 2; sample++)
            Assert.Equal([3, 4, 5, 6, 7], rows.Where(r => r.Sample == sample).Select(r => r.Row));
        Assert.True(result.FirstRow > TimeSpan.Zero);
    }

    [Fact]
    public async Task DisposingFailsWaitingRequestsInsteadOfHanging()
    {
        var gate = new StepGate();
        var model = Load(slots: 1, gate: gate);
        gate.Hold();
        var running = model.CompleteAsync(new CompletionRequest([], 1, SamplingOptions.Default, 1), default);
        var queued = model.CompleteAsync(new CompletionRequest([], 1, SamplingOptions.Default, 2), default);
        await Until(() => model.SchedulerStats.ActiveSequences == 1 && model.SchedulerStats.QueuedRequests == 1, "one running, one queued");
        model.Dispose();
        await Assert.ThrowsAsync<ObjectDisposedException>(() => running.WaitAsync(Patience));
        await Assert.ThrowsAsync<ObjectDisposedException>(() => queued.WaitAsync(Patience));
        await Assert.ThrowsAsync<ObjectDisposedException>(() => model.CompleteAsync(new CompletionRequest([], 1, SamplingOptions.Default, 3), default));
    }
}
