using IGpt.Inference;
using Prometheus;

namespace IGpt.Api.Serving;

/// <summary>How a request ended, for igpt_requests_total.</summary>
public enum RequestOutcome { Ok, Rejected, Cancelled, TimedOut, Failed }

/// <summary>
/// The service's Prometheus metrics, in a registry of this host's own (GET /metrics). Per-step numbers come
/// from the decode schedulers (<see cref="IDecodeObserver"/>); gauges and totals are read from their
/// counters when /metrics is scraped.
/// </summary>
public sealed class ServingMetrics : IDecodeObserver
{
    private static readonly double[] SecondsBuckets = Histogram.ExponentialBuckets(0.0005, 2, 20);   // 0.5 ms .. ~4.4 min
    private static readonly double[] StepBuckets = Histogram.ExponentialBuckets(0.0001, 2, 16);      // 0.1 ms .. ~3.3 s
    private static readonly double[] RowBuckets = [1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256];

    private readonly Gauge _queueDepth, _activeSequences, _slots;
    private readonly Counter _steps, _stepsByPath, _tokens, _requests;
    private readonly System.Collections.Concurrent.ConcurrentDictionary<string, (Histogram.Child Step, Histogram.Child Occupancy)> _stepChildren = new();
    private readonly Histogram _queueSeconds, _firstRowSeconds, _stepSeconds, _occupancy, _classificationBatch, _analysisBatch;

    public ServingMetrics()
    {
        Registry = Metrics.NewCustomRegistry();
        var f = Metrics.WithCustomRegistry(Registry);
        string[] model = ["model"];
        _queueDepth = f.CreateGauge("igpt_queue_depth", "Generation requests waiting for a KV slot.", model);
        _activeSequences = f.CreateGauge("igpt_active_sequences", "Sequences (images) holding a KV slot.", model);
        _slots = f.CreateGauge("igpt_slots", "KV slots (Inference:MaxBatch).", model);
        _steps = f.CreateCounter("igpt_decode_steps_total", "Decode steps run.", model);
        _stepsByPath = f.CreateCounter("igpt_decode_steps_by_path_total",
            "Decode steps by how they ran: graph (the decoder graph in one run), lanes (rows split between threads), "
            + "segments (step segments with the library's attention), kernels (the library's own kernels).", ["model", "path"]);
        _tokens = f.CreateCounter("igpt_tokens_generated_total", "Pixels drawn (first pixels from prompt logits included).", model);
        _requests = f.CreateCounter("igpt_requests_total", "Generation, classification, embedding and likelihood requests by outcome.", ["model", "endpoint", "outcome"]);
        _queueSeconds = f.CreateHistogram("igpt_queue_seconds", "Time from admission to the first KV slot.",
            new HistogramConfiguration { LabelNames = model, Buckets = SecondsBuckets });
        _firstRowSeconds = f.CreateHistogram("igpt_time_to_first_row_seconds", "Time from admission to the first finished image row.",
            new HistogramConfiguration { LabelNames = model, Buckets = SecondsBuckets });
        _stepSeconds = f.CreateHistogram("igpt_decode_step_seconds", "Time of one decode step (all active sequences together).",
            new HistogramConfiguration { LabelNames = model, Buckets = StepBuckets });
        _occupancy = f.CreateHistogram("igpt_batch_occupancy", "Sequences per decode step.",
            new HistogramConfiguration { LabelNames = model, Buckets = RowBuckets });
        _classificationBatch = f.CreateHistogram("igpt_classification_batch_size", "Images per classification batch.",
            new HistogramConfiguration { LabelNames = model, Buckets = RowBuckets });
        _analysisBatch = f.CreateHistogram("igpt_analysis_batch_size", "Images per analysis batch (embeddings and likelihoods).",
            new HistogramConfiguration { LabelNames = model, Buckets = RowBuckets });
    }

    public CollectorRegistry Registry { get; }

    /// <summary>Reads the schedulers' gauges and totals of <paramref name="models"/> (asked at each scrape) before each scrape.</summary>
    public void Watch(Func<IEnumerable<(string Id, IGptModel Model)>> models)
    {
        Registry.AddBeforeCollectCallback(() =>
        {
            foreach (var (id, model) in models())
            {
                var stats = model.SchedulerStats;
                _queueDepth.WithLabels(id).Set(stats.QueuedRequests);
                _activeSequences.WithLabels(id).Set(stats.ActiveSequences);
                _slots.WithLabels(id).Set(stats.Slots);
                _steps.WithLabels(id).IncTo(stats.Steps);
                _stepsByPath.WithLabels(id, "graph").IncTo(stats.Steps - stats.LaneSteps - stats.SegmentedSteps - stats.KernelSteps);
                _stepsByPath.WithLabels(id, "lanes").IncTo(stats.LaneSteps);
                _stepsByPath.WithLabels(id, "segments").IncTo(stats.SegmentedSteps);
                _stepsByPath.WithLabels(id, "kernels").IncTo(stats.KernelSteps);
                _tokens.WithLabels(id).IncTo(stats.TokensGenerated);
            }
        });
    }

    public void OnDecodeStep(string modelId, int rows, TimeSpan elapsed)
    {
        // Called once per decode step on the scheduler's thread: the labelled children are looked up once per model.
        var (step, occupancy) = _stepChildren.GetOrAdd(modelId, id => (_stepSeconds.WithLabels(id), _occupancy.WithLabels(id)));
        step.Observe(elapsed.TotalSeconds);
        occupancy.Observe(rows);
    }

    public void Completed(string model, CompletionResult result)
    {
        _queueSeconds.WithLabels(model).Observe(result.Queue.TotalSeconds);
        if (result.FirstRow > TimeSpan.Zero) _firstRowSeconds.WithLabels(model).Observe(result.FirstRow.TotalSeconds);
    }

    public void Request(string model, string endpoint, RequestOutcome outcome) =>
        _requests.WithLabels(model, endpoint, OutcomeName(outcome)).Inc();

    public void ClassificationBatch(string model, int size) => _classificationBatch.WithLabels(model).Observe(size);

    public void AnalysisBatch(string model, int size) => _analysisBatch.WithLabels(model).Observe(size);

    public static string OutcomeName(RequestOutcome outcome) => outcome switch
    {
        RequestOutcome.Ok => "ok",
        RequestOutcome.Rejected => "rejected",
        RequestOutcome.Cancelled => "cancelled",
        RequestOutcome.TimedOut => "timed_out",
        _ => "failed",
    };
}
