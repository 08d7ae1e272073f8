namespace IGpt.Inference.Engine.Cpu;

/// <summary>A part of a step's rows, bound once, that one step thread runs on its own.</summary>
internal interface IStepLane : IDisposable
{
    void Run(int lane);
}

/// <summary>How a step's rows split into lanes.</summary>
internal static class LaneRunner
{
    /// <summary>Lane <paramref name="lane"/>'s rows of a step over <paramref name="rows"/> rows in <paramref name="lanes"/> lanes.</summary>
    public static (int First, int Count) LaneRows(int rows, int lanes, int lane)
    {
        int first = rows * lane / lanes;
        return (first, rows * (lane + 1) / lanes - first);
    }
}

/// <summary>
/// Runs a CPU step's rows in lanes: the rows split between the step threads, each running its share through
/// one-thread sessions, concurrently, so that a step hands work to another thread once instead of at each of its
/// ~70 ops (a session with a thread pool wakes its threads at every op). Serves both lane kinds the decoder has:
/// row lanes of the whole decoder graph (<see cref="DecodeBinding"/>) and step segments (<see cref="SegmentedStep"/>).
/// A lane's binding is created once per (first row, rows) and reused, so a step allocates nothing. Not thread-safe.
/// </summary>
internal sealed class LaneRunner<TLane> : IDisposable where TLane : class, IStepLane
{
    private readonly WorkerTeam? _team;
    private readonly Func<int, int, TLane> _bind;
    private readonly Dictionary<(int First, int Count), TLane> _bindings = [];
    private readonly TLane[] _stepLanes;   // this step's lanes' bindings, by lane
    private readonly Action<int, int> _runLane;

    /// <param name="team">The step threads (not owned; null: the caller alone, one lane).</param>
    /// <param name="bind">Creates the binding of rows first..first+count-1; the bindings are owned by the runner.</param>
    public LaneRunner(WorkerTeam? team, Func<int, int, TLane> bind)
    {
        _team = team;
        _bind = bind;
        _stepLanes = new TLane[team?.Threads ?? 1];
        _runLane = (lane, _) => _stepLanes[lane].Run(lane);
    }

    /// <summary>Most lanes a step runs in: one per step thread.</summary>
    public int MaxLanes => _stepLanes.Length;

    /// <summary>Binds the lanes of a step over rows 0..rows-1; returns how many lanes it runs in.</summary>
    public int Prepare(int rows)
    {
        int lanes = Math.Min(rows, _stepLanes.Length);
        for (int lane = 0; lane < lanes; lane++)
        {
            var rowsOfLane = LaneRunner.LaneRows(rows, lanes, lane);
            if (!_bindings.TryGetValue(rowsOfLane, out var b)) _bindings[rowsOfLane] = b = _bind(rowsOfLane.First, rowsOfLane.Count);
            _stepLanes[lane] = b;
        }
        return lanes;
    }

    /// <summary>Runs the lanes <see cref="Prepare"/> bound, concurrently; returns when all have run.</summary>
    public void Run(int lanes)
    {
        if (_team is null) _stepLanes[0].Run(0);
        else _team.Run(lanes, _runLane);
    }

    public void Dispose()
    {
        foreach (var b in _bindings.Values) b.Dispose();
        _bindings.Clear();
    }
}
