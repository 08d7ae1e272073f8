using System.Numerics;
using System.Runtime.InteropServices;
using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;

namespace IGpt.Inference.Engine;

/// <summary>
/// Runs a package's decoder graph with a KV cache that is allocated once: per layer one key and one
/// value buffer of [MaxBatch, n_head, n_positions, head_size], bound as both past and present
/// (GroupQueryAttention writes each row's new keys at that row's own length, taken from the
/// attention mask). Batch rows are slots: a slot's length is its mask row's sum, so rows at
/// different positions can share a step. Inputs, mask and logits live in buffers allocated once;
/// a decode step binds OrtValues created once per batch size, so it allocates nothing.
/// One code path for both providers: <see cref="DecoderMemory"/> says where the bound buffers live
/// (host, or the CUDA device) and copies between them; the KV element type (fp32 or fp16) comes from
/// the graph. On the device, a step uploads token ids, positions and the mask rows it runs and downloads
/// the last position's logits of the rows asked for; the KV cache never leaves the device.
/// On the CPU a step takes one of three paths (<see cref="CpuSteps"/>, benchmarks/README.md), all over the
/// same buffers: the graph in one run (on a one-thread session for the smallest steps, see
/// <see cref="SmallStepRows"/>); row lanes, the rows split between the step threads, each running the
/// one-thread session (<see cref="LaneStepRows"/>); or the package's step segments with the library's
/// attention when the caches are long (<see cref="SegmentedStepRows"/>, <see cref="SegmentedStep"/>).
/// Not thread-safe: one caller at a time (IGptModel serializes); lanes run on the decoder's own threads.
/// </summary>
internal sealed unsafe class KvCacheDecoder : IDisposable
{
    private readonly InferenceSession _session;
    private readonly InferenceSession? _smallStepSession;  // one intra-op thread: steps of up to _smallStepRows slots
    private readonly int _smallStepRows;
    private readonly DecoderMemory _memory;
    private readonly bool _fixedStepShapes;
    private readonly int _layers, _heads, _headSize, _positions, _vocab, _maxBatch;
    private readonly int _elementSize;
    private readonly TensorElementType _kvType;
    private readonly OrtMemoryInfo _hostInfo = OrtMemoryInfo.DefaultInstance;
    private readonly IntPtr[] _kv;                      // 2 * layers: key 0, value 0, key 1, ... (in _memory)
    private readonly string[] _pastNames, _presentNames;
    // Decode inputs on the host, one block: ids [MaxBatch], positions [MaxBatch], mask [MaxBatch, n_positions],
    // so that a step's inputs (all ids and positions, then its mask rows) are one contiguous upload.
    private readonly long* _inputs, _ids, _pos, _mask;
    private readonly IntPtr _boundInputs, _boundLogits;  // what a step binds: the host buffers, or their device copies
    private readonly long* _prefillIds, _prefillPos, _prefillMask; // prefill inputs: up to [MaxBatch, n_positions]
    private readonly float* _logits;                   // host: [MaxBatch or more, vocab] (prefill: [rows * S, vocab])
    private readonly long _logitsCapacity;
    private readonly DecodeBinding?[] _decodeBindings; // by step batch size
    private readonly RunOptions _runOptions = new();  // prefill and reference runs: never a CUDA graph
    private readonly bool _graphs;
    private readonly WorkerTeam? _team;                // the step threads: row lanes and segmented steps
    private readonly int _laneRows;
    private readonly Dictionary<(int First, int Count), DecodeBinding> _laneBindings = [];  // on the one-thread session
    private readonly DecodeBinding[] _stepLanes = [];  // this step's lanes' bindings, by lane
    private readonly Action<int, int>? _runLane;
    private long _laneSteps;
    private readonly SegmentedStep? _segmented;        // steps of at least _segmentedRows rows, when the package has step segments
    private readonly int _segmentedRows;
    private readonly bool _alwaysSegmented;
    private long _segmentedSteps;
    private readonly long _weightBytes;                // fp32 matmul weights a step reads: 4 x (12 L C^2 + C V)
    private bool _disposed;

