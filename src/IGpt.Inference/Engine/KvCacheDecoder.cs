using System.Numerics;
using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;

namespace IGpt.Inference.Engine;

/// <summary>
/// Runs a package's decoder graph with a KV cache that is allocated once (<see cref="DecoderBuffers"/>): per layer
/// one key and one value buffer, bound as both past and present (GroupQueryAttention writes each row's new keys at
/// that row's own length, taken from the attention mask). Batch rows are slots: a slot's length is its mask row's
/// sum, so rows at different positions can share a step. A decode step binds OrtValues created once per batch size
/// (<see cref="DecodeBinding"/>), so it allocates nothing.
/// One code path for both providers: <see cref="DecoderMemory"/> says where the bound buffers live (host, or the
/// CUDA device) and copies between them; the KV element type (fp32 or fp16) comes from the graph. On the device, a
/// step uploads token ids, positions and the mask rows it runs and downloads the last position's logits of the rows
/// asked for; the KV cache never leaves the device. On the CPU, <see cref="CpuStepPlan.Choose"/> picks each step's
/// path (<see cref="StepPath"/>; decided by <see cref="StepPlanner"/>): the graph in one run, row lanes, or step
/// segments (<see cref="Cpu.SegmentedStep"/>), the last two in lanes (<see cref="Cpu.LaneRunner{TLane}"/>).
/// A CPU cache may be stored compressed (fp16 or int8 entries) while the graph is fp32 (<see cref="CpuStepPlan.CompressedCache"/>): then
/// steps run as segments, whose attention reads it, and a prefill runs the graph over an fp32 row of the cache
/// and stores that row's keys and values compressed into its slots. Where the plan says so (<see cref="CpuStepPlan.OneRowGraph"/>),
/// one-row steps run the graph over that fp32 row too: it then mirrors slot 0 (decoded from it when it does not), the
/// new entries are stored compressed into slot 0 before anything else reads or moves the slot, and any other write to
/// slot 0 or to the row ends the mirror.
/// Not thread-safe: one caller at a time (the scheduler's thread); lanes run on the decoder's own threads.
/// </summary>
internal sealed unsafe class KvCacheDecoder : IDisposable
{
    private readonly InferenceSession _session;
    private readonly InferenceSession? _oneThreadSession;
    private readonly DecoderGraph _graph;
    private readonly DecoderBuffers _buffers;
    private readonly CpuStepPlan _plan;
    private readonly bool _fixedStepShapes, _graphs, _compressed;
    private readonly int _positions, _vocab, _maxBatch, _heads, _headSize, _entryBytes;  // an entry: one head at one position
    // The host input block and logits, read on every step (owned by _buffers).
    private readonly long* _ids, _pos, _mask;
    private readonly float* _logits;
    private readonly DecodeBinding?[] _decodeBindings;  // whole steps, by step batch size
    private readonly RunOptions _runOptions = new();   // prefill, reference and whole-step runs: never a CUDA graph
    private readonly WorkerTeam? _team;                // the step threads: row lanes and segmented steps
    private readonly Cpu.LaneRunner<DecodeBinding>? _rowLanes;  // on the one-thread session
    private readonly Cpu.SegmentedStep? _segmented;
    private readonly Cpu.KernelStep? _kernels;
    private long _laneSteps, _segmentedSteps, _kernelSteps, _kvBytesRead;
    // The fp32 row as a mirror of slot 0 (compressed cache, one-row graph steps): how many entries it holds (-1: it
    // mirrors nothing), and how many of those slot 0 holds compressed too (the rest are stored when the mirror is left).
    private int _rowMirrorLength = -1, _rowMirrorStored;
    private DecodeBinding? _rowMirrorBinding;   // a one-row step over the fp32 row
    private bool _disposed;

