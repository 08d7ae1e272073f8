using System.Diagnostics;
using Microsoft.Extensions.Logging;

namespace IGpt.Inference.Generation;

/// <summary>
/// Continuous batching for one model. Each batch row of the decoder's preallocated KV buffer is a slot;
/// one thread runs a loop that, between decode steps, drops cancelled sequences, admits queued requests
/// into free slots (prefill at batch 1 into its slot, or the prompt KV copied from a cached snapshot) and
/// then runs one decode step for every active sequence of every request together, each row at its own
/// length. A sequence that finishes or is cancelled frees its slot at once and the last active slot is
/// moved into the hole (a copy of its KV within the cache's memory, host or device), so a step always runs
/// over slots 0..active-1 and slots from there up are free (the decoder may pad a step into them).
/// Each sample draws from its own generator (seed, sample index), so what else shares the batch does
/// not change a seeded request's images as long as a row's logits do not depend on the batch (checked by
/// the tests for ONNX Runtime's CPU kernels). Requests wait in a bounded FIFO queue; a request for more
/// samples than there are free slots starts what fits and the rest as slots free up. A <see cref="StepGate"/>,
/// when given, can hold the loop between decode steps. Request outcomes: DecodeScheduler.Outcomes.cs.
/// </summary>
internal sealed partial class DecodeScheduler : IDisposable
{
    private readonly KvCacheDecoder _decoder;
    private readonly ModelManifest _manifest;
    private readonly PrefixCache? _prefixCache;
    private readonly IDecodeObserver? _observer;
    private readonly ILogger _logger;
    private readonly RowPicker _picker;
    private readonly int _capacity, _slots, _width, _total, _vocab;

    private readonly Lock _lock = new();
    private readonly LinkedList<DecodeJob> _queue = new();   // guarded by _lock
    private readonly SemaphoreSlim _wake = new(0);
    private readonly CancellationTokenSource _stop = new();
    private readonly Thread _thread;

    // Scheduler-thread state.
    private readonly DecodeSequence?[] _active;               // by slot
    private int _rows;                                  // slots 0.._rows-1 are stepped
    private DecodeJob? _head;                                 // partly started job (out of _queue)
    private readonly int[] _stepTokens, _stepPositions, _sampled;
    private readonly int[] _stepGroups, _stepShared;     // rows of one request share their prompt's cache entries

    // Counters (written by the scheduler thread, read by anyone).
    private long _steps, _rowsStepped, _tokens, _completed, _cancelled, _prefills, _failedRuns, _failedRequests;
    private int _maxRows, _activeCount, _consecutiveFailures;
    private string? _lastFailure;

    private readonly StepGate? _gate;
    private readonly IDisposable? _gateSubscription;

    public DecodeScheduler(KvCacheDecoder decoder, ModelManifest manifest, PrefixCache? prefixCache, int queueCapacity,
        IDecodeObserver? observer, StepGate? gate, ILogger logger, int samplingThreads = 0)
    {
        _decoder = decoder;
        _manifest = manifest;
        _prefixCache = prefixCache;
        _observer = observer;
        _logger = logger;
        _capacity = queueCapacity;
        _slots = decoder.MaxBatch;
        _width = manifest.Width;
        _total = manifest.TokensPerImage;
        _vocab = decoder.VocabSize;
        _picker = RowPicker.For(decoder, manifest.PaletteSize, samplingThreads);
        _active = new DecodeSequence?[_slots];
        _stepTokens = new int[_slots];
        _sampled = new int[_slots];
        _stepPositions = new int[_slots];
        _stepGroups = new int[_slots];
        _stepShared = new int[_slots];
        _gate = gate;
        _gateSubscription = gate?.OnChange(() => _wake.Release());  // a held loop waits on _wake
        _thread = new Thread(Loop) { IsBackground = true, Name = $"igpt-decode-{manifest.Id}" };
        _thread.Start();
    }

