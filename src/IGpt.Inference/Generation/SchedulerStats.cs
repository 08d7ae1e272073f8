namespace IGpt.Inference.Generation;

/// <summary>A snapshot of a scheduler's counters (metrics and tests read them).</summary>
/// <param name="FailedRuns">Prefills and decode steps that threw.</param>
/// <param name="FailedRequests">Requests failed by those runs.</param>
/// <param name="ConsecutiveFailures">Requests failed by a run since the last request that completed.</param>
public sealed record SchedulerStats(
    int Slots, int ActiveSequences, int QueuedRequests, long Steps, int MaxRowsPerStep, long RowsStepped,
    long TokensGenerated, long CompletedRequests, long CancelledRequests, long Prefills,
    long FailedRuns = 0, long FailedRequests = 0, int ConsecutiveFailures = 0, long LaneSteps = 0, long SegmentedSteps = 0,
    long KernelSteps = 0);