    /// <param name="memory">Where the bound buffers live; owned (disposed) by the decoder, before the session, also when this throws.</param>
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
        var plan = cpu?.Plan ?? CpuStepPlan.GraphOnly;
        _session = session;
        _oneThreadSession = cpu?.OneThreadSession;
        _plan = plan;
        _fixedStepShapes = fixedStepShapes;
        _graphs = fixedStepShapes && !memory.IsHost;
        if (_graphs) _runOptions.AddRunConfigEntry("gpu_graph_id", "-1");  // variable shapes: run without capturing
        try
        {
            if ((plan.UsesSegments || plan.UsesLanes) && (!memory.IsHost || fixedStepShapes))
                throw new ArgumentException("row lanes and step segments run on the CPU provider", nameof(cpu));
            if (plan.UsesOneThreadSession != (cpu?.OneThreadSession is not null) || plan.UsesSegments != (cpu?.Segments is not null))
                throw new ArgumentException("the CPU step plan and its sessions disagree", nameof(cpu));
            if (plan.UsesSegments && kvType != TensorElementType.Float)
                throw new ArgumentException("step segments run with an fp32 KV cache", nameof(cpu));
            // A compressed cache is read by the library's attention alone (segments or kernels): no step may run the graph on it.
            _compressed = plan.CompressedCache is not null;
            if (_compressed && ((!plan.UsesSegments && plan.KernelStepRows < maxBatch) || plan.UsesLanes || plan.UsesOneThreadSession))
                throw new ArgumentException("a compressed KV cache runs its steps as segments or on the kernels (one-row steps perhaps on the graph)", nameof(cpu));
            _graph = new DecoderGraph(manifest, kvType);
            (_positions, _vocab, _maxBatch) = (_graph.Positions, _graph.Vocab, maxBatch);
            var element = plan.CompressedCache ?? (kvType == TensorElementType.Float16 ? KvElement.Float16 : KvElement.Float32);
            (_heads, _headSize, _entryBytes) = (_graph.Heads, _graph.HeadSize, element.EntryBytes(_graph.HeadSize));
            _graph.Check(session);
            _buffers = new DecoderBuffers(memory, _graph.Layers, _graph.RowStride, _headSize, element, maxBatch, _positions, _vocab,
                fp32PrefillRow: _compressed);
        }
        catch
        {
            memory.Dispose();
            _runOptions.Dispose();
            throw;
        }
        _ids = _buffers.Ids;
        _pos = _buffers.StepPositions;
        _mask = _buffers.Mask;
        _logits = _buffers.Logits;
        _decodeBindings = new DecodeBinding?[_maxBatch + 1];
        try
        {
            if (plan.UsesStepThreads) _team = new WorkerTeam(plan.Threads, "igpt-step");
            if (plan.UsesLanes)
                _rowLanes = new Cpu.LaneRunner<DecodeBinding>(_team, (first, count) =>
                    new DecodeBinding(_graph, _buffers, _oneThreadSession!, count, first, runOptions: null));
            if (cpu?.Segments is { } segments)
                _segmented = new Cpu.SegmentedStep(segments, manifest, _buffers, _team, plan.Attention);
            if (plan.UsesKernels)
            {
                if (cpu?.Weights is not { } weights) throw new ArgumentException("kernel steps need the package's weights", nameof(cpu));
                // The constructor checks the weights' names and shapes (KernelStep.Check), as the loader did before planning.
                _kernels = new Cpu.KernelStep(manifest, _buffers, _team, Math.Min(plan.KernelStepRows, maxBatch), weights, plan.KernelAloneRows,
                    plan.KernelLaneRows, plan.KernelInt16Weights);
            }
        }
        catch
        {
            _team?.Dispose();
            _buffers.Dispose();
            _runOptions.Dispose();
            throw;   // the caller disposes the sessions it passed
        }
    }

    public int MaxBatch => _maxBatch;
    public int Positions => _positions;
    public int VocabSize => _vocab;
    /// <summary>The decoder graph's KV element type: float32 (Float) or float16 (Float16).</summary>
    public TensorElementType KvType => _graph.KvType;
    /// <summary>What the KV cache is stored as (fp16 or int8 under an fp32 graph when the cache is compressed).</summary>
    public KvElement CacheElement => _buffers.Element;
    /// <summary>"float32", "float16" or "int8": <see cref="CacheElement"/> as <see cref="InferenceOptions.KvCacheType"/> names it.</summary>
    public string CacheType => KvCacheTypes.Name(_buffers.Element);
    /// <summary>Bytes of the KV cache (all slots, layers, keys and values; with a compressed cache its fp32 prefill row too).</summary>
    public long KvCacheBytes => _buffers.KvBytes;
    /// <summary>Bytes a step reads per cached position of one row: keys and values of every layer, in the cache's element type.</summary>
    public long KvBytesPerPosition => 2L * _graph.Layers * _heads * _entryBytes;
    /// <summary>How CPU steps run (thresholds 0 when never).</summary>
    public CpuStepPlan Plan => _plan;
    /// <summary>Decode steps run as step segments so far.</summary>
    public long SegmentedSteps => Interlocked.Read(ref _segmentedSteps);
    /// <summary>Decode steps computed by the library's kernels so far.</summary>
    public long KernelSteps => Interlocked.Read(ref _kernelSteps);
    /// <summary>Of <see cref="KernelSteps"/>, those run on the stepping thread alone (<see cref="CpuStepPlan.KernelAloneRows"/>; read between steps).</summary>
    public long KernelStepsAlone => _kernels?.StepsAlone ?? 0;
    /// <summary>Of <see cref="KernelSteps"/>, those run as row lanes (<see cref="CpuStepPlan.KernelLaneRows"/>; read between steps).</summary>
    public long KernelStepsAsLanes => _kernels?.StepsAsLanes ?? 0;
    /// <summary>Of <see cref="KernelStepsAsLanes"/>, those whose rows were balanced between the lanes by the positions they read (every row alone; read between steps).</summary>
    public long KernelStepsBalanced => _kernels?.BalancedLaneSteps ?? 0;
    /// <summary>Decode steps run as row lanes so far.</summary>
    public long LaneSteps => Interlocked.Read(ref _laneSteps);
    /// <summary>
    /// Bytes of cached keys and values the decode steps so far have read: every row's whole cache on the graph's paths
    /// (the fp32 row's for a one-row step over it), a request's shared prompt once per lane in step segments.
    /// </summary>
    public long KvBytesRead => Interlocked.Read(ref _kvBytesRead);
    /// <summary>Whether the KV cache lives on the host (CPU provider) rather than the device.</summary>
    public bool KvOnHost => _buffers.Memory.IsHost;

    /// <summary>Bytes of a prompt snapshot of <paramref name="length"/> positions (all layers, keys and values).</summary>
    public long SnapshotBytes(int length) => 2L * _graph.Layers * _graph.Heads * HeadBytes(length);

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
    /// [rows, S, vocab] (valid until the next call). With a compressed cache the graph runs once, over the fp32
    /// prefill row, and its keys and values are stored compressed into each slot.
    /// </summary>
    public ReadOnlySpan<float> Prefill(ReadOnlySpan<int> tokens, int rows, int firstSlot = 0)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        int s = tokens.Length;
        if (s < 1 || s > _positions) throw new ArgumentOutOfRangeException(nameof(tokens), s, $"prefill needs 1..{_positions} tokens");
        if (firstSlot < 0 || rows < 1 || firstSlot + rows > _maxBatch || (long)rows * s * _vocab > _buffers.LogitsCapacity)
            throw new ArgumentOutOfRangeException(nameof(rows), rows, "prefill rows outside the slots or the logits buffer");
        LeaveRowMirror();   // the prefill runs over the fp32 row
        long* prefillIds = _buffers.PrefillIds, prefillPos = _buffers.PrefillPositions, prefillMask = _buffers.PrefillMask;
        int graphRows = _compressed ? 1 : rows;   // identical prompts: one fp32 run serves every slot
        for (int r = 0; r < graphRows; r++)
            for (int i = 0; i < s; i++)
            {
                long o = (long)r * s + i;
                prefillIds[o] = tokens[i];
                prefillPos[o] = i;
                prefillMask[o] = 1;
            }
        long[] shape = [graphRows, s];
        long bytes = (long)graphRows * s * sizeof(long);
        var host = OrtMemoryInfo.DefaultInstance;
        using var ids = OrtValue.CreateTensorValueWithData(host, TensorElementType.Int64, shape, (IntPtr)prefillIds, bytes);
        using var pos = OrtValue.CreateTensorValueWithData(host, TensorElementType.Int64, shape, (IntPtr)prefillPos, bytes);
        using var mask = OrtValue.CreateTensorValueWithData(host, TensorElementType.Int64, shape, (IntPtr)prefillMask, bytes);
        using var logits = OrtValue.CreateTensorValueWithData(host, TensorElementType.Float, [graphRows, s, _vocab], (IntPtr)_logits,
            (long)graphRows * s * _vocab * sizeof(float));
        var kvViews = _compressed ? _graph.CreateKvViews(_buffers.PrefillKv, host, 1) : _graph.CreateKvViews(_buffers, rows, firstSlot);
        try
        {
            using var binding = _session.CreateIoBinding();
            _graph.Bind(binding, ids, pos, mask, logits, kvViews);
            _session.RunWithBinding(_runOptions, binding);
            if (!KvOnHost) binding.SynchronizeBoundOutputs();
        }
        finally
        {
            foreach (var v in kvViews) v.Dispose();
        }
        if (_compressed)
        {
            long rowLogits = (long)s * _vocab;
            for (int r = 0; r < rows; r++) ConvertRow(firstSlot + r, 0, s, store: true);
            for (int r = 1; r < rows; r++)
                Buffer.MemoryCopy(_logits, _logits + r * rowLogits, rowLogits * 4, rowLogits * 4);
        }
        for (int r = 0; r < rows; r++) ResetSlot(firstSlot + r, s);
        if (_compressed && firstSlot == 0) _rowMirrorLength = _rowMirrorStored = s;   // the fp32 row is slot 0's prompt
        return new ReadOnlySpan<float>(_logits, checked(rows * s * _vocab));
    }

    /// <summary>
    /// Positions from..to-1, every layer, key and value, between the fp32 prefill row and a slot of the compressed cache:
    /// into the slot (<paramref name="store"/>), or out of it into the row.
    /// </summary>
    private void ConvertRow(int slot, int from, int to, bool store)
    {
        var kv = _buffers.Kv;
        var prefill = _buffers.PrefillKv;
        long headFloats = (long)_positions * _headSize;
        for (int i = 0; i < kv.Length; i++)
            for (int head = 0; head < _heads; head++)
            {
                float* row = (float*)prefill[i] + head * headFloats + (long)from * _headSize;
                byte* entries = (byte*)(kv[i] + (nint)Offset(slot, head));
                var part = i % 2 == 0 ? KvPart.Key : KvPart.Value;
                if (store) Cpu.KvCodec.Encode(_buffers.Element, part, row, entries, from, to - from, _headSize);
                else Cpu.KvCodec.Decode(_buffers.Element, part, entries, from, to - from, row, _headSize);
            }
    }

    /// <summary>Stores the fp32 row's entries that slot 0 lacks, so that slot 0 can be read or copied.</summary>
    private void StoreRowMirror()
    {
        if (_rowMirrorLength <= _rowMirrorStored) return;
        ConvertRow(0, _rowMirrorStored, _rowMirrorLength, store: true);
        _rowMirrorStored = _rowMirrorLength;
    }

    /// <summary>Stores what slot 0 lacks and ends the mirror: slot 0 or the fp32 row is about to change another way.</summary>
    private void LeaveRowMirror()
    {
        StoreRowMirror();
        _rowMirrorLength = -1;
    }

    /// <summary>A one-row step on the graph over the fp32 row, after making the row mirror slot 0's <paramref name="length"/> entries.</summary>
    private void RunOneRowOnMirror(int length)
    {
        if (_rowMirrorLength != length)
        {
            LeaveRowMirror();
            ConvertRow(0, 0, length, store: false);
            _rowMirrorLength = _rowMirrorStored = length;
        }
        _rowMirrorBinding ??= new DecodeBinding(_graph, _buffers, _session, 1, first: 0, _runOptions,
            kv: _graph.CreateKvViews(_buffers.PrefillKv, _buffers.Memory.Info, 1));
        _rowMirrorBinding.Run(0);
        _rowMirrorLength = length + 1;
    }

    /// <summary>Sets a slot's cached length (its mask row: <paramref name="length"/> ones, then zeros).</summary>
    public void ResetSlot(int slot, int length)
    {
        if ((uint)slot >= (uint)_maxBatch) throw new ArgumentOutOfRangeException(nameof(slot));
        if (length < 0 || length > _positions) throw new ArgumentOutOfRangeException(nameof(length));
        if (slot == 0) LeaveRowMirror();
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
        long bytesPerPosition = KvBytesPerPosition;
        switch (_plan.Choose(rows, positions))
        {
            case StepPath.Kernels:
                Interlocked.Increment(ref _kernelSteps);
                LeaveRowMirror();
                Interlocked.Add(ref _kvBytesRead, _kernels!.Run(rows, tokens, positions, groups, sharedLengths) * bytesPerPosition);
                return new ReadOnlySpan<float>(_logits, rows * _vocab);
            case StepPath.Segments:
                Interlocked.Increment(ref _segmentedSteps);  // read by metrics threads
                LeaveRowMirror();
                Interlocked.Add(ref _kvBytesRead, _segmented!.Run(rows, positions, groups, sharedLengths) * bytesPerPosition);
                return new ReadOnlySpan<float>(_logits, rows * _vocab);
            case StepPath.Graph when _compressed:
                RunOneRowOnMirror(positions[0]);
                bytesPerPosition = 2L * _graph.Layers * _heads * KvElement.Float32.EntryBytes(_headSize);   // the fp32 row
                break;
            case StepPath.Lanes:
                Interlocked.Increment(ref _laneSteps);
                _rowLanes!.Run(_rowLanes.Prepare(rows));
                break;
            case var path:
                RunWholeStep(rows, slots, path == StepPath.OneThreadGraph ? _oneThreadSession! : _session);
                break;
        }
        long read = 0;
        for (int r = 0; r < rows; r++) read += positions[r] + 1;   // GroupQueryAttention reads every row's own cache
        Interlocked.Add(ref _kvBytesRead, read * bytesPerPosition);
        return new ReadOnlySpan<float>(_logits, rows * _vocab);
    }

    /// <summary>The decoder graph over all the step's slots in one run (the only path on CUDA).</summary>
    private void RunWholeStep(int rows, int slots, InferenceSession session)
    {
        if (_compressed) throw new InvalidOperationException("the decoder graph cannot read a compressed KV cache");
        var b = _decodeBindings[slots] ??= new DecodeBinding(_graph, _buffers, session, slots, first: 0,
            runOptions: _graphs ? null : _runOptions, graphId: _graphs ? slots : null);
        if (!KvOnHost) _buffers.Memory.Copy(_buffers.BoundInputs, (IntPtr)_ids, _buffers.InputsLength(slots) * 8L, CopyDirection.HostToDevice);
        b.Run(0);
        if (!KvOnHost)
        {
            b.Binding.SynchronizeBoundOutputs();
            _buffers.Memory.Copy((IntPtr)_logits, _buffers.BoundLogits, rows * 4L * _vocab, CopyDirection.DeviceToHost);
        }
    }

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
        StoreRowMirror();   // slot 0 complete before it is read; as a destination, ResetSlot below ends the mirror
        long chunk = HeadBytes(length), pitch = HeadBytes(_positions);
        foreach (var baseAddress in _buffers.Kv)
            _buffers.Memory.Copy2D(baseAddress + (nint)Offset(destination, 0), pitch, baseAddress + (nint)Offset(source, 0), pitch, chunk, _heads,
                CopyDirection.DeviceToDevice);
        ResetSlot(destination, length);
    }

    /// <summary>Copies positions 0..length-1 of a slot (every layer, keys and values) into a compact host snapshot.</summary>
    public byte[] SaveSlot(int slot, int length)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        CheckSlot(slot, length);
        StoreRowMirror();
        var snapshot = GC.AllocateUninitializedArray<byte>(checked((int)SnapshotBytes(length)));
        long chunk = HeadBytes(length), pitch = HeadBytes(_positions);
        fixed (byte* s = snapshot)
        {
            long o = 0;
            foreach (var baseAddress in _buffers.Kv)
            {
                _buffers.Memory.Copy2D((IntPtr)(s + o), chunk, baseAddress + (nint)Offset(slot, 0), pitch, chunk, _heads, CopyDirection.DeviceToHost);
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
        StoreRowMirror();   // so that ResetSlot(0) below, after the load, has nothing left to store over it
        long chunk = HeadBytes(length), pitch = HeadBytes(_positions);
        fixed (byte* s = snapshot)
        {
            for (int slot = firstSlot; slot < firstSlot + rows; slot++)
            {
                CheckSlot(slot, length);
                long o = 0;
                foreach (var baseAddress in _buffers.Kv)
                {
                    _buffers.Memory.Copy2D(baseAddress + (nint)Offset(slot, 0), pitch, (IntPtr)(s + o), chunk, chunk, _heads, CopyDirection.HostToDevice);
                    o += chunk * _heads;
                }
                ResetSlot(slot, length);
            }
        }
    }

    /// <summary>Byte offset of (slot, head, position 0) in a KV buffer.</summary>
    private long Offset(int slot, int head) => ((long)slot * _heads + head) * HeadBytes(_positions);

    /// <summary>Bytes of one (slot, head) that hold positions 0..length-1 (whole int8 blocks).</summary>
    private long HeadBytes(int length) => _buffers.Element.HeadBytes(_headSize, length);

    private void CheckSlot(int slot, int length)
    {
        if ((uint)slot >= (uint)_maxBatch) throw new ArgumentOutOfRangeException(nameof(slot), slot, $"slots are 0..{_maxBatch - 1}");
        if (length < 0 || length > _positions) throw new ArgumentOutOfRangeException(nameof(length), length, $"lengths are 0..{_positions}");
    }

    /// <summary>The whole sequence at batch 1 without the KV cache: the tests' reference (allocates).</summary>
    public float[] ForwardWithoutCache(ReadOnlySpan<int> tokens) => _graph.ForwardWithoutCache(_session, _runOptions, tokens);

    /// <summary>Frees what binds the buffers, then the step threads, then the buffers (device memory before its session), then the sessions.</summary>
    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        foreach (var b in _decodeBindings) b?.Dispose();
        _rowMirrorBinding?.Dispose();
        _rowLanes?.Dispose();
        _segmented?.Dispose();
        _kernels?.Dispose();
        _team?.Dispose();
        _buffers.Dispose();
        _runOptions.Dispose();
        _session.Dispose();
        _oneThreadSession?.Dispose();
    }
}

/// <summary>How a CPU decoder runs its steps besides its session: the plan, and the sessions it needs (owned by the decoder).</summary>
/// <param name="OneThreadSession">The decoder graph with one intra-op thread: small steps and row lanes.</param>
/// <param name="Segments">The package's step segment sessions (one intra-op thread each; fp32 graphs only, with an fp32 or compressed cache).</param>
/// <param name="Weights">The decoder's fp32 weights in memory by initializer name (<see cref="PackageWeights.Float32Tensors"/>): what the kernels read.</param>
internal sealed record CpuSteps(CpuStepPlan Plan, InferenceSession? OneThreadSession = null, InferenceSession[]? Segments = null,
    IReadOnlyDictionary<string, (IntPtr Address, long[] Dims)>? Weights = null);
