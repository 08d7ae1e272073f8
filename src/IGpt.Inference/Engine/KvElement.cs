namespace IGpt.Inference.Engine;

/// <summary>What the KV cache stores per (slot, head, position) entry (<see cref="InferenceOptions.KvCacheType"/>).</summary>
internal enum KvElement
{
    /// <summary>head_size floats: the layout ONNX Runtime's GroupQueryAttention reads.</summary>
    Float32,
    /// <summary>head_size IEEE halves, stored as their bits (converted by <see cref="Cpu.HalfConversion"/> on the CPU).</summary>
    Float16,
    /// <summary>
    /// Per position one fp32 scale and head_size bytes: the entry's values divided by the scale (its largest magnitude / 127),
    /// rounded (per-token, per-head absmax quantization; <see cref="Cpu.KvCodec"/>). Stored in blocks of
    /// <see cref="KvElementExtensions.Int8Block"/> positions laid out for int8 dot products (VNNI), keys and values
    /// differently (<see cref="Cpu.Int8Blocks"/>); a (slot, head)'s positions are padded to whole blocks.
    /// </summary>
    Int8,
}

internal static class KvElementExtensions
{
    /// <summary>Positions of an int8 block.</summary>
    public const int Int8Block = 16;

    /// <summary>Bytes of one entry: one head's key (or value) at one position (an int8 head size rounded up to 4 bytes).</summary>
    public static int EntryBytes(this KvElement e, int headSize) => e switch
    {
        KvElement.Float16 => 2 * headSize,
        KvElement.Int8 => Cpu.Int8Blocks.PaddedHeadSize(headSize) + 4,
        _ => 4 * headSize,
    };

    /// <summary>
    /// Bytes holding positions 0..positions-1 of one (slot, head): whole blocks for int8, so that a (slot, head) of a
    /// cache is <c>HeadBytes(n_positions)</c> long and a copy of a prefix of <c>length</c> positions is <c>HeadBytes(length)</c>.
    /// </summary>
    public static long HeadBytes(this KvElement e, int headSize, int positions) =>
        (long)(e == KvElement.Int8 ? (positions + Int8Block - 1) / Int8Block * Int8Block : positions) * e.EntryBytes(headSize);
}

/// <summary>Which of a layer's two cache buffers an entry is in: int8 lays keys and values out differently.</summary>
internal enum KvPart
{
    Key,
    Value,
}