    /// <param name="memory">Where the bound buffers live; owned (disposed) by the decoder, before the session.</param>
    /// <param name="fixedStepShapes">
    /// CUDA graphs: run each step at a power-of-two number of slots (capped at MaxBatch) so that only a few
    /// shapes (one captured graph each, gpu_graph_id = the slot count) ever occur; the padding rows write a
    /// throwaway entry at position 0 of slots no sequence holds.
    /// </param>
    /// <param name="cpu">
    /// Optional: how CPU steps may run besides the decoder session (<see cref="CpuSteps"/>). Its sessions are the
    /// decoder's once it is constructed (disposed with it); if the constructor throws, the caller disposes them.
    /// </param>
    public KvCacheDecoder(InferenceSession session, ModelManifest manifest, int maxBatch, DecoderMemory memory,
        TensorElementType kvType, bool fixedStepShapes = false, CpuSteps? cpu = null)
    {
        _session = session;
        cpu ??= new CpuSteps();
        if ((cpu.Segments is not null || cpu.LaneStepRows > 0) && (!memory.IsHost || fixedStepShapes))
            throw new ArgumentException("row lanes and step segments run on the CPU provider", nameof(cpu));
        _smallStepSession = cpu.OneThreadSession;
        _smallStepRows = cpu.OneThreadSession is null ? 0 : Math.Min(cpu.SmallStepRows, maxBatch);
        _memory = memory;
        _fixedStepShapes = fixedStepShapes;
        _graphs = fixedStepShapes && !memory.IsHost;
        if (_graphs) _runOptions.AddRunConfigEntry("gpu_graph_id", "-1");  // variable shapes: run without capturing
        var a = manifest.Architecture;
        (_layers, _heads, _headSize, _positions, _vocab, _maxBatch) = (a.NLayer, a.NHead, a.HeadSize, a.NPositions, manifest.VocabSize, maxBatch);
        if (kvType is not (TensorElementType.Float or TensorElementType.Float16))
            throw new ArgumentOutOfRangeException(nameof(kvType), kvType, "the KV cache is float32 or float16");
        _kvType = kvType;
        _elementSize = kvType == TensorElementType.Float16 ? 2 : 4;
        _pastNames = new string[2 * _layers];
        _presentNames = new string[2 * _layers];
        for (int i = 0; i < _layers; i++)
        {
            _pastNames[2 * i] = $"past_key_values.{i}.key";
            _pastNames[2 * i + 1] = $"past_key_values.{i}.value";
            _presentNames[2 * i] = $"present.{i}.key";
            _presentNames[2 * i + 1] = $"present.{i}.value";
        }
        CheckGraph(manifest);

        _kv = new IntPtr[2 * _layers];
        for (int i = 0; i < _kv.Length; i++) _kv[i] = memory.Allocate((long)_maxBatch * RowStride * _elementSize);

        _inputs = NativeBuffer.AllocZeroed<long>(InputsLength(_maxBatch));
        _ids = _inputs;
        _pos = _inputs + _maxBatch;
        _mask = _inputs + 2 * _maxBatch;
        _prefillIds = NativeBuffer.AllocZeroed<long>(_maxBatch * (long)_positions);
        _prefillPos = NativeBuffer.AllocZeroed<long>(_maxBatch * (long)_positions);
        _prefillMask = NativeBuffer.AllocZeroed<long>(_maxBatch * (long)_positions);
        // Prefill runs one row (the scheduler copies it to the others); a step returns one position per slot.
        _logitsCapacity = Math.Max((long)_positions, _maxBatch) * _vocab;
        _logits = NativeBuffer.AllocZeroed<float>(_logitsCapacity);
        if (memory.IsHost)
            (_boundInputs, _boundLogits) = ((IntPtr)_inputs, (IntPtr)_logits);
        else
        {
            _boundInputs = memory.Allocate(InputsLength(_maxBatch) * 8L);
            _boundLogits = memory.Allocate(_maxBatch * 4L * _vocab);
        }
        _decodeBindings = new DecodeBinding?[_maxBatch + 1];

        if (cpu.Threads > 1 && (cpu.Segments is not null || (cpu.LaneStepRows > 1 && _smallStepSession is not null)))
            _team = new WorkerTeam(cpu.Threads, "igpt-step");
        if (_team is not null && cpu.LaneStepRows > 1 && _smallStepSession is not null)
        {
            _laneRows = cpu.LaneStepRows;
            _stepLanes = new DecodeBinding[_team.Threads];
            _runLane = RunLane;
        }
        if (cpu.Segments is { } segments)
        {
            if (kvType != TensorElementType.Float || cpu.SegmentedStepRows < 1)
                throw new ArgumentException("step segments run with an fp32 KV cache, from one row up", nameof(cpu));
            var attention = new CachedAttention(_heads, _headSize, _positions, _maxBatch, _team?.Threads ?? 1,
                cpu.VectorizedAttention && CachedAttention.CanVectorize(_headSize));
            try { _segmented = new SegmentedStep(segments, manifest, _maxBatch, attention, _team, _ids, _pos, _logits, _kv); }
            catch
            {
                attention.Dispose();
                _team?.Dispose();
                FreeHostBuffers();  // the caller disposes the sessions and the memory it passed
                throw;
            }
            _segmentedRows = cpu.SegmentedStepRows;
            _alwaysSegmented = cpu.AlwaysSegmented;
            _weightBytes = 4L * manifest.MatmulParameters;
        }
    }

