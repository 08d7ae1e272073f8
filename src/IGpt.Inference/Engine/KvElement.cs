namespace IGpt.Inference.Engine;

/// <summary>What one element of the KV cache is stored as (<see cref="InferenceOptions.KvCacheType"/>).</summary>
internal enum KvElement
{
    Float32,
    /// <summary>IEEE half precision, stored as its bits (ushort): converted by <see cref="Cpu.HalfConversion"/> on the CPU.</summary>
    Float16,
}

internal static class KvElementExtensions
{
    public static int Size(this KvElement e) => e == KvElement.Float16 ? 2 : 4;
}
