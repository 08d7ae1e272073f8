namespace IGpt.Inference.Engine;

/// <summary>
/// Every buffer a decoder binds, allocated once and owned here: the KV cache (per layer one key and one value
/// buffer of [MaxBatch, n_head, n_positions, head_size] in <see cref="DecoderMemory"/>, in <see cref="Element"/>s:
/// an fp16 cache is half the bytes), with a compressed cache one fp32 row of it for the prefill graph, the decode inputs on
/// the host (one block: ids [MaxBatch], positions [MaxBatch], mask [MaxBatch, n_positions], so that a step's
/// inputs are one contiguous upload), the prefill inputs and the logits, and on a device their bound copies.
/// <see cref="KvCacheDecoder"/> and the CPU step paths it owns (<see cref="Cpu.SegmentedStep"/>) hold this
/// object, not pointers into it; the decoder disposes it after them.
/// </summary>
internal sealed unsafe class DecoderBuffers : IDisposable
{
    private readonly NativeBuffer<long> _inputs, _prefillIds, _prefillPositions, _prefillMask;
    private readonly NativeBuffer<float> _logits;
    private readonly NativeBuffer<float>? _prefillKv;
    private readonly IntPtr[] _kv, _prefillKvViews;

    /// <param name="memory">Where the KV cache and the bound copies live; owned (disposed) from here on.</param>
    /// <param name="rowStride">Elements of one slot of one KV buffer (n_head * n_positions * head_size).</param>
    /// <param name="headSize">Elements of one entry (one head at one position): entries of <paramref name="element"/> are
    /// <see cref="KvElementExtensions.EntryBytes"/> bytes.</param>
    /// <param name="fp32PrefillRow">
    /// The cache is compressed but the decoder graph's is fp32: also one fp32 slot of every KV buffer (on the host),
    /// which a prefill runs the graph on before its keys and values are stored compressed.
    /// </param>
    public DecoderBuffers(DecoderMemory memory, int layers, long rowStride, int headSize, KvElement element, int maxBatch, int positions,
        int vocab, bool fp32PrefillRow = false)
    {
        Memory = memory;
        MaxBatch = maxBatch;
        Positions = positions;
        Element = element;
        RowBytes = rowStride / ((long)headSize * positions) * element.HeadBytes(headSize, positions);   // heads x one (slot, head)
        PrefillRowBytes = fp32PrefillRow ? rowStride * 4 : 0;
        _prefillKvViews = [];
        try
        {
            _kv = new IntPtr[2 * layers];
            for (int i = 0; i < _kv.Length; i++) _kv[i] = memory.Allocate(maxBatch * RowBytes);
            if (fp32PrefillRow)
            {
                if (!memory.IsHost) throw new ArgumentException("a compressed cache with an fp32 prefill row is a CPU cache", nameof(fp32PrefillRow));
                _prefillKv = new NativeBuffer<float>(2L * layers * rowStride);
                _prefillKvViews = new IntPtr[2 * layers];
                for (int i = 0; i < _prefillKvViews.Length; i++) _prefillKvViews[i] = (IntPtr)(_prefillKv.Pointer + i * rowStride);
            }
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
    /// <summary>What the KV cache's elements are stored as.</summary>
    public KvElement Element { get; }
    public int MaxBatch { get; }
    public int Positions { get; }

    /// <summary>KV buffer i: key of layer i/2 when i is even, else its value (addresses in <see cref="Memory"/>).</summary>
    public ReadOnlySpan<IntPtr> Kv => _kv;

    /// <summary>The fp32 prefill row of every KV buffer, in <see cref="Kv"/>'s order (empty unless the cache is compressed).</summary>
    public ReadOnlySpan<IntPtr> PrefillKv => _prefillKvViews;

    /// <summary>Bytes of one slot of one KV buffer, and of the fp32 prefill row's (0 when there is none).</summary>
    public long RowBytes { get; }
    public long PrefillRowBytes { get; }

    /// <summary>Bytes of the KV cache (every slot, layer, key and value) and of the fp32 prefill row.</summary>
    public long KvBytes => _kv.Length * (MaxBatch * RowBytes + PrefillRowBytes);

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
        _prefillKv?.Dispose();
    }
}