    public SchedulerStats Stats
    {
        get
        {
            int queued;
            lock (_lock) queued = _queue.Count;
            return new SchedulerStats(_slots, Volatile.Read(ref _activeCount), queued, Interlocked.Read(ref _steps),
                Volatile.Read(ref _maxRows), Interlocked.Read(ref _rowsStepped), Interlocked.Read(ref _tokens),
                Interlocked.Read(ref _completed), Interlocked.Read(ref _cancelled), Interlocked.Read(ref _prefills),
                Interlocked.Read(ref _failedRuns), Interlocked.Read(ref _failedRequests), Volatile.Read(ref _consecutiveFailures),
                _decoder.LaneSteps, _decoder.SegmentedSteps, _decoder.KernelSteps);
        }
    }

    /// <summary>Threads the picks after a step may use, and the steps whose picks used more than one.</summary>
    internal (int Threads, long SplitSteps) Picks => (_picker.Threads, _picker.SplitSteps);

    /// <summary>Why the last failed run failed (null before any failure).</summary>
    public string? LastFailure => Volatile.Read(ref _lastFailure);

    /// <summary>Requests failed by a run since the last request that completed (read on every API request: no lock).</summary>
    public int ConsecutiveFailures => Volatile.Read(ref _consecutiveFailures);

    /// <summary>
    /// Queues a validated request, or throws <see cref="QueueFullException"/> at once when the queue is full.
    /// Cancelling <paramref name="cancellationToken"/> removes the request (queued or running) within one step.
    /// </summary>
    public CompletionHandle Submit(CompletionRequest request, bool streamRows, CancellationToken cancellationToken)
    {
        cancellationToken.ThrowIfCancellationRequested();
        var job = new DecodeJob(request, _manifest, streamRows, cancellationToken);
        if (job.Prompt.Length == _total)
        {
            // Nothing to draw: the prompt is the whole image.
            job.Rows?.Writer.TryComplete();
            job.Result.SetResult(new CompletionResult(job.Images, _total, 0, TimeSpan.Zero, TimeSpan.Zero, TimeSpan.Zero, false));
            return job.Handle;
        }
        lock (_lock)
        {
            ObjectDisposedException.ThrowIf(_stop.IsCancellationRequested, this);
            if (_queue.Count >= _capacity) throw new QueueFullException(_manifest.Id, _capacity);
            job.Node = _queue.AddLast(job);
        }
        if (cancellationToken.CanBeCanceled)
            job.Registration = cancellationToken.Register(static state => ((DecodeJob)state!).Scheduler!.OnCancel((DecodeJob)state!), job.WithScheduler(this));
        _wake.Release();
        return job.Handle;
    }

    private void OnCancel(DecodeJob job)
    {
        bool wasQueued;
        lock (_lock)
        {
            wasQueued = job.Node is not null;
            if (wasQueued)
            {
                _queue.Remove(job.Node!);
                job.Node = null;
            }
        }
        if (wasQueued) Cancel(job);
        else _wake.Release();   // running: the loop drops its sequences before the next step
    }

    private void Loop()
    {
        var token = _stop.Token;
        while (!token.IsCancellationRequested)
        {
            try
            {
                DropCancelled();
                Admit();
                if (_activeCount == 0 || _gate is { IsHeld: true })
                {
                    _wake.Wait(token);
                    continue;
                }
                StepActiveSequences();
                _gate?.CountStep();
            }
            catch (OperationCanceledException) when (token.IsCancellationRequested)
            {
                break;
            }
            catch (Exception e)
            {
                // A failed decode step fails the requests whose rows it ran; the loop goes on with the next ones.
                _logger.LogError(e, "Model {ModelId}: decode step failed; failing {Count} running sequence(s)", _manifest.Id, _activeCount);
                FailRunning(RunFailed("decode step", e));
            }
        }
        var disposed = new ObjectDisposedException(nameof(IGptModel), "The model was disposed.");
        FailRunning(disposed);
        List<DecodeJob> queued;
        lock (_lock)
        {
            queued = [.. _queue];
            _queue.Clear();
            foreach (var j in queued) j.Node = null;
        }
        foreach (var j in queued) Fail(j, disposed);
    }

