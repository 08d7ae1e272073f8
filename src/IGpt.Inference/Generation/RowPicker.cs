using IGpt.Inference.Engine;

namespace IGpt.Inference.Generation;

/// <summary>
/// The picks that follow a decode step: every active row's next pixel from its logits, with its request's sampling
/// settings and the row's own generator. Rows are independent, so the picks of a step can be split between threads,
/// each with a <see cref="Sampler"/> (scratch buffers) of its own, and they are the same however they are split. On
/// CUDA the host's cores idle through a step, and a step is short enough for the picks of 16 sampled rows of 512
/// colours to be a large share of it: there a team of the picker's own takes them (benchmarks/README.md, "CUDA").
/// On the CPU the picks stay on the scheduler's thread unless Inference:SamplingThreads says otherwise: the step
/// threads are the cores, and splitting measured no gain there. A step splits only when it is worth waking threads
/// for: at least <see cref="MinColourRowsToSplit"/> rows x palette colours, and a row that samples (an argmax is cheap).
/// Used by the scheduler's thread only.
/// </summary>
internal sealed class RowPicker : IDisposable
{
    /// <summary>Rows x palette colours below which a step's picks stay on one thread (16 rows of a 256-colour palette).</summary>
    public const int MinColourRowsToSplit = 4096;
    /// <summary>The most threads of a team of the picker's own (16 rows: two a thread).</summary>
    public const int MaxOwnThreads = 8;

    private readonly Sampler[] _samplers;       // by worker; [0] is the scheduler thread's
    private readonly WorkerTeam? _team;
    private readonly float[] _logits;           // the step's logits, copied for the team (the decoder's span cannot be captured)
    private readonly int _vocab, _paletteSize;
    private readonly Action<int, int> _pickRow; // allocated once
    private DecodeSequence?[] _active = [];
    private int[] _picked = [];
    private long _splitSteps;

    private RowPicker(int paletteSize, int vocab, int maxRows, WorkerTeam? team)
    {
        _vocab = vocab;
        _paletteSize = paletteSize;
        _team = team;
        _samplers = new Sampler[team?.Threads ?? 1];
        for (int i = 0; i < _samplers.Length; i++) _samplers[i] = new Sampler(paletteSize);
        _logits = team is null ? [] : new float[maxRows * vocab];
        _pickRow = PickRow;
    }

    /// <summary>
    /// A picker for <paramref name="decoder"/>'s steps. <paramref name="threads"/> (Inference:SamplingThreads): 0 = on
    /// CUDA a team of one thread per core up to <see cref="MaxOwnThreads"/>, on the CPU the scheduler's thread alone;
    /// 1 = the scheduler's thread alone; more = a team of that many threads.
    /// </summary>
    public static RowPicker For(KvCacheDecoder decoder, int paletteSize, int threads)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(threads);
        if (threads == 0)
            threads = decoder.KvOnHost ? 1 : Math.Min(Environment.ProcessorCount, MaxOwnThreads);
        var team = threads > 1 ? new WorkerTeam(threads, "igpt-pick") : null;
        return new RowPicker(paletteSize, decoder.VocabSize, decoder.MaxBatch, team);
    }

    /// <summary>Threads a step's picks may use, the scheduler's included.</summary>
    public int Threads => _samplers.Length;

    /// <summary>Steps whose picks were split between threads.</summary>
    public long SplitSteps => Interlocked.Read(ref _splitSteps);

    /// <summary>One pick on the calling (the scheduler's) thread: the first pixel after a prefill.</summary>
    public int Pick(ReadOnlySpan<float> logits, SamplingOptions options, ref Xoshiro256StarStar rng) =>
        _samplers[0].Pick(logits, options, ref rng);

    /// <summary>picked[r] = the next pixel of active[r] for r in 0..rows-1 (rows [rows, vocab] of logits); empty slots are skipped.</summary>
    public void PickAll(ReadOnlySpan<float> logits, DecodeSequence?[] active, int rows, int[] picked)
    {
        if (_team is null || rows * _paletteSize < MinColourRowsToSplit || !AnySampled(active, rows))
        {
            for (int r = 0; r < rows; r++)
                if (active[r] is { } seq)
                    picked[r] = _samplers[0].Pick(logits.Slice(r * _vocab, _vocab), seq.Job.Request.Sampling, ref seq.Rng);
            return;
        }
        logits[..(rows * _vocab)].CopyTo(_logits);
        _active = active;
        _picked = picked;
        _team.Run(rows, _pickRow);
        Interlocked.Increment(ref _splitSteps);
    }

    private void PickRow(int r, int worker)
    {
        if (_active[r] is { } seq)
            _picked[r] = _samplers[worker].Pick(_logits.AsSpan(r * _vocab, _vocab), seq.Job.Request.Sampling, ref seq.Rng);
    }

    private static bool AnySampled(DecodeSequence?[] active, int rows)
    {
        for (int r = 0; r < rows; r++)
            if (active[r] is { } seq && seq.Job.Request.Sampling.Temperature > 0) return true;
        return false;
    }

    public void Dispose() => _team?.Dispose();
}
