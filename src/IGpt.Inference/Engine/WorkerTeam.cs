namespace IGpt.Inference.Engine;

/// <summary>
/// Threads that split a loop of work items with the calling thread: <see cref="Run"/> returns when every
/// item has run. Items are claimed one at a time, so a helper that wakes late takes fewer, and the caller
/// never waits for a helper that has not started: it waits only for items in flight. Between runs each
/// helper spins briefly (a decode step's next layer comes within a fraction of a millisecond) and then
/// sleeps, so that it does not compete with ONNX Runtime's own threads for the cores while a session runs.
/// Not thread-safe: one <see cref="Run"/> at a time.
/// </summary>
internal sealed class WorkerTeam : IDisposable
{
    private static readonly long SpinTicks = System.Diagnostics.Stopwatch.Frequency / 50_000;  // 20 us of spinning, then sleep

    private readonly Thread[] _helpers;
    private readonly SemaphoreSlim[] _wake;
    private readonly int[] _sleeping;     // by helper: 1 while it waits on its semaphore
    // The run's generation (high 32 bits) and its next unclaimed item (low 32): a helper claims an item with
    // one compare-and-swap that also proves the run it read the work of is still the current one.
    private long _ticket;
    private int _done, _count;
    private Action<int, int>? _work;
    private volatile bool _stop;
    private Exception? _failure;

    /// <param name="threads">Threads per run, the caller included (helpers = threads - 1).</param>
    public WorkerTeam(int threads, string name)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(threads, 1);
        _helpers = new Thread[threads - 1];
        _wake = new SemaphoreSlim[threads - 1];
        _sleeping = new int[threads - 1];
        for (int i = 0; i < _helpers.Length; i++)
        {
            int helper = i;
            _wake[i] = new SemaphoreSlim(0);
            _helpers[i] = new Thread(() => Loop(helper)) { IsBackground = true, Name = $"{name}-{i + 1}" };
            _helpers[i].Start();
        }
    }

    /// <summary>Threads per run, the caller included; worker indexes are 0 (the caller) .. Threads-1.</summary>
    public int Threads => _helpers.Length + 1;

    /// <summary>Runs work(item, worker) for item 0..count-1 on the caller and the helpers; rethrows an item's exception.</summary>
    public void Run(int count, Action<int, int> work)
    {
        if (count <= 0) return;
        // Close the last run's ticket first (a new generation with no claimable item), so that a helper still holding
        // a ticket of it cannot claim an item while the work below is being replaced; then open this run's.
        long generation = (Volatile.Read(ref _ticket) >> 32) + 1;
        Interlocked.Exchange(ref _ticket, (generation << 32) | int.MaxValue);
        _work = work;
        _count = count;
        _failure = null;
        Volatile.Write(ref _done, 0);
        generation++;
        Volatile.Write(ref _ticket, generation << 32);  // publishes the work above
        if (count > 1)
            for (int i = 0; i < _helpers.Length; i++)
                if (Interlocked.Exchange(ref _sleeping[i], 0) == 1) _wake[i].Release();
        Work(generation, 0);
        var spin = new SpinWait();
        while (Volatile.Read(ref _done) < count) spin.SpinOnce(sleep1Threshold: -1);
        _work = null;
        if (_failure is { } e) throw new AggregateException(e);
    }

    /// <summary>Claims and runs items of run <paramref name="generation"/> until none is left.</summary>
    private void Work(long generation, int worker)
    {
        while (true)
        {
            long ticket = Volatile.Read(ref _ticket);
            if (ticket >> 32 != generation) return;
            // Read after the ticket: this run's work, or a later run's, whose closing has already made the claim below fail.
            var work = _work;
            int count = _count, item = (int)(ticket & 0xFFFF_FFFF);
            if (item >= count || work is null) return;
            if (Interlocked.CompareExchange(ref _ticket, ticket + 1, ticket) != ticket) continue;
            try { work(item, worker); }
            catch (Exception e) { Interlocked.CompareExchange(ref _failure, e, null); }
            Interlocked.Increment(ref _done);
        }
    }

    private void Loop(int helper)
    {
        long seen = 0;
        while (true)
        {
            long spinUntil = System.Diagnostics.Stopwatch.GetTimestamp() + SpinTicks;
            while (Volatile.Read(ref _ticket) >> 32 == seen && !_stop)
            {
                if (System.Diagnostics.Stopwatch.GetTimestamp() < spinUntil)
                {
                    Thread.SpinWait(1);
                    continue;
                }
                Volatile.Write(ref _sleeping[helper], 1);
                // Run either sees the flag (and releases the semaphore) or published its run before it was set.
                if (Volatile.Read(ref _ticket) >> 32 != seen || _stop)
                {
                    if (Interlocked.Exchange(ref _sleeping[helper], 0) == 0) _wake[helper].Wait();  // Run took it: consume its release
                    break;
                }
                _wake[helper].Wait();
                spinUntil = System.Diagnostics.Stopwatch.GetTimestamp() + SpinTicks;
            }
            if (_stop) return;
            seen = Volatile.Read(ref _ticket) >> 32;
            Work(seen, helper + 1);
        }
    }

    public void Dispose()
    {
        if (_stop) return;
        _stop = true;
        for (int i = 0; i < _helpers.Length; i++)
            if (Interlocked.Exchange(ref _sleeping[i], 0) == 1) _wake[i].Release();
        foreach (var t in _helpers) t.Join();
        foreach (var w in _wake) w.Dispose();
    }
}
