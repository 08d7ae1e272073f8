using System.Diagnostics;
using System.Threading.Channels;

namespace IGpt.Inference.Generation;

/// <summary>One sample being drawn: its image, how much of it is known, its generator.</summary>
internal sealed class DecodeSequence(DecodeJob job, int index, ulong seed)
{
    public DecodeJob Job { get; } = job;
    public int Index { get; } = index;
    public int[] Image { get; } = job.Images[index];
    /// <summary>Pixels known; also the KV entries cached (SOS and x0..x(Filled-2)).</summary>
    public int Filled = job.Prompt.Length;
    public Xoshiro256StarStar Rng = Xoshiro256StarStar.ForRow(seed, index);
}

/// <summary>A request: its samples, its timings, its result; touched by the scheduler thread only (Node under the lock).</summary>
internal sealed class DecodeJob
{
    public DecodeJob(CompletionRequest request, ModelManifest manifest, bool streamRows, CancellationToken token)
    {
        Request = request;
        Token = token;
        Prompt = request.PromptTokens;
        PrefillTokens = [manifest.SosTokenId, .. request.PromptTokens];
        Images = new int[request.Count][];
        for (int i = 0; i < request.Count; i++)
        {
            Images[i] = new int[manifest.TokensPerImage];
            request.PromptTokens.CopyTo(Images[i], 0);
        }
        Rows = streamRows ? Channel.CreateUnbounded<ImageRowEvent>(new UnboundedChannelOptions { SingleReader = true, SingleWriter = true }) : null;
        Handle = new CompletionHandle(Result.Task, Rows?.Reader, () => Volatile.Read(ref Started) > 0);
    }

    public CompletionRequest Request { get; }
    public CancellationToken Token { get; }
    public int[] Prompt { get; }
    public int[] PrefillTokens { get; }
    public int[][] Images { get; }
    public Channel<ImageRowEvent>? Rows { get; }
    public TaskCompletionSource<CompletionResult> Result { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);
    public CompletionHandle Handle { get; }
    public DecodeScheduler? Scheduler { get; private set; }
    public LinkedListNode<DecodeJob>? Node;
    public CancellationTokenRegistration Registration;
    public Stopwatch Clock { get; } = Stopwatch.StartNew();
    public Stopwatch DecodeClock { get; } = new();
    public TimeSpan Queue, Prefill;
    public TimeSpan? FirstRow;
    public int Started, Running;
    public bool Done, PrefixCacheHit;
    public PrefixEntry? Snapshot;
    public float[]? PromptLogits;
    /// <summary>
    /// What the samples' prompt entries (SOS + prompt) were made from: the prefix snapshot they were loaded from or that was
    /// saved from this job's prefill, else the job itself. Samples of jobs with the same origin hold byte-identical prompt
    /// entries, so a decode step may read those once for all of them, across requests.
    /// </summary>
    public object? KvOrigin;

    public DecodeJob WithScheduler(DecodeScheduler scheduler)
    {
        Scheduler = scheduler;
        return this;
    }
}
