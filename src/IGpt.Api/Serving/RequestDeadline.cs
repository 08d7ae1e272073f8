namespace IGpt.Api.Serving;

/// <summary>
/// What may end a generation request early, as one token for the scheduler: its time limit (Api:RequestTimeoutSeconds,
/// queue included), the end of shutdown's drain time, and the client leaving. Kept as a request feature so that
/// <see cref="Errors.RequestFailure"/> can tell which of them cancelled the request (504, 503 or nobody to answer).
/// </summary>
public sealed class RequestDeadline : IDisposable
{
    private readonly CancellationTokenSource _source;
    private readonly CancellationToken _shutdown;

    public RequestDeadline(TimeSpan timeout, CancellationToken requestAborted, CancellationToken shutdown)
    {
        _shutdown = shutdown;
        _source = CancellationTokenSource.CreateLinkedTokenSource(requestAborted, shutdown);
        _source.CancelAfter(timeout);
    }

    public CancellationToken Token => _source.Token;

    /// <summary>Shutdown's drain time is over: running work is cancelled so that the service can stop.</summary>
    public bool ShutdownReached => _shutdown.IsCancellationRequested;

    /// <summary>Cancelled for any reason: the time limit, shutdown, the client leaving, or the request ending early.</summary>
    public bool IsCancellationRequested => _source.IsCancellationRequested;

    /// <summary>Ends the request's work now (a stream that stops before its result frees the scheduler's slots).</summary>
    public Task CancelAsync() => _source.CancelAsync();

    public void Dispose() => _source.Dispose();
}