    public int MaxBatch => _maxBatch;
    public int Positions => _positions;
    public int VocabSize => _vocab;
    /// <summary>The KV cache's element type: float32 (Float) or float16 (Float16).</summary>
    public TensorElementType KvType => _kvType;
    /// <summary>Steps over at most this many slots run on the one-thread session; 0 when there is none.</summary>
    public int SmallStepRows => _smallStepRows;
    /// <summary>Steps of at least this many rows run as step segments with the library's attention; 0 when never.</summary>
    public int SegmentedStepRows => _segmented is null ? 0 : _segmentedRows;
    /// <summary>Decode steps run as step segments so far.</summary>
    public long SegmentedSteps => Interlocked.Read(ref _segmentedSteps);
    /// <summary>Steps of at least this many rows (and not segmented) run as row lanes on the one-thread session; 0 when never.</summary>
    public int LaneStepRows => _runLane is null ? 0 : _laneRows;
    /// <summary>Decode steps run as row lanes so far.</summary>
    public long LaneSteps => Interlocked.Read(ref _laneSteps);
    /// <summary>Whether the KV cache lives on the host (CPU provider) rather than the device.</summary>
    public bool KvOnHost => _memory.IsHost;
    /// <summary>Elements of one batch row of one KV buffer: n_head * n_positions * head_size.</summary>
    private long RowStride => (long)_heads * _positions * _headSize;
    /// <summary>Longs of the input block up to the last mask row of a step over <paramref name="slots"/> slots.</summary>
    private long InputsLength(int slots) => 2L * _maxBatch + (long)slots * _positions;

    /// <summary>Bytes of a prompt snapshot of <paramref name="length"/> positions (all layers, keys and values).</summary>
    public long SnapshotBytes(int length) => 2L * _layers * _heads * length * _headSize * _elementSize;

    /// <summary>
    /// Slots a step over <paramref name="rows"/> slots runs: the rows themselves, or with fixed step shapes
    /// (CUDA graphs) the next power of two, capped at <paramref name="maxBatch"/>: log2(MaxBatch)+1 graphs at
    /// most, and at most twice the rows' work (padding rows attend to one position, so their cost is in the
    /// weight matmuls, which are memory-bound and nearly free at these batch sizes).
    /// </summary>
    public static int StepSlots(int rows, int maxBatch, bool fixedStepShapes) =>
        fixedStepShapes ? Math.Min(maxBatch, (int)BitOperations.RoundUpToPowerOf2((uint)rows)) : rows;

