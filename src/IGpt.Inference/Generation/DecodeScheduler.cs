using System.Diagnostics;
using System.Threading.Channels;
using Microsoft.Extensions.Logging;

namespace IGpt.Inference.Generation;

/// <summary>The request queue of a model is full: nothing was started; try again later.</summary>
public sealed class QueueFullException(string modelId, int capacity)
    : Exception($"The model '{modelId}' has {capacity} requests waiting, its queue's limit; try again later.")
{
    public int Capacity { get; } = capacity;
}

/// <summary>One finished image row of one sample (generated rows only), streamed while the request runs.</summary>
/// <param name="Sample">The sample index, 0..Count-1.</param>
/// <param name="Row">The row index in the model-resolution image.</param>
/// <param name="Tokens">The row's width palette tokens.</param>
/// <param name="Elapsed">Time since the request was admitted.</param>
public sealed record ImageRowEvent(int Sample, int Row, int[] Tokens, TimeSpan Elapsed);

/// <summary>
/// A completion running in (or queued for) a model's decode scheduler. <see cref="Rows"/> (when asked for)
/// yields each generated image row as soon as it is finished and completes when the request ends;
/// <see cref="Result"/> completes with the images, or faults / is cancelled.
/// </summary>
public sealed class CompletionHandle
{
    internal CompletionHandle(Task<CompletionResult> result, ChannelReader<ImageRowEvent>? rows, Func<bool> started)
    {
        Result = result;
        Rows = rows;
        _started = started;
    }

    private readonly Func<bool> _started;
    public Task<CompletionResult> Result { get; }
    /// <summary>Finished rows, in the order they were drawn; null when rows were not asked for.</summary>
    public ChannelReader<ImageRowEvent>? Rows { get; }
    /// <summary>Whether at least one sample holds a slot (false while the request waits in the queue).</summary>
    public bool Started => _started();
}

/// <summary>A snapshot of a scheduler's counters (metrics and tests read them).</summary>
/// <param name="FailedRuns">Prefills and decode steps that threw.</param>
/// <param name="FailedRequests">Requests failed by those runs.</param>
/// <param name="ConsecutiveFailures">Requests failed by a run since the last request that completed.</param>
public sealed record SchedulerStats(
    int Slots, int ActiveSequences, int QueuedRequests, long Steps, int MaxRowsPerStep, long RowsStepped,
    long TokensGenerated, long CompletedRequests, long CancelledRequests, long Prefills,
    long FailedRuns = 0, long FailedRequests = 0, int ConsecutiveFailures = 0, long LaneSteps = 0, long SegmentedSteps = 0);

/// <summary>Told about every decode step (metrics); called on the scheduler's thread, so it must be quick.</summary>
public interface IDecodeObserver
{
    void OnDecodeStep(string modelId, int rows, TimeSpan elapsed);
}

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
/// samples than there are free slots starts what fits and the rest as slots free up.
/// </summary>
internal sealed class DecodeScheduler : IDisposable
{
    private readonly KvCacheDecoder _decoder;
    private readonly ModelManifest _manifest;
    private readonly PrefixCache? _prefixCache;
    private readonly IDecodeObserver? _observer;
    private readonly ILogger _logger;
    private readonly Sampler _sampler;
    private readonly int _capacity, _slots, _width, _total, _vocab;

    private readonly Lock _lock = new();
    private readonly LinkedList<Job> _queue = new();   // guarded by _lock
    private readonly SemaphoreSlim _wake = new(0);
    private readonly CancellationTokenSource _stop = new();
    private readonly Thread _thread;

    // Scheduler-thread state.
    private readonly Sequence?[] _active;               // by slot
    private int _rows;                                  // slots 0.._rows-1 are stepped
    private Job? _head;                                 // partly started job (out of _queue)
    private readonly int[] _stepTokens, _stepPositions;
    private readonly int[] _stepGroups, _stepShared;     // rows of one request share their prompt's cache entries

    // Counters (written by the scheduler thread, read by anyone).
    private long _steps, _rowsStepped, _tokens, _completed, _cancelled, _prefills, _failedRuns, _failedRequests;
    private int _maxRows, _activeCount, _consecutiveFailures;
    private string? _lastFailure;

    // Test hook: steps the loop may still run before it waits (-1 = no limit).
    private long _stepBudget = -1;

