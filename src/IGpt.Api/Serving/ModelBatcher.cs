using System.Collections.Concurrent;
using System.Threading.Channels;
using IGpt.Api.Hosting;
using IGpt.Inference;
using Microsoft.Extensions.Options;

namespace IGpt.Api.Serving;

/// <summary>
/// Micro-batches one kind of whole-image run per model (classification, analysis): the first waiting image opens a
/// window of Api:ClassificationBatchWindowMs; whatever arrives within it (at most Api:ClassificationMaxBatch images)
/// runs as one <see cref="RunBatchAsync"/> call. A caller that gives up is answered no more; its image may still run
/// with the others.
/// </summary>
public abstract class ModelBatcher<TResult>(IOptions<ApiOptions> options, ServingMetrics metrics, ILogger logger) : IAsyncDisposable
{
    private readonly ConcurrentDictionary<IGptModel, Lazy<Lane>> _lanes = new();
    private readonly CancellationTokenSource _stop = new();
    private long _batches, _images;
    private int _largest;

    /// <summary>Batches run so far, images in them and the largest batch (tests and logs).</summary>
    public (long Batches, long Images, int Largest) Stats => (Interlocked.Read(ref _batches), Interlocked.Read(ref _images), Volatile.Read(ref _largest));

    /// <summary>What the batch's images are run for, in log lines ("Classification", "Analysis").</summary>
    protected abstract string Kind { get; }

    /// <summary>Records a batch of <paramref name="size"/> images in the route's histogram.</summary>
    protected abstract void CountBatch(ServingMetrics metrics, string modelId, int size);

    /// <summary>The model's run over a batch of images: one result per image, in order.</summary>
    protected abstract Task<TResult[]> RunBatchAsync(IGptModel model, IReadOnlyList<int[]> images, CancellationToken cancellationToken);

    /// <summary>The image's result, from a batch shared with whoever asked for the same model meanwhile.</summary>
    protected Task<TResult> RunAsync(string modelId, IGptModel model, int[] imageTokens, CancellationToken cancellationToken)
    {
        var lane = _lanes.GetOrAdd(model, m => new Lazy<Lane>(() => new Lane(this, modelId, m))).Value;
        var item = new Item(imageTokens, cancellationToken);
        if (!lane.Queue.Writer.TryWrite(item)) throw new ObjectDisposedException(GetType().Name);
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
                CountBatch(metrics, lane.ModelId, batch.Count);
                try
                {
                    var results = await RunBatchAsync(lane.Model, [.. batch.Select(i => i.Tokens)], _stop.Token);
                    for (int i = 0; i < batch.Count; i++) batch[i].Result.TrySetResult(results[i]);
                }
                catch (Exception e) when (!_stop.IsCancellationRequested)
                {
                    logger.LogError(e, "{Kind} batch of {Count} failed on model {Model}", Kind, batch.Count, lane.ModelId);
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
        public Lane(ModelBatcher<TResult> owner, string modelId, IGptModel model)
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
        public TaskCompletionSource<TResult> Result { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);
    }
}

/// <summary>Classification requests, micro-batched per model (<see cref="ModelBatcher{TResult}"/>).</summary>
public sealed class ClassificationBatcher(IOptions<ApiOptions> options, ServingMetrics metrics, ILogger<ClassificationBatcher> logger)
    : ModelBatcher<float[]>(options, metrics, logger)
{
    protected override string Kind => "Classification";

    protected override void CountBatch(ServingMetrics metrics, string modelId, int size) => metrics.ClassificationBatch(modelId, size);

    /// <summary>Softmax class probabilities of the image.</summary>
    public Task<float[]> ClassifyAsync(string modelId, IGptModel model, int[] imageTokens, CancellationToken cancellationToken) =>
        RunAsync(modelId, model, imageTokens, cancellationToken);

    protected override Task<float[][]> RunBatchAsync(IGptModel model, IReadOnlyList<int[]> images, CancellationToken cancellationToken) =>
        model.ClassifyBatchAsync(images, cancellationToken);
}

/// <summary>
/// Analysis passes (embeddings, likelihoods), micro-batched per model like classification and with the same settings:
/// the analysis graph is a prefill of the whole image, about a classification's cost.
/// </summary>
public sealed class AnalysisBatcher(IOptions<ApiOptions> options, ServingMetrics metrics, ILogger<AnalysisBatcher> logger)
    : ModelBatcher<ImageAnalysis>(options, metrics, logger)
{
    protected override string Kind => "Analysis";

    protected override void CountBatch(ServingMetrics metrics, string modelId, int size) => metrics.AnalysisBatch(modelId, size);

    /// <summary>The image's per-layer features and per-pixel bits.</summary>
    public Task<ImageAnalysis> AnalyzeAsync(string modelId, IGptModel model, int[] imageTokens, CancellationToken cancellationToken) =>
        RunAsync(modelId, model, imageTokens, cancellationToken);

    protected override Task<ImageAnalysis[]> RunBatchAsync(IGptModel model, IReadOnlyList<int[]> images, CancellationToken cancellationToken) =>
        model.AnalyzeBatchAsync(images, cancellationToken);
}