    /// <summary>
    /// Runs <paramref name="tokens"/> (SOS first) at positions 0..S-1 in slots firstSlot..firstSlot+rows-1
    /// (each the same prompt) on an empty cache; other slots are untouched. Returns the logits
    /// [rows, S, vocab] (valid until the next call).
    /// </summary>
    public ReadOnlySpan<float> Prefill(ReadOnlySpan<int> tokens, int rows, int firstSlot = 0)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        int s = tokens.Length;
        if (s < 1 || s > _positions) throw new ArgumentOutOfRangeException(nameof(tokens), s, $"prefill needs 1..{_positions} tokens");
        if (firstSlot < 0 || rows < 1 || firstSlot + rows > _maxBatch || (long)rows * s * _vocab > _logitsCapacity)
            throw new ArgumentOutOfRangeException(nameof(rows), rows, "prefill rows outside the slots or the logits buffer");
        for (int r = 0; r < rows; r++)
            for (int i = 0; i < s; i++)
            {
                long o = (long)r * s + i;
                _prefillIds[o] = tokens[i];
                _prefillPos[o] = i;
                _prefillMask[o] = 1;
            }
        long[] shape = [rows, s];
        long bytes = (long)rows * s * sizeof(long);
        using var ids = OrtValue.CreateTensorValueWithData(_hostInfo, TensorElementType.Int64, shape, (IntPtr)_prefillIds, bytes);
        using var pos = OrtValue.CreateTensorValueWithData(_hostInfo, TensorElementType.Int64, shape, (IntPtr)_prefillPos, bytes);
        using var mask = OrtValue.CreateTensorValueWithData(_hostInfo, TensorElementType.Int64, shape, (IntPtr)_prefillMask, bytes);
        using var logits = OrtValue.CreateTensorValueWithData(_hostInfo, TensorElementType.Float, [rows, s, _vocab], (IntPtr)_logits, (long)rows * s * _vocab * sizeof(float));
        var kvViews = CreateKvViews(rows, firstSlot);
        try
        {
            using var binding = _session.CreateIoBinding();
            binding.BindInput("input_ids", ids);
            binding.BindInput("position_ids", pos);
            binding.BindInput("attention_mask", mask);
            binding.BindOutput("logits", logits);
            for (int i = 0; i < kvViews.Length; i++)
            {
                binding.BindInput(_pastNames[i], kvViews[i]);
                binding.BindOutput(_presentNames[i], kvViews[i]);
            }
            _session.RunWithBinding(_runOptions, binding);
            if (!_memory.IsHost) binding.SynchronizeBoundOutputs();
        }
        finally
        {
            foreach (var v in kvViews) v.Dispose();
        }
        for (int r = 0; r < rows; r++) ResetSlot(firstSlot + r, s);
        return new ReadOnlySpan<float>(_logits, checked(rows * s * _vocab));
    }

    /// <summary>Sets a slot's cached length (its mask row: <paramref name="length"/> ones, then zeros).</summary>
    public void ResetSlot(int slot, int length)
    {
        if ((uint)slot >= (uint)_maxBatch) throw new ArgumentOutOfRangeException(nameof(slot));
        if (length < 0 || length > _positions) throw new ArgumentOutOfRangeException(nameof(length));
        var row = new Span<long>(_mask + (long)slot * _positions, _positions);
        row[..length].Fill(1);
        row[length..].Clear();
    }

    /// <summary>
    /// One decode step for slots 0..rows-1: slot r gets token tokens[r] at position positions[r]
    /// (its cache must hold exactly positions[r] entries). Returns logits [rows, vocab], valid until the next call.
    /// With fixed step shapes, slots rows..<see cref="StepSlots"/>-1 run too (a throwaway token at position 0).
    /// Optional <paramref name="groups"/> / <paramref name="sharedLengths"/> say which rows hold identical cache
    /// entries (the samples of one prompt): groups[r] is the first row of r's group, and the group's rows are
    /// identical at positions 0..sharedLengths[r]-1. A segmented step reads those once for the group.
    /// </summary>
    public ReadOnlySpan<float> Step(int rows, ReadOnlySpan<int> tokens, ReadOnlySpan<int> positions,
        ReadOnlySpan<int> groups = default, ReadOnlySpan<int> sharedLengths = default)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (rows < 1 || rows > _maxBatch) throw new ArgumentOutOfRangeException(nameof(rows));
        int slots = StepSlots(rows, _maxBatch, _fixedStepShapes);
        for (int r = 0; r < slots; r++)
        {
            int p = 0;
            if (r < rows)
            {
                p = positions[r];
                if ((uint)p >= (uint)_positions) throw new ArgumentOutOfRangeException(nameof(positions), p, "position past n_positions");
                _ids[r] = tokens[r];
            }
            else
            {
                ResetSlot(r, 0);
                _ids[r] = 0;
            }
            _pos[r] = p;
            _mask[(long)r * _positions + p] = 1;
        }
        if (_segmented is not null && rows >= _segmentedRows && (_alwaysSegmented || SegmentsPayOff(rows, positions)))
        {
            Interlocked.Increment(ref _segmentedSteps);  // read by metrics threads
            _segmented.Run(rows, positions, groups, sharedLengths);
            return new ReadOnlySpan<float>(_logits, rows * _vocab);
        }
        if (_runLane is not null && rows >= _laneRows)
        {
            Interlocked.Increment(ref _laneSteps);
            RunLanes(rows);
            return new ReadOnlySpan<float>(_logits, rows * _vocab);
        }
        var b = _decodeBindings[slots] ??= new DecodeBinding(this, slots);
        if (!_memory.IsHost)
        {
            _memory.Copy(_boundInputs, (IntPtr)_inputs, InputsLength(slots) * 8L, CopyDirection.HostToDevice);
        }
        b.Session.RunWithBinding(b.RunOptions ?? _runOptions, b.Binding);
        if (!_memory.IsHost)
        {
            b.Binding.SynchronizeBoundOutputs();
            _memory.Copy((IntPtr)_logits, _boundLogits, rows * 4L * _vocab, CopyDirection.DeviceToHost);
        }
        return new ReadOnlySpan<float>(_logits, rows * _vocab);
    }

    /// <summary>
    /// Row lanes: the step's rows split between the step threads, each running its share through the one-thread
    /// session of the decoder graph, concurrently. A step then hands work to another thread once, where a session
    /// with a thread pool hands over each of its ~70 ops; each lane reads every weight, so it suits models whose
    /// weights stay in the cache.
    /// </summary>
    private void RunLanes(int rows)
    {
        int lanes = Math.Min(rows, _stepLanes.Length);
        for (int lane = 0; lane < lanes; lane++)
        {
            var (first, count) = LaneRows(rows, lanes, lane);
            if (!_laneBindings.TryGetValue((first, count), out var b))
                _laneBindings[(first, count)] = b = new DecodeBinding(this, count, first, _smallStepSession);
            _stepLanes[lane] = b;
        }
        _team!.Run(lanes, _runLane!);
    }

    private void RunLane(int lane, int worker)
    {
        var b = _stepLanes[lane];
        b.Session.RunWithBinding(b.RunOptions!, b.Binding);
    }

    /// <summary>Lane <paramref name="lane"/>'s rows of a step over <paramref name="rows"/> rows in <paramref name="lanes"/> lanes.</summary>
    internal static (int First, int Count) LaneRows(int rows, int lanes, int lane)
    {
        int first = rows * lane / lanes;
        return (first, rows * (lane + 1) / lanes - first);
    }

    /// <summary>
    /// Whether a step over these rows runs faster as segments: the segmented step splits its rows between threads that
    /// each read every weight (twice the weight traffic with two threads) and run n_layer + 1 sessions, and gains in
    /// attention: no per-(row, head) calls as in GroupQueryAttention, and a request's shared prompt read once per
    /// lane. So it pays with many rows or long caches. Measured on the 2-core dev VM (benchmarks/README.md),
    /// same-process A/Bs with greedy tokens identical: from 8 rows on, 1.4-1.7x for 6 x 128 over 196 positions,
    /// 1.1x for 8 x 256 and 0.98-1.0x for 8 x 512 (caches 1.5-2x the weights); below 8 rows, 1.2-1.7x at 8 x 128
    /// over 784 positions (caches 3-6 MB a row, 3-12x the weights), but slower with short caches: 6 x 128 at 2 rows
    /// 0.67x (at 4, 1.0x), 8 x 256 at 4 0.9-1.0x and 8 x 512 at 4 0.73x (1-1.5x the weights).
    /// </summary>
    private bool SegmentsPayOff(int rows, ReadOnlySpan<int> positions) =>
        SegmentsPayOff(_layers, _heads * _headSize, _weightBytes, positions[..rows]);

    /// <summary>The rule above for a model <paramref name="layers"/> x <paramref name="embd"/> with these weight bytes.</summary>
    internal static bool SegmentsPayOff(int layers, int embd, long weightBytes, ReadOnlySpan<int> positions)
    {
        if (positions.Length >= SegmentsMinRows) return true;
        long entries = 0;
        foreach (int p in positions) entries += p + 1;
        long kvBytes = 2L * 4 * layers * embd * entries;   // every row's whole cache, as GroupQueryAttention reads it
        return kvBytes >= SegmentsMinKvToWeights * weightBytes && kvBytes >= positions.Length * SegmentsMinKvBytesPerRow;
    }

    /// <summary>Steps of at least this many rows run as segments whatever their caches (4 rows or more a lane).</summary>
    internal const int SegmentsMinRows = 8;
    internal const long SegmentsMinKvToWeights = 3, SegmentsMinKvBytesPerRow = 2L << 20;

    /// <summary>Copies positions 0..length-1 of slot 0 into slots 1..rows-1.</summary>
    public void ReplicateSlot0(int rows, int length)
    {
        for (int r = 1; r < rows; r++) CopySlot(0, r, length);
    }

    /// <summary>Copies positions 0..length-1 of one slot into another, mask row included (a device copy on CUDA).</summary>
    public void CopySlot(int source, int destination, int length)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        CheckSlot(source, length);
        CheckSlot(destination, length);
        long chunk = (long)length * _headSize * _elementSize, pitch = (long)_positions * _headSize * _elementSize;
        foreach (var baseAddress in _kv)
            _memory.Copy2D(baseAddress + (nint)Offset(destination, 0), pitch, baseAddress + (nint)Offset(source, 0), pitch, chunk, _heads,
                CopyDirection.DeviceToDevice);
        ResetSlot(destination, length);
    }

    /// <summary>Copies positions 0..length-1 of a slot (every layer, keys and values) into a compact host snapshot.</summary>
    public byte[] SaveSlot(int slot, int length)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        CheckSlot(slot, length);
        var snapshot = GC.AllocateUninitializedArray<byte>(checked((int)SnapshotBytes(length)));
        long chunk = (long)length * _headSize * _elementSize, pitch = (long)_positions * _headSize * _elementSize;
        fixed (byte* s = snapshot)
        {
            long o = 0;
            foreach (var baseAddress in _kv)
            {
                _memory.Copy2D((IntPtr)(s + o), chunk, baseAddress + (nint)Offset(slot, 0), pitch, chunk, _heads, CopyDirection.DeviceToHost);
                o += chunk * _heads;
            }
        }
        return snapshot;
    }

    /// <summary>Loads a snapshot of <paramref name="length"/> positions into slots firstSlot..firstSlot+rows-1.</summary>
    public void LoadSlots(byte[] snapshot, int length, int rows, int firstSlot = 0)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (snapshot.Length != SnapshotBytes(length)) throw new ArgumentException("snapshot size does not match its length");
        long chunk = (long)length * _headSize * _elementSize, pitch = (long)_positions * _headSize * _elementSize;
        fixed (byte* s = snapshot)
        {
            for (int slot = firstSlot; slot < firstSlot + rows; slot++)
            {
                CheckSlot(slot, length);
                long o = 0;
                foreach (var baseAddress in _kv)
                {
                    _memory.Copy2D(baseAddress + (nint)Offset(slot, 0), pitch, (IntPtr)(s + o), chunk, chunk, _heads, CopyDirection.HostToDevice);
                    o += chunk * _heads;
                }
                ResetSlot(slot, length);
            }
        }
    }

    /// <summary>Byte offset of (slot, head, position 0) in a KV buffer.</summary>
    private long Offset(int slot, int head) => (((long)slot * _heads + head) * _positions) * _headSize * _elementSize;

    private void CheckSlot(int slot, int length)
    {
        if ((uint)slot >= (uint)_maxBatch) throw new ArgumentOutOfRangeException(nameof(slot), slot, $"slots are 0..{_maxBatch - 1}");
        if (length < 0 || length > _positions) throw new ArgumentOutOfRangeException(nameof(length), length, $"lengths are 0..{_positions}");
    }

    /// <summary>
    /// The whole sequence at batch 1 with an empty past and no shared buffer (no KV cache reuse):
    /// logits [S, vocab]. The reference the cached path is checked against; allocates.
    /// </summary>
    public float[] ForwardWithoutCache(ReadOnlySpan<int> tokens)
    {
        int s = tokens.Length;
        var ids = new long[s];
        var pos = new long[s];
        var mask = new long[s];
        for (int i = 0; i < s; i++) (ids[i], pos[i], mask[i]) = (tokens[i], i, 1);
        var names = new List<string> { "input_ids", "position_ids", "attention_mask" };
        var values = new List<OrtValue>
        {
            OrtValue.CreateTensorValueFromMemory(ids, [1, s]),
            OrtValue.CreateTensorValueFromMemory(pos, [1, s]),
            OrtValue.CreateTensorValueFromMemory(mask, [1, s]),
        };
        try
        {
            foreach (var name in _pastNames)
            {
                names.Add(name);
                values.Add(_kvType == TensorElementType.Float16
                    ? OrtValue.CreateTensorValueFromMemory(Array.Empty<Float16>(), [1, _heads, 0, _headSize])
                    : OrtValue.CreateTensorValueFromMemory(Array.Empty<float>(), [1, _heads, 0, _headSize]));
            }
            using var results = _session.Run(_runOptions, names, values, ["logits"]);  // host outputs: ORT copies them back
            return results[0].GetTensorDataAsSpan<float>().ToArray();
        }
        finally
        {
            foreach (var v in values) v.Dispose();
        }
    }

    /// <summary>OrtValues over slots firstSlot..firstSlot+rows-1 of every KV buffer (rows are contiguous: batch is outermost).</summary>
    private OrtValue[] CreateKvViews(int rows, int firstSlot = 0)
    {
        var views = new OrtValue[_kv.Length];
        long[] shape = [rows, _heads, _positions, _headSize];
        long offset = firstSlot * RowStride * _elementSize;
        for (int i = 0; i < _kv.Length; i++)
            views[i] = OrtValue.CreateTensorValueWithData(_memory.Info, _kvType, shape, _kv[i] + (nint)offset, rows * RowStride * _elementSize);
        return views;
    }

    private void CheckGraph(ModelManifest manifest)
    {
        var inputs = _session.InputMetadata;
        var outputs = _session.OutputMetadata;
        foreach (var name in new[] { "input_ids", "position_ids", "attention_mask" }.Concat(_pastNames))
            if (!inputs.ContainsKey(name)) throw new ModelPackageException($"decoder: input '{name}' is missing");
        foreach (var name in _presentNames.Prepend("logits"))
            if (!outputs.ContainsKey(name)) throw new ModelPackageException($"decoder: output '{name}' is missing");
        var past = inputs[_pastNames[0]];
        var expected = _kvType == TensorElementType.Float16 ? typeof(Float16) : typeof(float);
        if (past.ElementType != expected)
            throw new ModelPackageException($"decoder: the KV cache ({_pastNames[0]}) is {DtypeName(past.ElementType)}, but the manifest says {DtypeName(expected)}");
        if (inputs["input_ids"].ElementType != typeof(long))
            throw new ModelPackageException($"decoder: input_ids is {inputs["input_ids"].ElementType.Name}, expected int64");
        if (outputs["logits"].ElementType != typeof(float))
            throw new ModelPackageException($"decoder: logits are {DtypeName(outputs["logits"].ElementType)}, expected float32");
        var dims = past.Dimensions;
        if (dims.Length != 4 || (dims[1] > 0 && dims[1] != _heads) || (dims[3] > 0 && dims[3] != _headSize))
            throw new ModelPackageException($"decoder: past shape [{string.Join(", ", dims)}] does not match n_head {_heads} / head_size {_headSize}");
        var logits = outputs["logits"].Dimensions;
        if (logits.Length != 3 || (logits[2] > 0 && logits[2] != manifest.VocabSize))
            throw new ModelPackageException($"decoder: logits shape [{string.Join(", ", logits)}] does not end in vocab_size {manifest.VocabSize}");
    }

    private static string DtypeName(Type t) => t == typeof(float) ? "float32" : t == typeof(Float16) ? "float16" : t.Name;

    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        foreach (var b in _decodeBindings) b?.Dispose();
        foreach (var b in _laneBindings.Values) b.Dispose();
        _segmented?.Dispose();
        _team?.Dispose();
        _memory.Dispose();   // device memory comes from the session's allocator: free it first
        FreeHostBuffers();
        _runOptions.Dispose();
        _session.Dispose();
        _smallStepSession?.Dispose();
    }

    private void FreeHostBuffers()
    {
        NativeMemory.AlignedFree(_inputs);
        NativeMemory.AlignedFree(_prefillIds);
        NativeMemory.AlignedFree(_prefillPos);
        NativeMemory.AlignedFree(_prefillMask);
        NativeMemory.AlignedFree(_logits);
    }

    /// <summary>Everything one decode step at a given number of slots binds, created once (fixed addresses, as CUDA graphs need).</summary>
    private sealed class DecodeBinding : IDisposable
    {
        private readonly OrtValue _ids, _pos, _mask, _logits;
        private readonly OrtValue[] _kv;
        public OrtIoBinding Binding { get; }
        /// <summary>The session this shape runs on: the one-thread session for small steps, else the decoder's.</summary>
        public InferenceSession Session { get; }
        /// <summary>With CUDA graphs: this shape's graph (gpu_graph_id = slots); else null (the decoder's options).</summary>
        public RunOptions? RunOptions { get; }

        /// <param name="first">The first slot (row lanes bind a part of the step's rows; else 0).</param>
        /// <param name="session">The session to run on; null: the one-thread session for small steps, else the decoder's.</param>
        public DecodeBinding(KvCacheDecoder d, int slots, int first = 0, InferenceSession? session = null)
        {
            var info = d._memory.Info;
            var ids = d._boundInputs + first * 8;
            var pos = d._boundInputs + (d._maxBatch + first) * 8;
            var mask = d._boundInputs + 2 * d._maxBatch * 8 + (nint)((long)first * d._positions * 8);
            _ids = OrtValue.CreateTensorValueWithData(info, TensorElementType.Int64, [slots, 1], ids, slots * 8L);
            _pos = OrtValue.CreateTensorValueWithData(info, TensorElementType.Int64, [slots, 1], pos, slots * 8L);
            // The mask is always n_positions wide; a row's sum is its length (GQA reads only the sums).
            _mask = OrtValue.CreateTensorValueWithData(info, TensorElementType.Int64, [slots, d._positions], mask, slots * 8L * d._positions);
            // Last position only: [slots, 1, vocab].
            _logits = OrtValue.CreateTensorValueWithData(info, TensorElementType.Float, [slots, 1, d._vocab],
                d._boundLogits + (nint)(first * 4L * d._vocab), slots * 4L * d._vocab);
            _kv = d.CreateKvViews(slots, first);
            Session = session ?? (slots <= d._smallStepRows ? d._smallStepSession! : d._session);
            if (session is not null) RunOptions = new RunOptions();  // a lane's own: lanes run concurrently
            Binding = Session.CreateIoBinding();
            Binding.BindInput("input_ids", _ids);
            Binding.BindInput("position_ids", _pos);
            Binding.BindInput("attention_mask", _mask);
            Binding.BindOutput("logits", _logits);
            for (int i = 0; i < _kv.Length; i++)
            {
                Binding.BindInput(d._pastNames[i], _kv[i]);
                Binding.BindOutput(d._presentNames[i], _kv[i]);
            }
            if (d._graphs)
            {
                RunOptions ??= new RunOptions();
                RunOptions.AddRunConfigEntry("gpu_graph_id", slots.ToString(System.Globalization.CultureInfo.InvariantCulture));
            }
        }

        public void Dispose()
        {
            Binding.Dispose();
            RunOptions?.Dispose();
            _ids.Dispose();
            _pos.Dispose();
            _mask.Dispose();
            _logits.Dispose();
            foreach (var v in _kv) v.Dispose();
        }
    }
}

