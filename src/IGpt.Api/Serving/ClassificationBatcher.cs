using System.Collections.Concurrent;
using System.Threading.Channels;
using IGpt.Api.Hosting;
using IGpt.Inference;
using Microsoft.Extensions.Options;

namespace IGpt.Api.Serving;

/// <summary>
/// Micro-batches classification requests per model: the first waiting image opens a window of
/// Api:ClassificationBatchWindowMs; whatever arrives within it (at most Api:ClassificationMaxBatch images)
/// runs as one IGptModel.ClassifyBatchAsync call. A caller that gives up is answered no more; its image may
/// still be classified with the others.
/// </summary>
public sealed class ClassificationBatcher(IOptions<ApiOptions> options, ServingMetrics metrics, ILogger<ClassificationBatcher> logger)
    : IAsyncDisposable
{
    private readonly ConcurrentDictionary<IGptModel, Lazy<Lane>> _lanes = new();
    private readonly CancellationTokenSource _stop = new();
    private long _batches, _images;
    private int _largest;

    /// <summary>Batches run so far, images in them and the largest batch (tests and logs).</summary>
    public (long Batches, long Images, int Largest) Stats => (Interlocked.Read(ref _batches), Interlocked.Read(ref _images), Volatile.Read(ref _largest));

    public Task<float[]> ClassifyAsync(string modelId, IGptModel model, int[] imageTokens, CancellationToken cancellationToken)
    {
        var lane = _lanes.GetOrAdd(model, m => new Lazy<Lane>(() => new Lane(this, modelId, m))).Value;
        var item = new Item(imageTokens, cancellationToken);
        if (!lane.Queue.Writer.TryWrite(item)) throw new ObjectDisposedException(nameof(ClassificationBatcher));
        return item.Result.Task;
    }

    private async Task RunAsync(Lane lane)
    {
        var reader = lane.Queue.Reader;
        var max = options.Value.ClassificationMaxBatch;
        var window = options.Value.ClassificationBatchWindow;
        var batch = new List<Item>(max);
        try
        {
            while (await reader.WaitToReadAsync(_stop.Token))
            {
                batch.Clear();
                using (var windowEnd = CancellationTokenSource.CreateLinkedTokenSource(_stop.Token))
                {
                    windowEnd.CancelAfter(window);
                    while (batch.Count < max)
                    {
                        if (reader.TryRead(out var item))
                        {
                            if (!item.Result.Task.IsCompleted) batch.Add(item);
                            continue;
                        }
                        try
                        {
                            if (!await reader.WaitToReadAsync(windowEnd.Token)) break;
                        }
                        catch (OperationCanceledException) when (!_stop.IsCancellationRequested)
                        {
                            break;   // the window closed
                        }
                    }
                }
                if (batch.Count == 0) continue;
                Interlocked.Increment(ref _batches);
                Interlocked.Add(ref _images, batch.Count);
                if (batch.Count > _largest) Volatile.Write(ref _largest, batch.Count);
                metrics.ClassificationBatch(lane.ModelId, batch.Count);
                try
                {
                    var probabilities = await lane.Model.ClassifyBatchAsync([.. batch.Select(i => i.Tokens)], _stop.Token);
                    for (int i = 0; i < batch.Count; i++) batch[i].Result.TrySetResult(probabilities[i]);
                }
                catch (Exception e) when (!_stop.IsCancellationRequested)
                {
                    logger.LogError(e, "Classification batch of {Count} failed on model {Model}", batch.Count, lane.ModelId);
                    foreach (var item in batch) item.Result.TrySetException(e);
                }
            }
        }
        catch (OperationCanceledException) when (_stop.IsCancellationRequested)
        {
        }
        foreach (var item in batch) item.Result.TrySetCanceled();
        while (reader.TryRead(out var left)) left.Result.TrySetCanceled();
    }

    public async ValueTask DisposeAsync()
    {
        if (_stop.IsCancellationRequested) return;
        _stop.Cancel();
        var lanes = _lanes.Values.Select(l => l.Value).ToArray();
        foreach (var lane in lanes) lane.Queue.Writer.TryComplete();
        await Task.WhenAll(lanes.Select(l => l.Loop)).ConfigureAwait(false);
        _stop.Dispose();
    }

    private sealed class Lane
    {
        public Lane(ClassificationBatcher owner, string modelId, IGptModel model)
        {
            ModelId = modelId;
            Model = model;
            Loop = Task.Run(() => owner.RunAsync(this));
        }

        public string ModelId { get; }
        public IGptModel Model { get; }
        public Channel<Item> Queue { get; } = Channel.CreateUnbounded<Item>(new UnboundedChannelOptions { SingleReader = true });
        public Task Loop { get; }
    }

    private sealed class Item
    {
        private readonly CancellationTokenRegistration _registration;

        public Item(int[] tokens, CancellationToken cancellationToken)
        {
            Tokens = tokens;
            _registration = cancellationToken.Register(() => Result.TrySetCanceled(cancellationToken));
            Result.Task.ContinueWith(_ => _registration.Dispose(), TaskScheduler.Default);
        }

        public int[] Tokens { get; }
        public TaskCompletionSource<float[]> Result { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);
    }
}
