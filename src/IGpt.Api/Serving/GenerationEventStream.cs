using System.Diagnostics;
using System.Net.ServerSentEvents;
using System.Runtime.CompilerServices;
using System.Text.Json;
using IGpt.Api.Contracts;
using IGpt.Api.Errors;
using IGpt.Api.Generation;
using IGpt.Inference;

namespace IGpt.Api.Serving;

/// <summary>
/// The server-sent events of a streamed generation: "row" per finished image row per sample, "heartbeat" after
/// a quiet interval (while queued, or between rows of a slow model), then "result" (the non-streamed answer's
/// body) or "error" (the problem <see cref="RequestFailure"/> maps the failure to, as a non-streamed answer would
/// get it). The stream owns the request's deadline: when it ends for any reason the request is cancelled, so the
/// scheduler frees its slots.
/// </summary>
internal sealed class GenerationEventStream(
    HttpContext context, GenerationPlan plan, CompletionHandle handle, RequestDeadline deadline,
    TimeSpan heartbeat, ImageGenerator generator, ServingMetrics metrics, string endpoint, JsonSerializerOptions json)
{
    public const string RowEvent = "row", HeartbeatEvent = "heartbeat", ResultEvent = "result", ErrorEvent = "error";

    private readonly Stopwatch _clock = Stopwatch.StartNew();
    private Task<bool>? _pending;

    public async IAsyncEnumerable<SseItem<string>> ReadAllAsync([EnumeratorCancellation] CancellationToken cancellationToken)
    {
        try
        {
            while (true)
            {
                var (item, done) = await NextAsync(cancellationToken);
                if (item is { } next) yield return next;
                if (done) yield break;
            }
        }
        finally
        {
            // A client that went away (or a stream that ended early) must not keep its slots.
            if (!handle.Result.IsCompleted)
            {
                metrics.Request(plan.Model, endpoint, RequestOutcome.Cancelled);
                await deadline.CancelAsync();
            }
            deadline.Dispose();
        }
    }

    private async Task<(SseItem<string>? Item, bool Done)> NextAsync(CancellationToken cancellationToken)
    {
        try
        {
            var rows = handle.Rows!;
            if (rows.TryRead(out var row)) return (Row(row), false);
            // The rows channel completes when the request ends (done, cancelled or failed), so no token here.
            _pending ??= rows.WaitToReadAsync().AsTask();
            using (var quiet = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken))
            {
                var beat = Task.Delay(heartbeat, quiet.Token);
                if (await Task.WhenAny(_pending, beat) != _pending)
                {
                    cancellationToken.ThrowIfCancellationRequested();
                    return (Heartbeat(), false);
                }
                await quiet.CancelAsync();
            }
            var more = await _pending;
            _pending = null;
            if (more) return (null, false);
            var result = await handle.Result;
            metrics.Completed(plan.Model, result);
            metrics.Request(plan.Model, endpoint, RequestOutcome.Ok);
            var body = generator.ToResponse(ImageGenerator.Output(plan, result));
            return (new SseItem<string>(JsonSerializer.Serialize(body, json), ResultEvent), true);
        }
        catch (Exception) when (cancellationToken.IsCancellationRequested || context.RequestAborted.IsCancellationRequested)
        {
            return (null, true);   // the client is gone: nobody reads an error event (the finally counts it)
        }
        catch (Exception e)
        {
            // A timeout, the service stopping, a model run that threw or a model disposed under the stream: mapped as
            // any answer is. Anything else is a bug, still answered with a problem (the status line is long sent).
            var failure = RequestFailure.From(e, context);
            if (failure is null)
            {
                context.RequestServices.GetRequiredService<ILogger<GenerationEventStream>>()
                    .LogError(e, "Streamed generation on model {Model} failed", plan.Model);
                failure = new RequestFailure(Problems.Create(StatusCodes.Status500InternalServerError,
                    "Generation failed", "The model failed while drawing the images."), RequestOutcome.Failed);
            }
            var problem = failure.Problem;
            problem.Instance ??= $"{context.Request.Method} {context.Request.Path}";
            metrics.Request(plan.Model, endpoint, failure.Outcome);
            return (new SseItem<string>(JsonSerializer.Serialize(problem, json), ErrorEvent), true);
        }
    }

    private SseItem<string> Row(ImageRowEvent row)
    {
        var body = new Contracts.RowEvent
        {
            Sample = row.Sample,
            Row = row.Row,
            Tokens = row.Tokens,
            Pixels = ImageGenerator.RowPixels(plan.Loaded, row.Tokens),
            ElapsedMs = Math.Round(row.Elapsed.TotalMilliseconds, 3),
        };
        return new SseItem<string>(JsonSerializer.Serialize(body, json), RowEvent);
    }

    private SseItem<string> Heartbeat()
    {
        var body = new Contracts.HeartbeatEvent
        {
            State = handle.Started ? "decoding" : "queued",
            ElapsedMs = Math.Round(_clock.Elapsed.TotalMilliseconds, 3),
        };
        return new SseItem<string>(JsonSerializer.Serialize(body, json), HeartbeatEvent);
    }
}