/// <summary>
/// How a CPU decoder may run steps besides its session (all optional; sessions owned by the decoder).
/// </summary>
/// <param name="OneThreadSession">The decoder graph in a session with one intra-op thread.</param>
/// <param name="SmallStepRows">Steps over at most this many rows run on <paramref name="OneThreadSession"/> alone.</param>
/// <param name="LaneStepRows">Steps of at least this many rows run as row lanes on <paramref name="OneThreadSession"/> (0 = never).</param>
/// <param name="Segments">The package's step segment sessions (one intra-op thread each; fp32 KV only).</param>
/// <param name="SegmentedStepRows">Steps of at least this many rows with long enough caches run as segments.</param>
/// <param name="Threads">Step threads (the caller included) for lanes and segmented steps.</param>
/// <param name="VectorizedAttention">The segments' attention uses AVX-512 where the CPU has it (else portable loops).</param>
/// <param name="AlwaysSegmented">Tests: segment every step of at least <paramref name="SegmentedStepRows"/> rows.</param>
internal sealed record CpuSteps(
    InferenceSession? OneThreadSession = null, int SmallStepRows = 0, int LaneStepRows = 0,
    InferenceSession[]? Segments = null, int SegmentedStepRows = 0, int Threads = 1,
    bool VectorizedAttention = true, bool AlwaysSegmented = false);
