namespace IGpt.Tests.Shared;

/// <summary>Waiting for a state rather than for a time: every wait in the tests has the same generous limit.</summary>
internal static class Poll
{
    /// <summary>How long a test waits for a state or a task before it fails (a loaded CI machine can be slow).</summary>
    public static readonly TimeSpan Patience = TimeSpan.FromSeconds(60);

    /// <summary>Returns once <paramref name="condition"/> holds; throws after <see cref="Patience"/>, naming <paramref name="what"/> and the <paramref name="state"/> then.</summary>
    public static async Task Until(Func<bool> condition, string what, Func<object>? state = null)
    {
        var deadline = DateTime.UtcNow + Patience;
        while (!condition())
        {
            if (DateTime.UtcNow > deadline) throw new TimeoutException($"waited {Patience.TotalSeconds} s for: {what} ({state?.Invoke()})");
            await Task.Delay(5);
        }
    }
}
