namespace IGpt.Inference.Generation;

/// <summary>The request queue of a model is full: nothing was started; try again later.</summary>
public sealed class QueueFullException(string modelId, int capacity)
    : Exception($"The model '{modelId}' has {capacity} requests waiting, its queue's limit; try again later.")
{
    public int Capacity { get; } = capacity;
}
