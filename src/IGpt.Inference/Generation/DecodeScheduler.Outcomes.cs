using Microsoft.Extensions.Logging;

namespace IGpt.Inference.Generation;

/// <summary>How requests end: completed when their last sample is drawn, cancelled, or failed by a run that threw.</summary>
internal sealed partial class DecodeScheduler
{
    /// <summary>Stores a sampled pixel; streams the row it completes; completes the job when its last sample is done.</summary>
    private void Accept(DecodeSequence seq, int token)
    {
        var job = seq.Job;
        seq.Image[seq.Filled++] = token;
        if (seq.Filled % _width == 0 && !job.Done)
        {
            int row = seq.Filled / _width - 1;
            if (job.FirstRow is null) job.FirstRow = job.Clock.Elapsed;
            job.Rows?.Writer.TryWrite(new ImageRowEvent(seq.Index, row, seq.Image[(row * _width)..(seq.Filled)], job.Clock.Elapsed));
        }
        if (seq.Filled < _total) return;
        if (--job.Running == 0 && job.Started == job.Request.Count && !job.Done)
        {
            job.DecodeClock.Stop();
            job.Done = true;
            job.Registration.Dispose();
            job.Rows?.Writer.TryComplete();
            Interlocked.Increment(ref _completed);
            Volatile.Write(ref _consecutiveFailures, 0);
            var result = new CompletionResult(job.Images, job.Prompt.Length, _total - job.Prompt.Length, job.Queue, job.Prefill,
                job.DecodeClock.Elapsed, job.PrefixCacheHit) { FirstRow = job.FirstRow ?? TimeSpan.Zero };
            _logger.LogDebug("Model {ModelId}: {Count} image(s) done, queue {Queue} ms, prefill {Prefill} ms, decode {Decode} ms",
                _manifest.Id, job.Request.Count, job.Queue.TotalMilliseconds, job.Prefill.TotalMilliseconds, job.DecodeClock.Elapsed.TotalMilliseconds);
            job.Result.TrySetResult(result);
        }
    }

    /// <summary>Counts a run that threw and wraps its exception for the requests it fails.</summary>
    private ModelRunException RunFailed(string stage, Exception e)
    {
        var fault = e as ModelRunException ?? new ModelRunException(_manifest.Id, stage, e);
        Interlocked.Increment(ref _failedRuns);
        Volatile.Write(ref _lastFailure, fault.Message);
        return fault;
    }

    private void CountFailedRequest()
    {
        Interlocked.Increment(ref _failedRequests);
        Interlocked.Increment(ref _consecutiveFailures);
    }

    /// <summary>Fails one request: frees the slots of its running samples (the others keep theirs).</summary>
    private void FailJob(DecodeJob job, Exception e)
    {
        for (int slot = _rows - 1; slot >= 0; slot--)
            if (_active[slot] is { } seq && seq.Job == job) ReleaseSlot(slot);
        // Slots taken by the start that failed were never filled.
        while (_rows > 0 && _active[_rows - 1] is null) _rows--;
        if (!job.Done) CountFailedRequest();
        Fail(job, e);
    }

    private void FailRunning(Exception e)
    {
        for (int slot = _rows - 1; slot >= 0; slot--)
        {
            if (_active[slot] is not { } seq) continue;
            ReleaseSlot(slot);
            if (e is ModelRunException && !seq.Job.Done) CountFailedRequest();
            Fail(seq.Job, e);
        }
        if (_head is { } head)
        {
            _head = null;
            if (e is ModelRunException && !head.Done) CountFailedRequest();
            Fail(head, e);
        }
        // Slots taken by a start that failed half-way were never filled.
        while (_rows > 0 && _active[_rows - 1] is null) _rows--;
    }

    private void Cancel(DecodeJob job)
    {
        if (job.Done) return;
        job.Done = true;
        Interlocked.Increment(ref _cancelled);
        job.Registration.Dispose();
        job.Rows?.Writer.TryComplete();
        job.Result.TrySetCanceled(job.Token.IsCancellationRequested ? job.Token : new CancellationToken(true));
    }

    private static void Fail(DecodeJob job, Exception e)
    {
        if (job.Done) return;
        job.Done = true;
        job.Registration.Dispose();
        job.Rows?.Writer.TryComplete(e);
        job.Result.TrySetException(e);
    }
}
