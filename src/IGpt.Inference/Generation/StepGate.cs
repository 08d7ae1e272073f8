namespace IGpt.Inference.Generation;

/// <summary>
/// Holds the decode loops of the models it is given to between steps. While held, a loop still admits queued
/// requests into free slots (their prefill included) and drops cancelled ones, but runs no decode step, so
/// requests can be seen waiting in the queue and holding slots. Open by default; <see cref="Allow"/> lets a
/// given number of steps through (shared by every model the gate is given to).
/// </summary>
public sealed class StepGate
{
    private long _steps = -1;   // decode steps still allowed; -1: no limit
    private event Action? Changed;

    /// <summary>No decode step runs until <see cref="Open"/> or <see cref="Allow"/>.</summary>
    public void Hold() => Allow(0);

    /// <summary>Decode steps run freely again.</summary>
    public void Open() => Allow(-1);

    /// <summary>Lets <paramref name="steps"/> more decode steps through, then holds (-1: no limit).</summary>
    public void Allow(long steps)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(steps, -1);
        Interlocked.Exchange(ref _steps, steps);
        Changed?.Invoke();
    }

    /// <summary>Whether no step may run now.</summary>
    internal bool IsHeld => Interlocked.Read(ref _steps) == 0;

    /// <summary>Counts a step that ran against what <see cref="Allow"/> let through.</summary>
    internal void CountStep()
    {
        long steps;
        do steps = Interlocked.Read(ref _steps);
        while (steps > 0 && Interlocked.CompareExchange(ref _steps, steps - 1, steps) != steps);
    }

    /// <summary>Calls <paramref name="wake"/> whenever the gate changes (a held loop waits for it); returns the unsubscription.</summary>
    internal IDisposable OnChange(Action wake)
    {
        Changed += wake;
        return new Unsubscribe(this, wake);
    }

    private sealed class Unsubscribe(StepGate gate, Action wake) : IDisposable
    {
        public void Dispose() => gate.Changed -= wake;
    }
}
