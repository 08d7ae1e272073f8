using Microsoft.Extensions.Logging.Abstractions;
using static IGpt.Tests.Shared.Poll;

namespace IGpt.Inference.Tests;

/// <summary>
/// Faults inside the decode scheduler: real ONNX Runtime failures (a decoder graph whose Gather fails at positions
/// of 40 and more, tests/fixtures/faults) and a cancellation that arrives while a decode step runs.
/// </summary>
public class FaultTests
{
    /// <summary>A copy of the tiny package whose decoder fails at run time once a position reaches 40.</summary>
    private static IGptModel LoadFailing(out string modelsRoot, int slots = 4, Generation.StepGate? gate = null)
    {
        var dir = Fixture.CopyToTemp(out modelsRoot);
        File.Copy(Path.Combine(AppContext.BaseDirectory, "fixtures", "faults", "decoder-fails-past-40.onnx"), Path.Combine(dir, "decoder.onnx"), overwrite: true);
        return IGptModel.Load(dir, Fixture.CpuOptions(maxBatch: slots), NullLogger.Instance, gate: gate);
    }

    [Fact]
    public async Task ARunThatThrowsFailsOnlyTheRequestsItRanAndTheSchedulerGoesOn()
    {
        var gate = new Generation.StepGate();   // FaultTests.StepGate is the observer below
        using var model = LoadFailing(out var root, gate: gate);
        try
        {
            gate.Hold();
            // A: an unconditional sample; its prefill (SOS at position 0) works, so it holds a slot.
            var a = model.CompleteAsync(new CompletionRequest([], 1, SamplingOptions.Default, 1), CancellationToken.None);
            await Until(() => model.SchedulerStats.ActiveSequences == 1, "A holds a slot", () => model.SchedulerStats);

            // B: a 6-row prompt is prefilled at positions 0..48: ORT throws, B fails alone, A keeps its slot.
            var prompt = Enumerable.Range(0, 48).Select(i => i % 8).ToArray();
            var b = await Assert.ThrowsAsync<ModelRunException>(() =>
                model.CompleteAsync(new CompletionRequest(prompt, 2, SamplingOptions.Default, 2), CancellationToken.None).WaitAsync(Patience));
            Assert.Equal("prefill", b.Stage);
            Assert.IsAssignableFrom<Microsoft.ML.OnnxRuntime.OnnxRuntimeException>(b.InnerException);
            Assert.Equal(1, model.SchedulerStats.ActiveSequences);
            Assert.False(a.IsCompleted);

            // A decodes up to position 40, where the decode step throws: A fails, its slot is freed.
            gate.Open();
            var e = await Assert.ThrowsAsync<ModelRunException>(() => a.WaitAsync(Patience));
            Assert.Equal("decode step", e.Stage);
            var stats = model.SchedulerStats;
            Assert.Equal(0, stats.ActiveSequences);
            Assert.Equal(2, stats.FailedRuns);
            Assert.Equal(2, stats.FailedRequests);
            Assert.Equal(39, stats.Steps);   // positions 1..39 ran
            Assert.Equal(2, stats.ConsecutiveFailures);
            Assert.False(model.IsFailing);   // two failed requests in a row: under FailingAfter

            // The decode thread lives: later requests are taken, and fail the same way (a full prompt needs no run at all).
            for (int i = 0; i < IGptModel.FailingAfter - 2; i++)
                await Assert.ThrowsAsync<ModelRunException>(() => model.CompleteAsync(new CompletionRequest(prompt, 1, SamplingOptions.Default, 3), CancellationToken.None).WaitAsync(Patience));
            Assert.True(model.IsFailing);
            Assert.Contains("prefill", model.LastFailure);
            var whole = Enumerable.Range(0, 64).Select(i => i % 8).ToArray();
            Assert.Single((await model.CompleteAsync(new CompletionRequest(whole, 1, SamplingOptions.Default, 4), CancellationToken.None).WaitAsync(Patience)).Images);
            Assert.True(model.IsFailing);   // that request ran nothing: it says nothing about the model
            Assert.Equal(0, model.SchedulerStats.ActiveSequences);
        }
        finally
        {
            model.Dispose();
            try { Directory.Delete(root, recursive: true); } catch (IOException) { }
        }
    }

    /// <summary>Holds the scheduler's thread inside its first decode step until released.</summary>
    private sealed class StepGate : IDecodeObserver
    {
        public readonly ManualResetEventSlim Entered = new(), Release = new();

        public void OnDecodeStep(string modelId, int rows, TimeSpan elapsed)
        {
            if (Entered.IsSet) return;
            Entered.Set();
            Release.Wait();
        }
    }

    [Fact]
    public async Task ACancellationWhileAStepRunsFreesTheSlotsAfterThatStep()
    {
        var observer = new StepGate();
        var steps = new Generation.StepGate();
        using var model = IGptModel.Load(Fixture.PackageDir, Fixture.CpuOptions(maxBatch: 4), NullLogger.Instance, observer: observer, gate: steps);
        try
        {
            // Both requests are admitted before any step runs, so the first step holds all four rows: without the
            // hold, the first could start a step alone while the second was still being queued.
            steps.Hold();
            using var cts = new CancellationTokenSource();
            var leaving = model.CompleteAsync(new CompletionRequest([], 3, SamplingOptions.Default, 1), cts.Token);
            var waiting = model.CompleteAsync(new CompletionRequest([], 2, SamplingOptions.Default, 2), CancellationToken.None);
            await Until(() => model.SchedulerStats.ActiveSequences == 4, "both requests hold their slots", () => model.SchedulerStats);
            steps.Open();
            Assert.True(observer.Entered.Wait(Patience), "the first step did not run");

            // The scheduler's thread is inside a step (3 + 1 rows); the first request is cancelled now.
            await cts.CancelAsync();
            Assert.Equal(4, model.SchedulerStats.ActiveSequences);
            observer.Release.Set();

            await Assert.ThrowsAnyAsync<OperationCanceledException>(() => leaving.WaitAsync(Patience));
            var result = await waiting.WaitAsync(Patience);
            Assert.Equal(2, result.Images.Length);
            await Until(() => model.SchedulerStats is { ActiveSequences: 0, QueuedRequests: 0 }, "every slot free", () => model.SchedulerStats);
            Assert.Equal(1, model.SchedulerStats.CancelledRequests);

            // No row was leaked: a request for every slot runs at once and finishes.
            var full = await model.CompleteAsync(new CompletionRequest([], 4, SamplingOptions.Default, 3), CancellationToken.None).WaitAsync(Patience);
            Assert.Equal(4, full.Images.Length);
            // The result is set inside the step that finishes it; its slots are freed at that step's end, just after.
            await Until(() => model.SchedulerStats.ActiveSequences == 0, "the full request's slots free", () => model.SchedulerStats);
        }
        finally
        {
            // A failed assertion must not leave the decode thread parked in the observer: disposing the model joins it.
            steps.Open();
            observer.Release.Set();
        }
    }
}
