namespace IGpt.Inference.Engine.Cpu;

/// <summary>
/// Splits a step's rows between row lanes so that the lanes finish together. Each lane takes as many rows as
/// <see cref="LaneRunner.LaneRows"/> gives it, so the lanes' products stay equal (and in the four-row kernels' groups);
/// the attention differs with the positions each row reads, so the rows go longest first, each to the lane with the fewest
/// positions so far among those with room (longest processing time first), and each lane's rows keep their slot order.
/// Why: a lane step ends when its slowest lane does, and rows at independent positions (clients that started at different
/// times, whose slots follow their start) cut in halves by slot can leave one lane most of the long caches
/// (benchmarks/README.md, "Balanced row lanes"). <see cref="Halves"/> keeps the slot order instead, for rows in groups,
/// whose lane reads a group's shared prompt once. Allocates nothing.
/// </summary>
internal sealed class LaneBalancer
{
    private readonly long[] _keys;
    private readonly int[] _byPositions, _laneOf, _room;
    private readonly long[] _load;

    /// <param name="maxRows">Most rows a step has.</param>
    /// <param name="lanes">Lanes a step runs in.</param>
    public LaneBalancer(int maxRows, int lanes)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(lanes, 1);
        _keys = new long[maxRows];
        _byPositions = new int[maxRows];
        _laneOf = new int[maxRows];
        _load = new long[lanes];
        _room = new int[lanes];
        Order = new int[maxRows];
        Start = new int[lanes + 1];
    }

    /// <summary>The last split's rows (indexes into its positions), lane by lane: lane l's are Order[Start[l]..Start[l+1]-1].</summary>
    public int[] Order { get; }

    /// <summary>Where each lane's rows begin in <see cref="Order"/>; the last entry is the row count.</summary>
    public int[] Start { get; }

    /// <summary>Splits rows 0..rows-1 in slot order, each lane the rows <see cref="LaneRunner.LaneRows"/> gives it (rows in groups).</summary>
    public void Halves(int rows)
    {
        if (rows > _keys.Length) throw new ArgumentOutOfRangeException(nameof(rows), rows, $"at most {_keys.Length} rows");
        for (int r = 0; r < rows; r++) Order[r] = r;
        for (int lane = 0; lane < _load.Length; lane++) Start[lane] = LaneRunner.LaneRows(rows, _load.Length, lane).First;
        Start[_load.Length] = rows;
    }

    /// <summary>
    /// Splits rows 0..positions.Length-1, row r reading positions[r] + 1 cached positions per layer and head. With at least
    /// as many rows as lanes, no lane is left empty.
    /// </summary>
    public void Balance(ReadOnlySpan<int> positions)
    {
        int rows = positions.Length, lanes = _load.Length;
        if (rows > _keys.Length) throw new ArgumentOutOfRangeException(nameof(positions), rows, $"at most {_keys.Length} rows");
        for (int r = 0; r < rows; r++)
        {
            _byPositions[r] = r;
            _keys[r] = -(positions[r] + 1L) * 1024 - (1023 - r);   // most positions first; ties in row order
        }
        Array.Sort(_keys, _byPositions, 0, rows);
        for (int lane = 0; lane < lanes; lane++) (_load[lane], _room[lane]) = (0, LaneRunner.LaneRows(rows, lanes, lane).Count);
        for (int i = 0; i < rows; i++)
        {
            int r = _byPositions[i], least = -1;
            for (int lane = 0; lane < lanes; lane++)
                if (_room[lane] > 0 && (least < 0 || _load[lane] < _load[least])) least = lane;
            _laneOf[r] = least;
            _load[least] += positions[r] + 1;
            _room[least]--;
        }
        int n = 0;
        for (int lane = 0; lane < lanes; lane++)
        {
            Start[lane] = n;
            for (int r = 0; r < rows; r++)
                if (_laneOf[r] == lane) Order[n++] = r;
        }
        Start[lanes] = n;
    }
}