    /// <summary>Frees the slots of cancelled requests (and drops a cancelled partly started head).</summary>
    private void DropCancelled()
    {
        for (int slot = _rows - 1; slot >= 0; slot--)
        {
            var seq = _active[slot];
            if (seq is null || !seq.Job.Token.IsCancellationRequested) continue;
            ReleaseSlot(slot);
            if (!seq.Job.Done) Cancel(seq.Job);
        }
        if (_head is { } head && head.Token.IsCancellationRequested)
        {
            _head = null;
            Cancel(head);
        }
    }

    /// <summary>Starts queued samples in the free slots, oldest request first.</summary>
    private void Admit()
    {
        while (_activeCount < _slots)
        {
            var job = _head;
            if (job is null)
            {
                lock (_lock)
                {
                    if (_queue.First is not { } first) return;
                    job = first.Value;
                    _queue.RemoveFirst();
                    job.Node = null;
                }
                if (job.Token.IsCancellationRequested)
                {
                    Cancel(job);
                    continue;
                }
                _head = job;
            }
            int count = Math.Min(_slots - _activeCount, job.Request.Count - job.Started);
            try
            {
                StartSamples(job, count);
            }
            catch (Exception e) when (!_stop.IsCancellationRequested)
            {
                // A prefill that throws fails its own request only: the other slots' KV rows were not touched.
                _logger.LogError(e, "Model {ModelId}: prefill failed; failing its request", _manifest.Id);
                _head = null;
                FailJob(job, RunFailed("prefill", e));
                continue;
            }
            if (job.Started == job.Request.Count)
            {
                _head = null;
                job.Snapshot = null;   // every sample has its KV: the job's copy of the prompt is no longer needed
            }
        }
    }

    private void StartSamples(DecodeJob job, int count)
    {
        var clock = Stopwatch.StartNew();
        if (job.Started == 0) job.Queue = job.Clock.Elapsed;
        int length = job.PrefillTokens.Length;
        var slots = TakeSlots(count);

        if (job.Snapshot is null && _prefixCache is not null && _prefixCache.TryGet(job.Prompt, out var cached))
        {
            job.Snapshot = cached;
            if (job.Started == 0) job.PrefixCacheHit = true;
        }
        if (job.Snapshot is { } snapshot)
        {
            foreach (var slot in slots) _decoder.LoadSlots(snapshot.Kv, snapshot.Length, 1, slot);
            job.PromptLogits ??= snapshot.Logits;
            job.KvOrigin ??= snapshot;
        }
        else
        {
            // One prompt row, then copies: much cheaper than prefilling identical rows.
            job.PromptLogits = PrefillOne(job, slots[0]);
            job.KvOrigin = job;
            for (int i = 1; i < count; i++) _decoder.CopySlot(slots[0], slots[i], length);
            // A host snapshot serves the samples that wait for slots and repeated prompts; with device KV a
            // prefill is cheaper than the snapshot's PCIe round trip, so the waiting samples prefill again.
            bool more = job.Started + count < job.Request.Count;
            if (_decoder.KvOnHost && (more || _prefixCache is not null))
            {
                var entry = new PrefixEntry(_decoder.SaveSlot(slots[0], length), length, job.PromptLogits);
                _prefixCache?.Add(job.Prompt, entry);
                job.KvOrigin = entry;   // a copy of the slot: later jobs that load it share the prompt's reads with this one
                if (more) job.Snapshot = entry;
            }
        }
        job.Prefill += clock.Elapsed;
        if (job.Started == 0) job.DecodeClock.Start();

        for (int i = 0; i < count; i++)
        {
            var seq = new DecodeSequence(job, job.Started, job.Request.Seed);
            Volatile.Write(ref job.Started, job.Started + 1);
            _active[slots[i]] = seq;
            _activeCount++;
            job.Running++;
            // The prompt's last logits predict the first new pixel.
            Accept(seq, _picker.Pick(job.PromptLogits!, job.Request.Sampling, ref seq.Rng));
        }
        Interlocked.Add(ref _tokens, count);
        for (int i = count - 1; i >= 0; i--)
            if (_active[slots[i]] is { } seq && seq.Filled == _total) ReleaseSlot(slots[i]);
    }

