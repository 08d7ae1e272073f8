namespace IGpt.Api.Contracts;

/// <summary>Liveness or readiness of the service, with each model's status.</summary>
public sealed record HealthResponse
{
    /// <summary>
    /// <c>live</c> (liveness); for readiness <c>ready</c> (every model ready), <c>degraded</c> (at least one model ready,
    /// some failed or failing: still ready, the failed ones answer 503), <c>unavailable</c> (no model ready: HTTP 503)
    /// or <c>stopping</c> (the service is shutting down: HTTP 503).
    /// </summary>
    public required string Status { get; init; }

    /// <summary>Every model package and its status.</summary>
    public required IReadOnlyList<ModelHealth> Models { get; init; }
}

/// <summary>The status of one model package.</summary>
public sealed record ModelHealth
{
    /// <summary>Model id.</summary>
    public required string Id { get; init; }

    /// <summary><c>ready</c>, <c>failed</c> (the package did not load) or <c>failing</c> (loaded, but its last runs failed).</summary>
    public required string Status { get; init; }

    /// <summary>Execution provider (<c>CUDA</c> or <c>CPU</c>) of a ready model.</summary>
    public string? ExecutionProvider { get; init; }

    /// <summary>Why the package failed to load, or why its last run failed.</summary>
    public string? Error { get; init; }
}
