using System.Runtime.InteropServices;

namespace IGpt.Inference.Engine;

/// <summary>The library's host buffers: 64-byte aligned (a cache line, an AVX-512 vector), zeroed; freed with NativeMemory.AlignedFree.</summary>
internal static unsafe class NativeBuffer
{
    public static T* AllocZeroed<T>(long count) where T : unmanaged
    {
        nuint bytes = (nuint)(count * sizeof(T));
        var p = NativeMemory.AlignedAlloc(bytes, 64);
        NativeMemory.Clear(p, bytes);
        return (T*)p;
    }
}
