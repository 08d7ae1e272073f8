using System.Threading.Channels;

namespace IGpt.Inference.Generation;

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
