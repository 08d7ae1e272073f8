using IGpt.Inference.Engine;

namespace IGpt.Inference.Generation;

/// <summary>
/// The picks that follow a decode step: every active row's next pixel from its logits, with its request's sampling
/// settings and the row's own generator. Rows are independent, so a step with enough sampled rows splits them between
/// threads, each with a <see cref="Sampler"/> (scratch buffers) of its own, and the picks are the same however they are
/// split. The threads are the decoder's step threads where it has them (the CPU's, idle while the scheduler picks);
/// on CUDA, where the host's cores idle through a step and a step is short enough for the picks of 16 sampled rows
/// of 512 colours to be a large share of it (benchmarks/README.md, "CUDA"), a team of the picker's own. Steps of fewer than
/// <see cref="MinRowsToSplit"/> rows, or of greedy rows only, pick on the scheduler's thread: an argmax costs less than
/// waking a thread. Used by the scheduler's thread only.
/// </summary>
internal sealed class RowPicker : IDisposable
{
    public const int MinRowsToSplit = 4;
    /// <summary>The most threads of a team of the picker's own (16 rows: two a thread).</summary>
    public const int MaxOwnThreads = 8;

    private readonly Sampler[] _samplers;       // by worker; [0] is the scheduler thread's
    private readonly WorkerTeam? _team;
    private readonly bool _ownsTeam;
    private readonly float[] _logits;           // the step's logits, copied for the team (the decoder's span cannot be captured)
    private readonly int _vocab;
    private readonly Action<int, int> _pickRow; // allocated once
    private DecodeSequence?[] _active = [];
    private int[] _picked = [];
    private long _splitSteps;

    private RowPicker(int paletteSize, int vocab, int maxRows, WorkerTeam? team, bool ownsTeam)
    {
        _vocab = vocab;
        _team = team;
        _ownsTeam = ownsTeam;
        _samplers = new Sampler[team?.Threads ?? 1];
        for (int i = 0; i < _samplers.Length; i++) _samplers[i] = new Sampler(paletteSize);
        _logits = team is null ? [] : new float[maxRows * vocab];
        _pickRow = PickRow;
    }

    /// <summary>
    /// A picker for <paramref name="decoder"/>'s steps. <paramref name="threads"/> (Inference:SamplingThreads): 0 = the
    /// decoder's step threads on the CPU, on CUDA a team of up to <see cref="MaxOwnThreads"/> (one per core); 1 = the
    /// scheduler's thread alone; more = a team of that many threads.
    /// </summary>
    public static RowPicker For(KvCacheDecoder decoder, int paletteSize, int threads)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(threads);
        WorkerTeam? team = null;
        bool owns = false;
        if (threads == 0)
        {
            team = decoder.StepTeam;
            int cores = Math.Min(Environment.ProcessorCount, MaxOwnThreads);
            if (team is null && !decoder.KvOnHost && cores > 1)
                (team, owns) = (new WorkerTeam(cores, "igpt-pick"), true);
        }
        else if (threads > 1)
            (team, owns) = (new WorkerTeam(threads, "igpt-pick"), true);
        return new RowPicker(paletteSize, decoder.VocabSize, decoder.MaxBatch, team, owns);
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
        if (_team is null || rows < MinRowsToSplit || !AnySampled(active, rows))
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

    public void Dispose()
    {
        if (_ownsTeam) _team!.Dispose();
    }
}
