namespace IGpt.Inference.Engine;

/// <summary>What the KV cache stores per (slot, head, position) entry (<see cref="InferenceOptions.KvCacheType"/>).</summary>
internal enum KvElement
{
    /// <summary>head_size floats: the layout ONNX Runtime's GroupQueryAttention reads.</summary>
    Float32,
    /// <summary>head_size IEEE halves, stored as their bits (converted by <see cref="Cpu.HalfConversion"/> on the CPU).</summary>
    Float16,
    /// <summary>
    /// One fp32 scale, then head_size signed bytes: the entry's values divided by the scale (its largest magnitude / 127),
    /// rounded (per-token, per-head absmax quantization; <see cref="Cpu.KvCodec"/>).
    /// </summary>
    Int8,
}

internal static class KvElementExtensions
{
    /// <summary>Bytes of one entry: one head's key (or value) at one position.</summary>
    public static int EntryBytes(this KvElement e, int headSize) => e switch
    {
        KvElement.Float16 => 2 * headSize,
        KvElement.Int8 => headSize + 4,
        _ => 4 * headSize,
    };
}
