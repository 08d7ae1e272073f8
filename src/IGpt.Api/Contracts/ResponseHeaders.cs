namespace IGpt.Api.Contracts;

/// <summary>The response headers the API sets, named once for the handlers and the OpenAPI document.</summary>
public static class ResponseHeaders
{
    /// <summary>The sampling seed used (generation answers, streamed ones too).</summary>
    public const string Seed = "X-Seed";

    /// <summary><c>hit</c> or <c>miss</c>: the prefix cache (generation) or the classification cache.</summary>
    public const string Cache = "X-Cache";

    /// <summary>Milliseconds per phase of a generation: <c>queue;dur=…, prefill;dur=…, decode;dur=…</c>.</summary>
    public const string ServerTiming = "Server-Timing";

    /// <summary>Seconds to wait before retrying a 429 or 503.</summary>
    public const string RetryAfter = "Retry-After";
}
