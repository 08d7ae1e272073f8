namespace IGpt.Inference.Engine;

/// <summary>
/// Every buffer a decoder binds, allocated once and owned here: the KV cache (per layer one key and one value
/// buffer of [MaxBatch, n_head, n_positions, head_size] in <see cref="DecoderMemory"/>), the decode inputs on
/// the host (one block: ids [MaxBatch], positions [MaxBatch], mask [MaxBatch, n_positions], so that a step's
/// inputs are one contiguous upload), the prefill inputs and the logits, and on a device their bound copies.
/// <see cref="KvCacheDecoder"/> and the CPU step paths it owns (<see cref="Cpu.SegmentedStep"/>) hold this
/// object, not pointers into it; the decoder disposes it after them.
/// </summary>
internal sealed unsafe class DecoderBuffers : IDisposable
{
    private readonly NativeBuffer<long> _inputs, _prefillIds, _prefillPositions, _prefillMask;
    private readonly NativeBuffer<float> _logits;
    private readonly IntPtr[] _kv;

    /// <param name="memory">Where the KV cache and the bound copies live; owned (disposed) from here on.</param>
    public DecoderBuffers(DecoderMemory memory, int layers, long rowStride, int elementSize, int maxBatch, int positions, int vocab)
    {
        Memory = memory;
        MaxBatch = maxBatch;
        Positions = positions;
        try
        {
            _kv = new IntPtr[2 * layers];
            for (int i = 0; i < _kv.Length; i++) _kv[i] = memory.Allocate(maxBatch * rowStride * elementSize);
            _inputs = new NativeBuffer<long>(InputsLength(maxBatch));
            _prefillIds = new NativeBuffer<long>(maxBatch * (long)positions);
            _prefillPositions = new NativeBuffer<long>(maxBatch * (long)positions);
            _prefillMask = new NativeBuffer<long>(maxBatch * (long)positions);
            // Prefill runs one row (the scheduler copies it to the others); a step returns one position per slot.
            _logits = new NativeBuffer<float>(Math.Max((long)positions, maxBatch) * vocab);
            if (memory.IsHost)
                (BoundInputs, BoundLogits) = (_inputs.Address, _logits.Address);
            else
                (BoundInputs, BoundLogits) = (memory.Allocate(InputsLength(maxBatch) * 8L), memory.Allocate(maxBatch * 4L * vocab));
        }
        catch
        {
            Dispose();
            throw;
        }
    }

    public DecoderMemory Memory { get; }
    public int MaxBatch { get; }
    public int Positions { get; }

    /// <summary>KV buffer i: key of layer i/2 when i is even, else its value (addresses in <see cref="Memory"/>).</summary>
    public ReadOnlySpan<IntPtr> Kv => _kv;

    /// <summary>Host decode inputs: token ids [MaxBatch], then positions [MaxBatch], then the mask [MaxBatch, n_positions].</summary>
    public long* Ids => _inputs.Pointer;
    public long* StepPositions => _inputs.Pointer + MaxBatch;
    public long* Mask => _inputs.Pointer + 2 * MaxBatch;
    public long* PrefillIds => _prefillIds.Pointer;
    public long* PrefillPositions => _prefillPositions.Pointer;
    public long* PrefillMask => _prefillMask.Pointer;

    /// <summary>Host logits: [MaxBatch or more, vocab] (a prefill's [rows * S, vocab]).</summary>
    public float* Logits => _logits.Pointer;
    public long LogitsCapacity => _logits.Length;

    /// <summary>What a step binds: the host input block and logits, or their copies on the device.</summary>
    public IntPtr BoundInputs { get; }
    public IntPtr BoundLogits { get; }

    /// <summary>Longs of the input block up to the last mask row of a step over <paramref name="slots"/> slots.</summary>
    public long InputsLength(int slots) => 2L * MaxBatch + (long)slots * Positions;

    public void Dispose()
    {
        Memory.Dispose();   // device memory comes from the session's allocator: the decoder frees it before the session
        _inputs?.Dispose();
        _prefillIds?.Dispose();
        _prefillPositions?.Dispose();
        _prefillMask?.Dispose();
        _logits?.Dispose();
    }
}