    public DecodeScheduler(KvCacheDecoder decoder, ModelManifest manifest, PrefixCache? prefixCache, int queueCapacity,
        IDecodeObserver? observer, ILogger logger)
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
        _sampler = new Sampler(manifest.PaletteSize);
        _active = new Sequence?[_slots];
        _stepTokens = new int[_slots];
        _stepPositions = new int[_slots];
        _stepGroups = new int[_slots];
        _stepShared = new int[_slots];
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
                _decoder.LaneSteps, _decoder.SegmentedSteps);
        }
    }

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
        var job = new Job(request, _manifest, streamRows, cancellationToken);
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
            job.Registration = cancellationToken.Register(static state => ((Job)state!).Scheduler!.OnCancel((Job)state!), job.WithScheduler(this));
        _wake.Release();
        return job.Handle;
    }

    private void OnCancel(Job job)
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

    /// <summary>Test hook: let the loop run only <paramref name="steps"/> more decode steps (-1: no limit).</summary>
    internal void SetStepBudget(long steps)
    {
        Interlocked.Exchange(ref _stepBudget, steps);
        _wake.Release();
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
                if (_activeCount == 0 || Interlocked.Read(ref _stepBudget) == 0)
                {
                    _wake.Wait(token);
                    continue;
                }
                Step();
                if (Interlocked.Read(ref _stepBudget) > 0) Interlocked.Decrement(ref _stepBudget);
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
        List<Job> queued;
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
            FreeSlot(slot);
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

    private void StartSamples(Job job, int count)
    {
        var clock = Stopwatch.StartNew();
        if (job.Started == 0) job.Queue = job.Clock.Elapsed;
        int length = job.PrefillTokens.Length;
        var slots = FreeSlots(count);

        if (job.Snapshot is null && _prefixCache is not null && _prefixCache.TryGet(job.Prompt, out var cached))
        {
            job.Snapshot = cached;
            if (job.Started == 0) job.PrefixCacheHit = true;
        }
        if (job.Snapshot is { } snapshot)
        {
            foreach (var slot in slots) _decoder.LoadSlots(snapshot.Kv, snapshot.Length, 1, slot);
            job.PromptLogits ??= snapshot.Logits;
        }
        else
        {
            // One prompt row, then copies: much cheaper than prefilling identical rows.
            job.PromptLogits = PrefillOne(job, slots[0]);
            for (int i = 1; i < count; i++) _decoder.CopySlot(slots[0], slots[i], length);
            // A host snapshot serves the samples that wait for slots and repeated prompts; with device KV a
            // prefill is cheaper than the snapshot's PCIe round trip, so the waiting samples prefill again.
            bool more = job.Started + count < job.Request.Count;
            if (_decoder.KvOnHost && (more || _prefixCache is not null))
            {
                var entry = new PrefixEntry(_decoder.SaveSlot(slots[0], length), length, job.PromptLogits);
                _prefixCache?.Add(job.Prompt, entry);
                if (more) job.Snapshot = entry;
            }
        }
        job.Prefill += clock.Elapsed;
        if (job.Started == 0) job.DecodeClock.Start();

        for (int i = 0; i < count; i++)
        {
            var seq = new Sequence(job, job.Started, job.Request.Seed);
            Volatile.Write(ref job.Started, job.Started + 1);
            _active[slots[i]] = seq;
            _activeCount++;
            job.Running++;
            // The prompt's last logits predict the first new pixel.
            Accept(seq, _sampler.Pick(job.PromptLogits!, job.Request.Sampling, ref seq.Rng));
        }
        Interlocked.Add(ref _tokens, count);
        for (int i = count - 1; i >= 0; i--)
            if (_active[slots[i]] is { } seq && seq.Filled == _total) FreeSlot(slots[i]);
    }

    private float[] PrefillOne(Job job, int slot)
    {
        Interlocked.Increment(ref _prefills);
        int length = job.PrefillTokens.Length;
        return _decoder.Prefill(job.PrefillTokens, 1, slot).Slice((length - 1) * _vocab, _vocab).ToArray();
    }

    /// <summary>One decode step for every active sequence: sequence in slot r feeds its last pixel at its own length.</summary>
    private void Step()
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
                // A request's samples all start from one prefill (copied or loaded from its snapshot), so their
                // entries for SOS + prompt are byte-identical: the step may read them once for the group.
                for (int first = 0; first < r; first++)
                    if (_active[first]?.Job == seq.Job)
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
        int produced = 0;
        for (int r = 0; r < rows; r++)
        {
            if (_active[r] is not { } seq) continue;
            var job = seq.Job;
            Accept(seq, _sampler.Pick(logits.Slice(r * _vocab, _vocab), job.Request.Sampling, ref seq.Rng));
            produced++;
        }
        var elapsed = Stopwatch.GetElapsedTime(start);
        Interlocked.Increment(ref _steps);
        Interlocked.Add(ref _rowsStepped, produced);
        Interlocked.Add(ref _tokens, produced);
        if (produced > _maxRows) Volatile.Write(ref _maxRows, produced);
        _observer?.OnDecodeStep(_manifest.Id, produced, elapsed);
        // Finished sequences leave now; highest slot first, so compaction never moves a finished one.
        for (int r = rows - 1; r >= 0; r--)
            if (_active[r] is { } seq && seq.Filled == _total) FreeSlot(r);
    }

    /// <summary>Stores a sampled pixel; streams the row it completes; completes the job when its last sample is done.</summary>
    private void Accept(Sequence seq, int token)
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

    /// <summary>The lowest <paramref name="count"/> free slots (the caller fills them); steps then cover them.</summary>
    private int[] FreeSlots(int count)
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
    private void FreeSlot(int slot)
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
    private void FailJob(Job job, Exception e)
    {
        for (int slot = _rows - 1; slot >= 0; slot--)
            if (_active[slot] is { } seq && seq.Job == job) FreeSlot(slot);
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
            FreeSlot(slot);
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

    private void Cancel(Job job)
    {
        if (job.Done) return;
        job.Done = true;
        Interlocked.Increment(ref _cancelled);
        job.Registration.Dispose();
        job.Rows?.Writer.TryComplete();
        job.Result.TrySetCanceled(job.Token.IsCancellationRequested ? job.Token : new CancellationToken(true));
    }

    private static void Fail(Job job, Exception e)
    {
        if (job.Done) return;
        job.Done = true;
        job.Registration.Dispose();
        job.Rows?.Writer.TryComplete(e);
        job.Result.TrySetException(e);
    }

    public void Dispose()
    {
        lock (_lock)
        {
            if (_stop.IsCancellationRequested) return;
            _stop.Cancel();
        }
        _thread.Join();
        // _stop and _wake stay undisposed: a late cancellation callback may still signal them (neither holds a handle).
    }

    /// <summary>One sample being drawn: its image, how much of it is known, its generator.</summary>
    private sealed class Sequence(Job job, int index, ulong seed)
    {
        public Job Job { get; } = job;
        public int Index { get; } = index;
        public int[] Image { get; } = job.Images[index];
        /// <summary>Pixels known; also the KV entries cached (SOS and x0..x(Filled-2)).</summary>
        public int Filled = job.Prompt.Length;
        public Xoshiro256StarStar Rng = Xoshiro256StarStar.ForRow(seed, index);
    }

    /// <summary>A request: its samples, its timings, its result; touched by the scheduler thread only (Node under the lock).</summary>
    private sealed class Job
    {
        public Job(CompletionRequest request, ModelManifest manifest, bool streamRows, CancellationToken token)
        {
            Request = request;
            Token = token;
            Prompt = request.PromptTokens;
            PrefillTokens = [manifest.SosTokenId, .. request.PromptTokens];
            Images = new int[request.Count][];
            for (int i = 0; i < request.Count; i++)
            {
                Images[i] = new int[manifest.TokensPerImage];
                request.PromptTokens.CopyTo(Images[i], 0);
            }
            Rows = streamRows ? Channel.CreateUnbounded<ImageRowEvent>(new UnboundedChannelOptions { SingleReader = true, SingleWriter = true }) : null;
            Handle = new CompletionHandle(Result.Task, Rows?.Reader, () => Volatile.Read(ref Started) > 0);
        }

        public CompletionRequest Request { get; }
        public CancellationToken Token { get; }
        public int[] Prompt { get; }
        public int[] PrefillTokens { get; }
        public int[][] Images { get; }
        public Channel<ImageRowEvent>? Rows { get; }
        public TaskCompletionSource<CompletionResult> Result { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);
        public CompletionHandle Handle { get; }
        public DecodeScheduler? Scheduler { get; private set; }
        public LinkedListNode<Job>? Node;
        public CancellationTokenRegistration Registration;
        public Stopwatch Clock { get; } = Stopwatch.StartNew();
        public Stopwatch DecodeClock { get; } = new();
        public TimeSpan Queue, Prefill;
        public TimeSpan? FirstRow;
        public int Started, Running;
        public bool Done, PrefixCacheHit;
        public PrefixEntry? Snapshot;
        public float[]? PromptLogits;

        public Job WithScheduler(DecodeScheduler scheduler)
        {
            Scheduler = scheduler;
            return this;
        }
    }
}