    private float[] PrefillOne(DecodeJob job, int slot)
    {
        Interlocked.Increment(ref _prefills);
        int length = job.PrefillTokens.Length;
        return _decoder.Prefill(job.PrefillTokens, 1, slot).Slice((length - 1) * _vocab, _vocab).ToArray();
    }

    /// <summary>One decode step for every active sequence: sequence in slot r feeds its last pixel at its own length.</summary>
    private void StepActiveSequences()
    {
        int rows = _rows;
        for (int r = 0; r < rows; r++)
        {
            _stepGroups[r] = r;
            _stepShared[r] = 0;
            if (_active[r] is { } seq)
            {
                _stepTokens[r] = seq.Image[seq.Filled - 1];
                _stepPositions[r] = seq.Filled;   // the cache holds Filled entries: SOS and x0..x(Filled-2)
                // A request's samples all start from one prefill (copied or loaded from its snapshot), and so do
                // other requests' that loaded the same prefix snapshot: their entries for SOS + prompt are
                // byte-identical, so the step may read them once for the group.
                for (int first = 0; first < r; first++)
                    if (_active[first]?.Job.KvOrigin == seq.Job.KvOrigin)
                    {
                        _stepGroups[r] = _stepGroups[first];
                        break;
                    }
                _stepShared[r] = seq.Job.PrefillTokens.Length;
            }
            else
            {
                // A hole (only after a start that failed half-way): a throwaway token at position 0 of the free slot.
                _decoder.ResetSlot(r, 0);
                _stepTokens[r] = 0;
                _stepPositions[r] = 0;
            }
        }
        long start = Stopwatch.GetTimestamp();
        var logits = _decoder.Step(rows, _stepTokens, _stepPositions, _stepGroups, _stepShared);
        _picker.PickAll(logits, _active, rows, _sampled);
        int produced = 0;
        for (int r = 0; r < rows; r++)
            if (_active[r] is not null) produced++;
        var elapsed = Stopwatch.GetElapsedTime(start);
        Interlocked.Increment(ref _steps);
        Interlocked.Add(ref _rowsStepped, produced);
        Interlocked.Add(ref _tokens, produced);
        if (produced > _maxRows) Volatile.Write(ref _maxRows, produced);
        _observer?.OnDecodeStep(_manifest.Id, produced, elapsed);
        // Jobs complete only once the step is counted: a client holding its answer finds the step in the metrics (the
        // decoder counts its own steps by path inside Step, and the two counts are compared).
        for (int r = 0; r < rows; r++)
            if (_active[r] is { } seq) Accept(seq, _sampled[r]);
        // Finished sequences leave now; highest slot first, so compaction never moves a finished one.
        for (int r = rows - 1; r >= 0; r--)
            if (_active[r] is { } seq && seq.Filled == _total) ReleaseSlot(r);
    }

    /// <summary>The lowest <paramref name="count"/> free slots (the caller fills them); steps then cover them.</summary>
    private int[] TakeSlots(int count)
    {
        var slots = new int[count];
        int found = 0;
        for (int s = 0; s < _slots && found < count; s++)
            if (_active[s] is null) slots[found++] = s;
        if (found < count) throw new InvalidOperationException("not enough free slots");
        _rows = Math.Max(_rows, slots[^1] + 1);
        return slots;
    }

    /// <summary>Frees a slot; the last active slot moves into it, keeping slots 0..active-1 dense.</summary>
    private void ReleaseSlot(int slot)
    {
        _active[slot] = null;
        _activeCount--;
        int last = _rows - 1;
        if (slot < last && _active[last] is { } moved)
        {
            _decoder.CopySlot(last, slot, moved.Filled);
            _active[slot] = moved;
            _active[last] = null;
        }
        while (_rows > 0 && _active[_rows - 1] is null) _rows--;
    }

    public void Dispose()
    {
        lock (_lock)
        {
            if (_stop.IsCancellationRequested) return;
            _stop.Cancel();
        }
        _thread.Join();
        _picker.Dispose();  // after the thread: it was the picker's only user
        _gateSubscription?.Dispose();
        // _stop and _wake stay undisposed: a late cancellation callback may still signal them (neither holds a handle).
    }
}
